"""compile: the torch model's forward through ``torch.compile`` (inductor), driven by ``generate``.

Mode: inductor's ``default``. ``reduce-overhead`` records CUDA graphs, which hold only for fixed
shapes: with a KV cache every decoding step has a new length, so it would record per length (or need
transformers' static cache, a different cache than the torch reference uses). ``max-autotune(-no-
cudagraphs)`` benchmarks GEMM templates while compiling: minutes more compile for batch-1 decoding
whose matmuls are skinny mat-vecs, where the extern (oneDNN/cuBLAS) kernels already win.

Shapes: ``dynamic=True``, so the sequence length and the cache length are symbolic and one graph
serves every prompt length. torch specializes sizes 0 and 1, so a one-token prompt (prefill with an
empty cache, then a cache of length 1) compiles its own graphs; the compile pass therefore runs a
one-token, a short and a long prompt, each decoding past a cache of length 1 — every graph the
service can need. Measured on tiny: 4 graphs, none added by any other prompt length afterwards.

When: ``torch.compile`` is lazy. The first ``generate`` — the service's warm-up, on the serving
thread, before /ready — runs the compile pass, times it (``compile_seconds`` in /info, hence
run.json) and checks that the compiled model's greedy ids equal eager ``generate``'s (the torch
engine's) on the jit engine's verification cases; on a mismatch the engine refuses to serve. Graphs
compiled after that pass are counted (``recompiles_after_compile``): the measured window must show 0.

inductor on CPU compiles C++ (a C++ compiler and Python's headers); on CUDA it compiles Triton
kernels whose launcher needs a C compiler. Their absence is reported before compiling, naming the
packages, instead of inductor's long trace.
"""

from __future__ import annotations

import os
import shutil
import sysconfig
import time
from pathlib import Path
from typing import Any

from services.inference.engines.base import Engine, EngineError
from services.inference.engines.torch_engine import TorchEngine

COMPILE_MODE = "default"
COMPILE_DYNAMIC = True
#: the Debian packages inductor needs (the CPU image installs them)
TOOLCHAIN_PACKAGES = "g++ python3-dev"


def toolchain_problem(device: str, compilers: tuple[str, ...] | None = None,
                      include_dir: str | None = None) -> str | None:
    """Why inductor cannot compile on ``device`` here (None: it can). ``compilers``: the C++ compilers
    inductor would try (default: its ``cpp.cxx`` setting, from ``CXX``); ``include_dir``: this
    Python's header folder (default: sysconfig's)."""
    problems = []
    if device == "cpu":
        if compilers is None:
            from torch._inductor import config as inductor_config

            compilers = tuple(c for c in inductor_config.cpp.cxx if c)
        if not any(shutil.which(c) for c in compilers):
            problems.append(f"no C++ compiler found (tried {', '.join(compilers) or 'none'}; CXX overrides)")
    else:
        try:
            import triton  # noqa: F401
        except ImportError:
            problems.append("triton is not installed (it comes with torch's CUDA wheels)")
        cc = os.environ.get("CC")
        if not any(shutil.which(c) for c in ([cc] if cc else ["cc", "gcc", "clang"])):
            problems.append("no C compiler found for Triton's launcher (tried " + (cc or "cc, gcc, clang") + ")")
    include_dir = include_dir if include_dir is not None else sysconfig.get_paths()["include"]
    if not (Path(include_dir) / "Python.h").is_file():
        problems.append(f"Python's headers are missing ({Path(include_dir) / 'Python.h'})")
    if not problems:
        return None
    return (f"torch.compile (inductor) cannot compile on {device}: " + "; ".join(problems)
            + f". Install the Debian/Ubuntu packages {TOOLCHAIN_PACKAGES} (or your system's C++ compiler "
            "and python3 headers), or serve with torch-" + ("cpu" if device == "cpu" else "cuda"))


