"""What the bench prints at the end: one summary per run and a comparison table.

``summarize(run_dir)`` reads only the run folder (like analysis does), so the table can be rebuilt
from any results directory. Every number is defined once, in analysis/quantities.py, and computed by
the same functions as ``make analyze``'s runs.csv: time and tokens/s over the requests' span, energy
with its provenance (estimates say ESTIMATED), idle power, output agreement against torch of the same
provider (torch-cpu for *-cpu, torch-cuda for *-cuda). A missing sensor is never 0 J.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from analysis.quantities import agreement as agreement_of
from analysis.quantities import fp32_config, reference_config
from analysis.catalog import variant_label
from loadgen.runfolder import MANIFEST, REQUESTS, read_requests

COLUMNS = ("run", "config", "model", "status", "requests ok/total", "inference s", "median latency s",
           "TTFT ms p50/p90", "ITL ms p50/p90", "tokens/s", "energy", "idle W", "J/request", "harness CPU", "agreement (same tokens)")


def energy_summary(run_dir: Path, phases: dict, rows: list[dict], manifest: dict) -> tuple[dict, list[dict]]:
    """The run's energy figures (analysis/quantities.py run_energy: the same function ``make analyze``
    uses, so the bench table and runs.csv agree) and each request's own energy, for requests.csv."""
    from analysis.quantities import per_unit, request_energy, run_energy, serving_devices, wall_check
    from loadgen.runfolder import read_series

    series = read_series(run_dir)
    if series.empty or "end" not in (phases.get("inference") or {}):
        return {}, [{} for _ in rows]
    devices = serving_devices(manifest)
    energy = run_energy(series, phases, host_gpus=(manifest.get("host") or {}).get("gpus"), devices=devices)
    ok = [r for r in rows if r["status"] == "ok"]
    energy["energy_per_request_j"] = per_unit(energy["energy_global_j"], len(ok))
    energy["energy_per_token_j"] = per_unit(energy["energy_global_j"], sum(r["completion_tokens"] or 0 for r in ok))
    energy["wall_rest_j"], wall_flags = wall_check(energy)
    energy["flags"] += wall_flags
    per_request = request_energy(series, rows, energy, devices=devices)
    resolved = [p["energy_resolved"] for p in per_request if p["energy_resolved"] is not None]
    energy["requests_resolved"] = sum(resolved) if resolved else None
    return energy, per_request


def energy_cell(manifest: dict) -> str:
    """Global energy of the inference window with where it came from; estimates say so."""
    sensors = manifest.get("sensors") or []
    if not sensors:
        return "n/a (no sensor)"
    energy = (manifest.get("summary") or {}).get("energy") or {}
    joules = energy.get("energy_global_j") if isinstance(energy, dict) else None
    # a sensor that missed a scrape is marked unavailable, yet its other samples still give the window's
    # energy: shown, marked incomplete, rather than hidden as n/a
    if not isinstance(joules, (int, float)) and not any(s.get("available") for s in sensors):
        return "n/a (sensors unavailable)"
    if not isinstance(joules, (int, float)):
        missing = [f.split(":", 1)[1] for f in energy.get("flags") or [] if f.startswith("missing:")] \
            if isinstance(energy, dict) else []
        return f"missing ({', '.join(missing)}: a sensor went away; see flags)" if missing else "n/a (not computed)"
    parts = (energy.get("energy_global_parts") or "").split("+")
    sources = ", ".join(f"{d}: {energy.get(f'energy_{d}_source')}" for d in parts)
    kind = "ESTIMATED" if energy.get("energy_global_estimated") else "measured"
    partial = "" if energy.get("energy_global_complete", True) else ", incomplete"
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
        "config": m.get("variant") or variant_label(m["config"], (m.get("generation") or {}).get("precision")),
        "model": (m.get("model") or {}).get("name"),
        "rep": (m.get("protocol") or {}).get("rep"),
        "status": m["status"],
        "error": m.get("error"),
        "requests_ok": ok,
        "requests_total": (m.get("prompts") or {}).get("count"),
        "inference_s": s.get("time_s"),
        "median_latency_s": s.get("median_latency_s"),
        "median_ttft_s": s.get("median_ttft_s"),
        "ttft_p90_s": s.get("ttft_p90_s"),
        "itl_median_s": s.get("itl_median_s"),
        "itl_p90_s": s.get("itl_p90_s"),
        "tokens_per_s": s.get("tokens_per_s"),
        "energy": energy_cell(m),
        "energy_global_j": (s.get("energy") or {}).get("energy_global_j"),
        "energy_estimated": bool((s.get("energy") or {}).get("energy_global_estimated")),
        "idle_power_w": {d: (s.get("energy") or {}).get(f"idle_power_{d}_w") for d in ("cpu", "gpu", "wall")},
        "energy_per_request_j": (s.get("energy") or {}).get("energy_per_request_j"),
        "harness_share": (m.get("harness_overhead") or {}).get("harness_share_of_service"),
        "flags": list(m.get("flags") or []),
        "stream": bool((m.get("generation") or {}).get("stream")),  # SSE: no token ids to compare
        "scoring": m.get("scoring"),  # the humaneval workload: pass@1 (scored after the run)
    }


def outputs(run_dir: Path) -> dict[int, list[int]]:
    """Generated token ids per prompt index, answered requests only."""
    path = Path(run_dir) / REQUESTS
    if not path.exists():
        return {}
    return {r["index"]: r["token_ids"] for r in read_requests(path) if r["status"] == "ok"}


def agreement(run_dir: Path, ref_dir: Path) -> tuple[int, int]:
    """(prompts reproduced exactly, prompts the reference answered): analysis/quantities.py agreement."""
    return agreement_of(outputs(run_dir), outputs(ref_dir))


