"""The report's document model and its two renderings: a list of blocks (headings, paragraphs, lists,
warnings, tables, figures) rendered as Markdown and as self-contained HTML (figures linked
relatively), so report.md and report.html never disagree; and the number formatting they share."""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.catalog import SIZE_CATEGORIES


# ---------------------------------------------------------------- document model

@dataclass
class Doc:
    blocks: list[tuple] = field(default_factory=list)

    def h(self, level: int, text: str):
        self.blocks.append(("h", level, text))

    def p(self, text: str):
        self.blocks.append(("p", text))

    def items(self, items: list[str]):
        if items:
            self.blocks.append(("ul", items))

    def warn(self, items: list[str], title: str):
        if items:
            self.blocks.append(("warn", title, items))

    def table(self, df: pd.DataFrame, caption: str = ""):
        if df is not None and len(df):
            self.blocks.append(("table", df, caption))

    def img(self, path: str, caption: str):
        self.blocks.append(("img", path, caption))


def _md_inline(text: str) -> str:
    return text


def _html_inline(text: str) -> str:
    t = html.escape(text, quote=False)
    t = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", t)
    t = re.sub(r"`(.+?)`", r"<code>\1</code>", t)
    return t


def _md_cell(v) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def render_md(doc: Doc) -> str:
    out: list[str] = []
    for b in doc.blocks:
        kind = b[0]
        if kind == "h":
            out += ["#" * b[1] + " " + b[2], ""]
        elif kind == "p":
            out += [b[1], ""]
        elif kind == "ul":
            out += [f"- {i}" for i in b[1]] + [""]
        elif kind == "warn":
            out += [f"> **{b[1]}**", ">"] + [f"> - {i}" for i in b[2]] + [""]
        elif kind == "table":
            df, cap = b[1], b[2]
            if cap:
                out += [f"*{cap}*", ""]
            cols = [str(c) for c in df.columns]
            out.append("| " + " | ".join(_md_cell(c) for c in cols) + " |")
            out.append("|" + "|".join("---" for _ in cols) + "|")
            for row in df.itertuples(index=False):
                out.append("| " + " | ".join(_md_cell(v) for v in row) + " |")
            out.append("")
        elif kind == "img":
            out += [f"![{b[2]}]({b[1]})", "", f"*{b[2]}*", ""]
    return "\n".join(out).rstrip() + "\n"


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
table{border-collapse:collapse;margin:.5em 0 1.2em;font-size:.88em}
th,td{border:1px solid #ccc;padding:.25em .55em;text-align:right}
th{background:#f2f2f2}td:first-child,th:first-child{text-align:left}
.warn{border:2px solid #d9822b;background:#fff4e5;padding:.6em 1em;margin:1em 0;border-radius:4px}
.warn h3{margin:.2em 0 .4em;color:#a24d00}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #ddd}figcaption{font-size:.88em;color:#555}
caption{caption-side:top;text-align:left;font-style:italic;color:#555;padding-bottom:.3em}
code{background:#f4f4f4;padding:0 .2em}
"""


def render_html(doc: Doc, title: str) -> str:
    out = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
           f"<style>{CSS}</style></head><body>"]
    for b in doc.blocks:
        kind = b[0]
        if kind == "h":
            out.append(f"<h{b[1]}>{_html_inline(b[2])}</h{b[1]}>")
        elif kind == "p":
            out.append(f"<p>{_html_inline(b[1])}</p>")
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{_html_inline(i)}</li>" for i in b[1]) + "</ul>")
        elif kind == "warn":
            out.append(f"<div class='warn'><h3>{_html_inline(b[1])}</h3><ul>"
                       + "".join(f"<li>{_html_inline(i)}</li>" for i in b[2]) + "</ul></div>")
        elif kind == "table":
            df, cap = b[1], b[2]
            rows = ["<table>"]
            if cap:
                rows.append(f"<caption>{html.escape(cap)}</caption>")
            rows.append("<tr>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns) + "</tr>")
            for row in df.itertuples(index=False):
                rows.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>")
            rows.append("</table>")
            out.append("".join(rows))
        elif kind == "img":
            out.append(f"<figure><img src='{html.escape(b[1])}' alt='{html.escape(b[2])}'>"
                       f"<figcaption>{html.escape(b[2])}</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- formatting

def fmt(v, var: str = "") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, str):
        return v
    v = float(v)
    if var in ("output_match_rate", "idle_share"):
        return f"{100 * v:.1f} %"
    if var.endswith("_pct") or var.endswith("pct"):
        return f"{v:.1f}"
    if var.endswith("_j") or var.endswith("_w"):
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
    if var.endswith("_s"):
        return f"{v:,.1f}" if abs(v) >= 10 else f"{v:.3g}"
    if var.startswith("p_value") or var == "p":
        return f"{v:.3g}"
    if float(v).is_integer() and abs(v) < 1e15:
        return f"{int(v)}"
    return f"{v:.3g}"


def pretty(df: pd.DataFrame, var_of=None) -> pd.DataFrame:
    """Format every cell; ``var_of(column)`` says which variable's format a column takes."""
    out = df.copy()
    for c in out.columns:
        var = var_of(c) if var_of else c
        out[c] = [fmt(v, var) for v in out[c]]
    return out


def cat_name(cat) -> str:
    if cat is None or (isinstance(cat, float) and math.isnan(cat)):
        return "unknown size"
    return f"category {int(cat)} ({SIZE_CATEGORIES.get(int(cat), '?')})"


def write(doc: Doc, out_dir: Path) -> tuple[Path, Path]:
    md, htm = out_dir / "report.md", out_dir / "report.html"
    md.write_text(render_md(doc))
    htm.write_text(render_html(doc, "wattserve report"))
    return md, htm
