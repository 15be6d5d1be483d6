"""Dataset layouts on disk, each turned into a list of :class:`PairSpec` (one per tile pair).

- :func:`oscd_pairs`: the Onera Satellite Change Detection dataset (Sentinel-2, per-band files).
- :func:`levir_pairs`: the common VHR layout ``A/ B/ label/`` (LEVIR-CD, DSIFN, EGY-BCD, ...).
- :func:`read_pairs_csv`: any pairs listed in a CSV file.

Splits are always by pair (a city, an image), never by chip.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Literal

from groundbreak.datasets.errors import InputError
from groundbreak.datasets.pair_spec import PairSpec, check_unique_pair_ids
from groundbreak.datasets.path_ids import check_path_id
from groundbreak.datasets.scene import is_remote

SPLITS: tuple[str, ...] = ("train", "val", "test", "predict")
OSCD_VAL_CITIES: tuple[str, ...] = ("cupertino", "hongkong", "nantes")
"""Train cities held out for validation by default: one American, one Asian, one European city,
with 4-10 % change each, so the validation split looks like the training one."""

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
LayoutName = Literal["oscd", "levir", "csv"]


def oscd_pairs(root: str | Path, val_pairs: Sequence[str] | None = None) -> list[PairSpec]:
    """The OSCD cities as pairs: train cities split into train/val by city, test cities unlabelled.

    ``root`` is the ``oscd`` folder, either as distributed (``images/<city>/imgs_1|imgs_2``,
    ``images/train.txt``, ``images/test.txt``, ``train-labels/<city>/cm/<city>-cm.tif``) or merged
    (``<city>/imgs_1|imgs_2``, ``<city>/cm/<city>-cm.tif``, ``train.txt``, ``test.txt``).
    Dates come from ``<city>/dates.txt`` as ISO dates.

    Args:
        root: The OSCD folder.
        val_pairs: Train cities to hold out as the ``val`` split. None holds out
            :data:`OSCD_VAL_CITIES` (those present); a city given explicitly must be a train city.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "OSCD folder does not exist")
    images = root / "images" if (root / "images").is_dir() else root
    labels = root / "train-labels" if (root / "train-labels").is_dir() else root
    train_cities = _city_list(images / "train.txt")
    test_cities = _city_list(images / "test.txt") if (images / "test.txt").exists() else []
    if val_pairs is None:
        val = {c for c in OSCD_VAL_CITIES if c in train_cities}
    else:
        val = set(val_pairs)
        unknown = sorted(val - set(train_cities))
        if unknown:
            raise InputError(
                images / "train.txt",
                f"validation cities {', '.join(unknown)} are not train cities of this dataset",
            )
    specs = []
    for city in train_cities:
        label = labels / city / "cm" / f"{city}-cm.tif"
        if not label.exists():
            raise InputError(label, f"label of train city {city} does not exist")
        split = "val" if city in val else "train"
        specs.append(_oscd_city(images / city, city, split, label))
    for city in test_cities:
        specs.append(_oscd_city(images / city, city, "test", None))
    return specs


def _oscd_city(folder: Path, city: str, split: str, label: Path | None) -> PairSpec:
    """One OSCD city as a pair spec."""
    if not folder.is_dir():
        raise InputError(folder, f"image folder of city {city} does not exist")
    before_date, after_date = read_oscd_dates(folder / "dates.txt")
    return PairSpec(
        pair_id=city,
        before=folder / "imgs_1",
        after=folder / "imgs_2",
        label=label,
        split=split,
        before_date=before_date,
        after_date=after_date,
        label_convention="1-2" if label is not None else None,
    )


def _city_list(path: Path) -> list[str]:
    """City names from an OSCD ``train.txt``/``test.txt`` (comma- or line-separated)."""
    if not path.exists():
        raise InputError(path, "city list does not exist")
    cities = [c.strip() for c in re.split(r"[,\s]+", path.read_text()) if c.strip()]
    if not cities:
        raise InputError(path, "city list is empty")
    return cities


