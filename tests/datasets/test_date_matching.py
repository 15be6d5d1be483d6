"""Date matching (after date onto before date, band by band) on real OSCD fixtures and
generated rasters: the fit, what it leaves out, sampling, and chips cut with it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from rasterio.windows import Window

from groundbreak.datasets import InputError
from groundbreak.datasets.chips import ChipConfig, cut_chips
from groundbreak.datasets.datamodule import ChangeDataModule, ChipsDirectory
from groundbreak.datasets.date_matching import (
    GAIN_RANGE,
    MIN_PIXELS,
    DateMatch,
    check_date_matching,
    fit_date_match,
    match_pair,
    sample_factor,
)
from groundbreak.datasets.grid import Grid
from groundbreak.datasets.layouts import oscd_pairs
from groundbreak.datasets.pair import TilePair
from groundbreak.datasets.pair_spec import PairSpec
from groundbreak.datasets.scene import open_scene


@pytest.fixture(scope="module")
def beirut_arrays(fixtures_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Both dates of the real Beirut fixture (13 bands, 96 x 96)."""
    pair = PairSpec(
        "b", fixtures_dir / "oscd/beirut/imgs_1", fixtures_dir / "oscd/beirut/imgs_2"
    ).open()
    return pair.read()


def test_matched_after_date_has_the_before_mean_and_std(beirut_arrays) -> None:
    before, after = beirut_arrays
    match = fit_date_match(before, after)
    matched = match.apply(after)
    assert match.pixels == 96 * 96
    flat_b, flat_m = before.reshape(13, -1), matched.reshape(13, -1)
    np.testing.assert_allclose(flat_m.mean(axis=1), flat_b.mean(axis=1), rtol=1e-4)
    np.testing.assert_allclose(flat_m.std(axis=1), flat_b.std(axis=1), rtol=1e-4)
    # the real pair differs in brightness: the map is not the identity
    assert np.abs(match.gain - 1).max() > 0.05 or np.abs(match.offset).max() > 50


def test_a_scene_wide_linear_change_is_undone_exactly(beirut_arrays) -> None:
    before, _ = beirut_arrays
    brighter = before * 1.3 + 250.0
    np.testing.assert_allclose(fit_date_match(before, brighter).apply(brighter), before,
                               rtol=1e-5, atol=0.05)


def test_unobserved_and_invalid_pixels_are_left_out_of_the_fit(beirut_arrays) -> None:
    before, _ = beirut_arrays
    after = before * 2.0
    after[:, :20, :20] = 30000.0  # a cloud on the after date
    after[:, 90:, :] = np.nan  # outside the after scene
    observed = np.ones(before.shape[1:], dtype=bool)
    observed[:20, :20] = False
    match = fit_date_match(before, after, observed)
    np.testing.assert_allclose(match.gain, 0.5, rtol=1e-5)
    np.testing.assert_allclose(match.offset, 0.0, atol=0.05)
    assert match.pixels == 90 * 96 - 20 * 20
    assert not np.allclose(fit_date_match(before, after).gain, 0.5, rtol=0.05)  # cloud counted


def test_too_few_pixels_give_the_identity_and_gains_are_bounded() -> None:
    rng = np.random.default_rng(0)
    before = rng.uniform(0, 1000, (2, 30, 30)).astype(np.float32)  # 900 < MIN_PIXELS
    assert MIN_PIXELS > 30 * 30
    identity = fit_date_match(before, before * 3)
    assert identity.pixels == 0 and (identity.gain == 1).all() and (identity.offset == 0).all()
    before = rng.uniform(0, 1000, (2, 40, 40)).astype(np.float32)
    after = before.copy()
    after[0] = 7.0  # a constant band: no spread to match
    after[1] *= 0.01  # a band 100 times flatter: its gain is clipped
    match = fit_date_match(before, after)
    assert match.gain[0] == 1.0 and match.gain[1] == pytest.approx(GAIN_RANGE[1])


def test_bad_shapes_and_modes_are_refused() -> None:
    with pytest.raises(ValueError, match="must be equal"):
        fit_date_match(np.zeros((2, 4, 4)), np.zeros((3, 4, 4)))
    with pytest.raises(ValueError, match="expected 2 bands"):
        DateMatch.identity(2).apply(np.zeros((3, 4, 4), np.float32))
    with pytest.raises(ValueError, match="none, mean_std"):
        check_date_matching("histogram")
    with pytest.raises(ValueError, match="unknown date matching"):
        ChipConfig(chip_size=32, date_matching="meanstd")


