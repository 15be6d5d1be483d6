"""Chip cutting end to end on the real fixtures: files, manifest, counts, statistics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from affine import Affine
from rasterio.windows import Window

from groundbreak.datasets import InputError
from groundbreak.datasets.chips import (
    MANIFEST_COLUMNS,
    ChipConfig,
    ChipSummary,
    cut_chips,
    read_manifest,
)
from groundbreak.datasets.layouts import levir_pairs, oscd_pairs
from groundbreak.datasets.pair_spec import PairSpec

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(scope="module")
def oscd_chips(tmp_path_factory: pytest.TempPathFactory) -> ChipSummary:
    """32 px chips of the OSCD fixtures: beirut train, abudhabi val, dubai test."""
    out = tmp_path_factory.mktemp("chips") / "oscd"
    specs = oscd_pairs(FIXTURES / "oscd", val_pairs=["abudhabi"])
    return cut_chips(specs, out, ChipConfig(chip_size=32, stride=32), layout="oscd",
                     root=FIXTURES / "oscd")


def test_manifest_columns_and_counts(oscd_chips: ChipSummary) -> None:
    manifest = read_manifest(oscd_chips.out_dir)
    assert list(manifest.columns) == list(MANIFEST_COLUMNS)
    assert manifest.groupby("pair_id").size().to_dict() == {"abudhabi": 9, "beirut": 9, "dubai": 4}
    assert (manifest.groupby("pair_id")["split"].nunique() == 1).all()  # no pair crosses splits
    assert manifest.groupby("pair_id")["split"].first().to_dict() == {
        "abudhabi": "val", "beirut": "train", "dubai": "test",
    }
    for split, counts in oscd_chips.counts.items():
        rows = manifest[manifest.split == split]
        assert counts.chips == len(rows)
        assert counts.construction == int((rows.label == "construction").sum())
        assert counts.no_construction == int((rows.label == "no_construction").sum())
    train = oscd_chips.counts["train"]
    assert train.construction > 0 and train.no_construction > 0
    test_rows = manifest[manifest.split == "test"]
    assert (test_rows.label == "").all() and test_rows.changed_fraction.isna().all()
    labelled = manifest[manifest.split != "test"]
    expected = np.where(labelled.changed_fraction >= 0.01, "construction", "no_construction")
    assert (labelled.label.to_numpy() == expected).all()
    assert (manifest.height == 32).all() and (manifest.width == 32).all()


def test_chip_files_hold_the_pair_pixels(oscd_chips: ChipSummary) -> None:
    manifest = read_manifest(oscd_chips.out_dir)
    pair = oscd_pairs(FIXTURES / "oscd", val_pairs=["abudhabi"])[1].open()  # abudhabi
    for row in manifest[manifest.pair_id == "abudhabi"].itertuples():
        with np.load(oscd_chips.out_dir / row.path) as chip:
            window = Window(row.col_off, row.row_off, row.width, row.height)
            before, after = pair.read(oscd_chips.bands, window)
            assert chip["before"].dtype == np.float32 and chip["label"].dtype == np.uint8
            np.testing.assert_array_equal(chip["before"], before)
            np.testing.assert_allclose(chip["after"], after, rtol=1e-6)
            np.testing.assert_array_equal(chip["label"], pair.read_label(window))
            labelled = chip["label"] != 255
            changed = (chip["label"] == 1).sum() / labelled.sum()
            assert row.changed_fraction == pytest.approx(changed)
    with np.load(oscd_chips.out_dir / manifest[manifest.split == "test"].path.iloc[0]) as chip:
        assert "label" not in chip


def test_dataset_json_and_stats(oscd_chips: ChipSummary) -> None:
    meta = json.loads((oscd_chips.out_dir / "dataset.json").read_text())
    assert meta["layout"] == "oscd" and meta["chip_size"] == 32 and meta["stride"] == 32
    assert meta["bands"] == oscd_chips.bands and len(meta["bands"]) == 13
    assert meta["change_threshold"] == 0.01 and meta["min_valid_fraction"] == 0.5
    assert 9 < meta["pixel_size_m"] < 11
    pairs = {p["pair_id"]: p for p in meta["pairs"]}
    assert pairs["beirut"]["before_date"] == "2015-08-20" and pairs["beirut"]["width"] == 96
    assert pairs["dubai"]["label"] is None
    assert meta["counts"]["train"]["chips"] == 9
    stats = json.loads((oscd_chips.out_dir / "stats.json").read_text())
    assert stats["split"] == "train" and stats["bands"] == oscd_chips.bands
    assert stats["pixels"] == 2 * 96 * 96  # both dates of beirut, every pixel once
    before, after = PairSpec(
        "b", FIXTURES / "oscd/beirut/imgs_1", FIXTURES / "oscd/beirut/imgs_2"
    ).open().read(oscd_chips.bands)
    both = np.concatenate([before, after], axis=2).reshape(13, -1).astype(np.float64)
    np.testing.assert_allclose(stats["mean"], both.mean(axis=1), rtol=1e-9)
    np.testing.assert_allclose(stats["std"], both.std(axis=1), rtol=1e-6)


def test_overlapping_stride_snaps_and_counts_each_pixel_once(tmp_path: Path) -> None:
    specs = [s for s in oscd_pairs(FIXTURES / "oscd") if s.pair_id == "beirut"]
    summary = cut_chips(specs, tmp_path / "c", ChipConfig(chip_size=40, stride=30, bands=["B04"]))
    offsets = sorted(set(summary.manifest.row_off))
    assert offsets == [0, 30, 56]  # the last row of chips is snapped to the edge
    assert len(summary.manifest) == 9
    assert summary.stats.pixels == 2 * 96 * 96


def test_scene_smaller_than_a_chip_is_padded(tmp_path: Path) -> None:
    specs = [s for s in oscd_pairs(FIXTURES / "oscd") if s.pair_id == "beirut"]
    summary = cut_chips(specs, tmp_path / "c", ChipConfig(chip_size=128, bands=["B02", "B03"]))
    (row,) = summary.manifest.itertuples()
    assert row.valid_fraction == pytest.approx(96 * 96 / 128**2)
    with np.load(tmp_path / "c" / row.path) as chip:
        assert chip["before"].shape == (2, 128, 128)
        assert np.isnan(chip["before"][:, 96:]).all()
        assert np.isfinite(chip["before"][:, :96, :96]).all()
        assert (chip["label"][96:] == 255).all() and (chip["label"][:, 96:] == 255).all()
    skipped = cut_chips(specs, tmp_path / "d", ChipConfig(chip_size=128, min_valid_fraction=0.6))
    assert skipped.counts["train"].chips == 0 and skipped.counts["train"].skipped_low_valid == 1


def test_pixels_invalid_in_either_date_are_ignored(tmp_path: Path, make_raster) -> None:
    transform = Affine(10, 0, 0, 0, -10, 160)
    before = make_raster(tmp_path / "b.tif", np.full((16, 16), 5, np.uint16), transform,
                         "EPSG:32636", nodata=0)
    after_data = np.full((16, 16), 6, np.uint16)
    after_data[:, :4] = 0  # nodata stripe in the after-scene only
    after = make_raster(tmp_path / "a.tif", after_data, transform, "EPSG:32636", nodata=0)
    label = make_raster(tmp_path / "l.tif", np.ones((16, 16), np.uint8))
    spec = PairSpec("p", before, after, label, split="train", label_convention="0-1")
    summary = cut_chips([spec], tmp_path / "c", ChipConfig(chip_size=16))
    (row,) = summary.manifest.itertuples()
    assert row.valid_fraction == pytest.approx(0.75) and row.changed_fraction == 1.0
    with np.load(tmp_path / "c" / row.path) as chip:
        assert (chip["label"][:, :4] == 255).all() and (chip["label"][:, 4:] == 1).all()


def test_existing_output_is_kept_unless_overwritten(tmp_path: Path) -> None:
    specs = levir_pairs(FIXTURES / "levir")
    config = ChipConfig(chip_size=128, stride=128, splits=["val"])
    cut_chips(specs, tmp_path / "c", config)
    with pytest.raises(InputError, match=r"c: already holds a chip dataset"):
        cut_chips(specs, tmp_path / "c", config)
    again = cut_chips(specs, tmp_path / "c", config, overwrite=True)
    assert len(again.manifest) == 4
    assert len(list((tmp_path / "c" / "chips").rglob("*.npz"))) == 4


def test_levir_layout_and_split_selection(tmp_path: Path) -> None:
    summary = cut_chips(
        levir_pairs(FIXTURES / "levir"), tmp_path / "c",
        ChipConfig(chip_size=128, splits=["train", "test"]), layout="levir",
    )
    assert summary.bands == ["red", "green", "blue"]
    assert list(summary.counts) == ["train", "test"]
    assert set(summary.manifest.split) == {"train", "test"}
    assert summary.stats.split == "train" and summary.stats.pixels == 2 * 256 * 256
    meta = json.loads((tmp_path / "c" / "dataset.json").read_text())
    assert meta["pixel_size_m"] is None
    manifest = pd.read_parquet(tmp_path / "c" / "manifest.parquet")
    assert manifest.valid_fraction.eq(1.0).all()


def test_bands_are_checked_on_every_scene(tmp_path: Path) -> None:
    specs = oscd_pairs(FIXTURES / "oscd")
    summary = cut_chips(specs, tmp_path / "c", ChipConfig(chip_size=96, bands=["b4", "B8"]))
    assert summary.bands == ["B04", "B08"]
    with pytest.raises(InputError, match=r"imgs_1: scene has no band\(s\) B13"):
        cut_chips(specs, tmp_path / "d", ChipConfig(chip_size=96, bands=["B04", "B13"]))
    assert not (tmp_path / "d").exists()  # nothing written: a corrected rerun needs no overwrite
    cut_chips(specs, tmp_path / "d", ChipConfig(chip_size=96, bands=["B04"]))
    with pytest.raises(InputError, match="no pair in the requested split"):
        cut_chips(specs, tmp_path / "e", ChipConfig(chip_size=96, splits=["predict"]))


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"manifest\.parquet: chip manifest does not exist"):
        read_manifest(tmp_path)
