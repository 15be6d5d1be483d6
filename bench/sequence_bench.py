"""Sequence bench (issue 22): the nightly batch over a year and a half of acquisitions.

Builds, from real OSCD train cities, a sequence of drop-folder scenes per city (default 14
acquisitions, one every 40 days: 520 days) and runs ``groundbreak nightly`` one acquisition a
night for each *variant* (a YAML snippet merged into the nightly config), then compares the
alerts at the end with the same model on each city's single real before/after pair.

How an acquisition is made (every value is a real OSCD or real cloud DN, blended):

- all 13 L1C bands of both real dates are read onto the 10 m grid of ``imgs_1`` (optionally
  cropped, ``--crop``) and written as one uint16 GeoTIFF per band on that grid (OSCD's DN
  convention: TOA reflectance x 10000, no offset), scene ``<ground>_<YYYYMMDD>/``;
- unchanged ground follows a seasonal cycle between the two real dates:
  ``(1 - w) imgs_1 + w imgs_2`` with ``w(t) = 0.5 - 0.45 cos(2 pi t / 365)`` (never exactly either);
- each labelled change region (8-connected) is built linearly over 120 days from a seeded start
  spread over the sequence (every build ends at least two acquisitions before the last one),
  blending from ``imgs_1`` to ``imgs_2`` inside the region;
- a calibration jitter: each band of each acquisition times a gain drawn in [0.97, 1.03];
- real thick clouds on ``--clouds`` acquisitions (never the first): the SEN12MS-CR cumulus sample
  of ``shared/data/clouds`` (cloud: B02 > 1800 DN) pasted with all 13 bands at a seeded place,
  and its shadow: the cloud mask shifted by the sample's own cloud-to-shadow offset (the shift
  under which the sample's shifted clouds are darkest in B08), darkening the scene there by the
  sample's per-band shadow / clear ratio.

Figures per variant, on cells of 32 x 32 px (320 m): construction cells (>= 10 labelled changed
pixels) alerted at the end, no-change cells (0 labelled changed pixels) alerted at the end
(alerted = an open alert's site, status new, ongoing or confirmed, overlaps the cell), alerts
first raised by a cloud (on a cloudy night, within 300 m of its pasted cloud or shadow; and, for
information, all those first raised on a night with a cloud anywhere), and the median days
from a region's build midpoint (regions of >= 10 px) to the first night an open alert covers
it. Yardstick: a one-pair nightly (pairs CSV) per city on its real before/after pair (same grid
and crop), cells of sites scoring at least the alert threshold.

Usage::

    python bench/sequence_bench.py                                   # abudhabi, beihai; ~10 min
    python bench/sequence_bench.py --cities beirut,cupertino --crop 512 --out runs/seq.json
    python bench/sequence_bench.py --variants default \
        --variant 'median={pairing: {rule: reference, composite: median}}'
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sqlite3
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import rasterio
import yaml
from rasterio.errors import NotGeoreferencedWarning
from rasterio.features import geometry_mask
from rasterio.warp import transform_geom
from rasterio.windows import Window
from scipy import ndimage
from shapely import wkt
from shapely.geometry import mapping
from shapely.geometry.base import BaseGeometry

from groundbreak.datasets.bands import SENTINEL2_BANDS
from groundbreak.datasets.errors import InputError
from groundbreak.datasets.grid import Grid
from groundbreak.datasets.layouts import oscd_pairs
from groundbreak.datasets.scene import open_scene

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
CUMULUS = SHARED / "clouds" / "sen12mscr-cloudy-ROIs1868" / "ROIs1868_summer_s2_cloudy_19_p30.tif"
BANDS: list[str] = list(SENTINEL2_BANDS)
CELL_PX = 32
CELL_MIN_CHANGED = 10
BUILD_DAYS = 120
GAIN_JITTER = 0.03
CLOUD_B02_DN = 1800
CLOUD_MARGIN_PX = 30
"""An alert first raised on a cloudy night counts as raised by the cloud when its outline
comes within this many pixels (300 m) of the pasted cloud or shadow: the Done-when figure. A
cloud elsewhere in the scene raises nothing (almost no Sentinel-2 tile is cloud-free
everywhere), so alerts first raised on a night with a cloud anywhere are printed too, as
information."""
OPEN_STATUSES = ("new", "ongoing", "confirmed")
"""Alert statuses that count as alerted (an analyst sees them); ``candidate``, ``cleared`` and
``dismissed`` do not."""
DEFAULT_VARIANTS = {"default": {}, "consecutive": {"pairing": {"rule": "consecutive"}}}


# -- building the sequences ----------------------------------------------------------------------


@dataclass
class CitySequence:
    """The written scenes of one city and what the figures need about them."""

    city: str
    ground: str
    grid: Grid
    changed: np.ndarray
    regions: np.ndarray
    starts: dict[int, int]
    scenes: list[Path]
    dates: list[str]
    cloudy: list[bool]
    gains: list[list[float]]
    cloud_at: list[list[int] | None]
    yardstick: tuple[Path, Path, str, str]
    pasted: dict[str, np.ndarray] = field(default_factory=dict)
    """Pixels of the pasted clouds and their shadows, by acquisition date."""


def seasonal_weight(days: float) -> float:
    """Share of ``imgs_2`` in unchanged ground ``days`` after the sequence start."""
    return 0.5 - 0.45 * math.cos(2 * math.pi * days / 365.0)


def build_progress(days: float, start: float) -> float:
    """How far a region whose build starts at ``start`` is built ``days`` in (0..1)."""
    return float(np.clip((days - start) / BUILD_DAYS, 0.0, 1.0))


def crop_window(changed: np.ndarray, size: int | None) -> Window:
    """The ``size`` x ``size`` window (cell-aligned) holding the most labelled change."""
    height, width = changed.shape
    if size is None or (size >= height and size >= width):
        return Window(0, 0, width, height)
    h, w = min(size, height), min(size, width)
    total = np.pad(changed.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    best, best_at = -1, (0, 0)
    for row in range(0, height - h + 1, CELL_PX):
        for col in range(0, width - w + 1, CELL_PX):
            count = (total[row + h, col + w] - total[row, col + w] - total[row + h, col]
                     + total[row, col])
            if count > best:
                best, best_at = count, (row, col)
    return Window(best_at[1], best_at[0], w, h)


@dataclass
class CloudSample:
    """A real cloudy scene: its 13 band values, its cloud, and its shadow geometry."""

    values: np.ndarray
    cloud: np.ndarray
    shadow_offset: tuple[int, int]
    shadow_ratio: np.ndarray


def shifted(mask: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """``mask`` moved by (rows, cols) pixels, False where nothing moved in."""
    out = np.zeros_like(mask)
    height, width = mask.shape
    if abs(rows) >= height or abs(cols) >= width:
        return out
    out[max(0, rows):height - max(0, -rows), max(0, cols):width - max(0, -cols)] = mask[
        max(0, -rows):height - max(0, rows), max(0, -cols):width - max(0, cols)
    ]
    return out


def read_cloud_sample(path: Path, search_px: int = 60) -> CloudSample:
    """A 13-band L1C cloud sample: cloud = B02 above 1800 DN; the shadow offset is the shift of
    the cloud mask whose new pixels are darkest in B08 (below 0.75 of the clear median)."""
    with rasterio.open(path) as src:
        values = src.read().astype(np.float32)
    if values.shape[0] != len(BANDS):
        raise InputError(path, f"expected a 13-band L1C sample, found {values.shape[0]} bands")
    cloud = values[BANDS.index("B02")] > CLOUD_B02_DN
    nir = values[BANDS.index("B08")]
    dark = ~cloud & (nir < 0.75 * np.median(nir[~cloud]))
    best, offset = -1.0, (0, 0)
    for rows in range(-search_px, search_px + 1, 2):
        for cols in range(-search_px, search_px + 1, 2):
            moved = shifted(cloud, rows, cols) & ~cloud
            if moved.sum() >= 50 and dark[moved].mean() > best:
                best, offset = float(dark[moved].mean()), (rows, cols)
    shadow = shifted(cloud, *offset) & ~cloud & dark
    clear = ~cloud & ~dark
    ratio = np.array([np.median(v[shadow]) / np.median(v[clear]) for v in values], np.float32)
    return CloudSample(values, cloud, offset, np.clip(ratio, 0.0, 1.0))


def paste_cloud(data: np.ndarray, sample: CloudSample, row: int, col: int) -> np.ndarray:
    """Paste the sample's cloud at (row, col) of ``data`` (bands, H, W; in place) and darken its
    shadow; returns the cloud mask on the grid."""
    _, height, width = data.shape
    cloud = np.zeros((height, width), bool)
    sh, sw = sample.cloud.shape
    r0, c0 = max(row, 0), max(col, 0)
    r1, c1 = min(row + sh, height), min(col + sw, width)
    if r1 <= r0 or c1 <= c0:
        return cloud
    cloud[r0:r1, c0:c1] = sample.cloud[r0 - row:r1 - row, c0 - col:c1 - col]
    shadow = shifted(cloud, *sample.shadow_offset) & ~cloud
    data[:, shadow] *= sample.shadow_ratio[:, None]
    patch = sample.values[:, r0 - row:r1 - row, c0 - col:c1 - col]
    data[:, r0:r1, c0:c1] = np.where(cloud[r0:r1, c0:c1], patch, data[:, r0:r1, c0:c1])
    return cloud


def write_scene(folder: Path, data: np.ndarray, grid: Grid) -> Path:
    """One uint16 GeoTIFF per band (``<scene>_B02.tif``) on ``grid``, written atomically."""
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    profile = {"driver": "GTiff", "width": grid.width, "height": grid.height, "count": 1,
               "dtype": "uint16", "crs": grid.crs, "transform": grid.transform,
               "compress": "deflate", "tiled": True, "blockxsize": 256, "blockysize": 256}
    values = np.clip(np.rint(np.nan_to_num(data)), 0, 65535).astype(np.uint16)
    for band, plane in zip(BANDS, values, strict=True):
        with rasterio.open(partial / f"{folder.name}_{band}.tif", "w", **profile) as dst:
            dst.write(plane, 1)
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return folder


def build_city(
    spec: Any,
    out: Path,
    *,
    count: int,
    every: int,
    start: date,
    crop: int | None,
    cloudy_nights: set[int],
    sample: CloudSample | None,
    seed: int,
) -> CitySequence:
    """Write one city's sequence (and its real pair for the yardstick) under ``out/scenes``."""
    city = spec.pair_id
    ground = city.replace("_", "-")
    rng = np.random.default_rng([seed, *city.encode()])
    before, after = open_scene(spec.before), open_scene(spec.after)
    with warnings.catch_warnings():  # OSCD labels carry no georeference
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(spec.label) as src:
            changed_full = src.read(1) == 2  # OSCD: 1 = no change, 2 = change
    if changed_full.shape != before.grid.shape:
        raise InputError(spec.label, f"label {changed_full.shape} is not on the grid of imgs_1")
    window = crop_window(changed_full, crop)
    grid = before.grid.subgrid(window)
    rows = slice(int(window.row_off), int(window.row_off + window.height))
    cols = slice(int(window.col_off), int(window.col_off + window.width))
    changed = changed_full[rows, cols]
    first = before.read(BANDS, grid)
    second = after.read(BANDS, grid)
    second = np.where(np.isfinite(second), second, first)  # off-grid edges of imgs_2
    regions, n_regions = ndimage.label(changed, structure=np.ones((3, 3)))
    span = (count - 1) * every
    latest_start = max(0, span - BUILD_DAYS - 2 * every)
    starts = {r: int(rng.integers(0, latest_start + 1)) for r in range(1, n_regions + 1)}
    scenes, dates, cloudy, gains, cloud_at = [], [], [], [], []
    pasted: dict[str, np.ndarray] = {}
    for k in range(count):
        days = k * every
        day = start + timedelta(days=days)
        weight = np.full(changed.shape, seasonal_weight(days), np.float32)
        progress = np.array([0.0] + [build_progress(days, starts[r]) for r in starts], np.float32)
        weight = np.where(regions > 0, progress[regions], weight)
        data = (1 - weight) * first + weight * second
        gain = rng.uniform(1 - GAIN_JITTER, 1 + GAIN_JITTER, len(BANDS)).astype(np.float32)
        data *= gain[:, None, None]
        has_cloud = k in cloudy_nights and sample is not None
        if has_cloud:
            sh, sw = sample.cloud.shape
            row = int(rng.integers(0, max(0, grid.height - sh) + 1))
            col = int(rng.integers(0, max(0, grid.width - sw) + 1))
            cloud = paste_cloud(data, sample, row, col)
            pasted[day.isoformat()] = cloud | shifted(cloud, *sample.shadow_offset)
        cloud_at.append([row, col] if has_cloud else None)
        name = f"{ground}_{day:%Y%m%d}"
        scenes.append(write_scene(out / "scenes" / name, data, grid))
        dates.append(day.isoformat())
        cloudy.append(has_cloud)
        gains.append([round(float(g), 6) for g in gain])
    real_before = write_scene(out / "pairs" / f"{ground}_before", first, grid)
    real_after = write_scene(out / "pairs" / f"{ground}_after", second, grid)
    return CitySequence(city, ground, grid, changed, regions, starts, scenes, dates, cloudy,
                        gains, cloud_at,
                        (real_before, real_after, spec.before_date, spec.after_date), pasted)


