"""A pair with too little valid data is a failure with its reason in ``rank`` and a warning in
``predict``, never a silent "no change" (issue 12, item 15)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import torch

from groundbreak.datasets.bands import SENTINEL2_BANDS
from groundbreak.datasets.pair_spec import PairSpec
from groundbreak.infer.cli import main as groundbreak
from groundbreak.infer.prediction.coverage import MIN_VALID_FRACTION, too_little_valid_data
from groundbreak.infer.sites.ranking import rank_pairs
from groundbreak.train.bundle import save_bundle
from groundbreak.train.model import ChangeUNet


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = ChangeUNet(len(SENTINEL2_BANDS), "early", "mobilenet_v2", 3, (32, 16, 8))
    meta = {"name": "tiny", "bands": list(SENTINEL2_BANDS), "chip_size": 64, "threshold": 0.5,
            "normalization": {"mean": [1500.0] * 13, "std": [500.0] * 13}}
    return save_bundle(model, meta, tmp_path_factory.mktemp("bundle") / "b")


def filled_scene(source: Path, out: Path, value: float) -> Path:
    """A copy of a per-band scene whose every pixel is ``value`` (float32)."""
    out.mkdir(parents=True)
    for band in sorted(source.glob("*.tif")):
        with rasterio.open(band) as src:
            profile = {**src.profile, "dtype": "float32", "nodata": None}
            data = np.full((src.count, src.height, src.width), value, np.float32)
        with rasterio.open(out / band.name, "w", **profile) as dst:
            dst.write(data)
    return out


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_rank_fails_a_pair_without_valid_data_with_the_reason(
    tmp_path: Path, fixtures_dir: Path, bundle: Path, value: float
) -> None:
    beirut = fixtures_dir / "oscd" / "beirut"
    after = filled_scene(beirut / "imgs_2", tmp_path / "after", value)
    pairs = [PairSpec("blank", beirut / "imgs_1", after),
             PairSpec("beirut", beirut / "imgs_1", beirut / "imgs_2")]
    result = rank_pairs(pairs, tmp_path / "run", bundle, write_report=False)
    failures = pd.read_csv(tmp_path / "run" / "failures.csv")
    assert failures["pair_id"].tolist() == ["blank"]
    reason = failures["reason"].iloc[0]
    assert "too little valid data: only 0.00% of the pair has a prediction" in reason
    assert "NaN or infinite" in reason
    assert not result.ok


def test_predict_warns_when_the_map_is_all_nodata(
    tmp_path: Path, fixtures_dir: Path, bundle: Path, capsys: pytest.CaptureFixture
) -> None:
    beirut = fixtures_dir / "oscd" / "beirut"
    after = filled_scene(beirut / "imgs_2", tmp_path / "after", np.nan)
    code = groundbreak(["predict", "--before", str(beirut / "imgs_1"), "--after", str(after),
                        "--out", str(tmp_path / "out"), "--model", str(bundle)])
    assert code == 0  # the maps are written; the warning says they are empty
    assert "warning: too little valid data" in capsys.readouterr().err
    shutil.rmtree(tmp_path / "out")
    assert groundbreak(["predict", "--before", str(beirut / "imgs_1"), "--after",
                        str(beirut / "imgs_2"), "--out", str(tmp_path / "out"), "--model",
                        str(bundle)]) == 0
    assert "too little" not in capsys.readouterr().err


@dataclass
class Result:
    valid_fraction: float
    unobserved_fraction: float = 0.0


def test_reason_names_clouds_and_invalid_input() -> None:
    assert too_little_valid_data(Result(MIN_VALID_FRACTION)) is None
    reason = too_little_valid_data(Result(0.004, unobserved_fraction=0.3))
    assert "only 0.40% of the pair" in reason
    assert "30.0% is hidden by clouds or shadow" in reason
    assert "69.6% has no valid input on both dates" in reason


def test_a_pair_hidden_mostly_by_clouds_is_cloudy_not_broken() -> None:
    """The nightly batch skips it as cloudy; it is no failure (issue 10)."""
    assert too_little_valid_data(Result(0.004, unobserved_fraction=0.9)) is None
