"""Complete blocks: configurations are compared only over the models they all share.

A comparison (an aggregated table row set, the savings of a size category, a verdict, the count of
models with a significant test) looks at some configurations over some models. Its *complete block*
is the set of models that have every one of those configurations; any other model is left out of that
comparison, and the report says so ("left out of <comparison>: model X (has only configs ...)"),
because averaging or counting over whatever models each configuration happens to have compares
different workloads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.catalog import config_sort_key, model_sort_key


@dataclass
class Block:
    comparison: str
    configs: list[str]
    models: list[str]
    left_out: dict[str, list[str]] = field(default_factory=dict)  # model -> the configurations it has

    def notes(self) -> list[str]:
        return [left_out_text(self.comparison, m, has, self.configs) for m, has in self.left_out.items()]


def left_out_text(comparison: str, model: str, has: list[str], configs: list[str]) -> str:
    lacks = [c for c in configs if c not in has]
    return (f"left out of {comparison}: model {model} (has only configs {', '.join(has) or 'none'}; "
            f"lacks {', '.join(lacks)})")


def complete_block(frame: pd.DataFrame, comparison: str, var: str | None = None,
                   configs: list[str] | None = None) -> Block:
    """The models of ``frame`` (rows with ``model`` and ``config``) that have every configuration.

    With ``var``, a model has a configuration only where ``var`` has a finite value there, and the
    compared configurations are those with a value for some model. Models with no value at all are not
    part of the comparison (nothing to leave out).
    """
    if var is not None:
        vals = pd.to_numeric(frame[var], errors="coerce") if var in frame else pd.Series(np.nan, index=frame.index)
        frame = frame[np.isfinite(vals.astype(float))]
    has: dict[str, set[str]] = {}
    for m, c in zip(frame["model"], frame["config"]):
        has.setdefault(m, set()).add(c)
    if configs is None:
        configs = sorted({c for cs in has.values() for c in cs}, key=config_sort_key)
    models, left = [], {}
    for m in sorted(has, key=model_sort_key):
        if all(c in has[m] for c in configs):
            models.append(m)
        else:
            left[m] = sorted(has[m], key=config_sort_key)
    return Block(comparison, list(configs), models, left)


def dedupe(notes: list[str]) -> list[str]:
    return list(dict.fromkeys(notes))
