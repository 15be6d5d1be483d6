"""A site's timeline: when its change began, and every observation of it.

Analysts think in sites over time ("ground cleared between 3 and 23 March, a hall since
April"). From a site's stored observations (:meth:`~.state.NightlyState.observations`), the
change *began* after the last acquisition that saw the site clear before its first detection
(or, without one, after the reference that first detection was compared with) and by that
first detection's acquisition. ``groundbreak alerts history``, the report and the review page
show it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Timeline:
    """What the observations of one site say, oldest first."""

    observations: list[dict[str, Any]] = field(default_factory=list)
    began_after: str | None = None
    """The last acquisition that saw the site clear before its first detection (or the
    reference that detection was compared with)."""
    began_by: str | None = None
    """The acquisition of the first detection."""
    first_detection: dict[str, Any] | None = None
    latest_detection: dict[str, Any] | None = None

    def began(self) -> str:
        """When the change began, in words ("" when never detected)."""
        if self.began_by is None:
            return ""
        if self.began_after is None:
            return f"by {self.began_by}"
        return f"between {self.began_after} and {self.began_by}"

    def scores(self) -> list[tuple[str, float | None]]:
        """(acquisition date, score; None when unobserved) of every dated observation."""
        return [
            (str(o["acquired"]), None if o["kind"] == "unobserved" else o.get("score"))
            for o in self.observations if o.get("acquired")
        ]


def site_timeline(observations: Sequence[Mapping[str, Any]]) -> Timeline:
    """The timeline of a site from its observations (oldest acquisition first)."""
    rows = [dict(o) for o in observations]
    detections = [o for o in rows if o["kind"] == "detection"]
    if not detections:
        return Timeline(rows)
    first = detections[0]
    clear_before = [o for o in rows[: rows.index(first)] if o["kind"] == "clear"]
    after = clear_before[-1]["acquired"] if clear_before else first.get("before_date")
    return Timeline(rows, after or None, first.get("acquired"), first, detections[-1])
