"""The report's record of how the numbers were made, from each run's run.json: the host (CPU, RAM,
GPUs, OS), the software (wattserve commit, Python, engines and libraries), the protocol (prompts,
generation limits, idle windows, repetitions, run order) and the sensors (which source measured or
estimated each domain, scrapes, dropped samples, errors). A value that differs between runs is listed
with the number of runs that have it, so a mixed setup is visible instead of hidden in one line.
"""

from __future__ import annotations

from collections import Counter

import pandas as pd

from analysis.report_content import Section

SOFTWARE = ("wattserve", "python", "torch", "transformers", "tokenizers", "onnxruntime", "onnxruntime-gpu",
            "optimum", "optimum-onnx", "optimum-intel", "openvino", "numpy", "fastapi", "uvicorn", "locust",
            "prometheus-client", "psutil", "nvidia-ml-py")


def _get(m: dict, path: str):
    for key in path.split("."):
        if not isinstance(m, dict):
            return None
        m = m.get(key)
    return m


def _text(v) -> str:
    if v is None or v == "" or v == []:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, (list, tuple)):
        return ", ".join(_text(x) for x in v)
    return str(v)


def values(manifests: list[dict], get) -> str:
    """One value, or each value with the number of runs that have it."""
    counts = Counter(_text(get(m)) for m in manifests)
    if len(counts) == 1:
        return next(iter(counts))
    return "; ".join(f"{v} ({n} runs)" for v, n in counts.most_common())


def _gpus(m: dict) -> list[str]:
    return [str(g.get("name", "?")) for g in (_get(m, "host.gpus") or []) if isinstance(g, dict)]


def _ram(m: dict):
    b = _get(m, "host.ram_bytes")
    return f"{b / 2**30:.1f} GiB" if isinstance(b, (int, float)) else None


def _order(m: dict):
    seed = _get(m, "protocol.order_seed")
    return "fixed (as given)" if seed is None else f"randomized, seed {seed}"


def setup_section(manifests: dict[str, dict]) -> Section:
    sec = Section("Setup: host, software, protocol and sensors")
    ms = [m for m in manifests.values() if isinstance(m, dict)]
    if not ms:
        return sec.text("No run folder was read (the runs come from a --table): host, software, protocol and "
                        "sensors are not known here.")
    sec.text(f"From the run.json of the {len(ms)} run(s) analysed; a value that differs between runs is listed "
             "with the number of runs that have it.")
    rows = [("host name", lambda m: _get(m, "host.hostname")), ("CPU", lambda m: _get(m, "host.cpu_model")),
            ("CPU cores (physical / usable)", lambda m: f"{_text(_get(m, 'host.cpu_count_physical'))} / "
                                                        f"{_text(_get(m, 'host.cpu_affinity'))}"),
            ("RAM", _ram), ("GPUs", lambda m: _gpus(m) or "none"), ("OS", lambda m: _get(m, "host.os")),
            ("runner", lambda m: _get(m, "runner"))]
    sec.table(pd.DataFrame([{"host": k, "value": values(ms, f)} for k, f in rows]), "Host")
    present = [p for p in SOFTWARE if any(_get(m, "software") and p in m["software"] for m in ms)]
    sec.table(pd.DataFrame([{"package": p, "version": values(ms, lambda m, p=p: (m.get("software") or {}).get(p))}
                            for p in present]), "Software (run.json software; wattserve = the commit)")
    proto = [("prompts", lambda m: f"{_text(_get(m, 'prompts.name'))}, {_text(_get(m, 'prompts.count'))} prompts, "
                                   f"sha256 {str(_get(m, 'prompts.sha256') or '-')[:12]}"),
             ("generation", lambda m: f"greedy {_text(_get(m, 'generation.greedy'))}, max_length "
                                      f"{_text(_get(m, 'generation.max_length'))}, max_new_tokens "
                                      f"{_text(_get(m, 'generation.max_new_tokens'))}, ignore_eos "
                                      f"{_text(_get(m, 'generation.ignore_eos'))}"),
             ("precision", lambda m: _get(m, "generation.precision")),
             ("engine threads", lambda m: _get(m, "generation.threads")),
             ("idle before / after inference [s]", lambda m: f"{_text(_get(m, 'protocol.warmup_s'))} / "
                                                             f"{_text(_get(m, 'protocol.cooldown_s'))}"),
             ("repetitions", lambda m: _get(m, "protocol.reps")),
             ("run order", _order),
             ("request timeout [s]", lambda m: _get(m, "protocol.request_timeout_s")),
             ("sensors asked for (cpu / gpu / wall)", lambda m: " / ".join(
                 _text(_get(m, f"protocol.sensors.{k}")) for k in ("cpu", "gpu", "wall"))),
             ("TDP / idle watts given", lambda m: f"{_text(_get(m, 'protocol.sensors.tdp_watts'))} / "
                                                  f"{_text(_get(m, 'protocol.sensors.idle_watts'))}"),
             ("sensor scrape interval [s]", lambda m: _get(m, "protocol.sample_interval_s") or "default"),
             ("bench", lambda m: _get(m, "protocol.bench_id")),
             ("study", lambda m: _get(m, "study.name") or "none")]
    sec.table(pd.DataFrame([{"protocol": k, "value": values(ms, f)} for k, f in proto]),
              "Protocol (measured window: the inference phase, first request sent to last answer)")
    sec.table(_sensors(ms), "Sensors per role: the source, whether its energy is estimated (a model, not a meter) "
                            "or measured, and its data quality over all runs")
    return sec


def _sensors(ms: list[dict]) -> pd.DataFrame:
    agg: dict[tuple, dict] = {}
    for m in ms:
        for s in m.get("sensors") or []:
            if not isinstance(s, dict):
                continue
            key = (str(s.get("role") or s.get("name")), str(s.get("source") or s.get("name")))
            a = agg.setdefault(key, {"runs": 0, "estimated": set(), "requested": set(), "available": 0,
                                     "scrapes": 0, "failed": 0, "dropped": 0, "errors": set()})
            a["runs"] += 1
            a["estimated"].add(bool(s.get("estimated")))
            a["requested"].add(_text(s.get("requested")))
            a["available"] += bool(s.get("available"))
            a["scrapes"] += int(s.get("scrapes") or 0)
            a["failed"] += int(s.get("failed_scrapes") or 0)
            a["dropped"] += int(s.get("dropped_samples") or 0)
            if s.get("error"):
                a["errors"].add(str(s["error"])[:80])
    rows = []
    for (role, source), a in agg.items():
        est = a["estimated"]
        rows.append({"role": role, "source": source, "requested": ", ".join(sorted(a["requested"])),
                     "measured or estimated": ("ESTIMATED" if est == {True} else "-" if role == "host" else "measured")
                     if len(est) == 1 else "estimated in some runs",
                     "runs (available)": f"{a['runs']} ({a['available']})", "scrapes": a["scrapes"],
                     "failed scrapes": a["failed"], "dropped samples": a["dropped"],
                     "errors": "; ".join(sorted(a["errors"])) or "-"})
    return pd.DataFrame(rows)