def agreement_cells(summaries: list[dict]) -> list[str]:
    """'ref' for a reference itself, 'x% (k/n)' against the same model's torch fp32 run of the same provider
    (same repetition where there is one) and, for a lower precision, against its configuration's fp32 run
    too; '-' where this bench has no such run."""
    refs: dict[tuple[str, str, object], str] = {}
    for s in summaries:
        if fp32_config(s["config"]) is None and s["requests_ok"] and not s.get("stream"):  # every fp32 run can be one
            refs.setdefault((s["model"], s["config"], s["rep"]), s["run_dir"])
            refs.setdefault((s["model"], s["config"], None), s["run_dir"])
    cells = []
    for s in summaries:
        ref_cfg = reference_config(s["config"])
        if s.get("stream"):
            cells.append("- (streamed: no token ids)")
            continue
        if s["config"] == ref_cfg:
            cells.append("ref")
            continue
        parts = []  # against torch fp32, and a lower precision also against its own configuration at fp32
        for ref_of in dict.fromkeys(c for c in (ref_cfg, fp32_config(s["config"])) if c):
            ref = refs.get((s["model"], ref_of, s["rep"])) or refs.get((s["model"], ref_of, None))
            if ref is None or not s["requests_ok"]:
                continue
            same, n = agreement(Path(s["run_dir"]), Path(ref))
            if n:
                parts.append(f"{100 * same / n:.1f}% ({same}/{n}) vs {ref_of}")
        cells.append("; ".join(parts) or "-")
    return cells


def idle_cell(s: dict) -> str:
    """Idle power of the global energy's parts; ESTIMATED where the energy is."""
    watts = [f"{d} {w:.1f}" for d, w in (s.get("idle_power_w") or {}).items() if isinstance(w, (int, float))
             and d != "wall"]
    return "-" if not watts else ", ".join(watts) + (" (ESTIMATED)" if s.get("energy_estimated") else "")


def per_request_cell(s: dict) -> str:
    j = s.get("energy_per_request_j")
    return "-" if not isinstance(j, (int, float)) else f"{j:.3f}" + (" (ESTIMATED)" if s.get("energy_estimated") else "")


def _num(v, fmt: str) -> str:
    return format(v, fmt) if isinstance(v, (int, float)) else "-"


def _ms_pair(median, p90) -> str:
    """'12.3/15.0' (milliseconds, median/p90); '-' where the run has neither."""
    if not isinstance(median, (int, float)) and not isinstance(p90, (int, float)):
        return "-"
    return f"{_num(median * 1e3 if isinstance(median, (int, float)) else None, '.1f')}/" \
           f"{_num(p90 * 1e3 if isinstance(p90, (int, float)) else None, '.1f')}"


def _percent(ratio) -> str:
    return f"{100 * ratio:.1f} %" if isinstance(ratio, (int, float)) else "-"


def comparison_table(summaries: list[dict]) -> str:
    """A Markdown table (also readable as plain text)."""
    rows = []
    for s, agree in zip(summaries, agreement_cells(summaries)):
        rows.append((s["run_id"], s["config"], s["model"] or "-", s["status"],
                     f"{s['requests_ok']}/{s['requests_total']}", _num(s["inference_s"], ".1f"),
                     _num(s["median_latency_s"], ".3f"), _ms_pair(s["median_ttft_s"], s.get("ttft_p90_s")),
                     _ms_pair(s.get("itl_median_s"), s.get("itl_p90_s")),
                     _num(s["tokens_per_s"], ".1f"), s["energy"],
                     idle_cell(s), per_request_cell(s), _percent(s["harness_share"]), agree))
    widths = [max(len(str(c)) for c in col) for col in zip(COLUMNS, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    out = [line(COLUMNS), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in rows]
    solved = solved_lines(summaries)
    return "\n".join(out + (["", *solved] if solved else []))


def solved_lines(summaries: list[dict]) -> list[str]:
    """One line per scored run (the humaneval workload): pass@1, where and how long it was scored, and
    energy and time per solved task (analysis/quantities.py; undefined - said - when nothing is solved)."""
    from analysis.quantities import pass_at_1, per_solved

    out = []
    for s in summaries:
        sc = s.get("scoring")
        if not sc:
            continue
        head = f"- {s['config']} {s['model']} r{s['rep']}: "
        if sc.get("error"):
            out.append(head + f"not scored: {sc['error'].splitlines()[0]}")
            continue
        solved, problems = sc.get("solved"), sc.get("problems")
        iso = (sc.get("isolation") or {}).get("isolation") or "?"
        joules, secs = per_solved(s.get("energy_global_j"), solved), per_solved(s.get("inference_s"), solved)
        est = " (ESTIMATED)" if s.get("energy_estimated") else ""
        out.append(head + f"pass@1 {_percent(pass_at_1(solved, problems))} ({solved}/{problems}; scored in "
                   f"{iso}{', UNSAFE' if sc.get('unsafe') else ''}, {_num(sc.get('scoring_s'), '.0f')} s, after "
                   "the run); energy per solved task "
                   + (f"{joules:.1f} J{est}, time per solved task {secs:.1f} s" if joules is not None
                      else "undefined: nothing solved" if not solved else "- (no energy)"))
    return out


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
    text += ("\nInference s = the inference window: first request sent to last answer received (Locust's "
             "start-up and stop are outside it). Tokens/s = completion tokens of answered requests / that "
             "window. TTFT = a request's send to its first token, ITL = its decode time / (tokens - 1), each "
             "median/p90 over the answered requests, in ms. Energy = CPU + GPU over the window; idle W = mean power of the settled idle windows; "
             "J/request = energy / answered requests; ESTIMATED = contains an estimate, not a measurement. "
             "Definitions: analysis/quantities.py.\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path
