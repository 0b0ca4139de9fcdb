"""The dashboard in a real headless Chromium (Debian's), driven by Playwright: the live table
fills, an alert arrives over the WebSocket, the rule editor shows a validation error inline."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs.instance import Instance
from tests.support import eventually

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture
def dash(tmp_path: Path) -> Iterator[Instance]:
    inst = Instance(tmp_path, f"e{os.getpid()}", SCANNER_FEED_RATE="20000", SCANNER_SCAN_INTERVAL_MS="250")
    inst.start()
    try:  # a failed start-up must not leave an instance running behind the test run
        eventually(inst.all_running, 60, 0.2, "instance up")
        yield inst
    finally:
        inst.close()


def test_dashboard_table_alerts_and_rule_editor(dash: Instance, tmp_path: Path) -> None:
    if not os.path.exists(CHROMIUM):
        pytest.fail("chromium is not installed (make test installs Debian's chromium package)")
    from playwright.sync_api import sync_playwright

    shot = tmp_path / "dashboard.png"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"http://127.0.0.1:{dash.port}/")
            page.wait_for_selector("#conn.ok", timeout=20_000)
            page.wait_for_selector("#table tbody tr", timeout=30_000)
            page.wait_for_selector("#alerts .alert", timeout=60_000)
            assert page.locator("#table tbody tr").count() >= 10
            first_alert = page.locator("#alerts .alert .sym").first.inner_text()
            assert first_alert.strip()
            # an invalid rule: the error names the field, inline
            page.fill("#rule-json", '{"id": "bad", "type": "numeric", "metric": "no_such", "operator": ">", '
                                    '"value": 1}')
            page.click("#rule-validate")
            page.wait_for_function("document.getElementById('rule-errors').textContent.length > 0")
            assert "metric" in page.inner_text("#rule-errors")
            page.screenshot(path=str(shot))
        finally:
            browser.close()
    if os.environ.get("SCANNER_E2E_SHOT"):
        shutil.copy(shot, os.environ["SCANNER_E2E_SHOT"])
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
