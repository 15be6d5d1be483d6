"""Make the README's screenshot of ``groundbreak review`` (docs/img/review.png).

Usage: python scripts/make_review_screenshot.py [STATE_DIR]

Without STATE_DIR it runs one night of the bundled demo pairs with the shipped default model into
a temporary state, and records one analyst's decision there so the history shows one. Then it
serves the state with the review app on 127.0.0.1 and photographs the top alert in headless
Chromium (system package ``chromium``, driven by Playwright: ``pip install playwright``).
"""

from __future__ import annotations

import sys
import tempfile
import threading
from pathlib import Path

from groundbreak.infer.cli import main as groundbreak
from groundbreak.infer.cli.demo import DEMO_PAIRS, DEMO_SITES
from groundbreak.infer.nightly.state import NightlyState
from groundbreak.infer.review.app import make_server

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "img" / "review.png"
CHROMIUM = "/usr/bin/chromium"


def demo_state(root: Path) -> Path:
    """One night of the demo pairs with the default model, and one decision by an analyst."""
    state = root / "state"
    code = groundbreak(["nightly", "--state", str(state), "--pairs", str(DEMO_PAIRS), "--sites",
                        str(DEMO_SITES), "--run-id", "2024-05-01", "--no-report", "--device",
                        "cpu", "--log-format", "json"])
    if code != 0:
        raise SystemExit(f"the demo night failed (exit {code})")
    with NightlyState(state) as night:
        alerts = night.alerts()
        if len(alerts) > 2:  # the lowest alert: judged already, so the counts show a decision
            night.decide(alerts[-1]["site_id"], "dismiss", "parking lot, not construction",
                         "Demo Analyst")
    return state


def screenshot(state: Path, out: Path) -> None:
    """Serve the state and photograph the queue with its top alert."""
    from playwright.sync_api import sync_playwright

    server = make_server(state, "127.0.0.1", 0, analyst="Demo Analyst", quiet=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1360, "height": 940})
            page.goto(server.url)
            page.wait_for_selector("body[data-ready='true']", timeout=120_000)
            page.evaluate("document.getElementById('note').value = "
                          "'new housing blocks since the last image'; window.scrollTo(0, 0)")
            page.screenshot(path=str(out))
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
    print(f"wrote {out}")


def main(argv: list[str]) -> int:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    if argv:
        screenshot(Path(argv[0]), OUT)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        screenshot(demo_state(Path(tmp)), OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
