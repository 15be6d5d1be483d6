"""The review page shows a site's timeline: when its change began, every observation (a
cloudy one as not observed) and its score over time as a line."""

from __future__ import annotations

from pathlib import Path

from groundbreak.infer.nightly.alert_policy import AlertPolicy
from groundbreak.infer.nightly.state import NightlyState
from groundbreak.infer.review.pages import QueuePage, queue_page
from groundbreak.infer.review.queue import QueueFilter, alert_rows, site_history


def test_review_page_draws_the_timeline(tmp_path: Path) -> None:
    with NightlyState(tmp_path / "state") as state:
        for night, (day, score, observed) in enumerate([
            ("2024-02-01", 0.1, True), ("2024-03-03", 0.2, True), ("2024-03-23", 0.8, True),
            ("2024-04-12", 0.0, False), ("2024-05-02", 0.9, True),
        ]):
            site = {"site_id": "lot", "name": "Lot <b>", "pair_id": f"p{night}",
                    "score": score, "after_date": day, "observed": observed}
            state.update_alerts(f"n{night}", [site], AlertPolicy())
        rows = alert_rows(state)
        history = site_history(state, "lot")
        page = QueuePage("state", "ann", "token", QueueFilter(), rows, {"open": 1}, rows[0],
                         history=history, events=state.alert_events("lot"))
    html = queue_page(page)
    assert "Change began between 2024-03-03 and 2024-03-23" in html
    assert html.count('<svg class="score-line"') == 1
    assert html.count("<title>2024-04-12: not observed</title>") == 1
    assert [h["kind"] for h in history] == ["clear", "clear", "detection", "unobserved",
                                            "detection"]
    assert "(not observed)" in html and "Lot <b>" not in html