def build_sequences(
    oscd_root: Path,
    cities: list[str],
    out: Path,
    *,
    count: int = 14,
    every: int = 40,
    start: date = date(2017, 1, 10),
    crop: int | None = None,
    clouds: int = 3,
    cloud_sample: Path | None = CUMULUS,
    seed: int = 22,
) -> list[CitySequence]:
    """Write every city's sequence under ``out`` (reused when ``out/sequence.json`` says the same
    parameters) and return them."""
    out = out.resolve()  # scenes and pairs are named by absolute paths
    params = {"cities": cities, "count": count, "every": every, "start": start.isoformat(),
              "crop": crop, "clouds": clouds, "cloud_sample": str(cloud_sample), "seed": seed,
              "oscd": str(oscd_root)}
    meta_path = out / "sequence.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("params") == params:
            return [load_city(out, c) for c in meta["cities"]]
    specs = {s.pair_id: s for s in oscd_pairs(oscd_root, val_pairs=[]) if s.label is not None}
    unknown = [c for c in cities if c not in specs]
    if unknown:
        raise InputError(oscd_root, f"not labelled OSCD cities: {', '.join(unknown)}; "
                         f"labelled: {', '.join(sorted(specs))}")
    night_rng = np.random.default_rng(seed)
    later = np.arange(1, count)
    cloudy_nights = set(night_rng.choice(later, min(clouds, len(later)), replace=False).tolist())
    sample = read_cloud_sample(cloud_sample) if cloud_sample is not None and clouds else None
    sequences = []
    for city in cities:
        seq = build_city(specs[city], out, count=count, every=every, start=start, crop=crop,
                         cloudy_nights=cloudy_nights, sample=sample, seed=seed)
        np.save(out / f"{seq.ground}_regions.npy", seq.regions.astype(np.int32))
        np.savez_compressed(out / f"{seq.ground}_clouds.npz", **seq.pasted)
        sequences.append(seq)
    meta = {"params": params, "cities": [city_meta(s) for s in sequences]}
    if sample is not None:
        meta["cloud_sample"] = {"shadow_offset_px": list(sample.shadow_offset),
                                "shadow_ratio": [round(float(r), 4) for r in sample.shadow_ratio],
                                "cloud_fraction": round(float(sample.cloud.mean()), 4)}
    meta_path.write_text(json.dumps(meta, indent=1))
    return sequences


