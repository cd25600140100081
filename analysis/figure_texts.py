"""What a figure says, kept beside it: every figure's title, axis labels and legend texts (read from
the matplotlib objects just before saving) go to ``figures.json`` next to the PNGs, with ``cut_off``:
the texts that reach past the figure's edges after layout (they would be cut off in the PNG). So what
a figure says, and that it fits, can be checked without looking at it. And how many legend columns
fit across a figure.
"""

from __future__ import annotations

import json
from pathlib import Path

SIDECAR = "figures.json"


def figure_texts(fig) -> dict:
    """The words a figure shows: suptitle, axes titles and labels, legend entries; and ``cut_off``,
    those of them that reach past the figure's edges (they would be cut off in the PNG)."""
    sup = fig._suptitle.get_text().replace("\n", " ") if getattr(fig, "_suptitle", None) is not None else ""
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    return {
        "suptitle": sup,
        "titles": [ax.get_title().replace("\n", " ") for ax in fig.axes if ax.get_title()],
        "ylabels": [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()],
        "xlabels": [ax.get_xlabel() for ax in fig.axes if ax.get_xlabel()],
        "legend": [t.get_text() for lg in legends for t in lg.get_texts()],
        "cut_off": cut_off(fig),
    }


def cut_off(fig) -> list[str]:
    """The texts (titles, axis labels, legend entries) that do not fit inside the figure, after layout."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    texts = [getattr(fig, "_suptitle", None)]
    for ax in fig.axes:
        if ax.get_visible():
            texts += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label]
    texts += [t for lg in legends for t in lg.get_texts()]
    out = []
    for t in texts:
        if t is None or not t.get_visible() or not t.get_text():
            continue
        bb = t.get_window_extent(renderer)
        if bb.x0 < box.x0 - 1 or bb.x1 > box.x1 + 1 or bb.y0 < box.y0 - 1 or bb.y1 > box.y1 + 1:
            out.append(t.get_text().replace("\n", " "))
    return out


def record_texts(out_dir: Path, texts: dict[str, dict]) -> Path:
    """Merge ``{png name: texts}`` into the sidecar ``figures.json``."""
    path = Path(out_dir) / SIDECAR
    try:
        have = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        have = {}
    have.update(texts)
    path.write_text(json.dumps(have, indent=1, sort_keys=True))
    return path


def legend_columns(fig, labels: list[str], fontsize: float) -> int:
    """As many legend columns as fit across the figure (a legend wider than its figure is cut off at
    both sides when saved): about 0.55 em per character plus the handle and the gaps."""
    width_pt = fig.get_figwidth() * 72 * 0.95
    per_column = max(len(t) for t in labels) * 0.55 * fontsize + 3.5 * fontsize if labels else 1
    return max(1, min(6, len(labels), int(width_pt // per_column)))
