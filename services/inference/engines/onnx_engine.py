"""onnx: ONNX Runtime through optimum's ORTModelForCausalLM, exported with a KV cache.

CPUExecutionProvider or CUDAExecutionProvider (with IO binding on CUDA). The export is cached
per model, precision and library versions; the intra-op thread count is the shared setting.

The provider is verified on the session itself: ``ort.get_available_providers()`` lists CUDA as
soon as the GPU wheel is installed, but when the CUDA provider then fails to load (a missing
libcudnn, a driver too old) ORT only warns and runs on the CPU, and optimum derives its device from
the session. A session whose first provider is not the one asked for is refused, so a run labelled
onnx-cuda can never have run on the CPU. Its real providers and options go to /info and run.json.

int8 is ORT's dynamic quantization of the fp32 export (engines/lower_precision.py), made in the
prepare stage from the cached fp32 artifact into its own artifact; its MatMulInteger kernels are
CPU-only in ORT, so onnx-cuda refuses it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.inference.engines import lower_precision
from services.inference.engines import precision as precisions
from services.inference.engines.base import Engine, EngineError, greedy_generation_config, stopping_criteria

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def verify_session(session, asked: str, precision: str) -> dict[str, Any]:
    """What an ORT session really runs on: its providers, their options and precision read-back.
    EngineError unless ``asked`` is its first provider and its precision options are the asked ones."""
    used = list(session.get_providers())
    options = {name: dict(opts) for name, opts in session.get_provider_options().items()}
    if not used or used[0] != asked:
        hint = (" — ORT fell back without an error: the CUDA provider did not load (ORT's warning above "
                "says why: a missing libcudnn/libcublas, a driver older than the CUDA runtime needs, or "
                "the CPU onnxruntime installed beside onnxruntime-gpu); see README, 'CUDA'"
                if asked == PROVIDERS["cuda"] else "")
        raise EngineError(f"ONNX Runtime session runs on {used or 'no provider'}, not on {asked}; "
                          f"refusing to serve a run that would be mislabelled{hint}")
    readback = precisions.ort_readback(options)
    if not precisions.ort_matches(precision, readback):
        raise EngineError(f"ONNX Runtime session reports {readback} for precision {precision!r}, "
                          f"expected use_tf32={precisions.ort_cuda_options(precision)['use_tf32']}")
    return {"providers": used, "provider_options": options, "precision_settings": readback}


class OnnxEngine(Engine):
    name = "onnx"
    precisions = ("fp32", "int8")
    provider_refusals = {("cuda", "int8"): "onnx int8 is ORT's dynamic quantization (MatMulInteger), whose "
                                           "kernels run on the CPU execution provider only; onnx-cuda serves fp32"}

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
        if self.settings.precision == "int8":
            return self._prepare_int8(target, progress)
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

    def _prepare_int8(self, target: Path, progress) -> Path:
        """The fp32 export (cached, shared with onnx fp32 runs), quantized into its own artifact."""
        from dataclasses import replace

        from services.models.cache import build_once, is_complete

        if not is_complete(target):
            fp32 = OnnxEngine(self.model, self.config, replace(self.settings, precision="fp32")).prepare(progress)
            progress(f"quantizing {self.model.name}'s ONNX export to dynamic int8 into {target}")
            return build_once(target, lambda tmp: lower_precision.onnx_quantize_int8(fp32, tmp))
        return target

    def provider_options(self) -> dict[str, str] | None:
        """Options asked of the provider: on CUDA the precision's (fp32: ``use_tf32=0``, not ORT's TF32
        default); the CPU provider has no precision option."""
        return precisions.ort_cuda_options(self.settings.precision) if self.config.provider == "cuda" else None

    def load(self) -> None:
        import onnxruntime as ort
        from optimum.onnxruntime import ORTModelForCausalLM

        provider = PROVIDERS[self.config.provider]
        if provider not in ort.get_available_providers():
            raise EngineError(
                f"ONNX Runtime {ort.__version__} here has no {provider} "
                f"(available: {', '.join(ort.get_available_providers())}); "
                "onnx-cuda needs the onnxruntime-gpu package (and never the CPU onnxruntime beside it): "
                "make bench CONFIG=onnx-cuda sets up .venv-cuda with it"
            )
        self.artifact_dir = self.prepare()
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.settings.threads
        options.inter_op_num_threads = 1
        self.model_obj = ORTModelForCausalLM.from_pretrained(
            self.artifact_dir,
            provider=provider,
            provider_options=self.provider_options(),
            session_options=options,
            use_cache=True,
            use_io_binding=self.config.provider == "cuda",
        )
        self.session_info = verify_session(self.model_obj.session, provider, self.settings.precision)
        self.precision_settings = {**self.session_info["precision_settings"], **lower_precision.read_meta(self.artifact_dir)}
        if not self.model_obj.use_cache:
            raise EngineError("the ONNX export has no KV cache; delete the artifact and prepare again")

    def describe(self) -> dict[str, Any]:
        info = getattr(self, "session_info", {})
        return {**super().describe(), "providers": info.get("providers"),
                "provider_options": info.get("provider_options")}

    def generate(self, input_ids: list[int], max_new_tokens: int, min_new_tokens: int = 0,
                 streamer=None, should_stop=None) -> list[int]:
        import torch

        device = self.model_obj.device
        ids = torch.tensor([input_ids], dtype=torch.long, device=device)
        out = self.model_obj.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            generation_config=greedy_generation_config(self.model_obj, max_new_tokens, min_new_tokens),
            streamer=streamer,
            stopping_criteria=stopping_criteria(should_stop),
        )
        return out[0, len(input_ids):].tolist()
