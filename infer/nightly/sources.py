"""Where a night's tile pairs come from: a pairs CSV, a STAC ItemCollection, or a drop folder.

**Pairs CSV** — the pairs are listed as for ``groundbreak rank``.

**STAC ItemCollection** (a JSON file of new acquisitions) — each item is one acquisition whose
assets are single-band rasters (local paths, ``file://`` or remote URLs; relative hrefs resolve
against the JSON file's folder). Bands, SCL, radiometric convention and sun angles are read as
for a STAC Item scene (:func:`groundbreak.datasets.stac_scene.stac_item_manifest`: Sentinel-2
catalogue names such as Earth Search's ``blue``, ``nir08``, ``swir16``, ``scl`` are band ids).
The item's *ground* is:

1. its MGRS tile: the ``mgrs:utm_zone`` + ``mgrs:latitude_band`` + ``mgrs:grid_square``
   properties, else ``grid:code``, else ``s2:mgrs_tile`` (as ``MGRS-36SYC``);
2. otherwise its footprint: the ground of an earlier footprint (stored in the state, or an earlier
   item of the collection) whose intersection over union with it reaches ``footprint_iou``
   (default 0.9), else a new ground named ``fp-<hash of the footprint>``.

Each item becomes a scene manifest (``STATE_DIR/scenes/<ground>/<item id>.json``, read by
:func:`groundbreak.datasets.scene.open_scene`).

**Drop folder** — each entry is one acquisition named ``<ground>_<date>[_anything]``:
``<ground>`` is letters, digits and ``-`` (no ``_``), ``<date>`` is ``YYYYMMDD`` or
``YYYY-MM-DD``. An entry is a folder of per-band rasters (``T36SYC_20240501/…_B02.tif``), a
multi-band raster (``T36SYC_20240501.tif``), a Sentinel-2 product (``.SAFE`` folder or
``.zip``; ESA's own product names are understood too: ground ``T36SYC`` and the sensing day) or a
scene manifest (``…json``). Names starting
with ``.`` or ending in ``.partial`` / ``.tmp`` are ignored: copy a scene in under such a name
and rename it when complete.

**Pairing** (STAC and drop folder): every acquisition in the source is paired with its
*reference*, an earlier acquisition of the same ground among the source and every acquisition the
state has seen, by the config's ``pairing`` rule (:mod:`~groundbreak.infer.nightly.pairing`: by
default the clearest acquisition of the same season a year or more earlier), leaving out
acquisitions that turned out cloudy when scored (``cloudy_fraction``). An acquisition with no
reference yet is a *baseline*: it is stored, and compared later.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from shapely import wkt
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from groundbreak.datasets.errors import InputError
from groundbreak.datasets.pair_spec import PairSpec
from groundbreak.datasets.path_ids import check_ground_id
from groundbreak.datasets.scene import RASTER_SUFFIXES
from groundbreak.datasets.stac_scene import stac_item_manifest
from groundbreak.datasets.text_files import load_json_file
from groundbreak.infer.atomic import atomic_write_json
from groundbreak.infer.nightly.pairing import DEFAULT_PAIRING, PairingRule, pair_acquisitions
from groundbreak.infer.nightly.site_identity import intersection_over_union
from groundbreak.infer.nightly.state import AcquisitionRecord

SCENES_DIR = "scenes"
DROP_NAME = re.compile(
    r"^(?P<ground>[A-Za-z0-9][A-Za-z0-9-]*)_(?P<date>\d{8}|\d{4}-\d{2}-\d{2})(?:[_.].*)?$"
)
PRODUCT_NAME = re.compile(
    r"^S2[A-D]_MSIL(?:1C|2A)_(?P<date>\d{8})T\d{6}_N\d{4}_R\d{3}_(?P<ground>T\d{2}[A-Z]{3})_"
    r"\d{8}T\d{6}(?:\.SAFE)?(?:\.zip)?$"
)
"""An ESA Sentinel-2 product name (``S2B_MSIL2A_20240501T081609_N0510_R121_T36SYC_...SAFE``):
its ground is the MGRS tile, its date the sensing day."""
IGNORED_SUFFIXES = (".partial", ".tmp")


@dataclass
class NightInputs:
    """What a source gives a night: its pairs, the acquisitions seen, and what was left out.

    Attributes:
        pairs: The tile pairs to score.
        acquisitions: Every acquisition read from the source (to store in the state).
        baselines: Acquisitions with no earlier one of their ground: nothing to compare yet.
        problems: (entry, reason) for source entries that cannot be used (e.g. a STAC item with
            no band asset); they count as failures of the night.
        ignored: Entries of a drop folder whose names do not follow the naming rule.
    """

    pairs: list[PairSpec] = field(default_factory=list)
    acquisitions: list[AcquisitionRecord] = field(default_factory=list)
    baselines: list[AcquisitionRecord] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def pairs_from_csv(path: str | Path) -> NightInputs:
    """The pairs listed in a pairs CSV."""
    from groundbreak.datasets.layouts import read_pairs_csv

    return NightInputs(pairs=list(read_pairs_csv(path)))


# -- drop folder ---------------------------------------------------------------------------------


def drop_folder_acquisitions(
    folder: str | Path,
) -> tuple[list[AcquisitionRecord], list[str], list[tuple[str, str]]]:
    """The acquisitions in a drop folder, the names that do not follow the naming rule, and
    (entry, reason) for entries that cannot be used (each is skipped; the rest go on)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "drop folder does not exist")
    records: dict[tuple[str, str], AcquisitionRecord] = {}
    ignored: list[str] = []
    problems: list[tuple[str, str]] = []
    for entry in sorted(folder.iterdir()):
        name = entry.name
        if name.startswith(".") or name.endswith(IGNORED_SUFFIXES):
            continue
        try:
            record = _drop_entry(entry)
        except Exception as err:  # one bad entry must not stop the night: it is recorded
            reason = err.problem if isinstance(err, InputError) else f"{type(err).__name__}: {err}"
            problems.append((f"drop entry {name}", " ".join(reason.split())))
            continue
        if record is None:
            ignored.append(name)
            continue
        key = (record.ground_id, record.acquired)
        if key in records:
            problems.append((f"drop entry {name}", f"a second scene of ground {key[0]} on "
                             f"{key[1]} ({records[key].scene}); skipped"))
            continue
        records[key] = record
    return list(records.values()), ignored, problems


