"""Per-pixel median composites of a same-season window: the 'before' of ``composite: median``.

A :class:`~groundbreak.infer.nightly.pairing.CompositePairSpec` names its members (the usable
acquisitions of the reference's same-season window) and the acquisition whose grid it is read
on. Before the pair is read, :class:`CompositeBuilder` writes (or finds) its composite:

- each member is read band by band onto the grid in blocks of :data:`BLOCK_ROWS` rows, in
  OSCD's DN convention (TOA or BOA reflectance x 10000, no offset; members stating another
  convention are converted);
- a member's pixels hidden by its clouds and shadows (the project's own masks,
  :func:`~groundbreak.datasets.clouds.scene_cloud_mask`, with the night's
  ``predictor.cloud_mask`` mode), nodata or outside it are left out; each pixel is the median of
  the members that observed it;
- a pixel no member observed takes the grid acquisition's value and is marked in the composite's
  cloud mask (``<id>_unseen.tif``), so the predictor counts it unobserved.

The composite is the folder ``<state_dir>/composites/<id>/``: one uint16 GeoTIFF per band
(``<id>_B02.tif``, nodata 0), the mask, and ``composite.json``, a scene manifest (bands, radiometry,
cloud mask, sun angles of the grid acquisition) whose ``composite`` key records the method, the
grid acquisition and each member's path, date and file hashes. It is written in a hidden staging
folder and published with one rename (:func:`~groundbreak.infer.atomic.publish_dir`); a composite
whose members, file hashes and mask mode are unchanged is reused as it is. Memory: one band of
one block of every member at a time (10980 x 256 float32, 11 MB per member) and the median's
copies of it, plus the cloud masks (one member's 60 m read at a time, about 150 MB for s2cloudless
on a full tile).
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window

from groundbreak.datasets.clouds import (
    CloudMask,
    CloudMaskMode,
    coarse_factor,
    scene_cloud_mask,
    window_of,
)
from groundbreak.datasets.errors import InputError
from groundbreak.datasets.pair_spec import PairSpec
from groundbreak.datasets.radiometry import OSCD_CONVENTION
from groundbreak.datasets.scene import Scene, open_scene
from groundbreak.infer.atomic import publish_dir, temp_sibling
from groundbreak.infer.nightly.pairing import COMPOSITE_MANIFEST, CompositePairSpec

COMPOSITES_DIR = "composites"
"""The composites' folder under the state directory."""
BLOCK_ROWS = 256
"""Rows read and written at a time."""
VERSION = 1
"""The composite's format and method; a composite of another version is built again."""

Digest = Callable[[Path], list[tuple[str, str]]]


