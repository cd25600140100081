"""Is one configuration's difference from another significant, per model? Read from the RQ3 tests
(stats.csv, analysis/stats.py), so the verdicts say what the tests found instead of ranking means alone.

A pair differs significantly in a model when that model's omnibus test (Welch's ANOVA or
Kruskal-Wallis) has p <= alpha and the pair's post-hoc test (Games-Howell, or Dunn with Holm
adjustment) has p <= alpha too. A model whose test was refused (measured vs estimated energy) or not
run (too few runs, identical values) counts as not tested, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

OMNIBUS = ("welch_anova", "kruskal", "refused")
PAIRS = ("games_howell", "dunn")
HOW = "Games-Howell or Dunn-Holm pair after a significant Welch ANOVA or Kruskal-Wallis"


@dataclass
class PairResult:
    significant: list[str] = field(default_factory=list)
    not_significant: list[str] = field(default_factory=list)
    not_tested: dict[str, str] = field(default_factory=dict)  # model -> why
    reversed: list[str] = field(default_factory=list)  # significant, but a's median is the higher one

    @property
    def tested(self) -> int:
        return len(self.significant) + len(self.not_significant) + len(self.reversed)


def _short(reason) -> str:
    text = str(reason or "").strip()
    if text.startswith("refused"):
        return "measured vs estimated energy: refused"
    return text.split(" (")[0].split(";")[0] or "no test"


def pair(stats: pd.DataFrame | None, med: pd.DataFrame, models, var: str, a: str, b: str,
         alpha: float) -> PairResult:
    """How ``a`` being lower than ``b`` in ``var`` tested, model by model (the tests are two-sided: a
    significant pair where ``a``'s median in ``med`` is the higher counts as reversed)."""
    out = PairResult()
    values = {(m, c): v for m, c, v in zip(med["model"], med["config"], pd.to_numeric(med[var], errors="coerce"))}
    for model in models:
        if stats is None or stats.empty:
            out.not_tested[model] = "no tests"
            continue
        mine = stats[(stats["model"] == model) & (stats["variable"] == var)]
        omni = mine[mine["test"].isin(OMNIBUS)]
        p_omni = pd.to_numeric(omni["p_value"], errors="coerce").dropna()
        if p_omni.empty:
            out.not_tested[model] = _short(omni["reason"].iloc[0]) if len(omni) else "fewer than 3 runs"
            continue
        if p_omni.iloc[0] > alpha:
            out.not_significant.append(model)
            continue
        pr = mine[mine["test"].isin(PAIRS) & (((mine["group_a"] == a) & (mine["group_b"] == b))
                                              | ((mine["group_a"] == b) & (mine["group_b"] == a)))]
        p_pair = pd.to_numeric(pr["p_value"], errors="coerce").dropna()
        if p_pair.empty:
            out.not_tested[model] = "no pair test"
        elif p_pair.iloc[0] <= alpha:
            va, vb = values.get((model, a)), values.get((model, b))
            (out.reversed if va is not None and vb is not None and va > vb else out.significant).append(model)
        else:
            out.not_significant.append(model)
    return out


def phrase(res: PairResult, other: str, alpha: float, what: str, but: bool = True) -> str:
    """'significantly lower <what> than <other> in 2 of 3 tested models (...)'; ``but`` opens a
    negative answer with 'but' (after a sentence that named a winner)."""
    n_all = res.tested + len(res.not_tested)
    if res.tested == 0:
        why = "; ".join(sorted(set(res.not_tested.values()))) or "no tests"
        return f"its difference in {what} from {other} was not tested ({why})"
    models = "the 1 tested model" if res.tested == 1 else f"all {res.tested} tested models"
    if len(res.significant) == res.tested:
        head = f"significantly lower {what} than {other} in {models}"
    elif not res.significant:
        head = (("but " if but else "") + f"NOT significantly lower {what} than {other} in "
                + ("the 1 tested model" if res.tested == 1 else f"any of the {res.tested} tested models"))
    else:
        head = (f"significantly lower {what} than {other} in {len(res.significant)} of {res.tested} tested "
                f"models (not in {', '.join(res.not_significant)})")
    text = f"{head} (p <= {alpha}, {HOW})"
    if res.reversed:
        text += f"; significantly HIGHER than {other} in {', '.join(res.reversed)}"
    if res.not_tested:
        text += (f"; {len(res.not_tested)} of {n_all} models not tested ("
                 + ", ".join(f"{m}: {w}" for m, w in res.not_tested.items()) + ")")
    return text
