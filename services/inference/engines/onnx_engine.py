"""onnx: ONNX Runtime through optimum's ORTModelForCausalLM, exported with a KV cache.

CPUExecutionProvider or CUDAExecutionProvider (with IO binding on CUDA). The export is cached
per model, precision and library versions; the intra-op thread count is the shared setting.
"""

from __future__ import annotations

from pathlib import Path

from services.inference.engines.base import Engine, EngineError, greedy_generation_config

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


class OnnxEngine(Engine):
    name = "onnx"

    def library_versions(self) -> dict[str, str]:
        import onnxruntime
        import optimum.onnxruntime  # noqa: F401
        from importlib.metadata import version

        return {
            **super().library_versions(),
            "onnxruntime": onnxruntime.__version__,
            "optimum": version("optimum"),
            "optimum-onnx": version("optimum-onnx"),
        }

    def prepare(self, progress=print) -> Path:
        from services.models.cache import build_once, is_complete

        target = self.artifact_path()
        if not is_complete(target):
            progress(f"exporting {self.model.name} to ONNX (with KV cache) into {target}")

        def export(tmp: Path) -> None:
            from optimum.onnxruntime import ORTModelForCausalLM
            from transformers import AutoTokenizer

            model = ORTModelForCausalLM.from_pretrained(
                self.model.load_source, export=True, use_cache=True,
                trust_remote_code=self.model.trust_remote_code,
            )
            model.save_pretrained(tmp)
            AutoTokenizer.from_pretrained(
                self.model.load_source, trust_remote_code=self.model.trust_remote_code
            ).save_pretrained(tmp)

        return build_once(target, export)

    def load(self) -> None:
        import onnxruntime as ort
        from optimum.onnxruntime import ORTModelForCausalLM

        provider = PROVIDERS[self.config.provider]
        if provider not in ort.get_available_providers():
            raise EngineError(
                f"ONNX Runtime {ort.__version__} here has no {provider} "
                f"(available: {', '.join(ort.get_available_providers())}); "
                "onnx-cuda needs the onnxruntime-gpu package, CUDA 12 and cuDNN 9"
            )
        self.artifact_dir = self.prepare()
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.settings.threads
        options.inter_op_num_threads = 1
        self.model_obj = ORTModelForCausalLM.from_pretrained(
            self.artifact_dir,
            provider=provider,
            session_options=options,
            use_cache=True,
            use_io_binding=self.config.provider == "cuda",
        )
        if not self.model_obj.use_cache:
            raise EngineError("the ONNX export has no KV cache; delete the artifact and prepare again")

    def generate(self, input_ids: list[int], max_new_tokens: int, min_new_tokens: int = 0,
                 streamer=None) -> list[int]:
        import torch

        device = self.model_obj.device
        ids = torch.tensor([input_ids], dtype=torch.long, device=device)
        out = self.model_obj.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            generation_config=greedy_generation_config(self.model_obj, max_new_tokens, min_new_tokens),
            streamer=streamer,
        )
        return out[0, len(input_ids):].tolist()
