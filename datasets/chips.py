"""Cut tile pairs into fixed-size chips and write a chip dataset (manifest, metadata, statistics).

A chip dataset is a folder::

    manifest.parquet              one row per chip (see MANIFEST_COLUMNS)
    dataset.json                  how it was cut: layout, bands, chip size, pairs, counts
    stats.json                    per-band mean/std over the valid pixels of the train split
    chips/<pair_id>/r<row>_c<col>.npz   before, after: float32 (C, H, W), NaN = invalid;
                                        label: uint8 (H, W) 0/1/255 (absent when unlabelled)

Pairs are read in row strips one chip high, so memory stays bounded by one strip of both dates
whatever the scene size. Pixels that are invalid in either date are labelled 255 (ignore); chips
with less than ``min_valid_fraction`` valid pixels are skipped (and counted).
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from rasterio.windows import Window

from groundbreak.datasets.date_matching import DateMatch, check_date_matching, match_pair
from groundbreak.datasets.errors import InputError
from groundbreak.datasets.labels import CHANGE, IGNORE
from groundbreak.datasets.normalization import BandStatistics, NormalizationStats
from groundbreak.datasets.pair import TilePair
from groundbreak.datasets.pair_spec import PairSpec
from groundbreak.datasets.windows import chip_windows, row_strips

MANIFEST_COLUMNS: tuple[str, ...] = (
    "pair_id",
    "split",
    "row_off",
    "col_off",
    "height",
    "width",
    "changed_fraction",
    "valid_fraction",
    "label",
    "path",
)
CONSTRUCTION = "construction"
NO_CONSTRUCTION = "no_construction"
SPLIT_ORDER: tuple[str, ...] = ("train", "val", "test", "predict")
INCOMPLETE_MARK = ".chips-incomplete"
"""Present in a chip dataset folder while it is being written: its leftovers may be replaced."""


DEFAULT_CHIP_SIZE = 128
"""Chip side in pixels of the shipped recipe (``groundbreak cv``, ``configs/oscd_s2_radio.yaml``)
and of ``groundbreak chips`` without ``--size``."""


MAX_CHIP_SIZE = 4096
"""The largest chip side in pixels: a chip of both dates in float32 is read whole, and one of
4096 px and 13 bands already takes 1.7 GB (training chips are 96-512 px)."""


def default_stride(chip_size: int) -> int:
    """The step between chips when none is given: half the chip size (the recipe: 128 at 64)."""
    return max(1, chip_size // 2)


DEFAULT_CHIP_STRIDE = default_stride(DEFAULT_CHIP_SIZE)
"""The recipe's step between chips (64)."""


@dataclass(frozen=True)
class ChipConfig:
    """How to cut chips. The defaults are the shipped recipe's geometry: 128 px at stride 64.

    Attributes:
        chip_size: Chip height and width in pair-grid pixels.
        stride: Step between chips (default: :func:`default_stride`, half the chip size).
        bands: Bands to keep, by name (default: every band common to all pairs).
        change_threshold: A chip is ``construction`` when its changed fraction reaches this.
        min_valid_fraction: Chips with a smaller fraction of valid pixels are skipped.
        splits: Splits to cut (default: all).
        date_matching: ``none``, or ``mean_std`` to match each pair's after date to its before
            date band by band (see :mod:`groundbreak.datasets.date_matching`).
    """

    chip_size: int = DEFAULT_CHIP_SIZE
    stride: int | None = None
    bands: Sequence[str] | None = None
    change_threshold: float = 0.01
    min_valid_fraction: float = 0.5
    splits: Sequence[str] | None = None
    date_matching: str = "none"

    def __post_init__(self) -> None:
        check_date_matching(self.date_matching)
        if self.chip_size <= 0 or (self.stride is not None and self.stride <= 0):
            raise ValueError("chip size and stride must be positive")
        if self.chip_size > MAX_CHIP_SIZE:
            raise ValueError(f"chip size must be at most {MAX_CHIP_SIZE} px, got {self.chip_size}")
        if not 0.0 <= self.min_valid_fraction <= 1.0:
            raise ValueError("min_valid_fraction must lie in [0, 1]")
        if not 0.0 < self.change_threshold <= 1.0:
            raise ValueError("change_threshold must lie in (0, 1]")

    @property
    def step(self) -> int:
        """The stride actually used."""
        return self.stride or default_stride(self.chip_size)


