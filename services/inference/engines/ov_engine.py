"""ov: OpenVINO through optimum-intel's OVModelForCausalLM, exported with a KV cache.

OpenVINO on CPU may pick bf16/f16 inference where the CPU has it, which changes greedy outputs;
the precision is an explicit setting (fp32 by default → ``INFERENCE_PRECISION_HINT=f32``) and is
recorded. The study's package exported most models without a KV cache; here it is always on.

int8 and int4 are NNCF weight compression at export (optimum-intel's OVWeightQuantizationConfig,
engines/lower_precision.py): weights stored compressed, computed in f32 (the hint stays f32, the
KV cache f32, dynamic activation quantization off), so only the weights' precision changes. bf16 is
not offered: this engine's CPU plugin computes bf16 only where the CPU has AVX512-BF16/AMX, and
silently compiles f32 otherwise (read back on a CPU without them: INFERENCE_PRECISION_HINT f32).
"""

from __future__ import annotations

from pathlib import Path

from services.inference.engines import lower_precision
from services.inference.engines.base import Engine, EngineError, greedy_generation_config, stopping_criteria

#: what OpenVINO computes in, per precision: compressed weights are decompressed to f32
PRECISION_HINTS = {"fp32": "f32", "int8": "f32", "int4": "f32"}


class OpenVinoEngine(Engine):
    name = "ov"
    precisions = ("fp32", "int8", "int4")

    def library_versions(self) -> dict[str, str]:
        from importlib.metadata import version

        import openvino

        return {
            **super().library_versions(),
            "openvino": openvino.__version__,
            "optimum-intel": version("optimum-intel"),
        }

    def ov_config(self) -> dict[str, str]:
        return {
            "INFERENCE_PRECISION_HINT": PRECISION_HINTS[self.settings.precision],
            # the CPU plugin compresses the KV cache (u8) and quantizes activations dynamically by
            # default for LLMs: both change greedy tokens, so both are pinned to the precision
            "KV_CACHE_PRECISION": PRECISION_HINTS[self.settings.precision],
            "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0",
            "INFERENCE_NUM_THREADS": str(self.settings.threads),
            "PERFORMANCE_HINT": "LATENCY",
            "CACHE_DIR": "",
        }

    def prepare(self, progress=print) -> Path:
        from services.models.cache import build_once, is_complete

        target = self.artifact_path()
        compression = lower_precision.ov_weight_config(self.settings.precision)
        if not is_complete(target):
            progress(f"exporting {self.model.name} to OpenVINO IR (with KV cache"
                     f"{', weights ' + self.settings.precision if compression else ''}) into {target}")

        def export(tmp: Path) -> None:
            from optimum.intel import OVModelForCausalLM
            from transformers import AutoTokenizer

            # fp32: load_in_8bit=False, as optimum-intel compresses >1B models to int8 unless told not to
            weights = {"quantization_config": compression} if compression else {"load_in_8bit": False}
            model = OVModelForCausalLM.from_pretrained(
                self.model.load_source, export=True, use_cache=True, compile=False,
                trust_remote_code=self.model.trust_remote_code, **weights,
            )
            model.save_pretrained(tmp)
            if compression:
                lower_precision.ov_weight_census(tmp)
            AutoTokenizer.from_pretrained(
                self.model.load_source, trust_remote_code=self.model.trust_remote_code
            ).save_pretrained(tmp)

        return build_once(target, export)

    def load(self) -> None:
        from optimum.intel import OVModelForCausalLM

        if self.config.provider != "cpu":
            raise EngineError("OpenVINO is served on CPU only here (ov-cuda does not exist)")
        self.artifact_dir = self.prepare()
        self.model_obj = OVModelForCausalLM.from_pretrained(
            self.artifact_dir, device="CPU", use_cache=True, ov_config=self.ov_config(), compile=True,
        )
        if not self.model_obj.use_cache:
            raise EngineError("the OpenVINO export has no KV cache; delete the artifact and prepare again")
        compiled = self.model_obj.request.get_compiled_model()
        # what OpenVINO actually compiled with, not what was asked for
        self.runtime_precision = _type_name(compiled.get_property("INFERENCE_PRECISION_HINT"))
        self.precision_settings = {"openvino.INFERENCE_PRECISION_HINT": self.runtime_precision}
        meta = lower_precision.read_meta(self.artifact_dir)
        if meta:
            self.precision_settings.update({
                "openvino.KV_CACHE_PRECISION": _type_name(compiled.get_property("KV_CACHE_PRECISION")),
                "nncf.weight_compression": lower_precision.OV_WEIGHT_COMPRESSION[self.settings.precision],
                **meta,
            })

    def describe(self) -> dict:
        return {**super().describe(), "ov_config": self.ov_config(),
                "runtime_precision": getattr(self, "runtime_precision", None)}

    def generate(self, input_ids: list[int], max_new_tokens: int, min_new_tokens: int = 0,
                 streamer=None, should_stop=None) -> list[int]:
        import torch

        ids = torch.tensor([input_ids], dtype=torch.long)
        out = self.model_obj.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            generation_config=greedy_generation_config(self.model_obj, max_new_tokens, min_new_tokens),
            streamer=streamer,
            stopping_criteria=stopping_criteria(should_stop),
        )
        return out[0, len(input_ids):].tolist()


def _type_name(value) -> str:
    return value.to_string() if hasattr(value, "to_string") else str(value)
