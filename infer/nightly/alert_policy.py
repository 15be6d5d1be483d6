"""The alert policy: a site's next status from its stored evidence, one observation at a time.

Each newly scored acquisition that covers a site is one *observation* of it: a **detection**
(observed, score at or above the alert threshold), a **clear** non-detection (observed, below
it) or **unobserved** (clouds, shadows, outside the scene). Pairs reused from earlier nights are
no observation. Modelled on the operational disturbance alerts (DIST-ALERT, GLAD, RADD: a first
detection is provisional, later ones confirm or reject it; CCDC: change only after consecutive
anomalies), with an analyst in the loop::

    (none) --detection--> candidate --k detections within the window--> new
    (none) --detection >= confirm_score, seen clear around the site----> new
    candidate, new, ongoing --m informative clear non-detections in a row--> cleared
    new, ongoing --detection--> ongoing
    cleared --detection--> candidate (or new, as from none)
    analyst: new/ongoing --confirm--> confirmed, --dismiss--> dismissed
    dismissed --detection that grew (area or score, see below)--> new ("realerted")

- ``candidate`` is kept and listed on request, never pushed to the analyst.
- A detection confirms (either way) only when the ground around its site was seen: at most
  ``confirm_clear_share`` of the site's cells (about 60 m) lie within ``confirm_margin_m`` of
  ground that clouds, shadows or the scene's edge hid on either date. Cloud rims, thin edges
  and shadows too faint to find pass any mask (a shadow falls hundreds of metres from its
  cloud), so a detection beside a cloud counts as evidence but waits for a clear one. The
  rule is per site, not per acquisition: a cloud on one side of a tile says nothing about a
  site on the other (almost no Sentinel-2 tile is cloud-free everywhere).
- An unobserved acquisition neither confirms nor clears, and breaks no run of clears.
- Once repeated detections confirmed a change, a clear non-detection whose reference is later
  than the latest reference a detection was made against is *blind*: the change happened after
  that date, so it may be in both dates of the pair (a finished hall a year on, when the
  same-season reference shows it too). It neither clears nor breaks a run of clears. A clear
  against the same or an earlier reference still counts: a change seen only against a
  reference of another season, then not against that very reference, was the season.
- ``confirmed`` and ``dismissed`` are the analyst's; a night never clears them.
- A dismissed site comes back when its changed area grows by ``regrow_ratio`` *and*
  ``regrow_m2`` over the area at dismissal, or its score reaches
  ``s_d + realert_share * (1 - s_d)`` (``s_d`` the score at dismissal): re-alerting stays
  possible whatever the score at dismissal.

:func:`next_status` is a pure function: the state (:mod:`.state`) stores the evidence and
applies what it returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Literal

ObservationKind = Literal["detection", "clear", "unobserved"]

TRACKED_STATUSES: tuple[str, ...] = ("candidate", "new", "ongoing", "confirmed", "dismissed")
"""Statuses whose discovered sites are measured again on every new pair that covers them."""
CLEARABLE_STATUSES: tuple[str, ...] = ("candidate", "new", "ongoing")
"""Statuses nobody has decided yet: repeated clear non-detections end them."""


@dataclass(frozen=True)
class Observation:
    """One newly scored acquisition's evidence about one site."""

    pair_id: str
    acquired: str | None
    """The acquisition's date (ISO), the pair's 'after' date; None when unknown."""
    kind: ObservationKind
    score: float | None = None
    changed_area_m2: float | None = None
    reference: str | None = None
    """The date of the acquisition it was compared with (the pair's 'before'); None when
    unknown."""
    hidden_near: float | None = None
    """The share of the site's cells (about 60 m) within the policy's ``confirm_margin_m`` of
    ground that clouds, shadows or the scene's edge hid on either date
    (:mod:`.site_clouds`); None when unknown."""


@dataclass(frozen=True)
class SiteStatus:
    """What the state holds of a site's alert before an observation."""

    status: str | None = None
    """None for a site that was never detected."""
    dismissed_score: float | None = None
    dismissed_area_m2: float | None = None


@dataclass(frozen=True)
class Step:
    """What an observation does: the site's status after it, and the event to record (None:
    nothing worth an event; the observation itself is stored either way)."""

    status: str | None
    event: str | None