def test_large_pairs_are_sampled_and_their_clouds_left_out(tmp_path: Path, make_raster) -> None:
    assert sample_factor(Grid(10980, 10980, Affine(10, 0, 0, 0, -10, 0), "EPSG:32636")) == 6
    assert sample_factor(Grid(1200, 900, Affine(10, 0, 0, 0, -10, 0), "EPSG:32636")) == 1
    rng = np.random.default_rng(1)
    transform = Affine(10, 0, 600000, 0, -10, 4000000)
    data = rng.uniform(500, 3000, (64, 4100)).astype(np.float32)
    after_data = data * 2.0
    after_data[:, :1000] = 20000.0  # cloud over the first 1000 columns of the after date
    before = open_scene(make_raster(tmp_path / "b.tif", data, transform, "EPSG:32636",
                                    descriptions=["B04"]))
    after = open_scene(make_raster(tmp_path / "a.tif", after_data, transform, "EPSG:32636",
                                   descriptions=["B04"]))
    pair = TilePair("big", before, after)
    unobserved = np.zeros((16, 1025), dtype=bool)  # coarse mask, 4 pair pixels per mask pixel
    unobserved[:, :250] = True
    match = match_pair(pair, ["B04"], unobserved=unobserved, unobserved_factor=4)
    # sampled every 3rd pixel (22 x 1367 samples; the last row and column centred outside the
    # scene), the 333 sample columns whose centre lies under the cloud mask left out
    assert match.pixels == 21 * (1367 - 333 - 1)
    np.testing.assert_allclose(match.gain, 0.5, rtol=1e-5)


@pytest.fixture(scope="module")
def matched_chips(fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("matched") / "chips"
    specs = [s for s in oscd_pairs(fixtures_dir / "oscd") if s.pair_id == "beirut"]
    cut_chips(specs, out, ChipConfig(chip_size=32, date_matching="mean_std"), layout="oscd")
    return out


def test_chips_cut_with_matching_hold_the_matched_after_date(
    matched_chips: Path, fixtures_dir: Path
) -> None:
    meta = json.loads((matched_chips / "dataset.json").read_text())
    assert meta["date_matching"] == "mean_std"
    (record,) = meta["pairs"]
    pair = [s for s in oscd_pairs(fixtures_dir / "oscd") if s.pair_id == "beirut"][0].open()
    match = match_pair(pair, meta["bands"])
    np.testing.assert_allclose(record["date_match"]["gain"], match.gain, atol=1e-4)
    manifest = ChipsDirectory(matched_chips).manifest
    row = manifest.iloc[4]
    window = Window(row.col_off, row.row_off, row.width, row.height)
    before, after = pair.read(meta["bands"], window)
    with np.load(matched_chips / row.path) as chip:
        np.testing.assert_array_equal(chip["before"], before)
        np.testing.assert_allclose(chip["after"], match.apply(after), rtol=1e-6)
        assert not np.allclose(chip["after"], after, rtol=0.01)


def test_datamodule_refuses_chips_cut_another_way(matched_chips: Path, tmp_path: Path) -> None:
    module = ChangeDataModule(matched_chips, date_matching="mean_std")
    assert module.date_matching == "mean_std"
    assert ChangeDataModule(matched_chips).date_matching == "mean_std"  # the chips' own
    with pytest.raises(InputError, match="--date-matching none"):
        ChangeDataModule(matched_chips, date_matching="none")
    with pytest.raises(InputError, match="unknown date_matching 'z'"):
        ChangeDataModule(matched_chips, date_matching="z")
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("manifest.parquet", "stats.json"):
        (broken / name).write_bytes((matched_chips / name).read_bytes())
    meta = json.loads((matched_chips / "dataset.json").read_text())
    (broken / "dataset.json").write_text(json.dumps({**meta, "date_matching": "histogram"}))
    with pytest.raises(InputError, match=r"dataset.json.*unknown date_matching 'histogram'"):
        ChipsDirectory(broken)