def _drop_entry(entry: Path) -> AcquisitionRecord | None:
    """The acquisition of one drop-folder entry, or None when its name does not follow the rule."""
    match = DROP_NAME.match(entry.name) or PRODUCT_NAME.match(entry.name)
    if match is None:
        return None
    if entry.is_dir():
        usable = True
    elif entry.suffix.lower() in (*RASTER_SUFFIXES, ".json", ".zip"):
        usable = entry.is_file()  # a regular file (or a link to one): never a FIFO or a device
        if not usable and entry.exists():
            raise InputError(entry, "is not a regular file")
    else:
        usable = False
    if not usable:
        return None
    try:
        acquired = _iso_date(match["date"])
    except ValueError:
        return None
    ground = check_ground_id(match["ground"], entry)
    return AcquisitionRecord(ground, acquired, str(entry.resolve()), "drop_folder")


def pairs_from_drop_folder(
    folder: str | Path,
    known: Sequence[AcquisitionRecord],
    rule: PairingRule = DEFAULT_PAIRING,
    clouds: Mapping[str, float] | None = None,
    cloudy_fraction: float = 1.0,
    composites_dir: Path | None = None,
) -> NightInputs:
    """The night's pairs from a drop folder, paired by ``rule`` against the acquisitions the
    state knows (see :func:`~groundbreak.infer.nightly.pairing.pair_acquisitions`)."""
    records, ignored, problems = drop_folder_acquisitions(folder)
    pairs, baselines = pair_acquisitions(records, known, rule, clouds, cloudy_fraction,
                                         composites_dir)
    return NightInputs(pairs=pairs, acquisitions=records, baselines=baselines, ignored=ignored,
                       problems=problems)


# -- STAC ----------------------------------------------------------------------------------------


def pairs_from_stac(
    path: str | Path,
    state_dir: str | Path,
    known: Sequence[AcquisitionRecord],
    footprint_iou: float = 0.9,
    rule: PairingRule = DEFAULT_PAIRING,
    clouds: Mapping[str, float] | None = None,
    cloudy_fraction: float = 1.0,
    composites_dir: Path | None = None,
) -> NightInputs:
    """The night's pairs from a STAC ItemCollection JSON file (see the module docstring).

    Raises:
        InputError: When the file is not a readable ItemCollection. An unusable item (any error
            of its own) is reported in ``problems`` instead, and the other items go on.
    """
    import pystac

    path = Path(path)
    features = read_item_collection(path)
    grounds = GroundMatcher(known, footprint_iou)
    inputs = NightInputs()
    seen: dict[tuple[str, str], str] = {}
    for number, feature in enumerate(features, start=1):
        name = feature.get("id") if isinstance(feature, dict) else None
        name = name if isinstance(name, str) else f"#{number}"
        try:
            item = pystac.Item.from_dict(feature, preserve_dict=True)
            record = _acquisition_of_item(item, feature, path, Path(state_dir), grounds)
        except Exception as err:  # one bad item must not stop the night: it is recorded
            reason = err.problem if isinstance(err, InputError) else f"{type(err).__name__}: {err}"
            inputs.problems.append((f"stac item {name}", " ".join(reason.split())))
            continue
        key = (record.ground_id, record.acquired)
        if key in seen:
            inputs.problems.append(
                (f"stac item {item.id}",
                 f"a second acquisition of ground {key[0]} on {key[1]} (item {seen[key]}); skipped")
            )
            continue
        seen[key] = item.id
        inputs.acquisitions.append(record)
    inputs.pairs, inputs.baselines = pair_acquisitions(
        inputs.acquisitions, known, rule, clouds, cloudy_fraction, composites_dir
    )
    return inputs


