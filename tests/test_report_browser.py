"""The HTML report as a user sees it: opened in Debian's headless chromium, the results table
and every plot render (the plots are not blank, and are the report's own images).

Two chromium runs on the same page size: one dumps the DOM of a copy of the report with a
script that measures the table and the images after load (rows, natural sizes, where they lie
on the page), one takes a screenshot of the report itself; the measured boxes say where to look
in the screenshot.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mawsflow.evaluation.results import EvalResult, write_result
from mawsflow.steps.report import ReportConfig
from mawsflow.steps.report import run as write_report
from trunk_artifacts import write_trunk_output

WIDTH = 1000
# Appended to a copy of the report: after load, the rendered table and images as JSON in a
# <script type="application/json"> element, which takes no room on the page.
MEASURE = """<script>
window.addEventListener("load", () => {
  const box = (e) => {
    const r = e.getBoundingClientRect();
    return {x: r.left + scrollX, y: r.top + scrollY, width: r.width, height: r.height};
  };
  const table = document.querySelector("table");
  const out = {
    rows: table ? [...table.rows].map((tr) => [...tr.cells].map((c) => c.textContent.trim())) : [],
    table: table ? box(table) : null,
    images: [...document.images].map((img) => ({
      alt: img.alt, src: img.src, complete: img.complete,
      naturalWidth: img.naturalWidth, naturalHeight: img.naturalHeight, ...box(img)})),
    page: {width: document.documentElement.scrollWidth,
           height: document.documentElement.scrollHeight},
  };
  const sink = document.createElement("script");
  sink.type = "application/json";
  sink.id = "measured";
  sink.textContent = JSON.stringify(out);
  document.body.appendChild(sink);
});
</script>"""


def _chromium() -> str:
    """The browser, or a skip where it cannot be installed here; as root (CI) it must be."""
    browser = shutil.which("chromium")
    if browser:
        return browser
    if os.geteuid() != 0:
        pytest.skip(
            "chromium is missing and cannot be installed without root: sudo apt-get install "
            "chromium (scripts/setup.sh --test does, as root)"
        )
    pytest.fail("chromium is missing: scripts/setup.sh --test installs it (apt-get install)")


def _run_chromium(browser: str, profile: Path, height: int, *args: str) -> str:
    command = [
        browser,
        "--headless",
        "--no-sandbox",  # root in CI and containers
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--user-data-dir={profile}",
        f"--window-size={WIDTH},{height}",
        # Runs the page's timers and load handlers to the end before dumping or shooting.
        "--virtual-time-budget=5000",
        *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"chromium failed ({done.returncode}): {done.stderr[-2000:]}"
    return done.stdout


def _fixture_report(tmp: Path) -> tuple[Path, dict, list[EvalResult]]:
    """A report written by the report step from step outputs as the pipeline leaves them:
    finetune, linear-probe and low-shot results for the three rows, and two training outputs
    with loss curves long enough to be curves."""
    mae = write_trunk_output(tmp / "mae", step="mae")
    maws = write_trunk_output(tmp / "maws", step="wsp", init="mae")
    steps = list(range(10, 310, 10))
    for out, start in ((mae, 1.2), (maws, 3.8)):
        losses = [start * (0.4 + 0.6 * np.exp(-s / 80)) for s in steps]
        (out / "history.json").write_text(
            json.dumps({"samples_per_step": 32, "steps": steps, "loss": losses})
        )

    def lowshot(base: float) -> dict:
        spread = {"std": 1.5, "min": base - 2, "max": base + 2, "runs": [base - 1.5, base + 1.5]}
        return {str(k): {"mean": base + k, **spread} for k in (1, 5, 10)}

    results = []
    for row, top1 in (("MAE", 71.3), ("WSP", 74.6), ("MAE→WSP", 76.2)):
        shots = {f"Fashion-MNIST {k}-shot": top1 - 30 + k for k in (1, 5, 10)}
        results += [
            EvalResult("finetune", f"finetune {row}", row, {"top1": top1}, {"Fashion-MNIST": top1}),
            EvalResult(
                "linear-probe", f"linear {row}", row, {}, {"Fashion-MNIST Linear": top1 - 9}
            ),
            EvalResult("lowshot", f"low-shot {row}", row, {}, shots, lowshot=lowshot(top1 - 30)),
        ]
    paths = []
    for i, result in enumerate(results):
        write_result(str(tmp / f"result{i}"), result)
        paths.append(str(tmp / f"result{i}"))
    out = tmp / "report"
    summary = write_report(ReportConfig(tuple(paths), (str(mae), str(maws)), str(out)))
    return out / "report.html", summary, results


def _decode_data_uri(src: str) -> Image.Image:
    match = re.fullmatch(r"data:image/png;base64,([A-Za-z0-9+/=]+)", src)
    assert match, f"a plot is not an inline PNG: {src[:60]}…"
    return Image.open(io.BytesIO(base64.b64decode(match.group(1)))).convert("RGB")


def _crop(shot: Image.Image, box: dict) -> np.ndarray:
    left, top = round(box["x"]), round(box["y"])
    region = shot.crop((left, top, left + round(box["width"]), top + round(box["height"])))
    return np.asarray(region.convert("RGB"), dtype=np.int16)


def test_the_report_renders_its_table_and_plots_in_chromium(tmp_path):
    browser = _chromium()
    report, summary, results = _fixture_report(tmp_path)
    measured_page = tmp_path / "measured.html"
    measured_page.write_text(
        report.read_text(encoding="utf-8").replace("</body>", MEASURE + "</body>"),
        encoding="utf-8",
    )

    dom = _run_chromium(browser, tmp_path / "profile", 800, "--dump-dom", measured_page.as_uri())
    found = re.search(r'<script type="application/json" id="measured">(.*?)</script>', dom, re.S)
    assert found, "the page's load handler never ran: no measurements in the dumped DOM"
    measured = json.loads(found.group(1))

    # The table: a header row, then every row the results fill, with their values.
    rows = {cells[0]: cells[1:] for cells in measured["rows"][1:]}
    header = measured["rows"][0]
    for result in results:
        assert result.pretraining in rows, f"row {result.pretraining!r} missing: {list(rows)}"
        for column, value in result.table.items():
            assert column in header, f"column {column!r} missing: {header}"
            cell = rows[result.pretraining][header.index(column) - 1]
            assert f"{value:.1f}" in cell, f"{result.pretraining} / {column}: {cell!r}"

    # Every plot the report made (the loss curves and low-shot against K) is a loaded image.
    images = measured["images"]
    assert sorted(image["alt"] for image in images) == sorted(summary["plots"])
    assert len(images) >= 2
    for image in images:
        assert image["complete"] and image["naturalWidth"] > 0 and image["naturalHeight"] > 0, (
            f"plot {image['alt']!r} did not decode in the browser: "
            f"{ {k: v for k, v in image.items() if k != 'src'} }"
        )
        assert image["width"] > 0 and image["height"] > 0

    # The screenshot of the report itself, tall enough to hold the whole page.
    height = measured["page"]["height"]
    shot_path = tmp_path / "report.png"
    _run_chromium(
        browser, tmp_path / "profile", height, f"--screenshot={shot_path}", report.as_uri()
    )
    shot = Image.open(shot_path).convert("RGB")
    assert shot.size == (WIDTH, height)

    table = _crop(shot, measured["table"])
    # Borders and digits: a good share of the table's pixels are dark.
    assert (table.max(axis=2) < 128).mean() > 0.02, "the table region of the screenshot is blank"
    for image in images:
        rendered = _crop(shot, image)
        source = _decode_data_uri(image["src"])
        assert rendered.std() > 20, f"plot {image['alt']!r} renders blank"
        assert (rendered.min(axis=2) < 200).mean() > 0.01, f"plot {image['alt']!r} has no ink"
        # The plot on screen is the report's image: pixel for pixel up to colour management and
        # rounding at its own size, or close to it scaled the way a style sheet may scale it.
        size = (rendered.shape[1], rendered.shape[0])
        expected = source if source.size == size else source.resize(size, Image.Resampling.BOX)
        difference = np.abs(rendered - np.asarray(expected, dtype=np.int16)).mean()
        assert difference < 8, f"plot {image['alt']!r} on screen differs from its PNG"
