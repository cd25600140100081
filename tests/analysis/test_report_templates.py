"""The report's two renderings come from the same sections through the Jinja2 templates: every
heading, paragraph, list item, warning, caption and table cell of report.md appears in report.html
(and nothing else), text is escaped in HTML (only **strong** and `code` become tags), and a table
cell holding '|' stays one cell in Markdown."""

from __future__ import annotations

import pandas as pd

from analysis.report import Report, render_html, render_md, write
from analysis.report_content import Section
from tests.analysis.reportparse import parse_html, parse_md


def sample() -> Report:
    intro = Section("Title <b>not bold</b>", level=1).text("Analysed **3 runs** from `results/` & more.")
    intro.warning("Read this first", ["**CPU energy is ESTIMATED, not measured**", "a <script>alert(1)</script>"])
    intro.subsection("Other caveats", level=3).items(["one", "two `x|y`"])
    rq = Section("RQ1").items(["**onnx-cpu** needed the least estimated energy"])
    rq.table(pd.DataFrame({"config": ["torch-cpu", "a|b"], "energy [J], estimated": ["1.5", "2"]}), "Mean [J], estimated")
    rq.figure("figures/box_time_s.png", "Inference time: one box per model")
    return Report("wattserve report", [intro, rq, Section("Empty")])


def test_markdown_and_html_say_the_same():
    md, htm = render_md(sample()), render_html(sample())
    units_md, tables_md = parse_md(md)
    units_html, tables_html = parse_html(htm)
    assert [u.replace("`", "") for u in units_md] == units_html  # HTML shows `code` as <code>
    assert tables_md == tables_html
    assert tables_md[0]["rows"] == [["torch-cpu", "1.5"], ["a|b", "2"]]  # '|' escaped, still 2 cells
    assert "# Title <b>not bold</b>" in md and "### Other caveats" in md and "## Empty" in md


def test_html_escapes_text_and_marks_only_strong_and_code():
    htm = render_html(sample())
    assert "<script>" not in htm and "&lt;script&gt;" in htm
    assert "&lt;b&gt;not bold&lt;/b&gt;" in htm
    assert "<strong>3 runs</strong>" in htm and "<code>results/</code>" in htm and "&amp; more" in htm
    assert '<img src="figures/box_time_s.png" alt="Inference time: one box per model">' in htm
    assert htm.startswith("<!DOCTYPE html>") and htm.rstrip().endswith("</html>")
    assert '<td class="text">a|b</td><td class="num">2</td>' in htm  # numbers right-aligned, words left


def test_write_leaves_whole_files_only(tmp_path):
    md, htm = write(sample(), tmp_path)
    assert md.read_text() == render_md(sample()) and htm.read_text() == render_html(sample())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "report.md"]  # no temporary left


def test_a_section_with_a_template_of_its_own(tmp_path, monkeypatch):
    import shutil

    import analysis.report as R

    shutil.copytree(R.TEMPLATES, tmp_path / "templates")
    (tmp_path / "templates" / "sections").mkdir(exist_ok=True)  # git keeps no empty folder
    (tmp_path / "templates" / "sections" / "kv.md.j2").write_text(
        "{% for k, v in section.data.items() %}- {{ k }}: {{ v }}\n{% endfor %}\n")
    (tmp_path / "templates" / "sections" / "kv.html.j2").write_text(
        "<ul>{% for k, v in section.data.items() %}<li>{{ k }}: {{ v }}</li>{% endfor %}</ul>\n")
    monkeypatch.setattr(R, "TEMPLATES", tmp_path / "templates")
    rep = Report("t", [Section("pass@1", template="kv", data={"tiny torch-cpu": "0/164", "<x>": "1"})])
    units_md, _ = parse_md(render_md(rep))
    units_html, _ = parse_html(render_html(rep))
    assert units_md == units_html == ["pass@1", "tiny torch-cpu: 0/164", "<x>: 1"]
    assert "&lt;x&gt;" in render_html(rep)