@dataclass(frozen=True)
class AlertPolicy:
    """The confirmation, clearing and re-alerting rules (see the module docstring)."""

    threshold: float = 0.5
    """A site scoring at least this on an observed acquisition is a detection."""
    confirm_detections: int = 2
    """Detections (this one included) within ``confirm_window_days`` that confirm a candidate."""
    confirm_window_days: int = 120
    confirm_score: float = 0.75
    """One detection at least this sure is confirmed at once (above 1: never)."""
    confirm_margin_m: float = 600.0
    """A detection confirms only when at most ``confirm_clear_share`` of its site's cells lie
    within this distance of ground that clouds, shadows or the scene's edge hid ..."""
    confirm_clear_share: float = 0.0
    """... on either date: a detection beside a cloud waits for a clear one."""
    clear_after: int = 2
    """Clear non-detections in a row that end a candidate or an undecided alert."""
    regrow_ratio: float = 0.5
    """A dismissed site comes back when its changed area grew by this share ..."""
    regrow_m2: float = 5000.0
    """... and by at least this many m² (0.5 ha) over its area at dismissal, ..."""
    realert_share: float = 0.5
    """... or when its score took this share of the headroom left above its dismissal score."""

    def __post_init__(self) -> None:
        checks = {
            "threshold": 0.0 <= self.threshold <= 1.0,
            "confirm_detections": _whole(self.confirm_detections, 1),
            "confirm_window_days": _whole(self.confirm_window_days, 0),
            "confirm_score": self.confirm_score >= 0.0,
            "confirm_margin_m": self.confirm_margin_m >= 0.0,
            "confirm_clear_share": 0.0 <= self.confirm_clear_share <= 1.0,
            "clear_after": _whole(self.clear_after, 1),
            "regrow_ratio": self.regrow_ratio >= 0.0,
            "regrow_m2": self.regrow_m2 >= 0.0,
            "realert_share": 0.0 <= self.realert_share <= 1.0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"{', '.join(bad)} out of range (see 'groundbreak nightly "
                             "--help-config')")

    def classify(self, observed: bool, score: float | None) -> ObservationKind:
        """The kind of an observation of a site."""
        if not observed or score is None:
            return "unobserved"
        return "detection" if score >= self.threshold else "clear"

    def realerts(self, current: SiteStatus, observation: Observation) -> bool:
        """Whether a detection of a dismissed site shows enough growth to alert again."""
        score, area = observation.score or 0.0, observation.changed_area_m2
        floor = current.dismissed_score
        if floor is None or score >= floor + self.realert_share * (1.0 - floor) - 1e-12:
            return True
        grown = current.dismissed_area_m2
        return (
            area is not None and grown is not None
            and area >= grown * (1.0 + self.regrow_ratio) and area >= grown + self.regrow_m2
        )


def next_status(
    policy: AlertPolicy,
    current: SiteStatus,
    history: Sequence[Observation],
    observation: Observation,
) -> Step:
    """A site's status after ``observation``, given its status and its earlier observations
    (oldest first)."""
    status = current.status
    episode = _episode(policy, history)
    if observation.kind == "unobserved":
        quiet = status is None or status in ("dismissed", "cleared")
        return Step(status, None if quiet else "unobserved")
    if observation.kind == "clear":
        if episode.blind(observation, policy.confirm_detections):
            return Step(status, None)
        if status in CLEARABLE_STATUSES and episode.clears + 1 >= policy.clear_after:
            return Step("cleared", "cleared")
        return Step(status, None)
    if status == "dismissed":
        if policy.realerts(current, observation):
            return Step("new", "realerted")
        return Step(status, "suppressed")
    if status == "confirmed":
        return Step(status, "seen")
    if status in ("new", "ongoing"):
        return Step("ongoing", "ongoing")
    if _confirmed(policy, episode, observation):
        return Step("new", "new")
    return Step("candidate", "candidate" if status != "candidate" else "detected")


@dataclass
class _Episode:
    """The detections since a site last cleared, the latest reference they were compared with,
    and the informative clear non-detections since the last detection."""

    detections: list[Observation]
    onset_after: str | None
    """The change happened after this date: the latest reference a detection was made against."""
    clears: int

    def blind(self, observation: Observation, confirm_detections: int) -> bool:
        """Whether a clear non-detection of a change confirmed by repeated detections cannot
        see it: its reference is later than the change's earliest possible start, so the change
        (a finished hall) may be in both of its dates."""
        if len(self.detections) < confirm_detections or not observation.reference:
            return False
        return bool(self.onset_after and observation.reference > self.onset_after)


def _episode(policy: AlertPolicy, history: Sequence[Observation]) -> _Episode:
    """Walk a site's history: ``clear_after`` informative clears in a row end an episode."""
    episode = _Episode([], None, 0)
    for observation in history:
        if observation.kind == "detection":
            episode.detections.append(observation)
            if observation.reference:
                episode.onset_after = max(episode.onset_after or "", observation.reference)
            episode.clears = 0
        elif observation.kind == "clear" and not episode.blind(
            observation, policy.confirm_detections
        ):
            episode.clears += 1
            if episode.clears >= policy.clear_after:
                episode = _Episode([], None, 0)
    return episode


def _confirmed(policy: AlertPolicy, episode: _Episode, latest: Observation) -> bool:
    """Whether a detection of an unconfirmed site confirms it: seen clear around the site, and
    sure enough alone or the k-th detection within the window since the site last cleared."""
    if latest.hidden_near is not None and latest.hidden_near > policy.confirm_clear_share:
        return False
    if latest.score is not None and latest.score >= policy.confirm_score:
        return True
    recent = [o for o in episode.detections
              if _days_between(o.acquired, latest.acquired) <= policy.confirm_window_days]
    return len(recent) + 1 >= policy.confirm_detections


def _days_between(earlier: str | None, later: str | None) -> float:
    """Days from one acquisition to another; 0 when either date is unknown."""
    if not earlier or not later:
        return 0.0
    try:
        return abs((date.fromisoformat(later[:10]) - date.fromisoformat(earlier[:10])).days)
    except ValueError:
        return 0.0


def _whole(value: object, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum
