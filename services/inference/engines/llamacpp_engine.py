"""llamacpp: llama.cpp through llama-cpp-python, on a GGUF written by llama.cpp's own converter.

Opt-in: llama-cpp-python ships as an sdist only and builds llama.cpp with CMake and a C++ compiler
(minutes), so it is not in requirements.txt; ``make llamacpp`` (scripts/install-llamacpp.sh) builds
and installs it with the converter of the same llama.cpp, and the wattserve:llamacpp-cpu image has
it built in. Without it the service refuses the configuration in one sentence saying how to get it.

Prepare (cached, never timed): the HF folder → ``model.gguf`` (f32 for fp32) with the converter
(engines/llamacpp_convert.py), then the engine's greedy ids are compared with the torch engine's on
the verification cases (engines/verification.py) and the verdict is kept beside the GGUF. llama.cpp
cannot reproduce torch fp32 exactly for every model: on CPU its f32 GELU rounds its input to fp16 and
reads a 16-bit table (ggml-cpu vec.h, GGML_GELU_FP16), and its matmuls accumulate in their own order.
So a mismatch does not refuse to serve: the agreement is measured and shown (/info, run.json), never
hidden.

Generation: the model is fed our token ids (llama.cpp never tokenizes). ``Llama.generate`` matches a
new prompt against the previous one and skips the shared prefix's prefill (KV reuse no other engine
gets), and its sampler chain has no way to hold EOS back for ``min_new_tokens`` but a logits-processor
bridge its own source calls "probably broken"; so the loop is ours: the state is reset (nothing
reused), the prompt is evaluated in one ``eval``, and each next token is the argmax of the last
position's logits (greedy for real, first index on ties as torch's argmax), EOS masked before
``min_new_tokens``. KV cache: llama.cpp's, f32 K and V (its default is f16), flash attention off.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from services.inference.engines.base import Engine, EngineError, eos_ids, write_json_atomic
from services.inference.engines.llamacpp_convert import OUTTYPES, converter_home, converter_problem

#: bump when the artifact or the verification changes meaning: old ones are then redone
FORMAT_VERSION = 1
GGUF_FILE = "model.gguf"
CONVERT_FILE = "convert.json"
VERIFY_FILE = "llamacpp-verify.json"
PIN = "llama-cpp-python==0.3.36"  # scripts/install-llamacpp.sh and requirements-llamacpp.txt say the same
HOW_TO_GET_IT = ("`make llamacpp` builds it from source into .venv with llama.cpp's GGUF converter "
                 "(CMake and a C++ compiler; see README, llama.cpp), or use the wattserve:llamacpp-cpu image")
#: llama.cpp's KV cache precision per precision (GGML type names; values from llama_cpp.GGML_TYPE_*): fp16 as
#: llama.cpp's own default, int8 (q8_0 weights) keeps f32 so that only the weights change, as ov/onnx int8 do
KV_TYPES = {"fp32": "F32", "fp16": "F16", "int8": "F32"}
#: tokens per decode call (llama.cpp's default): a prompt up to this long is prefilled in one call
PREFILL_BATCH = 512


def llama_cpp_problem() -> str | None:
    """Why llama.cpp cannot serve here, in one sentence (None: it can)."""
    try:
        import llama_cpp
    except ImportError as exc:
        return f"llama-cpp-python is not installed ({exc}): {HOW_TO_GET_IT}"
    except OSError as exc:  # the wheel is there but its libllama does not load (wrong CPU, missing libgomp)
        return f"llama-cpp-python is installed but its llama.cpp library does not load ({exc}): {HOW_TO_GET_IT}"
    problem = converter_problem(converter_home(), llama_cpp.__version__)
    return f"{problem}: {HOW_TO_GET_IT}" if problem else None


class LlamaCppEngine(Engine):
    name = "llamacpp"
    kv_cache = True
    #: the converter's outtypes: f32, f16, q8_0 (int8 weights in blocks of 32 with an f16 scale; llama.cpp's
    #: q8_0 matmuls quantize their activations to q8_0 as well, which no flag turns off)
    precisions = ("fp32", "fp16", "int8")

    @classmethod
    def missing(cls) -> str | None:
        return llama_cpp_problem()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.llm = None
        self.eos: list[int] = []
        self.verdict: dict[str, Any] | None = None
        self.conversion: dict[str, Any] | None = None

    def library_versions(self) -> dict[str, str]:
        import llama_cpp

        return {**super().library_versions(), "llama-cpp-python": llama_cpp.__version__}

    def artifact_key(self) -> str:
        return f"{super().artifact_key()}-f{FORMAT_VERSION}"

    # -- preparation ------------------------------------------------------------------------------
    def prepare(self, progress=print) -> Path:
        """The GGUF (converted once) and the engine's verdict against torch (once), in one artifact."""
        from services.models.cache import build_once

        return build_once(self.artifact_path(), lambda tmp: self._build(tmp, progress))

    def _build(self, out: Path, progress) -> None:
        import subprocess
        import sys

        if self.model.path is None:
            raise EngineError(f"{self.model.name} is not on disk yet; the GGUF converter needs its folder")
        outtype = OUTTYPES[self.settings.precision]
        progress(f"llamacpp: converting {self.model.name} to GGUF ({outtype}) with llama.cpp's converter")
        cmd = [sys.executable, "-m", "services.inference.engines.llamacpp_convert", str(self.model.path),
               str(out / GGUF_FILE), "--outtype", outtype, "--converter", str(converter_home()),
               "--record", str(out / CONVERT_FILE)]
        run = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[3])
        if run.returncode != 0:
            tail = "\n".join((run.stderr or run.stdout).strip().splitlines()[-8:])
            raise EngineError(f"llama.cpp's converter could not convert {self.model.name} to GGUF:\n{tail}")
        self._verify(out, progress)

    def _verify(self, out: Path, progress) -> None:
        from services.inference.engines.verification import compare_cases, torch_reference

        progress(f"llamacpp: verifying llama.cpp on {GGUF_FILE} against torch-{self.config.provider}")
        cases, expected = torch_reference(self.model, self.config.provider, self.settings.threads)
        t0 = time.perf_counter()
        self._open(out)
        got = [self.generate(c["input_ids"], c["max_new_tokens"], c["min_new_tokens"]) for c in cases]
        verdict: dict[str, Any] = {
            "format": FORMAT_VERSION, "model": self.model.identity, "gguf": GGUF_FILE,
            "precision": self.settings.precision, "reference": f"torch-{self.config.provider} fp32",
            "verify_seconds": round(time.perf_counter() - t0, 3), "versions": self.library_versions(),
            **compare_cases(cases, expected, got, "llama.cpp's greedy ids"),
        }
        if not verdict["verified"]:
            verdict["reason"] += (f": {OUTTYPES[self.settings.precision]} weights, and CPU kernels that are not "
                                  "torch's (f32 GELU through a 16-bit table, its own matmul accumulation order)")
        progress("llamacpp: " + ("verified: the same ids as torch" if verdict["verified"] else verdict["reason"]))
        write_json_atomic(out / VERIFY_FILE, verdict)

    def _read(self, folder: Path, name: str) -> dict[str, Any]:
        path = folder / name
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise EngineError(f"llamacpp artifact {path} is unreadable ({exc}); delete {folder} to prepare again") from exc
        return record

    # -- serving ----------------------------------------------------------------------------------
    def _open(self, folder: Path) -> None:
        import llama_cpp
        from transformers import AutoConfig

        from services.models.resolve import context_length

        if self.config.provider != "cpu":
            raise EngineError("llamacpp is served on CPU only here: llamacpp-cuda needs a CUDA build of "
                              "llama-cpp-python, made in its image")
        hf = AutoConfig.from_pretrained(self.model.load_source, trust_remote_code=self.model.trust_remote_code)
        self.n_ctx = context_length(hf)
        kv = getattr(llama_cpp, f"GGML_TYPE_{KV_TYPES[self.settings.precision]}")
        batch = min(PREFILL_BATCH, self.n_ctx)
        self.llm = llama_cpp.Llama(
            model_path=str(folder / GGUF_FILE), n_ctx=self.n_ctx, n_batch=batch, n_ubatch=batch,
            n_threads=self.settings.threads, n_threads_batch=self.settings.threads, n_gpu_layers=0,
            logits_all=False, flash_attn=False, type_k=kv, type_v=kv, verbose=False,
        )
        self.eos = eos_ids(self.model)
        self.n_vocab = self.llm.n_vocab()

    def load(self) -> None:
        folder = self.prepare()
        verdict = self._read(folder, VERIFY_FILE)
        if verdict.get("model") != self.model.identity or verdict.get("format") != FORMAT_VERSION:
            raise EngineError(f"llamacpp verification in {folder} is for another model or format; "
                              f"delete {folder} to prepare again")
        if self.llm is None:  # prepare verified in this process: that model is the one to serve
            self._open(folder)
        self.verdict, self.artifact_dir = verdict, folder
        self.conversion = self._read(folder, CONVERT_FILE)
        self.precision_settings = {
            "llamacpp.gguf_type": self.conversion.get("outtype"),
            "llamacpp.kv_cache_type": KV_TYPES[self.settings.precision],
        }

    def generate(self, input_ids: list[int], max_new_tokens: int, min_new_tokens: int = 0,
                 streamer=None, should_stop=None) -> list[int]:
        import llama_cpp
        import numpy as np

        if not input_ids:
            raise ValueError("input_ids is empty")
        if max_new_tokens <= 0:
            return []
        if len(input_ids) + max_new_tokens > self.n_ctx:
            raise ValueError(f"{len(input_ids)} prompt + {max_new_tokens} new tokens exceed the context of {self.n_ctx}")
        if streamer is not None:
            streamer.put(input_ids)  # the prompt first, as transformers' streamers hear it
        eos = np.array(self.eos, dtype=np.int64)
        llm, out = self.llm, []
        llm.reset()  # n_tokens = 0: eval drops every cached position, so no prefix is reused
        llm.eval(input_ids)
        while True:
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(self.n_vocab,))
            if len(out) < min_new_tokens and eos.size:
                logits = logits.copy()
                logits[eos] = -np.inf
            token = int(np.argmax(logits))
            out.append(token)
            if streamer is not None:
                streamer.put([token])
            if (len(out) >= max_new_tokens or (token in self.eos and len(out) >= min_new_tokens)
                    or (should_stop is not None and should_stop())):
                break
            llm.eval([token])
        if streamer is not None:
            streamer.end()
        return out

    @staticmethod
    def build_info() -> str:
        """llama.cpp's own account of the CPU features it was compiled for (``AVX2 = 1 | …``)."""
        import llama_cpp

        return llama_cpp.llama_print_system_info().decode(errors="replace").strip()

    def describe(self) -> dict[str, Any]:
        verdict, conversion = self.verdict or {}, self.conversion or {}
        return {
            **super().describe(),
            "runtime": "llama.cpp via llama-cpp-python (CPU build), fed our token ids; greedy = argmax of "
                       "the last position's logits, EOS masked before min_new_tokens",
            "gguf": {k: conversion.get(k) for k in ("architecture", "outtype", "bytes", "convert_seconds",
                                                     "pre_tokenizer", "pre_tokenizer_recognised")},
            "kv_cache_details": {"managed_by": "llama.cpp (reset before every request: no prefix reuse)",
                                 "type_k": KV_TYPES[self.settings.precision],
                                 "type_v": KV_TYPES[self.settings.precision], "n_ctx": getattr(self, "n_ctx", None)},
            "flash_attention": False,
            "build": self.build_info(),
            "verified": bool(verdict.get("verified")),
            "verification": {k: verdict.get(k) for k in ("reference", "cases", "exact", "reason") if k in verdict},
        }
