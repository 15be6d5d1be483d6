"""Training data from a chips directory: a torch Dataset of chips and a LightningDataModule.

A chips directory (written by ``groundbreak chips``) holds ``manifest.parquet`` (one row per chip),
``dataset.json`` (band names, chip size, pairs), ``stats.json`` (per-band mean and standard
deviation over the train split) and ``chips/<pair_id>/r<row>_c<col>.npz`` with raw ``before`` and
``after`` float32 ``(C, H, W)`` arrays (NaN = invalid) and a ``label`` uint8 ``(H, W)`` mask
(0 no change, 1 change, 255 ignore). This module selects bands by name, normalises with the stats,
replaces NaN by 0, augments and batches; it never changes the files.
"""

from __future__ import annotations

import json
import zipfile
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import torch
from lightning.fabric.utilities.data import AttributeDict
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from groundbreak.datasets.bands import normalize_band_name
from groundbreak.datasets.chips import read_manifest
from groundbreak.datasets.date_matching import DATE_MATCHING_MODES
from groundbreak.datasets.errors import InputError
from groundbreak.datasets.normalization import NormalizationStats, normalize_bands
from groundbreak.datasets.transforms import IGNORE_INDEX, build_train_augmentation

ChipTransform = Callable[
    [np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]
]
"""Signature of a chip transform: ``(before, after, mask) -> (before, after, mask)``."""


class ChipsDirectory:
    """The metadata of a chips directory: manifest, band names, normalisation statistics.

    Args:
        root: The chips directory.

    Raises:
        InputError: When the directory or one of its metadata files is missing or unreadable.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(self.root, "chips directory not found (run 'groundbreak chips')")
        self.info: dict[str, Any] = _read_json(self.root / "dataset.json")
        self.stats = NormalizationStats.load(self.root / "stats.json")
        self.manifest = read_manifest(self.root)
        self.bands: list[str] = [normalize_band_name(b) for b in self._field("bands")]
        self.chip_size = int(self._field("chip_size"))
        self.pixel_size_m: float | None = self.info.get("pixel_size_m")
        self.date_matching: str = str(self.info.get("date_matching", "none"))
        if self.date_matching not in DATE_MATCHING_MODES:
            raise InputError(
                self.root / "dataset.json",
                f"unknown date_matching {self.date_matching!r}; expected one of "
                f"{', '.join(DATE_MATCHING_MODES)}",
            )
        stats_bands = [normalize_band_name(b) for b in self.stats.bands]
        self._stats_by_band = dict(
            zip(stats_bands, zip(self.stats.mean, self.stats.std, strict=True), strict=True)
        )

    def _field(self, key: str) -> Any:
        if key not in self.info:
            raise InputError(self.root / "dataset.json", f"missing field {key!r}")
        return self.info[key]

    def resolve_bands(self, bands: Sequence[str] | None) -> list[str]:
        """Canonical names of the requested bands (all bands when ``None``), checked to exist."""
        if bands is None:
            return list(self.bands)
        wanted = [normalize_band_name(b) for b in bands]
        if not wanted:
            raise InputError(self.root, "the band list is empty")
        missing = [b for b in wanted if b not in self.bands]
        if missing:
            raise InputError(
                self.root,
                f"band(s) {', '.join(missing)} not in this chips directory "
                f"(it has {', '.join(self.bands)})",
            )
        return wanted

    def band_statistics(self, bands: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Per-band mean and standard deviation (float32); a zero deviation becomes 1."""
        missing = [b for b in bands if b not in self._stats_by_band]
        if missing:
            raise InputError(self.root / "stats.json", f"no statistics for {', '.join(missing)}")
        mean = np.array([self._stats_by_band[b][0] for b in bands], dtype=np.float32)
        std = np.array([self._stats_by_band[b][1] for b in bands], dtype=np.float32)
        if not (np.isfinite(mean).all() and np.isfinite(std).all()):
            raise InputError(self.root / "stats.json", "mean or std is not finite")
        std[std <= 0] = 1.0
        return mean, std

    def split_rows(self, split: str) -> pd.DataFrame:
        """The manifest rows of one split, in manifest order."""
        rows = self.manifest[self.manifest["split"] == split].reset_index(drop=True)
        if rows.empty:
            present = ", ".join(sorted(self.manifest["split"].unique())) or "none"
            raise InputError(self.root, f"no chips in split {split!r} (splits present: {present})")
        return rows