def city_meta(seq: CitySequence) -> dict[str, Any]:
    """What :func:`load_city` needs to read a written sequence back."""
    return {"city": seq.city, "ground": seq.ground, "grid": [seq.grid.width, seq.grid.height,
            list(seq.grid.transform)[:6], seq.grid.crs.to_string() if seq.grid.crs else None],
            "starts": seq.starts, "scenes": [str(p) for p in seq.scenes], "dates": seq.dates,
            "cloudy": seq.cloudy, "gains": seq.gains, "cloud_at": seq.cloud_at,
            "yardstick": [str(seq.yardstick[0]), str(seq.yardstick[1]), *seq.yardstick[2:]]}


def load_city(out: Path, meta: dict[str, Any]) -> CitySequence:
    """A city's sequence as written before."""
    from affine import Affine
    from rasterio.crs import CRS

    width, height, transform, crs = meta["grid"]
    grid = Grid(width, height, Affine(*transform), CRS.from_string(crs) if crs else None)
    regions = np.load(out / f"{meta['ground']}_regions.npy")
    before, after, d1, d2 = meta["yardstick"]
    return CitySequence(meta["city"], meta["ground"], grid, regions > 0, regions,
                        {int(k): v for k, v in meta["starts"].items()},
                        [Path(p) for p in meta["scenes"]], meta["dates"], meta["cloudy"],
                        meta["gains"], meta["cloud_at"], (Path(before), Path(after), d1, d2),
                        dict(np.load(out / f"{meta['ground']}_clouds.npz")))