def _dynamo_counts() -> dict[str, int]:
    """Graphs compiled so far in this process, and inductor's on-disk cache hits/misses."""
    from torch._dynamo.utils import counters

    return {
        "graphs": int(counters["stats"]["unique_graphs"]),
        "fxgraph_cache_hit": int(counters["inductor"]["fxgraph_cache_hit"]),
        "fxgraph_cache_miss": int(counters["inductor"]["fxgraph_cache_miss"]),
    }


class CompileEngine(TorchEngine):
    name = "compile"
    #: fp32 only: the compile pass verifies the compiled ids against the fp32 torch engine's
    precisions = ("fp32",)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.compile_record: dict[str, Any] | None = None
        self._graphs_after_compile: int | None = None

    def load(self) -> None:
        import torch

        from services.inference.engines.verification import verification_cases
        from services.models.resolve import context_length

        problem = toolchain_problem(self.config.device)
        if problem:
            raise EngineError(problem)
        super().load()  # the torch engine's model, exactly: fp32, TF32 off, same threads
        model = self.model_obj
        cases = verification_cases(self.model, context_length(model.config))
        # the references from the eager model, before its forward is replaced
        self._cases = [(c, TorchEngine.generate(self, c["input_ids"], c["max_new_tokens"], c["min_new_tokens"]))
                       for c in cases]
        model.forward = torch.compile(model.forward, mode=COMPILE_MODE, dynamic=COMPILE_DYNAMIC)

    def generate(self, input_ids: list[int], max_new_tokens: int, min_new_tokens: int = 0,
                 streamer=None, should_stop=None) -> list[int]:
        if self.compile_record is None:
            self._compile_and_verify()
        return super().generate(input_ids, max_new_tokens, min_new_tokens, streamer, should_stop)

    def _compile_and_verify(self) -> None:
        """Compile every graph the service can need (see the module docstring) and check its ids."""
        before = _dynamo_counts()
        t0 = time.perf_counter()
        mismatches = []
        for case, want in self._cases:
            got = super().generate(case["input_ids"], case["max_new_tokens"], case["min_new_tokens"])
            if got != want:
                first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
                mismatches.append({"prompt_tokens": len(case["input_ids"]), "min_new_tokens": case["min_new_tokens"],
                                   "first_difference_at": first})
        after = _dynamo_counts()
        self.compile_record = {
            "mode": COMPILE_MODE,
            "dynamic": COMPILE_DYNAMIC,
            "compile_seconds": round(time.perf_counter() - t0, 3),
            "graphs_compiled": after["graphs"] - before["graphs"],
            "fxgraph_cache_hit": after["fxgraph_cache_hit"] - before["fxgraph_cache_hit"],
            "fxgraph_cache_miss": after["fxgraph_cache_miss"] - before["fxgraph_cache_miss"],
            "verification_cases": len(self._cases),
            "verification_prompt_tokens": sorted({len(c["input_ids"]) for c, _ in self._cases}),
            "verified": not mismatches,
        }
        self._graphs_after_compile = after["graphs"]
        if mismatches:
            m = mismatches[0]
            raise EngineError(
                f"torch.compile'd {self.model.name} generates other greedy ids than eager torch in "
                f"{len(mismatches)}/{len(self._cases)} verification cases (first: {m['prompt_tokens']}-token "
                f"prompt, at new token {m['first_difference_at']}); serve it with torch-{self.config.provider}"
            )

    def recompiles_after_compile(self) -> int | None:
        """Graphs compiled since the compile pass (None before it): 0 unless a shape escaped it."""
        if self._graphs_after_compile is None:
            return None
        return _dynamo_counts()["graphs"] - self._graphs_after_compile

    def describe(self) -> dict[str, Any]:
        record = self.compile_record or {}
        return {
            **super().describe(),
            "compile": record or None,
            "compile_seconds": record.get("compile_seconds"),
            "verified": bool(record.get("verified")),
            "recompiles_after_compile": self.recompiles_after_compile(),
        }
