"""report.html as a person sees it, in headless Chromium (Debian ``chromium``; skipped where it is not
installed): every figure loads and lies wholly inside the page at a laptop's width and at a narrow
one, nothing is wider than the window, and a screenshot is written (to $WATTSERVE_SHOTS if set, else
the test's folder) for a person to look at."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from analysis.cli import main
from tests.analysis.runfolders import set_scoring, write_cells

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium (apt-get install chromium)")

PROBE = """<script>
window.addEventListener('load', () => {
  const W = document.documentElement.clientWidth;
  const imgs = [...document.images].map(i => {
    const r = i.getBoundingClientRect();
    return {src: i.getAttribute('src'), loaded: i.complete && i.naturalWidth > 0, left: r.left, right: r.right};
  });
  const out = document.createElement('pre');
  out.id = 'probe';
  out.textContent = JSON.stringify({width: W, scroll: document.documentElement.scrollWidth, imgs});
  document.body.appendChild(out);
});
</script></body>"""


def chromium(*args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--virtual-time-budget=10000", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    cells = {(m, c): {"size_category": cat, "cpu_busy_w": w, "cpu_estimated": True}
             for m, cat in (("codeparrot-small", 1), ("stablecode-completion-alpha-3b-4k", 3))
             for c, w in (("torch-cpu", 40.0), ("onnx-cpu", 30.0), ("ov-cpu", 20.0))}
    for folder in write_cells(root / "results", cells, reps=3):  # scored humaneval runs: the pass@1 section too
        set_scoring(folder, {"torch-cpu": 9, "onnx-cpu": 9, "ov-cpu": 0}[json.loads((folder / "run.json").read_text())["config"]])
    out = root / "out"
    assert main(["--results", str(root / "results"), "--out", str(out), "--quiet", "--jobs", "1"]) == 0
    probe = out / "probe.html"
    probe.write_text((out / "report.html").read_text().replace("</body>", PROBE, 1))
    return out, probe


@pytest.mark.parametrize("width", [1280, 600])
def test_figures_load_and_fit_the_page(report, width):
    out, probe = report
    res = chromium(f"--window-size={width},900", "--dump-dom", probe.as_uri())
    m = re.search(r'<pre id="probe">(.*?)</pre>', res.stdout, re.S)
    assert m, res.stderr[-2000:]
    seen = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert len(seen["imgs"]) >= 7  # box plots, the Pareto scatter, energy vs pass@1, the time series
    assert any(i["src"] == "figures/solved_energy_pass_at_1.png" for i in seen["imgs"])
    bad = [i for i in seen["imgs"] if not i["loaded"] or i["left"] < 0 or i["right"] > seen["width"] + 0.5]
    assert bad == []
    assert seen["scroll"] <= seen["width"] + 1  # nothing wider than the window (wide tables scroll inside)


def test_screenshot(report):
    out, _ = report
    shots = Path(os.environ.get("WATTSERVE_SHOTS") or out)
    shots.mkdir(parents=True, exist_ok=True)
    png = shots / "report.png"
    res = chromium("--window-size=1280,8000", f"--screenshot={png}", (out / "report.html").as_uri())
    assert png.is_file() and png.stat().st_size > 50_000, res.stderr[-2000:]
