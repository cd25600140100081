"""ovgenai: OpenVINO GenAI's LLMPipeline (its own C++ generation loop, sampler and KV cache) on the ov IR.

The pipeline is fed our token ids (``TokenizedInputs``) and hands back ids, so tokenization stays
outside the engine and no openvino_tokenizer.xml is needed. The IR is the ov engine's artifact (one
export, the same weights), compiled with the ov engine's plugin settings (f32 inference, f32 KV
cache, no dynamic activation quantization). The KV cache is the one the pipeline manages: paged
attention blocks under its continuous-batching scheduler, asked for explicitly (an explicit
SchedulerConfig makes the pipeline fail loudly instead of silently falling back to its stateful
SDPA pipeline), with prefix caching off — otherwise a prompt seen in warm-up would skip its prefill
in the measured window, work no other engine is spared.

Like jit, the artifact is verified when it is prepared: the pipeline's greedy ids must equal the
torch engine's on the verification prompts, or load refuses (fp32), and the verdict is kept next to
the IR's key in the cache (``ovgenai-verify.json``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from services.inference.engines.base import Engine, EngineError, eos_ids, write_json_atomic
from services.inference.engines.ov_engine import OpenVinoEngine
from services.inference.engines.verification import compare_cases, read_verdict, torch_reference

#: bump when the verification changes meaning: old verdicts are then redone
FORMAT_VERSION = 1
VERIFY_FILE = "ovgenai-verify.json"
#: the scheduler's settings (openvino_genai.SchedulerConfig attributes); everything else its default
SCHEDULER = {
    "enable_prefix_caching": False,  # no KV reuse across requests: every prompt is prefilled
    "max_num_batched_tokens": 2**31 - 1,  # latency-oriented, as the pipeline's own default: a prompt in one step
    "dynamic_split_fuse": True,
}


def scheduler_config():
    import openvino_genai

    config = openvino_genai.SchedulerConfig()
    for key, value in SCHEDULER.items():
        setattr(config, key, value)
    return config


def _streamer_bridge(streamer, should_stop):
    """An openvino_genai.StreamerBase that passes each new id to our ``streamer`` (transformers'
    protocol) and answers STOP once ``should_stop()`` is true; ``end`` reaches ``streamer`` once."""
    import openvino_genai

    class Bridge(openvino_genai.StreamerBase):
        def __init__(self):
            super().__init__()
            self.ended = False
            self.heard = 0  # new ids passed on
            self.stopped_at: int | None = None  # ids heard when should_stop() turned true

        def write(self, token):
            ids = list(token) if isinstance(token, (list, tuple)) else [int(token)]
            if self.stopped_at is not None:  # the pipeline may write on after STOP: not ours to keep
                return openvino_genai.StreamingStatus.STOP
            self.heard += len(ids)
            if streamer is not None:
                streamer.put(ids)
            if should_stop is not None and should_stop():
                self.stopped_at = self.heard
                return openvino_genai.StreamingStatus.STOP
            return openvino_genai.StreamingStatus.RUNNING

        def end(self):
            if not self.ended:
                self.ended = True
                if streamer is not None:
                    streamer.end()

    return Bridge()


class OpenVinoGenAIEngine(Engine):
    name = "ovgenai"
    kv_cache = True  # paged KV cache, managed by the pipeline's scheduler

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.ir = OpenVinoEngine(self.model, self.config, self.settings)  # the IR and its plugin settings
        self.verdict: dict[str, Any] | None = None
        self.pipe = None

    def library_versions(self) -> dict[str, str]:
        import openvino_genai

        return {**self.ir.library_versions(), "openvino-genai": openvino_genai.__version__}

    def artifact_key(self) -> str:
        return f"{super().artifact_key()}-f{FORMAT_VERSION}"

    def plugin_config(self) -> dict[str, str]:
        """The CPU plugin's settings: the ov engine's (precision pinned, threads), minus CACHE_DIR,
        which the pipeline does not take as a plugin property."""
        return {k: v for k, v in self.ir.ov_config().items() if k != "CACHE_DIR"}

    # -- preparation ------------------------------------------------------------------------------
    def prepare(self, progress=print) -> Path:
        """The ov engine's IR (exported once), then the pipeline's verdict against torch (once)."""
        from services.models.cache import build_once

        ir = self.ir.prepare(progress)
        build_once(self.artifact_path(), lambda tmp: self._verify(ir, tmp, progress))
        return ir

    def _open(self, ir: Path):
        import openvino_genai

        if self.config.provider != "cpu":
            raise EngineError("OpenVINO GenAI is served on CPU only here (ovgenai-cuda does not exist)")
        return openvino_genai.LLMPipeline(str(ir), "CPU", scheduler_config=scheduler_config(),
                                          **self.plugin_config())

    def _verify(self, ir: Path, out: Path, progress) -> None:
        progress(f"ovgenai: verifying LLMPipeline on {ir.name} against torch-{self.config.provider}")
        cases, expected = torch_reference(self.model, self.config.provider, self.settings.threads)
        t0 = time.perf_counter()
        self.pipe, self.eos = self._open(ir), eos_ids(self.model)
        got = [self.generate(c["input_ids"], c["max_new_tokens"], c["min_new_tokens"]) for c in cases]
        verdict: dict[str, Any] = {
            "format": FORMAT_VERSION, "model": self.model.identity, "ir": str(ir),
            "precision": self.settings.precision, "reference": f"torch-{self.config.provider} fp32",
            "verify_seconds": round(time.perf_counter() - t0, 3), "versions": self.library_versions(),
            **compare_cases(cases, expected, got, "LLMPipeline's greedy ids"),
        }
        progress("ovgenai: " + ("verified" if verdict["verified"] else verdict["reason"]))
        write_json_atomic(out / VERIFY_FILE, verdict)

    def read_verdict(self) -> dict[str, Any]:
        return read_verdict(self.artifact_path() / VERIFY_FILE, "ovgenai verification", self.model.identity, FORMAT_VERSION,
                            "verify again")

    # -- serving ----------------------------------------------------------------------------------
    def load(self) -> None:
        ir = self.prepare()
        verdict = self.read_verdict()
        if not verdict["verified"] and self.settings.precision == "fp32":
            raise EngineError(
                f"OpenVINO GenAI does not reproduce torch's greedy tokens for {self.model.name} at fp32: "
                f"{verdict['reason']} (details in {self.artifact_path() / VERIFY_FILE}); serve it with "
                "ov-cpu, or delete that folder to verify again")
        if self.pipe is None:  # prepare verified in this process: that pipeline is the one to serve
            self.pipe, self.eos = self._open(ir), eos_ids(self.model)
        self.verdict, self.artifact_dir = verdict, ir
        # LLMPipeline exposes no compiled model to read the precision back from: what was asked is
        # recorded as asked, and the verdict (same ids as torch fp32) is the check that it held
        self.precision_settings = {
            "openvino.INFERENCE_PRECISION_HINT (requested)": self.plugin_config()["INFERENCE_PRECISION_HINT"],
            "openvino.KV_CACHE_PRECISION (requested)": self.plugin_config()["KV_CACHE_PRECISION"],
        }

    def generation_config(self, max_new_tokens: int, min_new_tokens: int):
        """A clean greedy GenerationConfig (nothing inherited from the model's shipped one); EOS as ours."""
        import openvino_genai

        cfg = openvino_genai.GenerationConfig()
        cfg.do_sample, cfg.num_beams, cfg.repetition_penalty = False, 1, 1.0
        cfg.max_new_tokens, cfg.min_new_tokens = max_new_tokens, min_new_tokens
        if self.eos:
            cfg.eos_token_id = self.eos[0]
            cfg.stop_token_ids = set(self.eos)
        else:
            cfg.ignore_eos = True
        return cfg

    def generate(self, input_ids: list[int], max_new_tokens: int, min_new_tokens: int = 0,
                 streamer=None, should_stop=None) -> list[int]:
        import numpy as np
        import openvino
        import openvino_genai

        if not input_ids:
            raise ValueError("input_ids is empty")
        if max_new_tokens <= 0:
            return []
        ids = np.array([input_ids], dtype=np.int64)
        inputs = openvino_genai.TokenizedInputs(openvino.Tensor(ids), openvino.Tensor(np.ones_like(ids)))
        bridge = _streamer_bridge(streamer, should_stop) if streamer is not None or should_stop is not None else None
        if streamer is not None:
            streamer.put(input_ids)  # the prompt first, as transformers' streamers hear it
        result = self.pipe.generate(inputs, self.generation_config(max_new_tokens, min_new_tokens), bridge)
        tokens = [int(t) for t in result.tokens[0]]
        if bridge is not None:
            bridge.end()
            if bridge.stopped_at is not None:  # the result can hold one id past the STOP: cut it
                tokens = tokens[:bridge.stopped_at]
        return tokens

    def describe(self) -> dict[str, Any]:
        verdict = self.verdict or {}
        return {
            **super().describe(),
            "pipeline": "openvino_genai.LLMPipeline (continuous-batching adapter, paged attention)",
            "kv_cache_details": {"managed_by": "LLMPipeline's scheduler (paged KV blocks, grown as needed)",
                                 "scheduler_config": SCHEDULER,
                                 "precision": self.plugin_config()["KV_CACHE_PRECISION"]},
            "ov_config": self.plugin_config(),
            "verified": bool(verdict.get("verified")),
            "verification": {k: verdict.get(k) for k in ("reference", "cases", "exact", "reason") if k in verdict},
        }
