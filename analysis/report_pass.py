"""The report's section on energy per solved task (the humaneval workload): per model a table of each
configuration's pass@1 beside the published one, its energy and time per solved task (measured or
estimated, undefined - said - when nothing is solved), the configurations that are cheaper and at
least as correct, the energy-vs-pass@1 scatter, and a non-equivalence warning where a configuration's
tokens equal torch's but its pass@1 does not. Present only when runs of the humaneval workload are."""

from __future__ import annotations

import pandas as pd

from analysis import provenance as P
from analysis import solved as S
from analysis.catalog import config_sort_key, model_sort_key
from analysis.report_content import Section
from analysis.report_format import fmt
from analysis.report_tables import REFUSED_MIXED

UNDEFINED = "undefined: nothing solved"


def _pct(v) -> str:
    return fmt(v, "pass_at_1")


def _pass_cell(r) -> str:
    text = f"{_pct(r['pass_at_1'])} ({fmt(r['solved'])}/{fmt(r['problems'])})"
    if pd.notna(r.get("pass_min")) and r["pass_min"] != r["pass_max"]:
        text += f"; repetitions differ: {_pct(r['pass_min'])} to {_pct(r['pass_max'])}"
    return text


def _energy_cell(r, var: str, said_in_header: bool) -> str:
    prov = r.get(P.provenance_column("energy_global_j")) if P.is_energy(var) else None
    if prov == P.MIXED:
        return REFUSED_MIXED
    if var in ("energy_per_solved_j", "time_per_solved_s") and not (pd.to_numeric(r["solved"], errors="coerce") > 0):
        return UNDEFINED
    value = fmt(r.get(var), var)
    if not value:
        return "missing"
    return value + (" (estimated)" if prov == P.ESTIMATED and not said_in_header else "")


def _published(pub: dict | None) -> tuple[str, str]:
    """(the cell, the sentence with its source)."""
    if not pub:
        return "not published", "published pass@1: none recorded (the model is not in the registry)"
    if pub["value"] is None:
        return "not published", f"published pass@1: none ({pub['source']})" if pub["source"] else \
            "published pass@1: none (not published)"
    return _pct(pub["value"]), f"published pass@1 {_pct(pub['value'])} ({pub['source']})"


def energy_kind(rows: pd.DataFrame) -> str:
    """estimated / measured / measured or estimated: the kind of the rows' energy (global energy's
    provenance, which energy per solved task inherits even where it is undefined)."""
    col = P.provenance_column("energy_global_j")
    kinds = {k for k in rows[col].dropna() if k != P.MISSING} if col in rows else set()
    return "estimated" if kinds == {P.ESTIMATED} else "measured" if kinds == {P.MEASURED} else \
        "measured or estimated" if kinds else ""


def model_table(rows: pd.DataFrame, pub: dict | None) -> pd.DataFrame:
    cell, _ = _published(pub)
    ekind = energy_kind(rows)
    uniform = ekind in ("estimated", "measured")
    out = []
    for _, r in rows.sort_values("config", key=lambda s: s.map(config_sort_key)).iterrows():
        out.append({
            "configuration": r["config"],
            "runs": fmt(r["n_runs"]),
            "pass@1 (solved/problems)": _pass_cell(r),
            "published pass@1": cell,
            f"global energy [J]{', ' + ekind if ekind else ''}": _energy_cell(r, "energy_global_j", uniform),
            f"energy per solved task [J]{', ' + ekind if ekind else ''}": _energy_cell(r, "energy_per_solved_j",
                                                                                     uniform),
            "time per solved task [s]": _energy_cell(r, "time_per_solved_s", uniform),
            "flags": ("NON-EQUIVALENT to " + r["non_equivalent"]) if r.get("non_equivalent") else "",
        })
    frame = pd.DataFrame(out)
    return frame if frame["flags"].astype(bool).any() else frame.drop(columns="flags")


def front_sentence(pts: pd.DataFrame, model: str) -> str | None:
    g = pts[pts["model"] == model]
    if g.empty:
        return None
    parts = []
    for kind, k in g.groupby("provenance", sort=True):
        on, off = list(k.loc[k["on_front"], "config"]), list(k.loc[~k["on_front"], "config"])
        what = f"{kind} energy" if kind else "energy"
        if len(k) == 1:
            parts.append(f"{on[0]} alone ({what}): nothing to compare it with")
            continue
        text = f"cheaper and at least as correct ({what}): **{', '.join(on)}**"
        if off:
            text += f"; beaten on both (another is no more expensive and solves at least as many): {', '.join(off)}"
        parts.append(text)
    return f"{model}: " + "; ".join(parts) + "."


def pass_section(runs: pd.DataFrame, figures: list[tuple[str, str]], published: dict | None = None) -> Section | None:
    """The section, or None without scored humaneval runs."""
    table = S.per_config(runs)
    if table.empty:
        return None
    published = S.published_pass_at_1() if published is None else published
    he = S.humaneval_runs(runs)
    kind = energy_kind(table)
    sec = Section("Energy per solved task (HumanEval" + (f"; {kind} energy)" if kind else ")"))
    iso = sorted({str(x) for x in he.get("scoring_isolation", pd.Series(dtype=str)).dropna()})
    sec.text("Runs of the `humaneval` workload: the 164 HumanEval problems, whole prompts, greedy; each completion "
             "is scored with its problem's tests in a sandbox after the run (isolation: "
             + (", ".join(iso) if iso else "not recorded") + "), outside every measured window. "
             "**pass@1** = problems solved / 164 (a prompt too long for the model's context is skipped and counts "
             "as not solved). **Energy per solved task** = the run's global energy / problems solved, measured or "
             "estimated as that energy is; **time per solved task** = inference time / problems solved; both are "
             f"'{UNDEFINED}' where a run solved no problem (never a division by zero). Medians over repetitions.")
    unsafe = he[he["flags"].astype(str).str.contains("scoring_unsafe_local", regex=False)]
    if len(unsafe):
        sec.warning("Scored without a sandbox", [f"{len(unsafe)} run(s) were scored UNSAFE-LOCAL "
                                                 "(--unsafe-local-exec): completions ran unisolated"])
    ne = table[table["non_equivalent"].astype(bool)]
    sec.warning("Non-equivalence", [
        f"{r['model']} {r['config']}: its generated tokens equal {r['non_equivalent']}'s, but its pass@1 "
        f"({_pct(r['pass_at_1'])}) does not; the same tokens must solve the same problems, so scoring or the "
        "runs differ in something they must not" for _, r in ne.iterrows()])
    pts = S.fronts(table)
    for model in sorted(table["model"].unique(), key=model_sort_key):
        rows = table[table["model"] == model]
        _, said = _published(published.get(model))
        sub = sec.subsection(model, level=3)
        kind = energy_kind(rows)
        sub.table(model_table(rows, published.get(model)),
                  f"{model}: pass@1 measured here beside the {said}; energy: "
                  + ({"estimated": "estimated (no meter: a model, not a measurement)", "measured": "measured",
                      "": "missing"}.get(kind, "measured or estimated as marked, never compared")))
        if (sentence := front_sentence(pts, model)) is not None:
            sub.text(sentence)
    for var, path in figures:
        if var == "solved":
            kinds = set(pts["provenance"]) - {""}
            sec.figure(path, "Global energy of the HumanEval run (median over repetitions"
                       + (", estimated energy: triangles" if P.ESTIMATED in kinds else "")
                       + ") against pass@1, per model; filled: no other configuration is cheaper and at least "
                       "as correct")
    return sec
