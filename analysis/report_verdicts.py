"""The report's answers to the research questions, in plain words, with their tables.

Every sentence, table header and caption that presents energy says whether it is measured or
estimated (analysis/provenance.py); measured and estimated figures are never compared: a verdict is
given within each kind. Configurations are compared over complete blocks only (analysis/blocks.py):
the models every compared configuration has; the models left out are returned for the report.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import provenance as P
from analysis import significance as S
from analysis.blocks import complete_block
from analysis.catalog import ALL_VARIABLES, DEPENDENT_VARIABLES, config_sort_key, model_sort_key
from analysis.report_content import Section
from analysis.report_format import cat_name, fmt, pretty
from analysis.report_tables import kinds, kinds_text, prov_table, savings_table, vlabel
from analysis.stats import EFFECT_SIZES, summarise

ENERGY_WORDS = {"energy_global_j": "global energy (CPU + GPU)", "energy_wall_j": "wall energy",
                "energy_cpu_j": "CPU energy"}
USAGE = ("cpu_usage_pct", "ram_usage_pct", "gpu_usage_pct", "gpu_mem_util_pct", "gpu_mem_used_pct")
USAGE_NAMES = {"cpu_usage_pct": "CPU usage", "ram_usage_pct": "RAM usage", "gpu_usage_pct": "GPU usage",
               "gpu_mem_util_pct": "GPU memory utilization", "gpu_mem_used_pct": "GPU memory used"}


# ---------------------------------------------------------------- RQ1

def energy_variable(agg: pd.DataFrame) -> str | None:
    for var in ("energy_global_j", "energy_wall_j", "energy_cpu_j"):
        if var in agg and (pd.to_numeric(agg[var], errors="coerce").notna().any()
                           or (P.provenance_column(var) in agg and (agg[P.provenance_column(var)] == P.MIXED).any())):
            return var
    return None


def _classes(sub: pd.DataFrame, var: str) -> tuple[dict[str, dict[str, float]], list[str]]:
    """Configurations of ``sub`` by provenance -> {config: value}; and the refused configurations."""
    pcol = P.provenance_column(var)
    out: dict[str, dict[str, float]] = {}
    refused = []
    for _, r in sub.iterrows():
        v = pd.to_numeric(r.get(var), errors="coerce")
        p = r.get(pcol, "") if P.is_energy(var) and pcol in sub else ""
        if p == P.MIXED or (pd.isna(v) and f"{var}:" in str(r.get("refused", "") or "")):
            refused.append(r["config"])
        elif pd.notna(v):
            out.setdefault(p if isinstance(p, str) else "", {})[r["config"]] = float(v)
    return out, refused


def _saving_text(sav: pd.DataFrame, cat, var: str, cfg: str) -> str:
    if sav is None or sav.empty:
        return ""
    same = sav["size_category"].isna() if pd.isna(cat) else sav["size_category"] == cat
    ref = sav[(sav["level"] == "category") & (sav["variable"] == var) & (sav["config"] == cfg)
              & (sav["baseline"] == "torch-cpu") & same & sav["saving_pct"].notna()]
    return f", {fmt(ref['saving_pct'].iloc[0], 'pct')} % less than torch-cpu" if len(ref) else ""


def _block_models(sub: pd.DataFrame) -> list[str]:
    if "models" not in sub or sub["models"].dropna().empty:
        return []
    return [m for m in str(sub["models"].dropna().iloc[0]).split(",") if m]


def _verdict(sub, sav, cat, var, what, med=None, stats=None, alpha: float = 0.05) -> str:
    classes, refused = _classes(sub, var)
    unit = "J" if var.endswith("_j") else "s"
    texts = []
    for prov in sorted(classes):
        vals = classes[prov]
        adj = P.word(prov)
        among = f"among configurations with {prov} energy, " if len(classes) > 1 else ""
        if len(vals) < 2:
            (cfg, v), = vals.items()
            art = "an" if (adj or what)[:1] in "aeiou" else "a"
            texts.append(f"{among}only {cfg} has {art} {adj}{what} figure ({fmt(v, var)} {unit}{', ' + prov if prov else ''}): "
                         "nothing to compare it with")
            continue
        cfg = min(vals, key=vals.get)
        text = (f"{among}**{cfg}** needed the least {adj}{what} (mean of model medians {fmt(vals[cfg], var)} {unit}"
                f"{', ' + prov if prov else ''}){_saving_text(sav, cat, var, cfg)}")
        if "output_match" in str(sub.loc[sub["config"] == cfg, "flags"].iloc[0] or ""):
            text += " (but its outputs differ from the torch reference for some models: see the flags)"
        if med is not None:
            runner_up = sorted(vals, key=vals.get)[1]
            res = S.pair(stats, med, _block_models(sub), var, cfg, runner_up, alpha)
            text += "; " + S.phrase(res, runner_up, alpha, f"{adj}{what}")
        cpu = {c: v for c, v in vals.items() if c.endswith("-cpu")}
        if cpu and min(cpu, key=cpu.get) != cfg:
            c2 = min(cpu, key=cpu.get)
            text += f"; among CPU-only configurations {c2} ({fmt(cpu[c2], var)} {unit}{', ' + prov if prov else ''})"
        texts.append(text)
    if len(classes) > 1:
        texts.append(f"{' and '.join(sorted(classes))} {what} figures are not compared with each other")
    if refused:
        texts.append(f"no {what} figure for {', '.join(refused)} (refused: it would mix measured and estimated "
                     "medians, or a model of the block has no value; see aggregated.csv `refused`)")
    return "; ".join(texts)


def rq1(med: pd.DataFrame, agg: pd.DataFrame, sav: pd.DataFrame, evar: str | None,
        stats: pd.DataFrame | None = None, alpha: float = 0.05) -> tuple[Section, list[str]]:
    """RQ1 verdicts and tables, and the 'left out of ...' notes. Each verdict says whether the winner's
    difference from the runner-up is significant in the RQ3 tests (analysis/significance.py)."""
    ek = kinds(med, evar) if evar else set()
    sec = Section("RQ1 - Which engine and provider needs the least energy" + (f" ({kinds_text(ek)})" if ek else "")
          + " and time?")
    if evar is None:
        sec.text("No energy was measured in any run, so only time can be compared.")
    label = ENERGY_WORDS.get(evar or "", "")
    items, notes = [], []
    for cat, sub in agg.groupby("size_category", dropna=False, sort=True):
        parts = [_verdict(sub, sav, cat, var, what, med, stats, alpha) for var, what in ((evar, label), ("time_s", "time"))
                 if var is not None and var in sub]
        parts = [p for p in parts if p]
        left = str(sub["left_out"].iloc[0] or "") if "left_out" in sub else ""
        n = int(sub["n_models"].max()) if "n_models" in sub else 0
        if parts:
            items.append(f"Size {cat_name(cat)}, {n} model(s) sharing every configuration"
                         + (f" (left out: {left})" if left else "") + ": " + "; ".join(parts) + ".")
        if left:
            notes.append(f"left out of the aggregated table and verdict of size {cat_name(cat)}: {left}")
    sec.items(items)
    if evar:
        block = complete_block(med, f"the per-model winners ({kinds_text(ek)} {label})", var=evar)
        notes += block.notes()
        wins, refused, provs, margins = [], [], set(), []
        for model, sub in med[med["model"].isin(block.models)].groupby("model", sort=False):
            classes, bad = _classes(sub, evar)
            if bad or len(classes) != 1:
                refused.append(model)
                continue
            (prov, vals), = classes.items()
            provs.add(prov)
            wins.append(min(vals, key=vals.get))
            if len(vals) > 1:
                margins.append((model, S.pair(stats, med, [model], evar, wins[-1], sorted(vals, key=vals.get)[1],
                                              alpha)))
        if wins:
            counts = pd.Series(wins).value_counts()
            sec.text(f"Per model, the configuration with the lowest median {kinds_text(provs)} {label} (over the "
                  f"{len(block.models)} model(s) that have every configuration): "
                  + ", ".join(f"{c} for {k} of {len(wins)} models" for c, k in counts.items()) + "."
                  + (f" Not counted (measured and estimated {label} across its configurations, or refused): "
                     + ", ".join(refused) + "." if refused else "") + _margins_text(margins, kinds_text(provs),
                                                                                   label, alpha))
        t, kt = prov_table(agg, ["size_category"], evar)
        sec.table(t, f"Mean of median {kt} {label} [J] per size category and configuration, over each category's "
                     "models that have every configuration (the study's Table 4/5 layout)")
    t, _ = prov_table(agg, ["size_category"], "time_s")
    sec.table(t, "Mean of median inference time [s] per size category and configuration, over each category's "
                 "models that have every configuration")
    savings_table(sec, sav, evar)
    return sec, notes


def _margins_text(margins, kind: str, label: str, alpha: float) -> str:
    """' Its lead over the runner-up is significant in 2 of 3 models (...)' for the per-model winners."""
    if not margins:
        return ""
    sig = [m for m, r in margins if r.significant]
    tested = [m for m, r in margins if r.tested]
    untested = {m: "; ".join(sorted(set(r.not_tested.values()))) for m, r in margins if not r.tested}
    if not tested:
        return (f" Whether the winner's lower {kind} {label} than the runner-up's is significant was not tested ("
                + "; ".join(sorted(set(untested.values()))) + ").")
    text = (f" The winner's lower {kind} {label} than the runner-up's is significant (p <= {alpha}, {S.HOW}) "
            f"in {len(sig)} of {len(tested)} tested models" + (f" ({', '.join(sig)})" if 0 < len(sig) < len(tested) else ""))
    if untested:
        text += f"; not tested in {', '.join(untested)}"
    return text + "."


# ---------------------------------------------------------------- RQ2

def rq2(med: pd.DataFrame, stats: pd.DataFrame | None = None, alpha: float = 0.05) -> tuple[Section, list[str]]:
    """RQ2 verdicts (highest and lowest use, and whether their difference is significant) and table."""
    sec = Section("RQ2 - How much CPU, RAM and GPU does each configuration use?")
    present = [v for v in USAGE if v in med and pd.to_numeric(med[v], errors="coerce").notna().any()]
    if not present:
        sec.text("No CPU, RAM or GPU utilization was recorded.")
        return sec, []
    items, notes, table = [], [], {}
    for v in present:
        block = complete_block(med, f"RQ2 ({USAGE_NAMES[v]})", var=v)
        notes += block.notes()
        sub = med[med["model"].isin(block.models)]
        s = pd.to_numeric(sub[v], errors="coerce").groupby(sub["config"]).mean().dropna()
        s = s.loc[sorted(s.index, key=config_sort_key)]
        table[v] = s
        if s.empty:
            continue
        over = f"mean over the {len(block.models)} model(s) that have every configuration of the per-model medians"
        hi, lo = s.idxmax(), s.idxmin()
        if np.isclose(s[hi], s[lo], rtol=1e-6, atol=1e-9):
            items.append(f"{USAGE_NAMES[v]}: the same for every configuration ({fmt(s[hi], v)} %; {over}).")
            continue
        res = S.pair(stats, med, block.models, v, lo, hi, alpha)
        items.append(f"{USAGE_NAMES[v]}: highest with **{hi}** ({fmt(s[hi], v)} %), lowest with **{lo}** "
                     f"({fmt(s[lo], v)} %), {over}; {lo} vs {hi}: {S.phrase(res, hi, alpha, USAGE_NAMES[v], but=False)}.")
    missing = [USAGE_NAMES[v] for v in USAGE if v not in present]
    if missing:
        items.append("Not recorded: " + ", ".join(missing) + ".")
    sec.items(items)
    t = pd.DataFrame(table)
    t = t.loc[sorted(t.index, key=config_sort_key)]
    t.index.name = "config"
    t = t.reset_index()
    t = pd.concat([t[["config"]], pretty(t[present], lambda c: c)], axis=1)
    sec.table(t.rename(columns={v: USAGE_NAMES[v] + " [%]" for v in present}),
              "Resource use per configuration (mean over the models that have every configuration of the median "
              "over repetitions)")
    return sec, notes


# ---------------------------------------------------------------- RQ3

def rq3(stats: pd.DataFrame, alpha: float) -> tuple[Section, list[str]]:
    sec = Section("RQ3 - Are the differences statistically significant?")
    if stats is None or stats.empty:
        sec.text("No tests were run (no variable had data).")
        return sec, []
    summ = summarise(stats, alpha)
    items, notes, left_by = [], [], {}
    for r in summ.itertuples(index=False):
        name = DEPENDENT_VARIABLES.get(r.variable, r.variable)
        if P.is_energy(r.variable):
            sk = {k for k in str(r.provenance).split(" and ") if k}
            refused = stats[(stats["variable"] == r.variable) & (stats["test"] == "refused")]
            if len(refused):
                sk |= {P.MEASURED, P.ESTIMATED}
            name = vlabel(r.variable, sk) if sk else name
        if r.models_left_out:
            left_by.setdefault(r.models_left_out, []).append(name)
        if r.models_tested == 0:
            items.append(f"{name}: not tested for any model of the complete block ({r.not_tested_reason}).")
            continue
        text = (f"{name}: the configurations differ significantly (p <= {alpha}) for **{r.significant_models} of "
                f"{r.models_tested}** tested models (Welch ANOVA for {r.welch_anova}, Kruskal-Wallis for {r.kruskal})")
        if r.pairs_compared:
            text += f"; in those models {r.significant_pairs} of {r.pairs_compared} configuration pairs differ"
        if r.models_not_tested:
            text += f"; {r.models_not_tested} model(s) not tested ({r.not_tested_reason})"
        if r.models_left_out:
            text += f"; left out (not every configuration): {r.models_left_out}"
        items.append(text + ".")
    for models, names in left_by.items():
        notes.append(f"left out of the significance counts of {'; '.join(names)}: {models} (not every "
                     "configuration; each is still tested in stats.csv)")
    sec.items(items)
    sec.text("Which test: Shapiro-Wilk per configuration; if every configuration looks normal (p > "
          f"{alpha}) Welch's ANOVA and Games-Howell pairs, otherwise Kruskal-Wallis and Dunn pairs with Holm "
          "adjustment. Effect sizes: " + "; ".join(f"{k}: {v}" for k, v in EFFECT_SIZES.items())
          + ". Counts cover the models that have every configuration; a test between a measured and an "
          "estimated energy figure is refused. Every test, with its reason, is in stats.csv.")
    t = summ.copy()
    for c in ("median_effect_size_welch_np2", "median_effect_size_kruskal_e2"):
        t[c] = [fmt(v) for v in t[c]]
    sec.table(t, "Summary of the tests per variable (provenance: whether the energy tested is measured or "
                 "estimated)")
    return sec, notes