@dataclass
class SplitCounts:
    """What cutting produced for one split."""

    pairs: int = 0
    chips: int = 0
    construction: int = 0
    no_construction: int = 0
    unlabelled: int = 0
    skipped_low_valid: int = 0


@dataclass
class ChipSummary:
    """The result of :func:`cut_chips`."""

    out_dir: Path
    bands: list[str]
    counts: dict[str, SplitCounts]
    manifest: pd.DataFrame
    stats: NormalizationStats
    pairs: list[dict] = field(default_factory=list)
    skipped_pairs: list[dict] = field(default_factory=list)

    def table(self) -> str:
        """The counts per split as a small text table."""
        header = (
            "split", "pairs", "chips", "construction", "no_construction", "unlabelled", "skipped"
        )
        rows: list[tuple] = [header]
        for split, c in self.counts.items():
            rows.append((
                split, c.pairs, c.chips, c.construction, c.no_construction, c.unlabelled,
                c.skipped_low_valid,
            ))
        widths = [max(len(str(r[i])) for r in rows) for i in range(len(header))]
        lines = []
        for row in rows:
            cells = [str(v).rjust(w) if i else str(v).ljust(w) for i, (v, w) in enumerate(
                zip(row, widths, strict=True)
            )]
            lines.append("  ".join(cells))
        return "\n".join(lines)


def chip_label(changed_fraction: float, change_threshold: float) -> str:
    """``construction``, ``no_construction``, or ``""`` when the chip has no labelled pixel."""
    if math.isnan(changed_fraction):
        return ""
    return CONSTRUCTION if changed_fraction >= change_threshold else NO_CONSTRUCTION


def common_bands(pairs: Sequence[TilePair]) -> list[str]:
    """Bands every pair provides on both dates, in the first pair's order."""
    if not pairs:
        return []
    shared = set(pairs[0].common_bands)
    for pair in pairs[1:]:
        shared &= set(pair.common_bands)
    return [b for b in pairs[0].common_bands if b in shared]


def resolve_bands(pairs: Sequence[TilePair], requested: Sequence[str] | None) -> list[str]:
    """The bands to cut: ``requested`` (checked on every scene) or all bands common to all pairs."""
    if requested is None:
        shared = common_bands(pairs)
        if not shared:
            raise InputError(pairs[0].before.path, "the tile pairs share no band name")
        return shared
    for pair in pairs:
        pair.before.check_bands(requested)
        pair.after.check_bands(requested)
    return pairs[0].before.check_bands(requested)


class PairChipper:
    """Cuts one tile pair into chips, strip by strip, and feeds the statistics."""

    def __init__(
        self,
        config: ChipConfig,
        bands: Sequence[str],
        out_dir: Path,
        stats: BandStatistics | None,
    ) -> None:
        self.config = config
        self.bands = list(bands)
        self.out_dir = out_dir
        self.stats = stats

    def cut(
        self, pair: TilePair, split: str, counts: SplitCounts, match: DateMatch | None = None
    ) -> list[dict]:
        """Write the chips of ``pair`` and return their manifest rows; update ``counts``.

        With ``match``, the after date is mapped by it (see
        :mod:`groundbreak.datasets.date_matching`)."""
        size = self.config.chip_size
        grid = pair.grid
        windows = chip_windows(grid.height, grid.width, size, self.config.step)
        rows: list[dict] = []
        counted_until = 0  # first pair-grid row not yet added to the statistics
        chip_dir = self.out_dir / "chips" / pair.pair_id
        chip_dir.mkdir(parents=True, exist_ok=True)
        for strip, members in row_strips(windows):
            before, after = pair.read(self.bands, strip)
            if match is not None:
                after = match.apply(after)
            label = pair.read_label(strip)
            valid = np.isfinite(before).all(axis=0) & np.isfinite(after).all(axis=0)
            if label is not None:
                label = np.where(valid, label, IGNORE).astype(np.uint8)
            if self.stats is not None:
                first = max(counted_until, int(strip.row_off)) - int(strip.row_off)
                self.stats.update(before[:, first:])
                self.stats.update(after[:, first:])
                counted_until = int(strip.row_off + strip.height)
            for window in members:
                col = int(window.col_off - strip.col_off)
                cut = np.s_[..., :, col : col + size]
                row = self._write_chip(
                    pair, split, window, before[cut], after[cut],
                    None if label is None else label[cut], valid[cut], counts,
                )
                if row is not None:
                    rows.append(row)
        return rows

    def _write_chip(
        self,
        pair: TilePair,
        split: str,
        window: Window,
        before: np.ndarray,
        after: np.ndarray,
        label: np.ndarray | None,
        valid: np.ndarray,
        counts: SplitCounts,
    ) -> dict | None:
        """Write one chip (unless it holds too little valid data) and return its manifest row."""
        valid_fraction = float(valid.mean())
        if valid_fraction < self.config.min_valid_fraction:
            counts.skipped_low_valid += 1
            return None
        row_off, col_off = int(window.row_off), int(window.col_off)
        relative = f"chips/{pair.pair_id}/r{row_off}_c{col_off}.npz"
        arrays: dict[str, Any] = {"before": before, "after": after}
        changed_fraction = math.nan
        if label is not None:
            arrays["label"] = label
            labelled = int(np.count_nonzero(label != IGNORE))
            if labelled:
                changed_fraction = int(np.count_nonzero(label == CHANGE)) / labelled
        np.savez(self.out_dir / relative, **arrays)
        tag = chip_label(changed_fraction, self.config.change_threshold)
        counts.chips += 1
        if tag == CONSTRUCTION:
            counts.construction += 1
        elif tag == NO_CONSTRUCTION:
            counts.no_construction += 1
        else:
            counts.unlabelled += 1
        return {
            "pair_id": pair.pair_id,
            "split": split,
            "row_off": row_off,
            "col_off": col_off,
            "height": int(window.height),
            "width": int(window.width),
            "changed_fraction": changed_fraction,
            "valid_fraction": valid_fraction,
            "label": tag,
            "path": relative,
        }


