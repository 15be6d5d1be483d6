"""``groundbreak rank``: non-finite area options are usage errors (exit 2), caught by argparse;
``--threshold``, ``--date-matching`` and ``--nodata`` reach the prediction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from rasterio.crs import CRS

from groundbreak.datasets.bands import SENTINEL2_L2A_BANDS
from groundbreak.infer.cli.rank import main as rank
from groundbreak.train.bundle import save_bundle
from groundbreak.train.model import ChangeUNet


@pytest.mark.parametrize(
    ("option", "value"),
    [("--area-scale", "nan"), ("--area-scale", "inf"), ("--area-scale", "-inf"),
     ("--area-scale", "0"), ("--min-area", "inf"), ("--min-area", "nan"), ("--min-area", "-1")],
)
def test_non_finite_area_options_exit_2(
    option: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        rank(["--pairs", str(tmp_path / "pairs.csv"), "--out", str(tmp_path / "out"),
              f"{option}={value}"])
    assert exit_info.value.code == 2
    assert f"argument {option}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def write_scene(path: Path, data: np.ndarray) -> Path:
    """A 10-band uint16 GeoTIFF in UTM 33N without a nodata value."""
    profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": 10,
               "dtype": "uint16", "crs": CRS.from_epsg(32633),
               "transform": Affine(10, 0, 500_000, 0, -10, 4_000_000)}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        dst.descriptions = tuple(SENTINEL2_L2A_BANDS)
    return path


@pytest.fixture
def pairs_csv(tmp_path: Path) -> Path:
    """One generated pair whose before-scene has a block of zeros; the after date is brighter."""
    data = np.random.default_rng(0).integers(500, 3000, (10, 64, 64)).astype(np.uint16)
    before = data.copy()
    before[:, :16, :16] = 0
    write_scene(tmp_path / "before.tif", before)
    write_scene(tmp_path / "after.tif", (data * 1.3).astype(np.uint16))
    path = tmp_path / "pairs.csv"
    path.write_text("pair_id,before,after\np,before.tif,after.tif\n")
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded, untrained 10-band bundle with a TTA threshold."""
    torch.manual_seed(0)
    bands = list(SENTINEL2_L2A_BANDS)
    meta = {"bands": bands, "normalization": {"mean": [1500.0] * 10, "std": [800.0] * 10},
            "chip_size": 32, "threshold": 0.5, "tta_threshold": 0.45}
    network = ChangeUNet(len(bands), encoder_depth=1, decoder_channels=(8,))
    return save_bundle(network, meta, tmp_path_factory.mktemp("model"))


def ranked(pairs: Path, out: Path, model: Path, *options: str) -> tuple[np.ndarray, np.ndarray]:
    """``rank`` on ``pairs``: the pair's probability and mask rasters."""
    code = rank(["--pairs", str(pairs), "--out", str(out), "--model", str(model),
                 "--device", "cpu", "--cloud-mask", "none", "--window", "64", "--no-report",
                 *options])
    assert code == 0
    pair = out / "pairs" / "p"
    with rasterio.open(pair / "probability.tif") as p, rasterio.open(pair / "mask.tif") as m:
        return p.read(1), m.read(1)


def test_threshold_date_matching_and_nodata(
    pairs_csv: Path, model: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    probability, mask = ranked(pairs_csv, tmp_path / "plain", model)
    assert "(threshold 0.5, date matching none)" in capsys.readouterr().out
    valid = np.isfinite(probability)
    assert valid.all()  # zeros are data without --nodata
    assert np.array_equal(mask == 1, probability >= 0.5)
    level = float(np.quantile(probability, 0.5))
    again, mask = ranked(pairs_csv, tmp_path / "cut", model, "--threshold", f"{level:.6f}")
    assert np.array_equal(again, probability)
    assert np.array_equal(mask == 1, probability >= round(level, 6))
    ranked(pairs_csv, tmp_path / "tta", model, "--tta")
    assert "(threshold 0.45, date matching none)" in capsys.readouterr().out
    matched, _ = ranked(pairs_csv, tmp_path / "matched", model, "--date-matching", "mean_std")
    assert "date matching mean_std" in capsys.readouterr().out
    assert not np.allclose(matched, probability)
    hidden, mask = ranked(pairs_csv, tmp_path / "nodata", model, "--nodata", "0")
    assert np.isnan(hidden[:16, :16]).all() and np.isfinite(hidden[32:, 32:]).all()
    assert (mask[:16, :16] == 255).all()