# -- reading alerts -------------------------------------------------------------------------------


class OpenNight(NamedTuple):
    """A night an alert was open: the night, the pair that scored the site best, its outline."""

    run_id: str
    pair_id: str
    geometry: BaseGeometry


@dataclass
class AlertRecord:
    """One alert as the bench needs it: status now, outline now, and the nights it was open."""

    site_id: str
    status: str
    geometry: BaseGeometry | None
    open_nights: list[OpenNight] = field(default_factory=list)

    @property
    def raised_on(self) -> str | None:
        """The first night the alert was open (shown to an analyst)."""
        return self.open_nights[0].run_id if self.open_nights else None


def read_alerts(state_dir: Path) -> list[AlertRecord]:
    """Every alert of a nightly state (SQLite, read-only), with the site outline (lon/lat) of
    each night it was open and its outline in the pair that last updated it."""
    uri = f"file:{(state_dir / 'state.sqlite').resolve()}?mode=ro"
    with sqlite3.connect(uri, uri=True) as db:
        db.row_factory = sqlite3.Row

        def outline(where: str, args: tuple[Any, ...]) -> BaseGeometry | None:
            row = db.execute(
                "SELECT s.details FROM site_scores s JOIN pairs p ON p.id = s.pair_row "
                f"WHERE {where} ORDER BY s.score DESC, p.id DESC LIMIT 1", args,
            ).fetchone()
            text = json.loads(row["details"] or "{}").get("geometry") if row else None
            return wkt.loads(text) if text else None

        records = []
        for alert in db.execute("SELECT site_id, status, pair_id FROM alerts ORDER BY site_id"):
            site = alert["site_id"]
            record = AlertRecord(site, alert["status"], outline(
                "s.site_id = ? AND p.pair_id = ?", (site, alert["pair_id"])))
            events = db.execute(
                "SELECT run_id FROM alert_events WHERE site_id = ? AND run_id IS NOT NULL AND "
                f"status IN ({','.join('?' * len(OPEN_STATUSES))}) GROUP BY run_id "
                "ORDER BY MIN(id)",
                (site, *OPEN_STATUSES),
            ).fetchall()
            for (run_id,) in events:
                night = db.execute(
                    "SELECT pair_id, details FROM night_site_scores WHERE run_id = ? AND "
                    "site_id = ? ORDER BY score DESC LIMIT 1", (run_id, site),
                ).fetchone()
                text = json.loads(night["details"] or "{}").get("geometry") if night else None
                if text:
                    record.open_nights.append(OpenNight(run_id, night["pair_id"], wkt.loads(text)))
            records.append(record)
    return records


