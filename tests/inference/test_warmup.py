"""Warm-up that covers the workload's shapes on the serving thread, with a fake engine whose first call per
prompt length is slow (a compile), and once through the real service on `tiny`."""

from __future__ import annotations

import json
import threading
import time

import pytest

from services.inference.configs import ServingConfig
from services.inference.engines import EngineSettings
from services.inference.service import PAPER_PROMPTS, InferenceService, warmup_shapes


class CompilingEngine:
    """Costs ``compile_s`` the first time it sees a (thread, prompt length), as per-thread, per-shape
    compilation does; records which thread ran each call."""

    def __init__(self, compile_s: float = 0.05, slow_passes: int = 1):
        self.compile_s, self.slow_passes = compile_s, slow_passes
        self.seen: dict[tuple[str, int], int] = {}
        self.calls: list[tuple[str, int]] = []

    def generate(self, ids, max_new_tokens, min_new_tokens=0, streamer=None):
        key = (threading.current_thread().name, len(ids))
        self.calls.append(key)
        self.seen[key] = self.seen.get(key, 0) + 1
        if self.seen[key] <= self.slow_passes:
            time.sleep(self.compile_s)
        return [1] * max_new_tokens


class HalvingEngine:
    """Each call takes half the time of the one before (0.8 s, 0.4 s, …): it never stops getting faster."""

    def __init__(self):
        self.cost = 0.8

    def generate(self, ids, max_new_tokens, min_new_tokens=0, streamer=None):
        time.sleep(self.cost)
        self.cost /= 2
        return [1] * max_new_tokens


def service_with(engine, warmup=2) -> InferenceService:
    svc = InferenceService(ServingConfig.parse("torch-cpu"), model=None, settings=EngineSettings(threads=1),
                           warmup=warmup)
    svc.engine = engine
    return svc


@pytest.mark.parametrize("slow_passes, warmup, passes", [(1, 2, 3), (2, 3, 4)])
def test_every_length_warms_on_the_serving_thread_until_no_compile(slow_passes, warmup, passes):
    """slow_passes=2: TorchScript's profiling executor (one profiled run, then the optimized graph is
    built): two slow passes in a row, which the default minimum of 3 passes covers."""
    engine = CompilingEngine(compile_s=0.05, slow_passes=slow_passes)
    svc = service_with(engine, warmup=warmup)
    shapes = [[7] * n for n in (3, 5, 9)]
    record = svc.warm_up(shapes)
    assert record["prompt_lengths"] == [3, 5, 9] and record["new_tokens"] == 8
    assert record["passes"] == passes and record["settled"] is True, record  # the pass after the drop is flat
    assert record["pass_seconds"][slow_passes] < 0.5 * record["pass_seconds"][slow_passes - 1]
    assert record["seconds"] >= sum(record["pass_seconds"]) * 0.99
    assert {n for _, n in engine.calls} == {3, 5, 9}
    threads = {t for t, _ in engine.calls}
    assert len(threads) == 1 and next(iter(threads)).startswith("wattserve-generate")
    # a request afterwards runs on that same thread and compiles nothing
    before = len(engine.seen)
    svc.executor.submit(engine.generate, [7] * 5, 8).result()
    assert len(engine.seen) == before and engine.calls[-1][0] in threads


def test_minimum_passes_and_the_cap():
    svc = service_with(CompilingEngine(compile_s=0.0), warmup=3)  # nothing to compile: stops at the minimum
    assert svc.warm_up([[1, 2]])["passes"] == 3
    svc = service_with(HalvingEngine(), warmup=1)  # every pass twice as fast as the last: capped at 8
    record = svc.warm_up([[1, 2]])
    assert (record["passes"], record["settled"]) == (8, False), record
    assert service_with(CompilingEngine(), warmup=0).warm_up([[1]])["passes"] == 0


def test_shapes_are_the_workloads_distinct_lengths(tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("\n".join(json.dumps({"task_id": str(i), "new_prompt": "x" * n})
                                 for i, n in enumerate((4, 2, 4, 9, 2))) + "\n")
    shapes = warmup_shapes(lambda text: list(range(len(text))), prompts)
    assert [len(s) for s in shapes] == [2, 4, 9]
    assert [len(s) for s in warmup_shapes(lambda t: [0] * 6, tmp_path / "missing.jsonl")] == [6]  # fallback


def test_real_service_records_its_warmup_in_info(tiny):
    from transformers import AutoTokenizer

    svc = InferenceService(ServingConfig.parse("torch-cpu"), tiny, EngineSettings(threads=1), warmup=1)
    svc.load()
    try:
        info = svc.info()["warmup"]
        tok = AutoTokenizer.from_pretrained(tiny.load_source)
        lengths = {len(tok(json.loads(line)["new_prompt"])["input_ids"]) for line in PAPER_PROMPTS.open()}
        assert info["prompt_lengths"] == sorted(lengths) and len(lengths) > 3
        assert 1 <= info["passes"] <= 8 and info["seconds"] > 0
        generation = svc.generate("def add(a, b):", max_new_tokens=4)
        assert generation.completion_tokens <= 4
    finally:
        svc.executor.shutdown()