def read_chip(
    path: Path, band_count: int, band_indices: Sequence[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """One chip file: before and after (float32, the selected bands) and its label, or None.

    Checks that the file holds ``band_count`` bands and that the label matches the chip.
    """
    try:
        with np.load(path, allow_pickle=False) as chip:
            absent = [key for key in ("before", "after") if key not in chip]
            if absent:
                raise InputError(path, f"chip file lacks array(s) {', '.join(absent)}")
            before = np.asarray(chip["before"], dtype=np.float32)
            after = np.asarray(chip["after"], dtype=np.float32)
            label = np.asarray(chip["label"], dtype=np.uint8) if "label" in chip else None
    except InputError:
        raise
    except FileNotFoundError as err:
        raise InputError(path, "chip file not found") from err
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise InputError(path, f"unreadable chip file ({err})") from err
    if before.ndim != 3 or before.shape[0] != band_count or before.shape != after.shape:
        raise InputError(
            path,
            f"before/after shapes {before.shape} and {after.shape} do not match "
            f"{band_count} bands of the chips directory",
        )
    if label is not None and label.shape != before.shape[1:]:
        raise InputError(path, f"label shape {label.shape} differs from chip {before.shape[1:]}")
    return before[list(band_indices)], after[list(band_indices)], label


class ChangeChipDataset(Dataset[dict[str, torch.Tensor]]):
    """The chips of one split, normalised and ready for the model.

    Args:
        chips_dir: A chips directory (see the module docstring).
        split: Which split's chips to serve (``"train"``, ``"val"``, ...).
        bands: Band names to feed the model, in this order; ``None`` means all bands of the
            chips directory.
        transform: Optional augmentation ``(before, after, mask) -> (before, after, mask)`` on
            normalised ``(C, H, W)`` arrays, e.g. :class:`~groundbreak.datasets.transforms.
            ChangeAugmentation`.

    Each item is a dict with ``before`` and ``after`` (float32 tensors ``(C, H, W)``, normalised,
    invalid pixels 0) and ``mask`` (int64 ``(H, W)``; 0, 1, or 255 where there is no label).

    Raises:
        InputError: For a missing or malformed chips directory, an unknown band, an empty split,
            or (when read) an unreadable chip file.
    """

    def __init__(
        self,
        chips_dir: str | Path | ChipsDirectory,
        split: str,
        bands: Sequence[str] | None = None,
        transform: ChipTransform | None = None,
    ) -> None:
        self.directory = (
            chips_dir if isinstance(chips_dir, ChipsDirectory) else ChipsDirectory(chips_dir)
        )
        self.split = split
        self.bands = self.directory.resolve_bands(bands)
        self.band_indices = [self.directory.bands.index(b) for b in self.bands]
        self.mean, self.std = self.directory.band_statistics(self.bands)
        self.rows = self.directory.split_rows(split)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def labels(self) -> list[str]:
        """Each chip's label: ``"construction"``, ``"no_construction"`` or ``""`` (unlabelled)."""
        return [str(v) if isinstance(v, str) else "" for v in self.rows["label"]]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        path = self.directory.root / str(self.rows.at[index, "path"])
        before, after, mask = self._read_chip(path)
        before, after = self._normalize(before), self._normalize(after)
        before, after, mask = self._pad_to_chip_size(before, after, mask)
        if self.transform is not None:
            before, after, mask = self.transform(before, after, mask)
        return {
            "before": torch.from_numpy(np.ascontiguousarray(before, dtype=np.float32)),
            "after": torch.from_numpy(np.ascontiguousarray(after, dtype=np.float32)),
            "mask": torch.from_numpy(mask.astype(np.int64)),
        }

    def _read_chip(self, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The raw arrays of one chip file, with the requested bands (no label: all ignore)."""
        before, after, label = read_chip(path, len(self.directory.bands), self.band_indices)
        if label is None:
            label = np.full(before.shape[1:], IGNORE_INDEX, dtype=np.uint8)
        return before, after, label

    def _normalize(self, image: np.ndarray) -> np.ndarray:
        """Per-band z-score; NaN (invalid) pixels become 0, the band mean."""
        return normalize_bands(image, self.mean, self.std)

    def _pad_to_chip_size(
        self, before: np.ndarray, after: np.ndarray, mask: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pad chips smaller than the directory's chip size (0 in images, 255 in the mask)."""
        size = self.directory.chip_size
        pad_h, pad_w = size - mask.shape[0], size - mask.shape[1]
        if pad_h <= 0 and pad_w <= 0:
            return before, after, mask
        pad_h, pad_w = max(pad_h, 0), max(pad_w, 0)
        image_pad = ((0, 0), (0, pad_h), (0, pad_w))
        return (
            np.pad(before, image_pad),
            np.pad(after, image_pad),
            np.pad(mask, ((0, pad_h), (0, pad_w)), constant_values=IGNORE_INDEX),
        )


def balanced_sample_weights(labels: Sequence[str]) -> torch.Tensor:
    """Sampling weights giving every label class the same expected share of draws.

    Unlabelled chips (label ``""``) weigh 0: every pixel of theirs is ignored by the loss, so
    drawing them would only make empty batches. The weights sum to 1.

    Raises:
        ValueError: When no chip is labelled.
    """
    counts = Counter(label for label in labels if label)
    if not counts:
        raise ValueError("no chip is labelled, so there is nothing to balance or learn from")
    weights = [1.0 / (len(counts) * counts[label]) if label else 0.0 for label in labels]
    return torch.tensor(weights, dtype=torch.double)


class ChangeDataModule(LightningDataModule):
    """Train/val/test dataloaders over a chips directory.

    Args:
        chips_dir: A chips directory written by ``groundbreak chips``.
        bands: Band names to train on, in order; ``None`` means every band of the chips.
        batch_size: Chips per batch.
        num_workers: DataLoader worker processes (0 reads in the main process).
        balance: Draw ``construction`` and ``no_construction`` train chips with equal expected
            share (a WeightedRandomSampler with ``num_samples = len(train)``), so sparse change
            is seen often enough, and never draw unlabelled chips (they give no loss);
            otherwise the train chips are shuffled.
        augment: Augment train chips (flips, rot90, per-date gain/offset and noise).
        affine_p: Probability of a small affine warp in the augmentation (0 disables it).
        product_shift_p: Probability of a product-level radiometric shift shared by both dates
            (L1C against L2A reflectance; 0 disables it), for models meant to run on both.
        date_gain: Range of the per-band gain drawn for each date separately (contrast: haze,
            season, sun angle between the acquisitions).
        date_offset: Range of the per-band offset drawn for each date separately, in z-scores
            (brightness: haze, season).
        shadow_p: Probability, per date, of shadow-like darkened patches
            (:class:`~groundbreak.datasets.transforms.LocalDarkening`; 0 disables it): a shadow
            on one date only is not construction.
        date_matching: The date matching the chips must have been cut with (``none`` or
            ``mean_std``, see :mod:`groundbreak.datasets.date_matching`); None accepts the
            chips' own. The bundle exported from this training records the chips' mode, and
            prediction matches the dates the same way.
        train_split: Manifest split used for training.
        val_split: Manifest split used for validation.
        test_split: Manifest split used by ``trainer.test`` (``None``: no test set).
        seed: Seed of the train sampler, the shuffling and the augmentation.

    The attributes :attr:`bands`, :attr:`mean`, :attr:`std`, :attr:`chip_size`,
    :attr:`num_bands`, :attr:`pixel_size_m` and :attr:`date_matching` are known right after
    construction, so a LightningCLI can link ``num_bands`` to the model and an export can record
    the normalisation.
    """

    def __init__(
        self,
        chips_dir: str | Path,
        bands: list[str] | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        balance: bool = True,
        augment: bool = True,
        affine_p: float = 0.0,
        product_shift_p: float = 0.0,
        date_gain: tuple[float, float] = (0.9, 1.1),
        date_offset: tuple[float, float] = (-0.1, 0.1),
        shadow_p: float = 0.0,
        date_matching: str | None = None,
        train_split: str = "train",
        val_split: str = "val",
        test_split: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        chips_dir = str(chips_dir)  # plain types only, so checkpoints load with weights_only
        self.save_hyperparameters()
        if batch_size < 1:
            raise InputError(chips_dir, f"batch_size must be at least 1, got {batch_size}")
        for name, (low, high), floor in (("date_gain", date_gain, 0.0),
                                         ("date_offset", date_offset, -np.inf)):
            if not floor < low <= high:
                raise InputError(chips_dir, f"{name} must be a range [low, high] with low <= "
                                 f"high{' and low > 0' if floor == 0 else ''}, got "
                                 f"[{low}, {high}]")
        if date_matching is not None and date_matching not in DATE_MATCHING_MODES:
            raise InputError(chips_dir, f"unknown date_matching {date_matching!r}; expected one "
                             f"of {', '.join(DATE_MATCHING_MODES)}")
        if not 0.0 <= shadow_p <= 1.0:
            raise InputError(chips_dir, f"shadow_p must be a probability in [0, 1], got {shadow_p}")
        self.directory = ChipsDirectory(chips_dir)
        self.bands: list[str] = self.directory.resolve_bands(bands)
        self.mean, self.std = self.directory.band_statistics(self.bands)
        self.chip_size: int = self.directory.chip_size
        self.pixel_size_m: float | None = self.directory.pixel_size_m
        self.date_matching: str = self.directory.date_matching
        if date_matching is not None and date_matching != self.date_matching:
            raise InputError(
                self.directory.root / "dataset.json",
                f"the chips were cut with date matching {self.date_matching!r} but the config "
                f"asks for {date_matching!r}: cut them again with 'groundbreak chips "
                f"--date-matching {date_matching}'",
            )
        self.train_dataset: ChangeChipDataset | None = None
        self.val_dataset: ChangeChipDataset | None = None
        self.test_dataset: ChangeChipDataset | None = None

    @property
    def _hp(self) -> AttributeDict:
        """The hyperparameters :meth:`save_hyperparameters` saved (an ``AttributeDict``)."""
        return cast(AttributeDict, self.hparams)

    @property
    def num_bands(self) -> int:
        """Bands per date fed to the model (the model's ``in_channels``)."""
        return len(self.bands)

    def _dataset(self, split: str, transform: ChipTransform | None = None) -> ChangeChipDataset:
        return ChangeChipDataset(self.directory, split, bands=self.bands, transform=transform)

    def setup(self, stage: str) -> None:
        """Open the datasets a stage needs (``fit``, ``validate``, ``test``)."""
        hp = self._hp
        if stage == "fit" and self.train_dataset is None:
            augmentation = build_train_augmentation(
                affine_p=hp.affine_p, seed=hp.seed, product_shift_p=hp.product_shift_p,
                gain=tuple(hp.date_gain), offset=tuple(hp.date_offset),
                shadow_p=hp.shadow_p, band_mean=self.mean, band_std=self.std,
            )
            self.train_dataset = self._dataset(
                hp.train_split, augmentation if hp.augment else None
            )
        if stage in ("fit", "validate") and self.val_dataset is None:
            self.val_dataset = self._dataset(hp.val_split)
        if stage == "test" and self.test_dataset is None:
            if hp.test_split is None:
                raise InputError(self.directory.root, "no test_split configured for testing")
            self.test_dataset = self._dataset(hp.test_split)

    def _loader(self, dataset: Dataset[Any], **kwargs: Any) -> DataLoader[Any]:
        workers = self._hp.num_workers
        return DataLoader(
            dataset,
            batch_size=self._hp.batch_size,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader[Any]:
        """Balanced (or shuffled) train chips, drawn with a seeded generator."""
        assert self.train_dataset is not None, "call setup('fit') first"
        generator = torch.Generator().manual_seed(self._hp.seed)
        if self._hp.balance:
            try:
                weights = balanced_sample_weights(self.train_dataset.labels)
            except ValueError as err:
                raise InputError(
                    self.directory.root, f"split {self._hp.train_split!r}: {err}"
                ) from err
            sampler = WeightedRandomSampler(
                weights.tolist(),
                num_samples=len(self.train_dataset),
                replacement=True,
                generator=generator,
            )
            return self._loader(self.train_dataset, sampler=sampler)
        return self._loader(self.train_dataset, shuffle=True, generator=generator)

    def val_dataloader(self) -> DataLoader[Any]:
        """Validation chips in manifest order."""
        assert self.val_dataset is not None, "call setup('fit') or setup('validate') first"
        return self._loader(self.val_dataset)

    def test_dataloader(self) -> DataLoader[Any]:
        """Test chips in manifest order."""
        assert self.test_dataset is not None, "call setup('test') first"
        return self._loader(self.test_dataset)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise InputError(path, "file not found (not a chips directory?)") from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(path, f"unreadable JSON ({err})") from err
    if not isinstance(record, dict):
        raise InputError(path, "expected a JSON object")
    return record
