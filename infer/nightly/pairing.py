"""Which earlier acquisition a new acquisition of a ground is compared with.

The change model learned from pairs one to three years apart (OSCD), and construction is
gradual: a hall rises over months. Comparing each acquisition with the one of a few days before
shows a sliver of that, and compares seasons the model never learned to ignore. So by default
(``rule: reference``) a new acquisition is compared with a *reference* the model understands:

1. the clearest acquisition within ``window_days`` of the same date one year earlier, else two
   years, up to ``max_years`` (DIST-ALERT's same-season baseline);
2. while the history is shorter than that, the oldest clear acquisition at least
   ``min_gap_days`` earlier (the longest comparison there is);
3. else nothing: the acquisition is a *baseline*, stored and compared later.

"Clearest" is the lowest share hidden by clouds and shadows measured so far (an acquisition not
measured yet counts as clear), then the nearest to the anniversary, then the earliest. An
acquisition measured at least ``cloudy_fraction`` hidden never serves as a reference.
``rule: consecutive`` keeps the former rule: the latest earlier clear acquisition.

The pair id is ``<ground>_<before YYYYMMDD>_<after YYYYMMDD>``: the same acquisitions give the
same pairs every time, and a pair done already is not predicted again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Literal, get_args

from groundbreak.datasets.pair_spec import PairSpec
from groundbreak.datasets.path_ids import GROUND_ID
from groundbreak.infer.nightly.state import AcquisitionRecord

PairingRuleName = Literal["reference", "consecutive"]
PAIRING_RULES: tuple[str, ...] = get_args(PairingRuleName)
DAYS_PER_YEAR = 365.25


@dataclass(frozen=True)
class PairingRule:
    """How a new acquisition finds its 'before' (see the module docstring)."""

    rule: PairingRuleName = "reference"
    window_days: int = 30
    """Half-width of the same-season window around each anniversary, in days."""
    max_years: int = 3
    """Anniversaries looked at: one year earlier, then two, ... up to this many."""
    min_gap_days: int = 180
    """Without a same-season reference: the oldest clear acquisition at least this much earlier."""

    def __post_init__(self) -> None:
        if self.rule not in PAIRING_RULES:
            raise ValueError(f"rule must be one of {', '.join(PAIRING_RULES)}, got {self.rule!r}")
        for name in ("window_days", "max_years", "min_gap_days"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")
        if self.max_years > 50:
            raise ValueError(f"max_years must be at most 50, got {self.max_years}")

    def reference(
        self,
        after: AcquisitionRecord,
        earlier: Sequence[AcquisitionRecord],
        clouds: Mapping[str, float],
    ) -> AcquisitionRecord | None:
        """The acquisition ``after`` is compared with, among the clear ``earlier`` ones."""
        if not earlier:
            return None
        if self.rule == "consecutive":
            return max(earlier, key=lambda r: r.acquired)
        when = date.fromisoformat(after.acquired)
        ages = {r.acquired: (when - date.fromisoformat(r.acquired)).days for r in earlier}
        for years in range(1, self.max_years + 1):
            anniversary = years * DAYS_PER_YEAR
            window = [r for r in earlier
                      if abs(ages[r.acquired] - anniversary) <= self.window_days]
            if window:
                return min(window, key=lambda r: (round(clouds.get(r.scene, 0.0), 2),
                                                  abs(ages[r.acquired] - anniversary),
                                                  r.acquired))
        old_enough = [r for r in earlier if ages[r.acquired] >= self.min_gap_days]
        return min(old_enough, key=lambda r: r.acquired) if old_enough else None


DEFAULT_PAIRING = PairingRule()


def pair_acquisitions(
    new: Sequence[AcquisitionRecord],
    known: Sequence[AcquisitionRecord],
    rule: PairingRule = DEFAULT_PAIRING,
    clouds: Mapping[str, float] | None = None,
    cloudy_fraction: float = 1.0,
) -> tuple[list[PairSpec], list[AcquisitionRecord]]:
    """Pair each new acquisition with its reference by ``rule`` (see the module docstring).

    Args:
        new: The source's acquisitions (its own record of one wins over the stored one).
        known: Every acquisition the state has seen.
        rule: The pairing rule.
        clouds: Share of each scene (by path) hidden by clouds and shadows, where measured.
        cloudy_fraction: A scene hidden at least this much is never a reference.

    Returns:
        The pairs, and the new acquisitions that have no reference yet (baselines).
    """
    clouds = clouds or {}
    by_ground: dict[str, dict[str, AcquisitionRecord]] = {}
    for record in (r for r in known if GROUND_ID.match(r.ground_id)):  # ids checked on entry
        by_ground.setdefault(record.ground_id, {})[record.acquired] = record
    for record in new:
        by_ground.setdefault(record.ground_id, {})[record.acquired] = record
    pairs: list[PairSpec] = []
    baselines: list[AcquisitionRecord] = []
    for record in sorted(new, key=lambda r: (r.ground_id, r.acquired)):
        earlier = [
            r for d, r in by_ground[record.ground_id].items()
            if d < record.acquired and clouds.get(r.scene, 0.0) < cloudy_fraction
        ]
        before = rule.reference(record, earlier, clouds)
        if before is None:
            baselines.append(record)
            continue
        pairs.append(
            PairSpec(
                pair_id=pair_id_of(record.ground_id, before.acquired, record.acquired),
                before=Path(before.scene),
                after=Path(record.scene),
                before_date=before.acquired,
                after_date=record.acquired,
            )
        )
    return pairs, baselines


def pair_id_of(ground_id: str, before: str, after: str) -> str:
    """The id of the pair of two acquisitions of a ground: ``<ground>_<YYYYMMDD>_<YYYYMMDD>``."""
    return f"{ground_id}_{before.replace('-', '')}_{after.replace('-', '')}"
