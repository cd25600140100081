"""What the bench prints at the end: one summary per run and a comparison table.

``summarize(run_dir)`` reads only the run folder (like analysis does), so the table can be rebuilt
from any results directory. Energy is shown as missing until sensors exist: a missing sensor is
never 0 J. Output agreement is the share of prompts whose generated token ids equal those of the
torch-cpu run of the same model in the same bench (greedy decoding: every engine should match).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from loadgen.runfolder import MANIFEST, REQUESTS, read_requests

REFERENCE = "torch-cpu"
COLUMNS = ("run", "config", "model", "status", "requests ok/total", "inference s", "median latency s",
           "tokens/s", "energy", "harness CPU", f"agreement vs {REFERENCE}")


def energy_summary(run_dir: Path, phases: dict) -> dict:
    """Energy of the inference window from the run's sampled series (the analysis library's
    functions, so the bench table and ``make analyze`` agree): global = CPU + GPU as in the study,
    every domain with its source, whether it is estimated, idle power and dynamic energy."""
    from analysis.energy import dynamic_energy, global_energy, idle_power, load_series, window_energy

    series = load_series(run_dir)
    inf, before = phases.get("inference") or {}, phases.get("idle_before") or {}
    if series.empty or "end" not in inf:
        return {}
    readings = window_energy(series, inf["start"], inf["end"])
    idle = idle_power(series, before["start"], before["end"]) if "end" in before else {}
    duration = inf["end"] - inf["start"]
    total = global_energy(readings)
    return {
        "inference_j": total.joules,
        "estimated": total.estimated,
        "complete": total.complete,
        "missing": list(total.missing),
        "domains": {
            d: {"joules": r.joules, "source": r.source, "estimated": r.estimated, "method": r.method,
                "complete": r.complete, "idle_w": idle.get(d),
                "dynamic_j": dynamic_energy(r, idle.get(d), duration)}
            for d, r in readings.items()
        },
    }


def energy_cell(manifest: dict) -> str:
    """Global energy of the inference window with where it came from; estimates say so."""
    sensors = manifest.get("sensors") or []
    if not sensors:
        return "n/a (no sensor)"
    if not any(s.get("available") for s in sensors):
        return "n/a (sensors unavailable)"
    energy = (manifest.get("summary") or {}).get("energy") or {}
    joules = energy.get("inference_j") if isinstance(energy, dict) else None
    if not isinstance(joules, (int, float)):
        missing = energy.get("missing") if isinstance(energy, dict) else None
        return f"missing ({', '.join(missing)}: a sensor went away; see flags)" if missing else "n/a (not computed)"
    sources = ", ".join(f"{d}: {v['source']}" for d, v in sorted((energy.get("domains") or {}).items())
                        if d in ("cpu", "gpu") and v.get("joules") is not None)
    kind = "ESTIMATED" if energy.get("estimated") else "measured"
    partial = "" if energy.get("complete") else ", incomplete"
    return f"{joules:.1f} J ({kind}; {sources}{partial})"


def summarize(run_dir: Path) -> dict:
    """One run's headline numbers, from its folder alone."""
    run_dir = Path(run_dir)
    m = json.loads((run_dir / MANIFEST).read_text())
    s = m.get("summary") or {}
    rows = read_requests(run_dir / REQUESTS) if (run_dir / REQUESTS).exists() else []
    ok = sum(r["status"] == "ok" for r in rows)
    return {
        "run_id": m["run_id"],
        "run_dir": str(run_dir),
        "config": m["config"],
        "model": (m.get("model") or {}).get("name"),
        "rep": (m.get("protocol") or {}).get("rep"),
        "status": m["status"],
        "error": m.get("error"),
        "requests_ok": ok,
        "requests_total": (m.get("prompts") or {}).get("count"),
        "inference_s": s.get("time_s"),
        "median_latency_s": s.get("median_latency_s"),
        "tokens_per_s": s.get("tokens_per_s"),
        "energy": energy_cell(m),
        "harness_share": (m.get("harness_overhead") or {}).get("harness_share_of_service"),
        "flags": list(m.get("flags") or []),
    }


def outputs(run_dir: Path) -> dict[int, list[int]]:
    """Generated token ids per prompt index, answered requests only."""
    path = Path(run_dir) / REQUESTS
    if not path.exists():
        return {}
    return {r["index"]: r["token_ids"] for r in read_requests(path) if r["status"] == "ok"}


def agreement(run_dir: Path, ref_dir: Path) -> tuple[int, int]:
    """(prompts with identical token ids, prompts answered by both)."""
    a, b = outputs(run_dir), outputs(ref_dir)
    common = a.keys() & b.keys()
    return sum(a[i] == b[i] for i in common), len(common)


def agreement_cells(summaries: list[dict]) -> list[str]:
    """'ref' for the reference itself, 'x% (k/n)' against the same model's torch-cpu run (same
    repetition where there is one), '-' where this bench has no such run."""
    refs: dict[tuple[str, object], str] = {}
    for s in summaries:
        if s["config"] == REFERENCE and s["requests_ok"]:
            refs.setdefault((s["model"], s["rep"]), s["run_dir"])
            refs.setdefault((s["model"], None), s["run_dir"])
    cells = []
    for s in summaries:
        if s["config"] == REFERENCE:
            cells.append("ref")
            continue
        ref = refs.get((s["model"], s["rep"])) or refs.get((s["model"], None))
        if ref is None or not s["requests_ok"]:
            cells.append("-")
            continue
        same, n = agreement(Path(s["run_dir"]), Path(ref))
        cells.append(f"{100 * same / n:.1f}% ({same}/{n})" if n else "-")
    return cells


def _num(v, fmt: str) -> str:
    return format(v, fmt) if isinstance(v, (int, float)) else "-"


def _percent(ratio) -> str:
    return f"{100 * ratio:.1f} %" if isinstance(ratio, (int, float)) else "-"


def comparison_table(summaries: list[dict]) -> str:
    """A Markdown table (also readable as plain text)."""
    rows = []
    for s, agree in zip(summaries, agreement_cells(summaries)):
        rows.append((s["run_id"], s["config"], s["model"] or "-", s["status"],
                     f"{s['requests_ok']}/{s['requests_total']}", _num(s["inference_s"], ".1f"),
                     _num(s["median_latency_s"], ".3f"), _num(s["tokens_per_s"], ".1f"), s["energy"],
                     _percent(s["harness_share"]), agree))
    widths = [max(len(str(c)) for c in col) for col in zip(COLUMNS, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    out = [line(COLUMNS), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in rows]
    return "\n".join(out)


def write_report(results: Path, summaries: list[dict], header: str, started: float) -> Path:
    """``RESULTS/bench-<UTC timestamp>.md`` with the table and the runs' errors; never overwritten."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started))
    path = Path(results) / f"bench-{stamp}.md"
    n = 1
    while path.exists():
        n += 1
        path = Path(results) / f"bench-{stamp}-{n}.md"
    errors = [f"- `{s['run_id']}`: {s['error'].splitlines()[0]}" for s in summaries if s.get("error")]
    text = f"# wattserve bench {stamp}\n\n{header}\n\n{comparison_table(summaries)}\n"
    if errors:
        text += "\n## Errors\n\n" + "\n".join(errors) + "\n"
    text += ("\nTokens/s = completion tokens of answered requests / span from the first request's start to "
             "the last one's end. Inference s = the inference window (Locust start to exit).\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path