def site_scores_at_least(state_dir: Path, run_id: str, threshold: float) -> list[BaseGeometry]:
    """Outlines (lon/lat) of the sites a night scored at or above ``threshold`` (read-only)."""
    uri = f"file:{(state_dir / 'state.sqlite').resolve()}?mode=ro"
    with sqlite3.connect(uri, uri=True) as db:
        rows = db.execute(
            "SELECT details FROM night_site_scores WHERE run_id = ? AND score >= ?",
            (run_id, threshold),
        ).fetchall()
    texts = [json.loads(d or "{}").get("geometry") for (d,) in rows]
    return [wkt.loads(t) for t in texts if t]


# -- figures --------------------------------------------------------------------------------------


def pixels_of(geometry: BaseGeometry, grid: Grid) -> np.ndarray:
    """The grid pixels (bool) a lon/lat outline covers."""
    shape = mapping(geometry)
    if grid.crs is not None and grid.crs.to_epsg() != 4326:
        shape = transform_geom("EPSG:4326", grid.crs, shape)
    return geometry_mask([shape], out_shape=grid.shape, transform=grid.transform, invert=True)


def cell_counts(mask: np.ndarray) -> np.ndarray:
    """Count of True pixels per 32 x 32 cell (edge cells partial)."""
    height, width = mask.shape
    rows, cols = -(-height // CELL_PX), -(-width // CELL_PX)
    padded = np.zeros((rows * CELL_PX, cols * CELL_PX), np.int64)
    padded[:height, :width] = mask
    return padded.reshape(rows, CELL_PX, cols, CELL_PX).sum(axis=(1, 3))


def cell_figures(seq: CitySequence, outlines: list[BaseGeometry]) -> dict[str, int]:
    """Construction and no-change cells, and how many of each the outlines touch."""
    labelled = cell_counts(seq.changed)
    hit = np.zeros(seq.grid.shape, bool)
    for geometry in outlines:
        hit |= pixels_of(geometry, seq.grid)
    touched = cell_counts(hit) > 0
    construction, quiet = labelled >= CELL_MIN_CHANGED, labelled == 0
    return {"construction_cells": int(construction.sum()),
            "construction_alerted": int((construction & touched).sum()),
            "no_change_cells": int(quiet.sum()), "no_change_alerted": int((quiet & touched).sum())}


def delays(seq: CitySequence, alerts: list[AlertRecord], start: date) -> tuple[list[int], int]:
    """Days from each region's build midpoint (regions of >= 10 px) to the first night an open
    alert covers it; and the number of such regions."""
    sizes = np.bincount(seq.regions.ravel())
    regions = [r for r in seq.starts if sizes[r] >= CELL_MIN_CHANGED]
    first: dict[int, date] = {}
    for alert in alerts:
        for run_id, _, geometry in alert.open_nights:
            night = date.fromisoformat(run_id)
            covered = np.unique(seq.regions[pixels_of(geometry, seq.grid)])
            for region in covered[covered > 0]:
                if region in first and first[region] <= night:
                    continue
                first[int(region)] = night
    out = []
    for region in regions:
        if region in first:
            midpoint = start + timedelta(days=seq.starts[region] + BUILD_DAYS / 2)
            out.append((first[region] - midpoint).days)
    return out, len(regions)


def alerts_of_ground(alerts: list[AlertRecord], seq: CitySequence) -> list[AlertRecord]:
    """The alerts whose outline lies on this city's grid."""
    west, south, east, north = seq.grid.bounds
    inside = []
    for alert in alerts:
        shapes = [n.geometry for n in alert.open_nights]
        shapes += [alert.geometry] if alert.geometry is not None else []
        if any(_overlaps(g, (west, south, east, north)) for g in shapes):
            inside.append(alert)
    return inside


def _overlaps(geometry: BaseGeometry, bounds: tuple[float, float, float, float]) -> bool:
    minx, miny, maxx, maxy = geometry.bounds
    return not (maxx < bounds[0] or minx > bounds[2] or maxy < bounds[1] or miny > bounds[3])


# -- running nights -------------------------------------------------------------------------------


def merged(base: dict[str, Any], snippet: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``snippet`` merged in (nested mappings merged key by key)."""
    out = dict(base)
    for key, value in snippet.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def write_config(folder: Path, keys: dict[str, Any]) -> tuple[Path, Any]:
    """Write a nightly config file; returns it and its validated form (InputError if refused)."""
    from groundbreak.infer.nightly.config import build_config, read_config_file

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "nightly.yaml"
    path.write_text(yaml.safe_dump(keys, sort_keys=False))
    return path, build_config(read_config_file(path), path)


def run_night(config: Path, run_id: str, log: Path) -> tuple[int, float]:
    """``groundbreak nightly`` for one night; its exit code and wall seconds."""
    started = time.perf_counter()
    with log.open("a") as out:
        code = subprocess.run(
            [sys.executable, "-m", "groundbreak.infer.cli", "nightly", "--config", str(config),
             "--run-id", run_id, "--log-format", "json"],
            stdout=out, stderr=subprocess.STDOUT, check=False,
        ).returncode
    return code, time.perf_counter() - started


def threshold_of(config: Any) -> float:
    """The alert threshold of a validated nightly config."""
    value = getattr(config, "alert_threshold", None)
    return float(value if value is not None else config.alerts.threshold)


def base_keys(folder: Path, model: Path) -> dict[str, Any]:
    """The keys every variant starts from."""
    return {"state_dir": str(folder / "state"), "model": str(model), "report": False}


def run_variant(
    name: str, snippet: dict[str, Any], sequences: list[CitySequence], out: Path, model: Path,
    start: date, figures_only: bool = False,
) -> dict[str, Any]:
    """Run one variant's nights from a fresh state (with ``figures_only``, read the state a
    former run left); its figures."""
    folder = out / "variants" / name
    drop = folder / "drop"
    if not figures_only:
        shutil.rmtree(folder, ignore_errors=True)
    drop.mkdir(parents=True, exist_ok=True)
    config_path, config = write_config(folder, merged({**base_keys(folder, model),
                                                       "drop_folder": str(drop)}, snippet))
    nights, codes, seconds = sequences[0].dates, [], []
    for k, night in enumerate([] if figures_only else nights):
        for entry in drop.iterdir():
            entry.unlink()
        for seq in sequences:
            (drop / seq.scenes[k].name).symlink_to(seq.scenes[k].resolve())
        code, wall = run_night(config_path, night, folder / "nights.log")
        codes.append(code)
        seconds.append(wall)
        print(f"  {name} night {k + 1}/{len(nights)} {night}: exit {code}, {wall:.0f} s",
              flush=True)
    alerts = read_alerts(config.state_dir)
    cloudy_nights = {d for d, c in zip(nights, sequences[0].cloudy, strict=True) if c}
    result: dict[str, Any] = {"exit_codes": codes, "night_seconds": [round(s, 1) for s in seconds],
                              "alerts": len(alerts), "cities": {}}
    all_delays: list[int] = []
    for seq in sequences:
        mine = alerts_of_ground(alerts, seq)
        open_now = [a.geometry for a in mine if a.status in OPEN_STATUSES and a.geometry]
        figures = cell_figures(seq, open_now)
        cloud_first = [a for a in mine if a.raised_on in cloudy_nights]
        near_cloud = {day: ndimage.binary_dilation(mask, iterations=CLOUD_MARGIN_PX)
                      for day, mask in seq.pasted.items()}
        figures["alerts_open"] = len(open_now)
        ever = cell_figures(seq, [n.geometry for a in mine for n in a.open_nights])
        figures["construction_ever_alerted"] = ever["construction_alerted"]
        figures["no_change_ever_alerted"] = ever["no_change_alerted"]
        figures["first_raised_on_cloudy_night"] = len(cloud_first)
        figures["first_raised_on_cloudy_night_no_change_only"] = sum(
            cell_figures(seq, [a.open_nights[0].geometry])["construction_alerted"] == 0
            for a in cloud_first
        )
        figures["first_raised_over_pasted_cloud"] = sum(
            bool((pixels_of(a.open_nights[0].geometry, seq.grid) & near_cloud[a.raised_on]).any())
            for a in cloud_first
        )
        figures["first_raised_by_pair_with_cloudy_scene"] = sum(
            bool(set(pair_dates(a.open_nights[0].pair_id)) & cloudy_nights)
            for a in mine if a.open_nights
        )
        days, n_regions = delays(seq, mine, start)
        figures["regions"] = n_regions
        figures["regions_alerted"] = len(days)
        figures["delays_days"] = days
        all_delays += days
        result["cities"][seq.city] = figures
    result.update(totals(result["cities"]))
    result["median_delay_days"] = float(np.median(all_delays)) if all_delays else None
    result["alert_threshold"] = threshold_of(config)
    return result


def pair_dates(pair_id: str) -> list[str]:
    """The ISO dates of a drop-folder pair id ``<ground>_<YYYYMMDD>_<YYYYMMDD>`` (of a
    composite pair, ``<ground>_<YYYYMMDD>-median<n>-<hash>_<YYYYMMDD>``: its grid acquisition's
    and the after's)."""
    parts = [p.split("-")[0] for p in pair_id.split("_")[-2:]]
    return [f"{p[:4]}-{p[4:6]}-{p[6:]}" for p in parts if len(p) == 8 and p.isdigit()]


def totals(cities: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Sums over cities, and the alerted shares."""
    keys = ("construction_cells", "construction_alerted", "no_change_cells", "no_change_alerted")
    out = {k: sum(c[k] for c in cities.values()) for k in keys}
    for key in ("construction_ever_alerted", "no_change_ever_alerted",
                "first_raised_on_cloudy_night", "first_raised_on_cloudy_night_no_change_only",
                "first_raised_over_pasted_cloud", "first_raised_by_pair_with_cloudy_scene"):
        if all(key in c for c in cities.values()):
            out[key] = sum(c[key] for c in cities.values())
    out["construction_share"] = out["construction_alerted"] / max(1, out["construction_cells"])
    out["no_change_share"] = out["no_change_alerted"] / max(1, out["no_change_cells"])
    return out


def run_yardstick(
    sequences: list[CitySequence], out: Path, model: Path, figures_only: bool = False
) -> dict[str, Any]:
    """The same model on each city's single real before/after pair (one-pair nightly)."""
    folder = out / "variants" / "_yardstick"
    if not figures_only:
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    csv = folder / "pairs.csv"
    lines = ["pair_id,before,after,before_date,after_date"]
    lines += [f"{s.ground},{s.yardstick[0]},{s.yardstick[1]},{s.yardstick[2]},{s.yardstick[3]}"
              for s in sequences]
    csv.write_text("\n".join(lines) + "\n")
    config_path, config = write_config(folder, {**base_keys(folder, model), "pairs": str(csv)})
    code, wall = (0, 0.0) if figures_only else run_night(config_path, "yardstick",
                                                          folder / "nights.log")
    outlines = site_scores_at_least(config.state_dir, "yardstick", threshold_of(config))
    cities = {}
    for seq in sequences:
        west, south, east, north = seq.grid.bounds
        mine = [g for g in outlines if _overlaps(g, (west, south, east, north))]
        cities[seq.city] = cell_figures(seq, mine)
    return {"exit_code": code, "seconds": round(wall, 1), "cities": cities, **totals(cities),
            "alert_threshold": threshold_of(config)}


# -- command line ---------------------------------------------------------------------------------


def parse_variants(names: str, extra: list[str]) -> dict[str, dict[str, Any]]:
    """The variants to run: named defaults, then ``NAME=YAML`` additions."""
    variants: dict[str, dict[str, Any]] = {}
    for name in [n.strip() for n in names.split(",") if n.strip()]:
        if name not in DEFAULT_VARIANTS:
            raise SystemExit(f"unknown variant {name!r}; define it with --variant {name}=YAML")
        variants[name] = DEFAULT_VARIANTS[name]
    for text in extra:
        name, _, snippet = text.partition("=")
        value = yaml.safe_load(snippet) if snippet.strip() else {}
        if not name or not isinstance(value, dict):
            raise SystemExit(f"--variant {text!r}: expected NAME=YAML mapping")
        variants[name] = value
    return variants


def refused(name: str, snippet: dict[str, Any], out: Path, model: Path) -> str | None:
    """Why the nightly config refuses a variant's snippet, or None when it takes it."""
    folder = out / "variants" / f"_check_{name}"
    drop = folder / "drop"
    drop.mkdir(parents=True, exist_ok=True)
    try:
        write_config(folder, merged({**base_keys(folder, model), "drop_folder": str(drop)},
                                    snippet))
    except InputError as err:
        return str(err)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cities", default="abudhabi,beihai")
    parser.add_argument("--count", type=int, default=14, help="acquisitions per city")
    parser.add_argument("--every", type=int, default=40, help="days between acquisitions")
    parser.add_argument("--start", default="2017-01-10", help="date of the first acquisition")
    parser.add_argument("--crop", type=int, default=None, help="crop each city to N x N px")
    parser.add_argument("--clouds", type=int, default=3, help="acquisitions with a pasted cloud")
    parser.add_argument("--seed", type=int, default=22)
    parser.add_argument("--variants", default="default,consecutive")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=YAML")
    parser.add_argument("--model", type=Path, default=ROOT / "checkpoints" / "oscd-s2-default")
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "sequence_bench")
    parser.add_argument("--oscd", type=Path, default=SHARED / "oscd")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument("--figures-only", action="store_true",
                        help="run no night: read the states a former run left in --workdir")
    args = parser.parse_args(argv)
    args.workdir = args.workdir.resolve()  # config files name paths inside it
    if not args.oscd.is_dir() or not CUMULUS.is_file():
        sys.exit(f"shared data missing: needs {args.oscd} and {CUMULUS} "
                 "(run from a checkout beside ../shared/data)")
    began = time.perf_counter()
    start = date.fromisoformat(args.start)
    cities = [c.strip() for c in args.cities.split(",") if c.strip()]
    args.workdir.mkdir(parents=True, exist_ok=True)
    sequences = build_sequences(args.oscd, cities, args.workdir, count=args.count,
                                every=args.every, start=start, crop=args.crop,
                                clouds=args.clouds, seed=args.seed)
    built = time.perf_counter() - began
    for seq in sequences:
        cloudy = [d for d, c in zip(seq.dates, seq.cloudy, strict=True) if c]
        print(f"{seq.city}: {seq.grid.width} x {seq.grid.height} px, {len(seq.dates)} "
              f"acquisitions {seq.dates[0]} .. {seq.dates[-1]}, {len(seq.starts)} regions, "
              f"clouds on {', '.join(cloudy) or 'none'}")
    print(f"sequences ready in {built:.0f} s under {args.workdir}")
    if args.build_only:
        return 0
    report: dict[str, Any] = {"command": " ".join(sys.argv), "cities": cities,
                              "sizes": {s.city: [s.grid.width, s.grid.height] for s in sequences},
                              "count": args.count, "every_days": args.every,
                              "clouds": args.clouds, "variants": {}, "refused": {}}
    variants = parse_variants(args.variants, args.variant)
    for name, snippet in variants.items():
        why = refused(name, snippet, args.workdir, args.model)
        if why is not None:
            print(f"variant {name} ({snippet}) refused by the nightly config: {why}; not run"
                  + ("; today's pairing is consecutive: see 'default'" if "pairing" in why
                     else ""))
            report["refused"][name] = why
            continue
        variant_began = time.perf_counter()
        report["variants"][name] = run_variant(name, snippet, sequences, args.workdir,
                                               args.model, start, args.figures_only)
        report["variants"][name]["wall_s"] = round(time.perf_counter() - variant_began, 1)
    yard = run_yardstick(sequences, args.workdir, args.model, args.figures_only)
    report["yardstick"] = yard
    print_report(report)
    report["wall_s"] = round(time.perf_counter() - began, 1)
    print(f"wall time {report['wall_s']:.0f} s (sequences {built:.0f} s)")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))
    return 0