def read_oscd_dates(path: str | Path) -> tuple[str, str]:
    """``date_1`` and ``date_2`` of an OSCD ``dates.txt`` as ISO dates (``2015-08-20``)."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "dates file does not exist")
    found = dict(re.findall(r"(date_[12])\s*:\s*(\d{8})", path.read_text()))
    if set(found) != {"date_1", "date_2"}:
        raise InputError(path, "expected two lines 'date_1: YYYYMMDD' and 'date_2: YYYYMMDD'")
    before, after = (f"{d[:4]}-{d[4:6]}-{d[6:]}" for d in (found["date_1"], found["date_2"]))
    return before, after


def levir_pairs(root: str | Path) -> list[PairSpec]:
    """Pairs of an ``A/ B/ label/`` folder (A = before, B = after, label 0/255), matched by name.

    The split of a pair comes from, in order of precedence: ``list/{train,val,test}.txt`` (one
    file name per line), ``train/ val/ test/`` subfolders that each hold ``A/ B/ label/``, a
    ``train_``/``val_``/``test_`` file-name prefix; otherwise it is ``train``. An A/B pair
    without a label is kept with ``label=None``.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "dataset folder does not exist")
    subfolders = [s for s in ("train", "val", "test") if (root / s / "A").is_dir()]
    if (root / "A").is_dir():
        specs = _abl_folder(root)
    elif subfolders:
        specs = []
        for split in subfolders:
            specs += [_with_split(s, split) for s in _abl_folder(root / split)]
    else:
        raise InputError(root, "expected A/ B/ label/ folders (or train/ val/ test/ holding them)")
    listed = _listed_splits(root / "list")
    resolved = []
    for spec in specs:
        default = spec.split if subfolders else _prefix_split(spec.pair_id)
        split = listed.get(spec.pair_id, default)
        resolved.append(_with_split(spec, split))
    check_unique_pair_ids(resolved, root)
    return resolved


def _abl_folder(folder: Path) -> list[PairSpec]:
    """Pairs of one ``A/ B/ label/`` folder, split ``train`` until resolved."""
    before = _images_by_stem(folder / "A")
    if not before:
        raise InputError(folder / "A", "folder holds no images (.png, .jpg, .tif)")
    after = _images_by_stem(folder / "B") if (folder / "B").is_dir() else {}
    labels = _images_by_stem(folder / "label") if (folder / "label").is_dir() else {}
    specs = []
    for stem, path in sorted(before.items()):
        if stem not in after:
            raise InputError(path, f"no after-image {stem}.* in {folder / 'B'}")
        specs.append(PairSpec(stem, path, after[stem], labels.get(stem), split="train"))
    return specs


def _images_by_stem(folder: Path) -> dict[str, Path]:
    """Image files of a folder keyed by file stem."""
    if not folder.is_dir():
        raise InputError(folder, "folder does not exist")
    return {
        p.stem: p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    }


def _listed_splits(folder: Path) -> dict[str, str]:
    """Pair id -> split from ``list/{train,val,test}.txt`` (empty when there is no list folder)."""
    found: dict[str, str] = {}
    if not folder.is_dir():
        return found
    for split in ("train", "val", "test"):
        path = folder / f"{split}.txt"
        if path.exists():
            for line in path.read_text().splitlines():
                if line.strip():
                    found[Path(line.strip()).stem] = split
    return found


def _prefix_split(pair_id: str) -> str:
    """The split named by a ``train_``/``val_``/``test_`` prefix, else ``train``."""
    prefix = pair_id.split("_", 1)[0].lower()
    return prefix if prefix in ("train", "val", "test") and "_" in pair_id else "train"


def _with_split(spec: PairSpec, split: str) -> PairSpec:
    """A copy of a spec with another split."""
    return replace(spec, split=split)


CSV_REQUIRED = ("pair_id", "before", "after")
CSV_OPTIONAL = (
    "label", "split", "before_date", "after_date", "before_mask", "after_mask",
    "before_add_offset", "after_add_offset", "nodata",
)


