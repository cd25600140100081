"""What a report section holds, apart from how it looks: headed sections of parts (text, a list, a
warning box, a table, a figure) that the Jinja2 templates in analysis/templates/ lay out as Markdown
and as HTML. Both renderings read the same parts, so report.md and report.html never disagree.

Text may use two inline marks, ``**strong**`` and ```code```; Markdown keeps them and the HTML
template turns them into <strong> and <code> (everything else is escaped).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pandas as pd


_NUMBER = re.compile(r"^[-+]?[\d,.]+( %)?( \[.*\])?( \(estimated\))?$")


@dataclass
class Text:
    text: str
    kind: str = "text"


@dataclass
class Items:
    items: list[str]
    kind: str = "items"


@dataclass
class Warning:
    title: str
    items: list[str]
    kind: str = "warning"


@dataclass
class Table:
    frame: pd.DataFrame
    caption: str = ""
    kind: str = "table"

    @property
    def header(self) -> list[str]:
        return [str(c) for c in self.frame.columns]

    @property
    def rows(self) -> list[list[str]]:
        return [[str(v) for v in row] for row in self.frame.itertuples(index=False)]

    @property
    def align(self) -> list[str]:
        """'num' for a column of numbers (right-aligned in HTML), else 'text'."""
        out = []
        for j in range(len(self.frame.columns)):
            cells = [str(v).strip() for v in self.frame.iloc[:, j] if str(v).strip() not in ("", "nan", "-")]
            out.append("num" if cells and all(_NUMBER.match(c) for c in cells) else "text")
        return out


@dataclass
class Figure:
    path: str  # relative to the report
    caption: str
    kind: str = "figure"


@dataclass
class Section:
    """A heading and its parts. ``template`` names a layout of its own
    (analysis/templates/sections/<template>.md.j2 and .html.j2, given ``section``); by default the
    parts are laid out one after the other."""

    title: str
    level: int = 2
    parts: list = field(default_factory=list)
    template: str = ""
    data: dict = field(default_factory=dict)  # anything a section template of its own needs

    def text(self, text: str) -> "Section":
        self.parts.append(Text(text))
        return self

    def items(self, items: list[str]) -> "Section":
        if items:
            self.parts.append(Items(list(items)))
        return self

    def warning(self, title: str, items: list[str]) -> "Section":
        if items:
            self.parts.append(Warning(title, list(items)))
        return self

    def table(self, frame: pd.DataFrame | None, caption: str = "") -> "Section":
        if frame is not None and len(frame):
            self.parts.append(Table(frame, caption))
        return self

    def figure(self, path: str, caption: str) -> "Section":
        self.parts.append(Figure(path, caption))
        return self

    def subsection(self, title: str, level: int | None = None) -> "Section":
        """A heading inside this section (one level down), returned to be filled."""
        sub = Section(title, level or self.level + 1)
        self.parts.append(sub)
        return sub

    @property
    def kind(self) -> str:
        return "section"
