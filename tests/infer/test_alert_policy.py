"""The alert policy as a pure function of a site's evidence (no state, no model)."""

from __future__ import annotations

import pytest

from groundbreak.infer.nightly.alert_policy import (
    AlertPolicy,
    Observation,
    SiteStatus,
    next_status,
)

POLICY = AlertPolicy()


def obs(kind: str, day: str, score: float | None = None, area: float | None = None) -> Observation:
    default = {"detection": 0.6, "clear": 0.1, "unobserved": None}[kind]
    return Observation(f"p-{day}", day, kind, default if score is None else score, area)  # type: ignore[arg-type]


def run(observations: list[Observation], policy: AlertPolicy = POLICY,
        start: SiteStatus | None = None) -> list[tuple[str | None, str | None]]:
    """The (status, event) after each observation, applied in order."""
    current, history, steps = start or SiteStatus(), [], []
    for observation in observations:
        step = next_status(policy, current, history, observation)
        steps.append((step.status, step.event))
        current = SiteStatus(step.status, current.dismissed_score, current.dismissed_area_m2)
        history.append(observation)
    return steps


def test_two_detections_within_the_window_confirm() -> None:
    assert run([obs("detection", "2024-01-01"), obs("detection", "2024-03-01")]) == [
        ("candidate", "candidate"), ("new", "new")]


def test_detections_further_apart_than_the_window_do_not_confirm() -> None:
    steps = run([obs("detection", "2024-01-01"), obs("detection", "2024-06-01")])
    assert steps == [("candidate", "candidate"), ("candidate", "detected")]


def test_an_unobserved_night_neither_confirms_nor_clears() -> None:
    steps = run([obs("detection", "2024-01-01"), obs("clear", "2024-02-01"),
                 obs("unobserved", "2024-03-01"), obs("clear", "2024-04-01")])
    assert steps == [("candidate", "candidate"), ("candidate", None),
                     ("candidate", "unobserved"), ("cleared", "cleared")]


def test_a_cleared_site_needs_fresh_detections_to_confirm() -> None:
    steps = run([obs("detection", "2024-01-01"), obs("clear", "2024-01-20"),
                 obs("clear", "2024-02-10"), obs("detection", "2024-03-01"),
                 obs("detection", "2024-04-01")])
    assert [s for s, _ in steps] == ["candidate", "candidate", "cleared", "candidate", "new"]


def test_one_very_sure_detection_is_an_alert_at_once() -> None:
    assert run([obs("detection", "2024-01-01", score=0.99)]) == [("new", "new")]


def test_alerts_go_ongoing_only_on_new_detections_and_decided_ones_never_clear() -> None:
    assert run([obs("detection", "2024-01-01")], start=SiteStatus("new")) == [
        ("ongoing", "ongoing")]
    clears = [obs("clear", "2024-01-01"), obs("clear", "2024-02-01"), obs("clear", "2024-03-01")]
    assert [s for s, _ in run(clears, start=SiteStatus("confirmed"))] == ["confirmed"] * 3
    assert [s for s, _ in run(clears, start=SiteStatus("dismissed", 0.9))] == ["dismissed"] * 3


@pytest.mark.parametrize(
    ("score", "area", "event"),
    [(0.99, 2000.0, "realerted"),   # took half the headroom above 0.98
     (0.985, 2000.0, "suppressed"),
     (0.985, 6000.0, "suppressed"),  # +200 % but only +4000 m²
     (0.985, 7000.0, "realerted")],  # +250 % and +5000 m²
)
def test_a_dismissed_site_comes_back_by_headroom_or_growth(
    score: float, area: float, event: str
) -> None:
    start = SiteStatus("dismissed", dismissed_score=0.98, dismissed_area_m2=2000.0)
    assert run([obs("detection", "2024-01-01", score, area)], start=start)[0][1] == event


def test_out_of_range_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="clear_after"):
        AlertPolicy(clear_after=0)
    with pytest.raises(ValueError, match="realert_share"):
        AlertPolicy(realert_share=1.5)


def test_a_clear_whose_reference_may_already_show_a_confirmed_change_is_blind() -> None:
    """A hall detected against references of March and April 2023 began after April 2023; a
    pair whose reference is of April 2024 may show it in both dates, so it must not clear the
    alert. Seen against the very reference it was detected on, no change is real evidence."""
    hall = [Observation("p1", "2024-03-01", "detection", 0.6, None, "2023-03-01"),
            Observation("p2", "2024-04-10", "detection", 0.7, None, "2023-04-10")]
    blind = [Observation(f"p{i}", day, "clear", 0.1, None, ref) for i, (day, ref) in
             enumerate([("2025-04-01", "2024-04-01"), ("2025-05-10", "2024-05-10")], start=3)]
    assert [s for s, _ in run([*hall, *blind])] == ["candidate", "new", "new", "new"]
    season = [Observation("q1", "2023-07-29", "detection", 0.7, None, "2023-01-10"),
              Observation("q2", "2023-09-07", "detection", 0.7, None, "2023-01-10"),
              Observation("q3", "2023-10-17", "clear", 0.0, None, "2023-01-10"),
              Observation("q4", "2023-11-26", "clear", 0.0, None, "2023-01-10")]
    assert run(season)[-1] == ("cleared", "cleared")
    cloud = [Observation("c1", "2023-07-29", "detection", 0.6, None, "2022-07-25"),
             Observation("c2", "2023-09-07", "clear", 0.1, None, "2022-09-05"),
             Observation("c3", "2023-10-17", "clear", 0.1, None, "2022-10-15")]
    assert run(cloud)[-1] == ("cleared", "cleared")  # one detection: no blind clears


def test_a_detection_beside_a_cloud_waits_for_a_clear_one() -> None:
    """Cloud rims pass any mask: a detection whose site or its surroundings clouds hid confirms
    nothing, sure or the k-th; it still counts as evidence for a clear one later."""
    beside = Observation("p1", "2024-01-01", "detection", 0.99, None, "2023-01-01", 0.08)
    assert run([beside]) == [("candidate", "candidate")]
    clear = Observation("p2", "2024-02-10", "detection", 0.99, None, "2023-02-10", 0.0)
    assert run([clear]) == [("new", "new")]
    assert run([beside, clear])[-1] == ("new", "new")
    second = Observation("p2", "2024-02-10", "detection", 0.6, None, "2023-02-10", 0.3)
    assert run([obs("detection", "2024-01-01"), second])[-1] == ("candidate", "detected")
    unknown = Observation("p3", "2024-03-10", "detection", 0.99, None, "2023-03-10", None)
    assert run([unknown]) == [("new", "new")]  # rows without the measure (no CRS) are not held


def test_the_clear_share_is_a_tolerance() -> None:
    lenient = AlertPolicy(confirm_clear_share=0.1)
    beside = Observation("p1", "2024-01-01", "detection", 0.99, None, "2023-01-01", 0.08)
    assert run([beside], lenient) == [("new", "new")]
