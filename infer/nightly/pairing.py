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

"Clearest" is the lowest share hidden by clouds and shadows measured so far (baselines are
measured when stored, :mod:`.baseline_clouds`; an acquisition not measured counts as clear),
then the nearest to the anniversary, then the earliest. An
acquisition measured at least ``cloudy_fraction`` hidden never serves as a reference.
``rule: consecutive`` keeps the former rule: the latest earlier clear acquisition.

With ``composite: median`` (``rule: reference`` only), when the same-season window that gave the
reference holds at least two usable acquisitions, the 'before' is their per-pixel median
composite on the reference's grid (:mod:`~groundbreak.infer.nightly.composite`), a
:class:`CompositePairSpec` naming its members; with one, or in the ``min_gap_days`` fallback,
the pair is the single-reference pair.

The pair id is ``<ground>_<before YYYYMMDD>_<after YYYYMMDD>``; a composite's is
``<ground>_<reference YYYYMMDD>-median<n>-<hash8>_<after YYYYMMDD>`` (``n`` members, ``hash8``
of their dates and paths; the part before ``_<after>`` names the composite's folder). The same
acquisitions give the same pairs every time, and a pair done already is not predicted again.
"""

from __future__ import annotations

import hashlib
import json
import re
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
CompositeName = Literal["none", "median"]
COMPOSITES: tuple[str, ...] = get_args(CompositeName)
MIN_COMPOSITE_MEMBERS = 2
COMPOSITE_MANIFEST = "composite.json"
"""The scene manifest of a composite, in its folder ``<composites dir>/<composite id>/``."""
COMPOSITE_PAIR_ID = re.compile(
    r"^(?P<composite>(?P<ground>[A-Za-z0-9-]+)_(?P<grid>\d{8})-[a-z]+\d+-[0-9a-f]{8})"
    r"_(?P<after>\d{8})$"
)
"""A composite pair's id: ``<composite id>_<after YYYYMMDD>``."""
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
    composite: CompositeName = "none"
    """``median``: the 'before' is the per-pixel median of the same-season window's usable
    acquisitions when it holds at least two (``rule: reference`` only)."""

    def __post_init__(self) -> None:
        if self.rule not in PAIRING_RULES:
            raise ValueError(f"rule must be one of {', '.join(PAIRING_RULES)}, got {self.rule!r}")
        if self.composite not in COMPOSITES:
            raise ValueError(f"composite must be one of {', '.join(COMPOSITES)}, "
                             f"got {self.composite!r}")
        if self.composite != "none" and self.rule != "reference":
            raise ValueError(f"composite {self.composite} needs rule reference, "
                             f"got rule {self.rule}")
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
        return self.reference_window(after, earlier, clouds)[0]

    def reference_window(
        self,
        after: AcquisitionRecord,
        earlier: Sequence[AcquisitionRecord],
        clouds: Mapping[str, float],
    ) -> tuple[AcquisitionRecord | None, list[AcquisitionRecord]]:
        """The reference, and the same-season window it was chosen from (by date; empty when
        it was not chosen from an anniversary window)."""
        if not earlier:
            return None, []
        if self.rule == "consecutive":
            return max(earlier, key=lambda r: r.acquired), []
        when = date.fromisoformat(after.acquired)
        ages = {r.acquired: (when - date.fromisoformat(r.acquired)).days for r in earlier}
        for years in range(1, self.max_years + 1):
            anniversary = years * DAYS_PER_YEAR
            window = [r for r in earlier
                      if abs(ages[r.acquired] - anniversary) <= self.window_days]
            if window:
                chosen = min(window, key=lambda r: (round(clouds.get(r.scene, 0.0), 2),
                                                    abs(ages[r.acquired] - anniversary),
                                                    r.acquired))
                return chosen, sorted(window, key=lambda r: r.acquired)
        old_enough = [r for r in earlier if ages[r.acquired] >= self.min_gap_days]
        return (min(old_enough, key=lambda r: r.acquired) if old_enough else None), []


DEFAULT_PAIRING = PairingRule()


@dataclass(frozen=True)
class CompositePairSpec(PairSpec):
    """A pair whose 'before' is a composite of several acquisitions (``before`` is its scene
    manifest, written by :mod:`~groundbreak.infer.nightly.composite` before the pair is read).

    ``members`` are the composite's ``(date, scene path)`` by date; ``grid_scene`` the
    acquisition whose grid it is read on (the single-reference rule's choice, ``before_date``).
    """

    members: tuple[tuple[str, str], ...] = ()
    grid_scene: str = ""
    method: str = "median"


def pair_acquisitions(
    new: Sequence[AcquisitionRecord],
    known: Sequence[AcquisitionRecord],
    rule: PairingRule = DEFAULT_PAIRING,
    clouds: Mapping[str, float] | None = None,
    cloudy_fraction: float = 1.0,
    composites_dir: Path | None = None,
) -> tuple[list[PairSpec], list[AcquisitionRecord]]:
    """Pair each new acquisition with its reference by ``rule`` (see the module docstring).

    Args:
        new: The source's acquisitions (its own record of one wins over the stored one).
        known: Every acquisition the state has seen.
        rule: The pairing rule.
        clouds: Share of each scene (by path) hidden by clouds and shadows, where measured.
        cloudy_fraction: A scene hidden at least this much is never a reference.
        composites_dir: Where composites live (``<state_dir>/composites``); needed by
            ``rule.composite``.

    Returns:
        The pairs, and the new acquisitions that have no reference yet (baselines).
    """
    clouds = clouds or {}
    if rule.composite != "none" and composites_dir is None:
        raise ValueError("pairing with a composite needs composites_dir")
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
        before, window = rule.reference_window(record, earlier, clouds)
        if before is None:
            baselines.append(record)
            continue
        if rule.composite != "none" and len(window) >= MIN_COMPOSITE_MEMBERS:
            assert composites_dir is not None
            pairs.append(composite_pair(record, before, window, rule.composite, composites_dir))
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


def composite_id(
    ground_id: str, grid: AcquisitionRecord, members: Sequence[AcquisitionRecord], method: str
) -> str:
    """A composite's id: ``<ground>_<grid YYYYMMDD>-<method><n>-<hash8>``, ``hash8`` the first
    8 hex digits of the sha256 of its method, grid scene and members' dates and paths."""
    key = json.dumps({"method": method, "grid": [grid.acquired, grid.scene],
                      "members": [[r.acquired, r.scene] for r in members]}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:8]
    return f"{ground_id}_{grid.acquired.replace('-', '')}-{method}{len(members)}-{digest}"


def composite_pair(
    after: AcquisitionRecord,
    grid: AcquisitionRecord,
    members: Sequence[AcquisitionRecord],
    method: str,
    composites_dir: Path,
) -> CompositePairSpec:
    """The pair of ``after`` with the composite of ``members`` on ``grid``'s grid."""
    members = sorted(members, key=lambda r: r.acquired)
    name = composite_id(after.ground_id, grid, members, method)
    return CompositePairSpec(
        pair_id=f"{name}_{after.acquired.replace('-', '')}",
        before=Path(composites_dir) / name / COMPOSITE_MANIFEST,
        after=Path(after.scene),
        before_date=grid.acquired,
        after_date=after.acquired,
        members=tuple((r.acquired, r.scene) for r in members),
        grid_scene=grid.scene,
        method=method,
    )


def composite_pair_of(
    pair_id: str, composites_dir: Path, acquisitions: Sequence[AcquisitionRecord]
) -> PairSpec | None:
    """The pair a composite pair id names (its composite's manifest, its 'after' among
    ``acquisitions``), or None when ``pair_id`` is no composite pair's or its 'after' is
    unknown."""
    match = COMPOSITE_PAIR_ID.match(pair_id)
    if match is None:
        return None
    after = next((r for r in acquisitions if r.ground_id == match["ground"]
                  and r.acquired.replace("-", "") == match["after"]), None)
    if after is None:
        return None
    grid = match["grid"]
    return PairSpec(pair_id, Path(composites_dir) / match["composite"] / COMPOSITE_MANIFEST,
                    Path(after.scene), before_date=f"{grid[:4]}-{grid[4:6]}-{grid[6:]}",
                    after_date=after.acquired)
