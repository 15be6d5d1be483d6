"""How cloudy a baseline acquisition is, measured when it is stored.

Pairing compares a new acquisition with the *clearest* earlier one (:mod:`.pairing`), and a
cloudy one is never a reference. A pair's scenes get their cloud shares when it is predicted;
an acquisition stored as a baseline (nothing to compare it with yet) was never predicted, so
without this module it would count as clear and could later be chosen over a clear one. Each
baseline's share is measured once with the night's cloud-mask mode, on its own grid, and
stored beside the pairs' (``scene_clouds``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from groundbreak.datasets.clouds import CloudMaskMode, scene_cloud_mask
from groundbreak.datasets.scene import open_scene
from groundbreak.infer.nightly.state import AcquisitionRecord


def baseline_cloud_fractions(
    baselines: Sequence[AcquisitionRecord],
    measured: set[str],
    mode: CloudMaskMode,
    warn: Callable[[AcquisitionRecord, Exception], None],
) -> dict[str, float]:
    """Cloud and shadow shares of the baselines not ``measured`` yet, by scene path. A scene
    without a mask (not Sentinel-2, mode ``none``) is clear; one that cannot be read is left
    unmeasured and reported through ``warn`` (its pair will say what is wrong with it)."""
    fractions: dict[str, float] = {}
    for baseline in baselines:
        if baseline.scene in measured or baseline.scene in fractions:
            continue
        try:
            scene = open_scene(baseline.scene)
            mask = scene_cloud_mask(scene, scene.grid, mode)
        except Exception as err:  # one unreadable baseline must not stop the night
            warn(baseline, err)
            continue
        fractions[baseline.scene] = round(mask.fraction(), 4) if mask is not None else 0.0
    return fractions
