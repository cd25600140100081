"""ct2: CTranslate2's Generator (its own C++ greedy loop, kernels and KV cache) on a model converted
by its transformers converter.

Conversion (``ctranslate2.converters.TransformersConverter``) is the prepare stage: cached, never
timed, built into a temporary folder that becomes the artifact only once converted and verified.
The weights are converted to the compute type (fp32: ``float32``; int8: ``int8`` on CPU,
``int8_float16`` on CUDA), which the Generator is then loaded with; the type it reports having
loaded (``Generator.compute_type``: ``int8`` on this CPU reads back as ``int8_float32``) is recorded
in ``precision_settings``.

Our token ids go in as the converted model's own vocabulary strings (ct2 takes prompts as strings
and maps them back through that vocabulary; prepare refuses a vocabulary with duplicate strings,
which that mapping could not tell apart). Greedy: beam 1, top-k 1, our EOS ids as end tokens, EOS
blocked before ``min_new_tokens`` (``min_length``; ct2 counts new tokens in both limits). The end
token is kept, as the torch engine's ``generate`` keeps it. Each new token reaches our streamer from
ct2's step callback (on ct2's one worker thread, while the serving thread waits in ``generate_batch``,
so still one generation at a time), which then asks ``should_stop``: True ends the decoding there
(a stop string, a client gone), as a transformers StoppingCriteria does.

Like ovgenai, the artifact is verified when prepared: its greedy ids must equal the fp32 torch
engine's on the verification cases, or fp32 refuses to load; int8 is not expected to be exact (its
agreement is what the analysis measures), so its verdict is recorded and served. The verdict lives
beside the converted model (``ct2-verify.json``).

CUDA: the ctranslate2 4.8.5 wheel is built for CUDA 12 (its runtime linked in, cuBLAS loaded as
``libcublas.so.12``), while torch 2.13's wheels and the CUDA image's libraries are CUDA 13, so
ct2-cuda needs cuBLAS 12 beside them (``nvidia-cublas-cu12``); without a GPU, or without that
library, it is refused with that sentence.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from services.inference.engines.base import Engine, EngineError, eos_ids, write_json_atomic
from services.inference.engines.verification import compare_cases, read_verdict, torch_reference

#: bump when the artifact or the verification changes meaning: old artifacts are then rebuilt
FORMAT_VERSION = 1
MODEL_DIR = "model"  # the converted model, inside the artifact folder
VERIFY_FILE = "ct2-verify.json"
#: what the weights are converted to and the Generator computes in, per (precision, device)
COMPUTE_TYPES = {
    ("fp32", "cpu"): "float32", ("fp32", "cuda"): "float32",
    ("int8", "cpu"): "int8", ("int8", "cuda"): "int8_float16",
}
#: precisions that must reproduce torch fp32 exactly (refused otherwise)
EXACT = ("fp32",)
CUDA_MAJOR = 12  # of the pinned ctranslate2 wheel; torch 2.13's is 13
CUDA_HINT = (f"the ctranslate2 4.8.5 wheel is built for CUDA {CUDA_MAJOR} (it loads libcublas.so.{CUDA_MAJOR}), "
             "torch 2.13 and the CUDA image bring CUDA 13: install nvidia-cublas-cu12 beside them, "
             "or serve onnx-cuda / torch-cuda")


class CTranslate2Engine(Engine):
    name = "ct2"
    kv_cache = True  # ct2's decoder keeps its own KV cache between steps
    precisions = ("fp32", "int8")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.generator = None
        self.vocabulary: list[str] = []
        self.eos: list[int] = []
        self.verdict: dict[str, Any] | None = None

    def library_versions(self) -> dict[str, str]:
        import ctranslate2

        return {**super().library_versions(), "ctranslate2": ctranslate2.__version__}

    def artifact_key(self) -> str:
        return f"{super().artifact_key()}-f{FORMAT_VERSION}"

    @property
    def compute_type(self) -> str:
        return COMPUTE_TYPES[(self.settings.precision, self.config.device)]

    # -- preparation ------------------------------------------------------------------------------
    def prepare(self, progress=print) -> Path:
        """The converted model and its verdict against torch, built once into the artifact folder."""
        from services.models.cache import build_once, is_complete

        target = self.artifact_path()
        if not is_complete(target):
            self._check_device()
            progress(f"ct2: converting {self.model.name} to CTranslate2 ({self.compute_type} weights) into {target}")
        return build_once(target, lambda tmp: self._build(tmp, progress))

    def _build(self, out: Path, progress) -> None:
        t0 = time.perf_counter()
        convert(self.model, out / MODEL_DIR, self.compute_type)
        convert_seconds = time.perf_counter() - t0
        read_vocabulary(out / MODEL_DIR)  # refuses an ambiguous vocabulary before anything is verified
        progress(f"ct2: converted in {convert_seconds:.1f}s; verifying against torch-{self.config.provider} fp32")
        cases, expected = torch_reference(self.model, self.config.provider, self.settings.threads)
        self._open(out / MODEL_DIR)
        t1 = time.perf_counter()
        got = [self.generate(c["input_ids"], c["max_new_tokens"], c["min_new_tokens"]) for c in cases]
        verdict = {
            "format": FORMAT_VERSION, "model": self.model.identity, "precision": self.settings.precision,
            "compute_type": self.generator.compute_type, "reference": f"torch-{self.config.provider} fp32",
            "convert_seconds": round(convert_seconds, 3), "verify_seconds": round(time.perf_counter() - t1, 3),
            "versions": self.library_versions(),
            **compare_cases(cases, expected, got, "CTranslate2's greedy ids"),
        }
        self.generator = None  # load() opens the artifact where it ends up
        progress("ct2: " + ("verified" if verdict["verified"] else verdict["reason"]))
        write_json_atomic(out / VERIFY_FILE, verdict)

    def read_verdict(self) -> dict[str, Any]:
        return read_verdict(self.artifact_path() / VERIFY_FILE, "ct2 verification", self.model.identity, FORMAT_VERSION,
                            "convert and verify again")

    # -- serving ----------------------------------------------------------------------------------
    def _check_device(self) -> None:
        import ctranslate2

        if self.config.device == "cuda" and ctranslate2.get_cuda_device_count() == 0:
            raise EngineError(f"ctranslate2 {ctranslate2.__version__} sees no CUDA device; {CUDA_HINT}")

    def _open(self, folder: Path) -> None:
        import ctranslate2

        self._check_device()
        try:
            self.generator = ctranslate2.Generator(
                str(folder), device=self.config.device, compute_type=self.compute_type,
                inter_threads=1, intra_threads=self.settings.threads,
            )
            self.vocabulary, self.eos = read_vocabulary(folder), eos_ids(self.model)
            if self.config.device == "cuda":  # cuBLAS is loaded at the first matmul: fail here, not mid-run
                self.generate(self.eos[:1] or [0], 1)
        except RuntimeError as exc:
            if "cublas" in str(exc).lower() or "cuda" in str(exc).lower():
                raise EngineError(f"ct2-cuda cannot run: {exc}; {CUDA_HINT}") from exc
            raise

    def load(self) -> None:
        folder = self.prepare()
        verdict = self.read_verdict()
        if not verdict["verified"] and self.settings.precision in EXACT:
            raise EngineError(
                f"CTranslate2 does not reproduce torch's greedy tokens for {self.model.name} at "
                f"{self.settings.precision}: {verdict['reason']} (details in {folder / VERIFY_FILE}); serve it "
                "with torch-cpu, or delete that folder to convert and verify again")
        self._open(folder / MODEL_DIR)
        self.verdict, self.artifact_dir = verdict, folder
        self.precision_settings = {
            "ctranslate2.compute_type": self.generator.compute_type,  # what ct2 loaded, read back
            "ctranslate2.compute_type (requested)": self.compute_type,
            "ctranslate2.weights (converted to)": self.compute_type,
        }
        if self.config.device == "cuda":  # ct2 computes fp32 GEMMs in TF32 only when this is set to 1
            self.precision_settings["CT2_CUDA_ALLOW_TF32"] = os.environ.get("CT2_CUDA_ALLOW_TF32", "0")

    def generate(self, input_ids: list[int], max_new_tokens: int, min_new_tokens: int = 0,
                 streamer=None, should_stop=None) -> list[int]:
        if not input_ids:
            raise ValueError("input_ids is empty")
        if max_new_tokens <= 0:
            return []
        tokens: list[int] = []
        failed: list[BaseException] = []

        def step(result) -> bool:  # on ct2's worker thread, once per new token; True stops the decoding
            try:
                tokens.append(int(result.token_id))
                if streamer is not None:
                    streamer.put([tokens[-1]])
                return bool(should_stop is not None and should_stop())
            except BaseException as exc:  # raised here it would be lost in ct2's thread: re-raised below
                failed.append(exc)
                return True

        if streamer is not None:
            streamer.put(input_ids)  # the prompt first, as transformers' streamers hear it
        self.generator.generate_batch(
            [[self.vocabulary[i] for i in input_ids]],
            max_length=max_new_tokens, min_length=min_new_tokens if self.eos else max_new_tokens,
            beam_size=1, sampling_topk=1, end_token=self.eos or None, return_end_token=True,
            include_prompt_in_result=False, callback=step,
        )
        if failed:
            raise failed[0]
        if streamer is not None:
            streamer.end()
        return tokens

    def describe(self) -> dict[str, Any]:
        verdict = self.verdict or {}
        return {
            **super().describe(),
            "generator": {"library": "ctranslate2.Generator", "compute_type": self.compute_type,
                          "inter_threads": 1, "intra_threads": self.settings.threads,
                          "decoding": "greedy (beam_size 1, sampling_topk 1)"},
            "kv_cache_details": {"managed_by": "CTranslate2's decoder (its own KV cache, per generation)"},
            "verified": bool(verdict.get("verified")),
            "verification": {k: verdict[k] for k in ("reference", "cases", "exact", "reason", "convert_seconds")
                             if k in verdict},
        }


def convert(model, out: Path, quantization: str) -> None:
    """``model`` converted by ctranslate2's transformers converter into ``out`` (a new folder), its
    weights in ``quantization``. An architecture the converter has no loader for is refused."""
    import ctranslate2
    from ctranslate2.converters import TransformersConverter

    converter = TransformersConverter(model.load_source, revision=None if model.path else model.revision,
                                      trust_remote_code=model.trust_remote_code)
    try:
        converter.convert(str(out), quantization=quantization)
    except (ValueError, NotImplementedError) as exc:
        if isinstance(exc, ValueError) and "No conversion is registered" not in str(exc):
            raise
        raise EngineError(f"CTranslate2 {ctranslate2.__version__} cannot convert this architecture "
                          f"({model_type(model)} of {model.name}): {exc}. Serve it with torch, onnx or ov") from exc


def model_type(model) -> str:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model.load_source, trust_remote_code=model.trust_remote_code)
    return f"model_type {config.model_type!r}, {type(config).__name__}"


def read_vocabulary(folder: Path) -> list[str]:
    """The converted model's vocabulary, the string of each id. ct2 maps prompt strings back to ids
    through it, so a string held by two ids would silently become the first: refused."""
    vocabulary = json.loads((folder / "vocabulary.json").read_text())
    seen: dict[str, int] = {}
    for i, token in enumerate(vocabulary):
        if token in seen:
            raise EngineError(f"the CTranslate2 vocabulary in {folder} holds {token!r} at ids {seen[token]} and "
                              f"{i}: ct2's string prompts cannot tell them apart, so our ids cannot be fed to it")
        seen[token] = i
    return vocabulary