def read_item_collection(path: str | Path) -> list[Any]:
    """The features of a STAC ItemCollection JSON file; an InputError for anything else.

    A single STAC Item (``"type": "Feature"``) is refused with a hint: the nightly batch reads
    collections of new acquisitions (a single Item can be a scene of ``groundbreak predict``).
    """
    path = Path(path)
    document = load_json_file(path, "STAC ItemCollection")
    kind = document.get("type") if isinstance(document, dict) else None
    if kind == "Feature":
        raise InputError(path, "is a single STAC Item, not an ItemCollection; wrap it as "
                         '{"type": "FeatureCollection", "features": [ITEM]}')
    features = document.get("features") if isinstance(document, dict) else None
    if kind != "FeatureCollection" or not isinstance(features, list):
        raise InputError(path, 'is not a STAC ItemCollection ({"type": "FeatureCollection", '
                         '"features": [...]})')
    return features


class GroundMatcher:
    """Names the ground of a footprint: an earlier ground whose footprint overlaps it enough."""

    def __init__(self, known: Sequence[AcquisitionRecord], min_iou: float) -> None:
        self.min_iou = min_iou
        self.footprints: list[tuple[str, BaseGeometry]] = [
            (r.ground_id, wkt.loads(r.footprint)) for r in known if r.footprint
        ]

    def ground_of(self, footprint: BaseGeometry) -> str:
        """The matching ground id, or a new one made from the footprint."""
        best, best_iou = None, 0.0
        for ground_id, other in self.footprints:
            iou = intersection_over_union(footprint, other)
            if iou > best_iou:
                best, best_iou = ground_id, iou
        if best is not None and best_iou >= self.min_iou:
            return best
        ground_id = "fp-" + hashlib.sha256(footprint.wkt.encode()).hexdigest()[:10]
        self.footprints.append((ground_id, footprint))
        return ground_id


def mgrs_ground(properties: dict[str, Any]) -> str | None:
    """The MGRS tile id of a STAC item (``MGRS-36SYC``), or None when it names none."""
    zone = properties.get("mgrs:utm_zone")
    band, square = properties.get("mgrs:latitude_band"), properties.get("mgrs:grid_square")
    if zone is not None and band and square:
        return f"MGRS-{int(zone):02d}{band}{square}".upper()
    code = properties.get("grid:code")
    if isinstance(code, str) and code:
        return re.sub(r"[^A-Za-z0-9-]", "-", code).upper()
    tile = properties.get("s2:mgrs_tile")
    if isinstance(tile, str) and tile:
        return f"MGRS-{tile.lstrip('T')}".upper()
    return None


def _acquisition_of_item(
    item: Any,
    feature: dict[str, Any],
    collection_path: Path,
    state_dir: Path,
    grounds: GroundMatcher,
) -> AcquisitionRecord:
    """Write the scene manifest of one STAC item and return its acquisition."""
    when = item.datetime or item.common_metadata.start_datetime
    if when is None:
        raise InputError(collection_path, f"item {item.id} has no datetime")
    try:
        scene = stac_item_manifest(feature, collection_path)
    except InputError as err:
        raise InputError(collection_path, f"item {item.id}: {err.problem}") from err
    footprint = shape(item.geometry) if item.geometry else None
    ground_id = mgrs_ground(item.properties)
    if ground_id is None:
        if footprint is None:
            raise InputError(
                collection_path, f"item {item.id} has neither an MGRS tile nor a geometry"
            )
        ground_id = grounds.ground_of(footprint)
    check_ground_id(ground_id, collection_path)  # it names the scene folder and the pairs
    acquired = when.date().isoformat()
    safe_id = re.sub(r"[^A-Za-z0-9._-]", "_", item.id)
    if safe_id != item.id:  # 'S2/x' and 'S2_x' must not share a manifest
        safe_id += "-" + hashlib.sha256(item.id.encode()).hexdigest()[:8]
    manifest = state_dir / SCENES_DIR / ground_id / f"{safe_id}.json"
    document = {**scene, "date": acquired, "stac_item": item.id,
                "source": str(collection_path)}
    if not manifest.is_file() or json.loads(manifest.read_text()) != document:
        atomic_write_json(manifest, document)
    return AcquisitionRecord(
        ground_id, acquired, str(manifest), "stac", footprint.wkt if footprint else None
    )


def _iso_date(text: str) -> str:
    if len(text) == 8:
        return datetime.strptime(text, "%Y%m%d").date().isoformat()
    return date.fromisoformat(text).isoformat()
