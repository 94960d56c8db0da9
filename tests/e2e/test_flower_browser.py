"""Flower in a browser: headless Chromium logs in with basic auth and shows the tier workers.

Uses Debian's /usr/bin/chromium (apt-get install chromium chromium-driver), driven by
Playwright without a browser download of its own. The screenshot of the workers page
is kept at docs/flower-workers.png.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tests.e2e.compose_runner import submit_jobs, truncate_store, wait_terminal
from tests.e2e.conftest import Processes, wait_for_workers
from tests.e2e.test_flower import FRONT_WORKERS, NODES, PASSWORD, TIER_WORKERS, USER, start_flower
from tierflow.worker.app import TierflowCelery

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "flower-workers.png"
PAGE_TIMEOUT_MS = 30_000
BATCH_SIZE = 30


@pytest.fixture()
def browser_type() -> object:
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium chromium-driver")
    with playwright_api.sync_playwright() as playwright:
        yield playwright.chromium


@pytest.mark.timeout(240)
def test_the_flower_workers_page_shows_every_tier_worker(
    processes: Processes,
    control_app: TierflowCelery,
    store_engine: Engine,
    browser_type: object,
    tmp_path: Path,
) -> None:
    processes.run("db", "upgrade")
    truncate_store(store_engine)
    for name, args in {**FRONT_WORKERS, **TIER_WORKERS}.items():
        processes.start(name, *args)
    flower = start_flower(processes)
    wait_for_workers(control_app, processes, NODES)
    batch_id = submit_jobs(processes, tmp_path / "batch.jsonl", 31, BATCH_SIZE)  # work for the counters
    wait_terminal(store_engine, processes, batch_id, BATCH_SIZE, 90.0)

    browser = browser_type.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)  # type: ignore[attr-defined]
    try:
        anonymous = browser.new_context()
        assert anonymous.request.get(flower.base + "/workers").status == 401
        context = browser.new_context(
            http_credentials={"username": USER, "password": PASSWORD}, viewport={"width": 1440, "height": 600}
        )
        page = context.new_page()
        assert page.goto(flower.base + "/workers").status == 200
        for node in sorted(NODES):  # each worker's name, visible in the workers table
            page.get_by_text(node, exact=True).first.wait_for(state="visible", timeout=PAGE_TIMEOUT_MS)
        assert page.get_by_text("Online").count() >= len(NODES)
        shot = tmp_path / "flower-workers.png"
        page.screenshot(path=str(shot), full_page=True)
        shutil.copyfile(shot, SCREENSHOT)
    finally:
        browser.close()