class CompositeBuilder:
    """Writes the composite a pair's 'before' names, or finds it written already.

    Args:
        cloud_mask: The cloud mask mode of the members (the night's ``predictor.cloud_mask``).
        digest: A scene's ``(file, sha256)`` list (the night's cached hasher).
    """

    def __init__(self, cloud_mask: CloudMaskMode, digest: Digest) -> None:
        self.cloud_mask, self.digest = cloud_mask, digest

    def ensure(self, spec: PairSpec) -> bool:
        """Make sure the composite of ``spec`` exists; True when it was written now.

        Raises:
            InputError: Naming the member that is missing or unreadable, or the composite.
        """
        if not isinstance(spec, CompositePairSpec):
            return False
        folder = Path(spec.before).parent
        scenes = [open_scene(path, date=day) for day, path in spec.members]
        members = [
            {"date": day, "path": path, "sha256": [list(d) for d in self.digest(Path(path))]}
            for day, path in spec.members
        ]
        record = {"version": VERSION, "method": spec.method, "cloud_mask_mode": self.cloud_mask,
                  "grid": {"date": spec.before_date, "path": spec.grid_scene},
                  "members": members}
        if same_composite(folder, record):
            return False
        grid_index = [path for _, path in spec.members].index(spec.grid_scene)
        staging = temp_sibling(folder)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            manifest = write_composite(staging, folder.name, scenes, grid_index,
                                       self.cloud_mask, record)
            (staging / COMPOSITE_MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
            publish_dir(staging, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return True


def same_composite(folder: Path, record: dict[str, Any]) -> bool:
    """True when ``folder`` holds a composite of exactly ``record`` with all its files."""
    try:
        manifest = json.loads((folder / COMPOSITE_MANIFEST).read_text())
        stored = manifest["composite"]
        files = [*manifest["bands"].values(), manifest["cloud_mask"]]
        members = [{k: m.get(k) for k in ("date", "path", "sha256")} for m in stored["members"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    keys = ("version", "method", "cloud_mask_mode", "grid")
    return all(stored.get(k) == record[k] for k in keys) and members == record["members"] and all(
        (folder / str(name)).is_file() for name in files)


def write_composite(
    folder: Path,
    name: str,
    scenes: Sequence[Scene],
    grid_index: int,
    mode: CloudMaskMode,
    record: dict[str, Any],
) -> dict[str, Any]:
    """Write the median composite of ``scenes`` on ``scenes[grid_index]``'s grid into
    ``folder``; its scene manifest (with ``record`` and the members' hidden shares)."""
    grid_scene = scenes[grid_index]
    grid = grid_scene.grid
    bands = [b for b in grid_scene.band_names if all(b in s.sources for s in scenes)]
    if not bands:
        raise InputError(grid_scene.path, "the composite's members share no band")
    factor = coarse_factor(grid)
    masks: list[CloudMask | None] = [scene_cloud_mask(s, grid, mode, factor) for s in scenes]
    profile = {"driver": "GTiff", "width": grid.width, "height": grid.height, "count": 1,
               "crs": grid.crs, "transform": grid.transform, "compress": "deflate",
               "tiled": True, "blockxsize": 256, "blockysize": 256}
    files = {band: f"{name}_{band}.tif" for band in bands}
    unseen_file = f"{name}_unseen.tif"
    outputs = {band: rasterio.open(folder / file, "w", dtype="uint16", nodata=0, **profile)
               for band, file in files.items()}
    unseen_count = 0
    try:
        with rasterio.open(folder / unseen_file, "w", dtype="uint8", **profile) as unseen_out:
            for row0 in range(0, grid.height, BLOCK_ROWS):
                window = Window(0, row0, grid.width, min(BLOCK_ROWS, grid.height - row0))
                hidden = np.stack([
                    window_of(m.unobserved, m.factor, window) if m is not None
                    else np.zeros((int(window.height), grid.width), dtype=bool)
                    for m in masks
                ])
                unseen = hidden.all(axis=0)
                unseen_count += int(unseen.sum())
                unseen_out.write(unseen.astype(np.uint8), 1, window=window)
                sub = grid.subgrid(window)
                for band in bands:
                    stack = np.stack([s.read([band], sub, radiometry=OSCD_CONVENTION)[0]
                                      for s in scenes])
                    outputs[band].write(median_block(stack, hidden, grid_index), 1,
                                        window=window)
    finally:
        for dst in outputs.values():
            dst.close()
    hidden_shares = [round(float(m.fraction()), 4) if m is not None else 0.0 for m in masks]
    members = [dict(m, hidden=share, cloud_mask=mask.method if mask is not None else "none")
               for m, share, mask in zip(record["members"], hidden_shares, masks, strict=True)]
    manifest: dict[str, Any] = {
        "bands": files, "nodata": 0, "add_offset": 0,
        "quantification_value": OSCD_CONVENTION.quantification, "cloud_mask": unseen_file,
        "date": record["grid"]["date"],
        "composite": {**record, "members": members,
                      "unseen_share": round(unseen_count / max(1, grid.width * grid.height), 4)},
    }
    if grid_scene.sun_angles is not None:
        manifest["sun_azimuth"], manifest["sun_zenith"] = grid_scene.sun_angles
    return manifest


def median_block(stack: np.ndarray, hidden: np.ndarray, grid_index: int) -> np.ndarray:
    """uint16 DN (0 = nodata) of one block: the median over the members (axis 0) of the values
    not ``hidden`` (and not NaN); where none is left, the grid member's value."""
    fallback = stack[grid_index].copy()
    stack[hidden] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels: the fallback
        median = np.nanmedian(stack, axis=0)
    values = np.where(np.isnan(median), fallback, median)
    out = np.clip(np.rint(np.nan_to_num(values, nan=0.0)), 1, 65535).astype(np.uint16)
    out[np.isnan(values)] = 0
    return out


def composite_evidence(scene: Path, digest: Digest) -> dict[str, Any]:
    """What a pair's stored evidence says of a composite 'before': its folder, every file of it
    with its hash, the method, grid acquisition and members; {} for any other scene."""
    scene = Path(scene)
    if scene.name != COMPOSITE_MANIFEST or scene.parent.parent.name != COMPOSITES_DIR:
        return {}
    try:
        stored = json.loads(scene.read_text())["composite"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return {"folder": str(scene.parent), "files": [list(d) for d in digest(scene.parent)],
            "method": stored.get("method"), "grid": stored.get("grid"),
            "members": stored.get("members"), "unseen_share": stored.get("unseen_share")}
