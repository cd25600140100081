"""torch: transformers AutoModelForCausalLM in eager PyTorch — the reference every engine is compared to."""

from __future__ import annotations

from services.inference.engines.base import Engine, greedy_generation_config, stopping_criteria


class TorchEngine(Engine):
    name = "torch"

    def load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        from services.inference.engines.precision import apply_torch

        torch.set_num_threads(self.settings.threads)
        self.precision_settings = apply_torch(self.settings.precision)  # fp32: TF32 off, as ORT's use_tf32=0
        self.model_obj = (
            AutoModelForCausalLM.from_pretrained(
                self.model.load_source,
                revision=None if self.model.path else self.model.revision,
                dtype=torch.float32,
                trust_remote_code=self.model.trust_remote_code,
                use_safetensors=None,
            )
            .to(self.config.device)
            .eval()
        )

    def generate(self, input_ids: list[int], max_new_tokens: int, min_new_tokens: int = 0,
                 streamer=None, should_stop=None) -> list[int]:
        import torch

        ids = torch.tensor([input_ids], dtype=torch.long, device=self.config.device)
        with torch.inference_mode():
            out = self.model_obj.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                generation_config=greedy_generation_config(self.model_obj, max_new_tokens, min_new_tokens),
                streamer=streamer,
            stopping_criteria=stopping_criteria(should_stop),
            )
        return out[0, len(input_ids):].tolist()