def cut_chips(
    specs: Sequence[PairSpec],
    out_dir: str | Path,
    config: ChipConfig,
    layout: str = "custom",
    root: str | Path | None = None,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
    skip_invalid_pairs: bool = False,
) -> ChipSummary:
    """Cut tile pairs into chips and write ``manifest.parquet``, ``dataset.json``, ``stats.json``.

    Statistics are taken over the train split when it is cut, otherwise over every cut pair
    (``stats.json`` names the splits used).

    Args:
        specs: The pairs (with their splits).
        out_dir: The chip dataset folder to write.
        config: Chip size, stride, bands, thresholds and splits.
        layout: Name of the dataset layout, recorded in ``dataset.json``.
        root: The dataset root, recorded in ``dataset.json``.
        overwrite: Replace an existing chip dataset in ``out_dir``.
        progress: Called with one line per pair as it is cut.
        skip_invalid_pairs: Leave out pairs that cannot be opened (bad files, sizes, labels)
            instead of stopping; they are listed in ``dataset.json`` under ``skipped_pairs``.
    """
    out = Path(out_dir)
    selected = [s for s in specs if config.splits is None or s.split in config.splits]
    if not selected:
        wanted = ", ".join(config.splits or ())
        raise InputError(root or out, f"no pair in the requested split(s) {wanted}")
    selected, pairs, skipped = _open_pairs(selected, skip_invalid_pairs)
    if not pairs:
        raise InputError(root or out, "no pair could be opened")
    bands = resolve_bands(pairs, config.bands)  # before out_dir is touched: a bad band keeps it
    _prepare_out_dir(out, overwrite)
    cut_splits = {s.split for s in selected}
    stats_splits = {"train"} if "train" in cut_splits else cut_splits
    stats = BandStatistics(bands)
    counts = {split: SplitCounts() for split in _ordered(cut_splits)}
    rows: list[dict] = []
    pair_records: list[dict] = []
    for spec, pair in zip(selected, pairs, strict=True):
        chipper = PairChipper(config, bands, out, stats if spec.split in stats_splits else None)
        record = _pair_record(spec, pair)
        match = match_pair(pair, bands) if config.date_matching == "mean_std" else None
        if match is not None:
            record["date_match"] = match.to_dict()
        before_chips = counts[spec.split].chips
        rows += chipper.cut(pair, spec.split, counts[spec.split], match)
        counts[spec.split].pairs += 1
        pair_records.append(record)
        if progress is not None:
            made = counts[spec.split].chips - before_chips
            progress(f"{spec.pair_id} ({spec.split}): {made} chips")
    manifest = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)).astype(
        {"row_off": "int64", "col_off": "int64", "height": "int64", "width": "int64"}
    )
    normalization = stats.result("+".join(_ordered(stats_splits)))
    manifest.to_parquet(out / "manifest.parquet", index=False)
    normalization.save(out / "stats.json")
    summary = ChipSummary(out, bands, counts, manifest, normalization, pair_records, skipped)
    _write_dataset_json(summary, config, layout, root, pairs)
    (out / INCOMPLETE_MARK).unlink(missing_ok=True)  # complete: a rerun needs --overwrite now
    return summary


