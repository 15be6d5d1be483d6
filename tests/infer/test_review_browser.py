"""``groundbreak review`` in a real headless Chromium (Playwright driving the system Chromium):
open the queue of a real nightly state, confirm one alert by keyboard, dismiss one by button
with a note, reload, and check the state through ``groundbreak alerts list``.

Skipped, with the reason, when Playwright (``pip install playwright``; its own browsers are not
needed) or Chromium (Debian package ``chromium``, installed by scripts/test.sh as root) is
missing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from groundbreak.infer.cli import main as groundbreak
from groundbreak.infer.review.app import ReviewServer

CHROMIUM = Path("/usr/bin/chromium")


def chromium_path() -> str:
    binary = str(CHROMIUM) if CHROMIUM.is_file() else shutil.which("chromium")
    if binary is None:
        pytest.skip("Chromium is not installed (apt-get install -y chromium)")
    return binary


@pytest.fixture
def browser_page():
    """A Playwright page in the system's headless Chromium."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="Playwright is not installed (pip install playwright)"
    )
    binary = chromium_path()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=binary, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.errors = errors  # type: ignore[attr-defined]
        yield page
        context.close()
        browser.close()


def wait_ready(page) -> None:  # noqa: ANN001
    page.wait_for_selector("body[data-ready='true']", timeout=60_000)
    assert page.get_attribute("body", "data-errors") == "0"
    assert page.get_attribute("body", "data-broken-images") == "0"


def test_triage_by_keyboard_and_button_is_written_to_the_state(
    browser_page, review_server: ReviewServer, demo_state: Path,  # noqa: ANN001
    capsys: pytest.CaptureFixture,
) -> None:
    page = browser_page
    page.goto(review_server.url)
    wait_ready(page)
    queue = page.eval_on_selector_all("#queue li", "items => items.map(i => i.dataset.siteId)")
    assert len(queue) == 13
    first, second = queue[0], queue[1]
    assert page.get_attribute("#alert", "data-site-id") == first
    assert page.get_attribute("body", "data-images") == "3"

    page.keyboard.press("j")  # move down and back up the queue
    page.wait_for_url(f"**/alerts/{second}")
    wait_ready(page)
    page.keyboard.press("k")
    page.wait_for_url(f"**/alerts/{first}")
    wait_ready(page)

    page.keyboard.press("c")  # confirm by keyboard: on to the next alert
    page.wait_for_url(f"**/alerts/{second}?saved={first}")
    wait_ready(page)
    assert page.text_content("#flash") == f"Saved: {first} is now confirmed."
    assert page.get_attribute("#alert", "data-site-id") == second

    page.keyboard.press("n")  # write a note, then dismiss by the button
    page.keyboard.type("harbour crane, not construction")
    assert page.evaluate("document.activeElement.id") == "note"
    page.fill("#analyst", "Browser Analyst")
    page.dispatch_event("#analyst", "change")
    page.click("button#dismiss")
    page.wait_for_url(f"**saved={second}")
    wait_ready(page)

    page.reload()
    wait_ready(page)
    remaining = page.eval_on_selector_all("#queue li", "items => items.map(i => i.dataset.siteId)")
    assert first not in remaining and second not in remaining and len(remaining) == 11
    assert page.text_content("#count-confirmed b") == "1"
    assert page.text_content("#count-dismissed b") == "1"
    page.goto(f"{review_server.url}alerts/{second}")
    wait_ready(page)
    assert page.get_attribute("#alert", "data-status") == "dismissed"
    assert page.is_disabled("button#dismiss") and not page.is_disabled("button#reopen")
    assert page.errors == []

    assert groundbreak(["alerts", "list", "--state", str(demo_state), "--format", "json"]) == 0
    alerts = {row["site_id"]: row for row in json.loads(capsys.readouterr().out)}
    assert alerts[first]["status"] == "confirmed"
    assert alerts[second]["status"] == "dismissed"
    assert alerts[second]["note"] == "harbour crane, not construction"
    assert groundbreak(["alerts", "history", second, "--state", str(demo_state)]) == 0
    assert "Browser Analyst" in capsys.readouterr().out.splitlines()[-1]
    assert groundbreak(["alerts", "history", first, "--state", str(demo_state)]) == 0
    assert "Ada Tester" in capsys.readouterr().out.splitlines()[-1]