def print_report(report: dict[str, Any]) -> None:
    """Print the figures per variant and the yardstick, with the Done-when ratios."""
    yard = report["yardstick"]
    print(f"\nyardstick (single real pair per city, sites >= {yard['alert_threshold']}): "
          f"construction cells {yard['construction_alerted']}/{yard['construction_cells']} "
          f"({yard['construction_share']:.0%}), no-change cells {yard['no_change_alerted']}/"
          f"{yard['no_change_cells']} ({yard['no_change_share']:.1%})")
    for name, fig in report["variants"].items():
        share_ratio = fig["construction_share"] / yard["construction_share"] \
            if yard["construction_share"] else float("nan")
        quiet_ratio = fig["no_change_alerted"] / yard["no_change_alerted"] \
            if yard["no_change_alerted"] else float("inf")
        delay = fig["median_delay_days"]
        delay_text = f"{delay:.0f} d ({delay / report['every_days']:.1f} acquisitions)" \
            if delay is not None else "none alerted"
        codes = sorted(set(fig["exit_codes"]))
        print(f"\nvariant {name} ({fig['wall_s']:.0f} s, mean night "
              f"{np.mean(fig['night_seconds'] or [np.nan]):.0f} s, exit codes {codes})")
        print(f"  construction cells alerted at the end: {fig['construction_alerted']}/"
              f"{fig['construction_cells']} ({fig['construction_share']:.0%}); "
              f"/ yardstick share = {share_ratio:.2f} (Done when >= 0.9)")
        print(f"  no-change cells alerted at the end: {fig['no_change_alerted']}/"
              f"{fig['no_change_cells']} ({fig['no_change_share']:.1%}); / yardstick = "
              f"{quiet_ratio:.2f} (Done when <= 1.5)")
        print(f"  cells alerted on any night (open then): construction "
              f"{fig['construction_ever_alerted']}, no-change {fig['no_change_ever_alerted']}")
        print(f"  alerts first raised by a cloud (over the pasted cloud or shadow + "
              f"{CLOUD_MARGIN_PX} px): {fig['first_raised_over_pasted_cloud']} (Done when 0); on "
              f"a night with a cloud anywhere: {fig['first_raised_on_cloudy_night']} "
              f"({fig['first_raised_on_cloudy_night_no_change_only']} touching no construction "
              f"cell); by a pair with a cloudy scene (before or after): "
              f"{fig['first_raised_by_pair_with_cloudy_scene']}")
        regions = sum(c["regions"] for c in fig["cities"].values())
        alerted = sum(c["regions_alerted"] for c in fig["cities"].values())
        print(f"  median delay build midpoint -> first alert: {delay_text} over {alerted}/"
              f"{regions} regions alerted (Done when <= 2 acquisitions)")
        for city, c in fig["cities"].items():
            print(f"    {city}: construction {c['construction_alerted']}/"
                  f"{c['construction_cells']}, no-change {c['no_change_alerted']}/"
                  f"{c['no_change_cells']}, open alerts {c['alerts_open']}, first on cloudy "
                  f"night {c['first_raised_on_cloudy_night']}")


if __name__ == "__main__":
    sys.exit(main())