def _open_pairs(
    specs: Sequence[PairSpec], skip_invalid: bool
) -> tuple[list[PairSpec], list[TilePair], list[dict]]:
    """Open every pair; with ``skip_invalid``, leave out (and report) those that fail."""
    kept: list[PairSpec] = []
    pairs: list[TilePair] = []
    skipped: list[dict] = []
    for spec in specs:
        try:
            pair = spec.open()
        except InputError as err:
            if not skip_invalid:
                raise
            skipped.append({"pair_id": spec.pair_id, "split": spec.split, "error": str(err)})
            continue
        kept.append(spec)
        pairs.append(pair)
    return kept, pairs, skipped


def read_manifest(chips_dir: str | Path) -> pd.DataFrame:
    """The manifest of a chip dataset; InputError when it is missing or lacks columns."""
    path = Path(chips_dir) / "manifest.parquet"
    if not path.exists():
        raise InputError(path, "chip manifest does not exist (run 'groundbreak chips' first)")
    try:
        manifest = pd.read_parquet(path)
    except (OSError, ValueError, pa.ArrowException) as err:
        raise InputError(path, f"cannot be read as a parquet manifest ({err})") from err
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise InputError(path, f"manifest lacks column(s) {', '.join(missing)}")
    return manifest


def _ordered(splits: set[str]) -> list[str]:
    """Splits in the usual order (train, val, test, predict), unknown ones after them."""
    return sorted(splits, key=lambda s: (SPLIT_ORDER.index(s) if s in SPLIT_ORDER else 99, s))


def _prepare_out_dir(out: Path, overwrite: bool) -> None:
    """Create the output folder; refuse to mix with an earlier chip dataset unless overwriting.

    The leftovers of a run that did not finish (failed or killed: the folder still holds
    :data:`INCOMPLETE_MARK`) are replaced without ``overwrite``.
    """
    if out.exists() and not out.is_dir():
        raise InputError(out, "output path exists and is not a folder")
    previous = [out / n for n in ("manifest.parquet", "dataset.json", "stats.json", "chips")]
    unfinished = (out / INCOMPLETE_MARK).is_file()
    if any(p.exists() for p in previous):
        if not (overwrite or unfinished):
            raise InputError(
                out, "already holds a chip dataset; choose another folder or overwrite"
            )
        for path in previous:
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    (out / "chips").mkdir(parents=True, exist_ok=True)
    (out / INCOMPLETE_MARK).write_text("a 'groundbreak chips' run is writing this folder\n")


def _pair_record(spec: PairSpec, pair: TilePair) -> dict:
    """The ``pairs`` entry of ``dataset.json`` for one pair."""
    return {
        "pair_id": spec.pair_id,
        "split": spec.split,
        "before": str(Path(spec.before).resolve()),
        "after": str(Path(spec.after).resolve()),
        "label": str(Path(spec.label).resolve()) if spec.label is not None else None,
        "before_date": spec.before_date,
        "after_date": spec.after_date,
        "width": pair.grid.width,
        "height": pair.grid.height,
    }


def _pixel_size_m(pairs: Sequence[TilePair]) -> float | None:
    """Median ground pixel size of the pair grids in metres (None without georeference)."""
    sizes = [math.sqrt(p.grid.pixel_area_m2()) for p in pairs if p.grid.georeferenced]
    return round(float(np.median(sizes)), 3) if sizes else None


def _write_dataset_json(
    summary: ChipSummary,
    config: ChipConfig,
    layout: str,
    root: str | Path | None,
    pairs: Sequence[TilePair],
) -> None:
    """Write ``dataset.json``: how the chips were cut and what came out."""
    payload = {
        "layout": layout,
        "root": str(Path(root).resolve()) if root is not None else None,
        "bands": summary.bands,
        "chip_size": config.chip_size,
        "stride": config.step,
        "change_threshold": config.change_threshold,
        "min_valid_fraction": config.min_valid_fraction,
        "date_matching": config.date_matching,
        "pixel_size_m": _pixel_size_m(pairs),
        "pairs": summary.pairs,
        "counts": {split: asdict(c) for split, c in summary.counts.items()},
        "skipped_pairs": summary.skipped_pairs,
    }
    (summary.out_dir / "dataset.json").write_text(json.dumps(payload, indent=2) + "\n")
