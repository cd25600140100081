"""Read back what a report says: report.md and report.html split into units (headings, paragraphs,
list items, warnings, captions, figure captions) and tables (caption, header, rows), and the figures'
texts from figures/figures.json. Used to check that every unit presenting energy says how it was got."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

ENERGY = re.compile(r"energy|joule|\[J\]", re.I)
INDEX_COLUMNS = {"size_category", "model", "config", "variable"}


def _cells(line: str) -> list[str]:
    inner = line.strip()[1:-1]
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", inner)]


def parse_md(text: str) -> tuple[list[str], list[dict]]:
    units, tables = [], []
    lines = text.splitlines()
    i, caption = 0, ""
    while i < len(lines):
        line = lines[i].rstrip()
        if line.startswith("|"):
            header = _cells(line)
            rows = []
            i += 2  # header and separator
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            tables.append({"caption": caption, "header": header, "rows": rows})
            caption = ""
            continue
        if not line or line == ">":
            i += 1
            continue
        if line.startswith("*") and line.endswith("*") and not line.startswith("**"):
            caption = line.strip("*")
            units.append(caption)
        elif line.startswith("!["):
            units.append(line[2:line.index("](")])
        else:
            units.append(re.sub(r"^(#+ |> - |> |- )", "", line).replace("**", ""))  # as the HTML shows it
        i += 1
    return units, tables


class _HTML(HTMLParser):
    UNIT = {"h1", "h2", "h3", "h4", "h5", "h6", "p", "li", "caption", "figcaption"}

    def __init__(self):
        super().__init__()
        self.units, self.tables, self.open = [], [], []
        self.row = None
        self.cell = None

    def handle_starttag(self, tag, attrs):
        if tag in self.UNIT:
            self.open.append([tag, []])
        elif tag == "table":
            self.tables.append({"caption": "", "header": [], "rows": []})
        elif tag == "tr":
            self.row = []
        elif tag in ("th", "td"):
            self.cell = [tag, []]
        elif tag == "img":
            self.units.append(dict(attrs).get("alt", ""))

    def handle_endtag(self, tag):
        if tag in self.UNIT and self.open and self.open[-1][0] == tag:
            _, chunks = self.open.pop()
            text = "".join(chunks).strip()
            self.units.append(text)
            if tag == "caption" and self.tables:
                self.tables[-1]["caption"] = text
        elif tag in ("th", "td") and self.cell is not None:
            self.row.append(("th" if self.cell[0] == "th" else "td", "".join(self.cell[1]).strip()))
            self.cell = None
        elif tag == "tr" and self.row is not None and self.tables:
            if all(k == "th" for k, _ in self.row):
                self.tables[-1]["header"] = [v for _, v in self.row]
            else:
                self.tables[-1]["rows"].append([v for _, v in self.row])
            self.row = None

    def handle_data(self, data):
        for _, chunks in self.open:
            chunks.append(data)
        if self.cell is not None:
            self.cell[1].append(data)


def parse_html(text: str) -> tuple[list[str], list[dict]]:
    p = _HTML()
    p.feed(text)
    return p.units, p.tables


def unlabelled(units: list[str], tables: list[dict], word: str = "estimated") -> list[str]:
    """Every unit, table header cell, table row and energy value column that presents energy without
    ``word`` (case-insensitive)."""
    bad = [f"unit: {u}" for u in units if ENERGY.search(u) and word not in u.lower()]
    for t in tables:
        where = f"table '{t['caption'][:60]}'"
        bad += [f"{where} header: {h}" for h in t["header"] if ENERGY.search(h) and word not in h.lower()]
        bad += [f"{where} row: {r}" for r in t["rows"] if ENERGY.search(" ".join(r))
                and word not in " ".join(r).lower()]
        if "[J]" in t["caption"]:  # the table's values are joules: each value column says so
            for j, h in enumerate(t["header"]):
                if h in INDEX_COLUMNS:
                    continue
                cells = [r[j] for r in t["rows"] if j < len(r) and r[j]]
                if word not in h.lower() and not all(word in c.lower() for c in cells):
                    bad.append(f"{where} column {h}: {cells}")
    return bad


def figure_texts(figdir: Path) -> dict[str, dict]:
    texts = json.loads((figdir / "figures.json").read_text())
    pngs = {p.name for p in figdir.glob("*.png")}
    assert pngs == set(texts), f"figures without recorded texts: {pngs ^ set(texts)}"
    return texts


def all_text(t: dict) -> str:
    return " | ".join([t["suptitle"], *t["titles"], *t["ylabels"], *t["xlabels"], *t["legend"]])
