"""Where an energy number comes from, defined once for every table, test, figure and sentence.

A run's energy in a domain (cpu, gpu, wall, dram, or global = cpu + gpu) is ``measured`` (a meter or a
hardware counter), ``estimated`` (a model, e.g. TDP x utilization, on a host without RAPL) or
``missing``. Every variable derived from a domain's joules (energy above idle, idle power, per request,
per token, idle share) inherits the domain's provenance.

A number combining runs or models (a median over repetitions, a mean of medians) is ``measured`` or
``estimated`` when all its inputs are; inputs of both kinds make it ``mixed``, and a mixed number is
**refused** (not computed): it is neither a measurement nor an estimate. Likewise a comparison (a
saving, a significance test, a verdict) between a measured and an estimated figure is refused.

Energy above idle (``dynamic_energy_*_j``) can be negative (idle power measured higher than the
inference window's power): such runs carry a flag starting with ``negative_above_idle``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

MEASURED, ESTIMATED, MIXED, MISSING = "measured", "estimated", "mixed", "missing"
NEGATIVE_PREFIX = "negative_above_idle"

# variable -> the energy domain whose provenance it carries
ENERGY_DOMAIN_OF: dict[str, str] = {
    "energy_global_j": "global", "energy_cpu_j": "cpu", "energy_gpu_j": "gpu", "energy_wall_j": "wall",
    "energy_dram_j": "dram", "energy_per_request_j": "global", "energy_per_token_j": "global",
    "idle_power_cpu_w": "cpu", "idle_power_gpu_w": "gpu", "idle_power_wall_w": "wall",
    "dynamic_energy_cpu_j": "cpu", "dynamic_energy_gpu_j": "gpu", "dynamic_energy_wall_j": "wall",
    "dynamic_energy_global_j": "global", "idle_share": "global", "energy_per_solved_j": "global",
}
DYNAMIC = {"dynamic_energy_cpu_j": "cpu", "dynamic_energy_gpu_j": "gpu", "dynamic_energy_wall_j": "wall",
           "dynamic_energy_global_j": "global"}


def is_energy(var: str) -> bool:
    return var in ENERGY_DOMAIN_OF


def provenance_column(var: str) -> str:
    return f"{var}_provenance"


def _truthy(v) -> bool | None:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return None
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    s = str(v).strip().lower()
    if s in ("true", "1", "yes", "1.0"):
        return True
    if s in ("false", "0", "no", "0.0"):
        return False
    return None


def _flagged(flags, dom: str) -> bool:
    return isinstance(flags, str) and f"estimated:{dom}" in [f.strip() for f in flags.split(";")]


def _col(runs: pd.DataFrame, name: str) -> list:
    return runs[name].tolist() if name in runs else [None] * len(runs)


def _domain_estimated(runs: pd.DataFrame, dom: str) -> list[bool | None]:
    """Per run: whether the domain's energy is estimated (its column, else an ``estimated:<dom>`` flag)."""
    est = [_truthy(v) for v in _col(runs, f"energy_{dom}_estimated")]
    flags = _col(runs, "flags")
    return [True if e is None and _flagged(f, dom) else e for e, f in zip(est, flags)]


def run_provenance(runs: pd.DataFrame, var: str) -> pd.Series:
    """Per run: measured / estimated / missing for ``var`` (an energy variable)."""
    dom = ENERGY_DOMAIN_OF[var]
    values = pd.to_numeric(runs[var], errors="coerce").to_numpy(dtype=float) if var in runs \
        else np.full(len(runs), np.nan)
    if dom == "global":
        given = _col(runs, "energy_global_provenance")
        flag = [_truthy(v) for v in _col(runs, "energy_global_estimated")]
        parts = _col(runs, "energy_global_parts")
        per_dom = {d: _domain_estimated(runs, d) for d in ("cpu", "gpu", "wall", "dram")}
        est = []
        for i, (g, f, p) in enumerate(zip(given, flag, parts)):
            if isinstance(g, str) and g in (MEASURED, ESTIMATED):
                est.append(g == ESTIMATED)
            elif f is not None:
                est.append(f)
            else:
                ps = p.split("+") if isinstance(p, str) and p else ["cpu", "gpu"]
                est.append(any(per_dom.get(x, [None] * len(runs))[i] for x in ps))
    else:
        est = _domain_estimated(runs, dom)
    # a table without provenance columns is taken as measured (the report says so)
    out = [MISSING if not np.isfinite(v) else ESTIMATED if e else MEASURED for v, e in zip(values, est)]
    return pd.Series(out, index=runs.index, dtype=object)


