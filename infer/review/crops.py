"""Before, after and change-probability crops of an alert, for the review app.

The probability raster is the one the night published in the state directory
(``runs/<night>/pairs/<pair_id>/probability.tif``): one outside the state directory is never
read. The scenes are those the night scored, as stored with the pair (paths and content hashes,
:mod:`~groundbreak.infer.nightly.evidence`): a scene changed or gone since is said so, never
replaced. Pairs stored before the state kept scenes fall back to the pairs CSV named in that
night's config, or the two acquisitions of a catalogue or drop-folder pair stored in the state.
Crops are drawn by the report's :func:`~groundbreak.infer.report.crops.render_site_crops` (site
outlined, full resolution, upsampled for the screen; the true-colour pictures the night stored
with the pair where it stored them, :mod:`~groundbreak.infer.report.stored_crops`) and kept in a
small cache.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from shapely import wkt

from groundbreak.datasets.pair_spec import PairSpec
from groundbreak.infer.nightly.evidence import stored_pair_spec
from groundbreak.infer.nightly.hashing import ContentHasher
from groundbreak.infer.nightly.pairing import composite_pair_of, pair_id_of
from groundbreak.infer.nightly.state import NightlyState
from groundbreak.infer.prediction.raster_io import PROBABILITY_FILE

CACHE_SIZE = 48
"""Alerts whose crops are kept in memory."""

CROP_KINDS: tuple[str, ...] = ("before", "after", "probability")


class CropRenderer:
    """Renders and caches the crops of alerts of one state directory (thread-safe)."""

    def __init__(self, state_dir: str | Path) -> None:
        self.state_dir = Path(state_dir).resolve()
        self._cache: OrderedDict[tuple[Any, ...], dict[str, bytes] | str] = OrderedDict()
        self._lock = threading.Lock()

    def crops(self, state: NightlyState, alert: dict[str, Any]) -> dict[str, bytes] | str:
        """PNG bytes by kind (:data:`CROP_KINDS`) of an alert row, or why there are none."""
        key = (alert["site_id"], alert.get("pair_row"), alert.get("grid_outline"))
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            result = self._render(state, alert)
            self._cache[key] = result
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
            return result

    def _render(self, state: NightlyState, alert: dict[str, Any]) -> dict[str, bytes] | str:
        from groundbreak.infer.report.crops import render_site_crops
        from groundbreak.infer.report.stored_crops import stored_display_crops

        if alert.get("pair_row") is None or not alert.get("grid_outline"):
            return "no scored outline of this site in the state"
        pair = state.db.execute(
            "SELECT p.*, r.config FROM pairs p JOIN runs r ON r.attempt = p.attempt "
            "WHERE p.id = ?", (alert["pair_row"],)
        ).fetchone()
        if pair is None:
            return "the pair that scored this site is not in the state"
        probability = self.probability_path(dict(pair))
        if probability is None:
            return "the night's probability raster is gone (pruned?)"
        spec = stored_pair_spec(dict(pair), ContentHasher(state, store=False))
        if spec is None:  # a pair stored without its scenes (before state schema 3)
            spec = pair_spec(state, dict(pair))
        if spec is None:
            return "the scenes of this pair are no longer listed where the night found them"
        if isinstance(spec, str):
            return spec
        stored = stored_display_crops(probability.parent)  # cut when the night scored it
        try:
            crops = render_site_crops(
                spec.open(with_label=False), probability, wkt.loads(alert["grid_outline"]),
                stored=stored,
            )
        except Exception as err:  # unreadable imagery must not cost the analyst the page
            return f"imagery could not be read ({type(err).__name__}: {' '.join(str(err).split())})"
        finally:
            if stored is not None:
                stored.close()
        if crops is None:
            return "the site lies outside the pair"
        return {"before": crops.before, "after": crops.after, "probability": crops.overlay}

    def probability_path(self, pair: dict[str, Any]) -> Path | None:
        """The pair's probability raster inside the state directory, or None."""
        candidates = [self.state_dir / "runs" / str(pair["run_id"]) / "pairs" / pair["pair_id"]]
        if pair.get("outputs"):
            candidates.insert(0, Path(pair["outputs"]))
        for folder in candidates:
            path = (folder / PROBABILITY_FILE).resolve()
            if path.is_relative_to(self.state_dir) and path.is_file():
                return path
        return None


def pair_spec(state: NightlyState, pair: dict[str, Any]) -> PairSpec | None:
    """The scenes a night scored as this pair (a pairs-table row joined with its run's config)."""
    try:
        config = json.loads(pair.get("config") or "{}")
    except ValueError:
        config = {}
    pair_id = pair["pair_id"]
    if config.get("pairs"):
        from groundbreak.datasets.layouts import read_pairs_csv

        try:
            specs = read_pairs_csv(config["pairs"])
        except Exception:  # the CSV moved or changed since the night
            return None
        return next((s for s in specs if s.pair_id == pair_id), None)
    composite = composite_pair_of(pair_id, state.state_dir / "composites", state.acquisitions())
    if composite is not None:  # pairing: {composite: median}
        return composite
    for ground in {r.ground_id for r in state.acquisitions()}:
        if not pair_id.startswith(f"{ground}_"):
            continue
        records = state.acquisitions(ground)
        for before in records:
            for after in records:
                name = pair_id_of(ground, before.acquired, after.acquired)
                if name == pair_id:
                    return PairSpec(pair_id, Path(before.scene), Path(after.scene),
                                    before_date=before.acquired, after_date=after.acquired)
    return None
