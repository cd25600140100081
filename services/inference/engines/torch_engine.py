"""torch: transformers AutoModelForCausalLM in eager PyTorch — the reference every engine is compared to.

Lower precisions (engines/lower_precision.py): bf16 and fp16 load the weights in that dtype; int8 is
torch's own dynamic int8 quantization of every Linear layer (``torch.ao.quantization.quantize_dynamic``:
int8 weights, activations quantized per call), whose kernels are CPU-only, so torch-cuda refuses it.
"""

from __future__ import annotations

from services.inference.engines import lower_precision
from services.inference.engines.base import Engine, EngineError, greedy_generation_config, stopping_criteria


class TorchEngine(Engine):
    name = "torch"
    precisions = ("fp32", "bf16", "fp16", "int8")
    provider_refusals = {("cuda", "int8"): "torch int8 is torch.ao dynamic quantization, whose kernels run on "
                                           "the CPU only; on CUDA torch serves fp32, bf16 and fp16"}

    def load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        from services.inference.engines.precision import apply_torch

        precision = self.settings.precision
        torch.set_num_threads(self.settings.threads)
        settings = apply_torch(precision)  # fp32: TF32 off, as ORT's use_tf32=0
        model = (
            AutoModelForCausalLM.from_pretrained(
                self.model.load_source,
                revision=None if self.model.path else self.model.revision,
                dtype=lower_precision.torch_dtype(precision),
                trust_remote_code=self.model.trust_remote_code,
                use_safetensors=None,
            )
            .to(self.config.device)
            .eval()
        )
        if precision == "int8":
            model = lower_precision.torch_int8_dynamic(model)
        self.model_obj = model
        settings.update(lower_precision.torch_report(model))
        if self.config.device == "cpu":
            settings.update({f"cpu.{k}": v for k, v in lower_precision.cpu_features().items()})
        self.precision_settings = settings

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