def with_provenance(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with a ``<var>_provenance`` column for every energy variable it has values of."""
    out = runs.copy()
    for var in ENERGY_DOMAIN_OF:
        if var in out:
            out[provenance_column(var)] = run_provenance(out, var)
    return out


def combine(values) -> str:
    """Provenance of a number made from inputs of the given provenances (missing inputs ignored)."""
    kinds = {v for v in values if isinstance(v, str) and v != MISSING}
    if not kinds:
        return MISSING
    if kinds <= {MEASURED}:
        return MEASURED
    if kinds <= {ESTIMATED}:
        return ESTIMATED
    return MIXED


def comparable(a: str, b: str) -> bool:
    """Two figures can be compared when both are measured or both are estimated."""
    return a == b and a in (MEASURED, ESTIMATED)


def pair_provenance(a: str, b: str) -> str:
    return a if comparable(a, b) else f"{a} vs {b}"


def word(prov: str) -> str:
    """Adjective for a sentence: 'estimated ', 'measured ', or 'mixed (refused) '."""
    return {ESTIMATED: "estimated ", MEASURED: "measured ", MIXED: "measured+estimated (refused) "}.get(prov, "")


# ---------------------------------------------------------------- energy above idle below zero

def has_negative_flag(flags) -> bool:
    return isinstance(flags, str) and any(f.strip().startswith(NEGATIVE_PREFIX) for f in flags.split(";"))


def _negative_domains(runs: pd.DataFrame) -> list[list[str]]:
    """Per run: the domains whose energy above idle is below zero."""
    cols = {d: pd.to_numeric(runs[v], errors="coerce").to_numpy(dtype=float) for v, d in DYNAMIC.items() if v in runs}
    return [[d for d, vals in cols.items() if vals[i] < 0] for i in range(len(runs))]


def negative_above_idle(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs with energy above idle below zero: run_id, model, config, domains (from the values and from
    any flag starting with ``negative_above_idle``)."""
    rows = []
    for rid, model, cfg, flags, doms in zip(_col(runs, "run_id"), _col(runs, "model"), _col(runs, "config"),
                                             _col(runs, "flags"), _negative_domains(runs)):
        if has_negative_flag(flags):
            for f in str(flags).split(";"):
                f = f.strip()
                if f.startswith(NEGATIVE_PREFIX):
                    d = f[len(NEGATIVE_PREFIX):].lstrip(":=_").split("=")[0]
                    if d and d not in doms:
                        doms.append(d)
        if doms:
            rows.append({"run_id": rid, "model": model, "config": cfg, "domains": ",".join(doms)})
    return pd.DataFrame(rows, columns=["run_id", "model", "config", "domains"])


def mark_negative(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with a ``negative_above_idle:<dom>`` flag on every run whose energy above idle is below
    zero and that carries no such flag yet (the flag then follows the run into every table)."""
    out = runs.copy()
    new = []
    for flags, doms in zip(_col(out, "flags"), _negative_domains(out)):
        flags = flags if isinstance(flags, str) else ""
        if doms and not has_negative_flag(flags):
            flags = ";".join([f for f in flags.split(";") if f] + [f"{NEGATIVE_PREFIX}:{d}" for d in doms])
        new.append(flags)
    out["flags"] = new
    return out