def read_pairs_csv(path: str | Path) -> list[PairSpec]:
    """Pairs listed in a CSV file.

    Columns ``pair_id,before,after`` and optionally ``label,split,before_date,after_date``,
    ``before_mask,after_mask`` (cloud/shadow mask rasters), ``before_add_offset,after_add_offset``
    (radiometric offset in DN, e.g. -1000 for Sentinel-2 baseline 04.00 and later) and
    ``nodata``. Relative paths resolve against the CSV's folder; an empty optional cell means
    None (and split ``predict``).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "pairs CSV does not exist")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in reader.fieldnames or []]
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise InputError(path, f"cannot be read as CSV ({err})") from err
    missing = [c for c in CSV_REQUIRED if c not in columns]
    if missing:
        raise InputError(path, f"CSV lacks column(s) {', '.join(missing)}")
    base = path.parent
    specs = []
    for line, raw in enumerate(rows, start=2):
        if None in raw:  # csv.DictReader files cells beyond the header under the key None
            raise InputError(path, f"line {line}: more cells than the header has columns")
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
        if not row["pair_id"] or not row["before"] or not row["after"]:
            raise InputError(path, f"line {line}: pair_id, before and after must not be empty")
        remote = [k for k in ("before", "after", "label") if is_remote(row.get(k) or "")]
        if remote:
            raise InputError(
                path, f"line {line}: {remote[0]} is a URL; list a remote scene's band URLs in a "
                "scene manifest (.json) and give the manifest's path"
            )
        split = row.get("split") or "predict"
        if split not in SPLITS:
            raise InputError(
                path, f"line {line}: unknown split {split!r} (use {', '.join(SPLITS)})"
            )
        check_path_id(row["pair_id"], f"line {line}: pair_id", path)
        specs.append(
            PairSpec(
                pair_id=row["pair_id"],
                before=_resolve(base, row["before"]),
                after=_resolve(base, row["after"]),
                label=_resolve(base, row["label"]) if row.get("label") else None,
                split=split,
                before_date=row.get("before_date") or None,
                after_date=row.get("after_date") or None,
                before_mask=_resolve(base, row["before_mask"]) if row.get("before_mask") else None,
                after_mask=_resolve(base, row["after_mask"]) if row.get("after_mask") else None,
                before_add_offset=_number(row, "before_add_offset", path, line),
                after_add_offset=_number(row, "after_add_offset", path, line),
                nodata=_number(row, "nodata", path, line),
            )
        )
    if not specs:
        raise InputError(path, "CSV lists no pairs")
    check_unique_pair_ids(specs, path)
    return specs


def _number(row: dict[str, str], column: str, path: Path, line: int) -> float | None:
    """A finite number from an optional CSV cell (None when empty)."""
    text = row.get(column) or ""
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise InputError(path, f"line {line}: {column} must be a number, got {text!r}")
    return value


def _resolve(base: Path, value: str) -> Path:
    """A path from a CSV cell, relative to the CSV's folder."""
    candidate = Path(value).expanduser()
    return candidate if candidate.is_absolute() else base / candidate


def layout_pairs(
    layout: LayoutName, root: str | Path, val_pairs: Sequence[str] | None = None
) -> list[PairSpec]:
    """The pairs of a dataset in one of the known layouts (``root`` is the CSV file for ``csv``).

    ``val_pairs`` moves the named pairs to the ``val`` split (for OSCD: see :func:`oscd_pairs`).
    """
    if layout == "oscd":
        return oscd_pairs(root, val_pairs=val_pairs)
    if layout == "levir":
        specs = levir_pairs(root)
    elif layout == "csv":
        specs = read_pairs_csv(root)
    else:
        raise ValueError(f"unknown layout {layout!r}")
    if val_pairs:
        ids = {s.pair_id for s in specs}
        unknown = sorted(set(val_pairs) - ids)
        if unknown:
            raise InputError(root, f"validation pairs {', '.join(unknown)} are not in the dataset")
        specs = [_with_split(s, "val") if s.pair_id in val_pairs else s for s in specs]
    return specs
