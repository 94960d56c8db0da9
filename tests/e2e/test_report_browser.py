"""The report page in a real browser: `tierflow demo`, then `tierflow report`, opened in headless Chromium.

The demo runs the example batches in embedded mode (SQLite, the local provider server
behind the real SDKs), so this also covers the report's queries on SQLite. The page is
opened offline (every non-file request is refused and recorded); every chart must
render with a real size. The screenshot is kept for the README as docs/report.png.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import missing_service

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
TIERFLOW = str(Path(sys.executable).with_name("tierflow"))
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SCREENSHOT = ROOT / "docs" / "report.png"
CHARTS = 6


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium through Playwright; missing skips on a laptop and fails under CI=true."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        missing_service("Playwright", exc)
    if not CHROMIUM.is_file():
        missing_service("Chromium", f"no {CHROMIUM} (apt-get install chromium chromium-driver)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def _tierflow(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(  # noqa: S603 - our own console script
            [TIERFLOW, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=180, check=False
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"tierflow {' '.join(args)} did not finish in 180s:\n{exc.stderr!r}")
    assert done.returncode == 0, f"tierflow {' '.join(args)} exited {done.returncode}:\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def report_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report of the demo batch, written by the commands a user types."""
    work = tmp_path_factory.mktemp("report")
    database = work / "demo.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERFLOW_")}
    examples = [str(ROOT / "examples" / f"{name}.jsonl") for name in ("support", "documents", "prompts")]
    _tierflow(env, work, "demo", *examples, "--database", str(database))
    page = work / "report.html"
    env["TIERFLOW_DATABASE_URL"] = f"sqlite:///{database}"
    _tierflow(env, work, "report", "--html", str(page), "--last", "15")
    return page


def _keep_small(png: bytes, path: Path) -> None:
    """The screenshot in 64 colours: charts and text stay sharp, the file stays small for the README."""
    from PIL import Image

    Image.open(io.BytesIO(png)).convert("RGB").quantize(64).save(path, optimize=True)


def test_every_chart_renders_offline_and_the_trace_links_open(browser: Any, report_page: Path) -> None:
    page = browser.new_page(viewport={"width": 1320, "height": 1150})
    requested: list[str] = []

    def refuse_network(route: Any) -> None:
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            requested.append(route.request.url)
            route.abort()

    page.route("**/*", refuse_network)
    page.goto(report_page.as_uri())
    charts = page.locator("figure.chart svg")
    assert charts.count() == CHARTS
    for index in range(CHARTS):
        box = charts.nth(index).bounding_box()
        assert box is not None and box["width"] > 200 and box["height"] > 150, box
        assert charts.nth(index).locator("path").count() > 5, "a chart with nothing drawn"
    assert requested == [], f"the page asked the network for {requested}"

    link = page.locator("#decisions table a").first
    target = link.get_attribute("href")
    assert target and target.startswith("#job-")
    link.click()
    trace = page.locator(f"details{target}")
    assert trace.evaluate("element => element.open") is True
    assert trace.locator("h4", has_text="Attempt 1").bounding_box() is not None

    page.evaluate("window.scrollTo(0, 0)")
    SCREENSHOT.parent.mkdir(exist_ok=True)
    _keep_small(page.screenshot(full_page=False), SCREENSHOT)
    assert 10_000 < SCREENSHOT.stat().st_size < 150_000
    page.close()
