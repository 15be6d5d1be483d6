"""The sequence bench's scene builder on the real OSCD and cloud fixtures (bench/ is not a package:
it is imported by path)."""

from __future__ import annotations

import importlib.util
import sys
from datetime import date
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from groundbreak.datasets.scene import open_scene

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
CUMULUS = FIXTURES / "clouds" / "cumulus_l1c_13band.tif"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sequence_bench", ROOT / "bench" /
                                                  "sequence_bench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def built(bench: ModuleType, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("sequence")
    [seq] = bench.build_sequences(FIXTURES / "oscd", ["beirut"], out, count=3, every=40,
                                  start=date(2017, 1, 10), clouds=1, cloud_sample=CUMULUS,
                                  seed=3)
    return seq, out


def _real(seq) -> tuple[np.ndarray, np.ndarray]:
    before = open_scene(FIXTURES / "oscd" / "beirut" / "imgs_1")
    after = open_scene(FIXTURES / "oscd" / "beirut" / "imgs_2")
    return before.read(grid=seq.grid), after.read(grid=seq.grid)


def test_scenes_are_dated_drop_entries_on_the_city_grid(bench: ModuleType, built) -> None:
    seq, out = built
    assert seq.dates == ["2017-01-10", "2017-02-19", "2017-03-31"]
    assert [p.name for p in seq.scenes] == ["beirut_20170110", "beirut_20170219",
                                            "beirut_20170331"]
    city_grid = open_scene(FIXTURES / "oscd" / "beirut" / "imgs_1").grid
    for folder in seq.scenes:
        scene = open_scene(folder)
        assert scene.band_names == bench.BANDS
        assert scene.grid == city_grid
    again = bench.build_sequences(FIXTURES / "oscd", ["beirut"], out, count=3, every=40,
                                  start=date(2017, 1, 10), clouds=1, cloud_sample=CUMULUS,
                                  seed=3)
    assert again[0].scenes == seq.scenes and again[0].starts == seq.starts  # reused


def test_change_is_built_gradually_and_ground_follows_the_seasons(
    bench: ModuleType, built
) -> None:
    seq, _ = built
    first, second = _real(seq)
    clear = [k for k, c in enumerate(seq.cloudy) if not c]
    assert 0 in clear and seq.changed.any()
    for k in clear:
        days = 40 * k
        written = open_scene(seq.scenes[k]).read()
        gain = np.asarray(seq.gains[k], np.float32)[:, None, None]
        weight = np.full(seq.changed.shape, bench.seasonal_weight(days), np.float32)
        for region, start in seq.starts.items():
            weight[seq.regions == region] = bench.build_progress(days, start)
        expected = gain * ((1 - weight) * first + weight * second)
        assert np.abs(written - np.clip(np.rint(expected), 0, 65535)).max() <= 1
    assert all(start == 0 for start in seq.starts.values())  # 3 acquisitions: built from day 0
    assert bench.build_progress(40, 0) == pytest.approx(1 / 3)
    assert 0 < bench.seasonal_weight(0) < bench.seasonal_weight(40) < 1


def test_a_real_cloud_and_its_shadow_are_pasted_on_a_later_acquisition(
    bench: ModuleType, built
) -> None:
    seq, _ = built
    [k] = [k for k, c in enumerate(seq.cloudy) if c]
    assert k > 0 and seq.cloud_at[k] is not None
    sample = bench.read_cloud_sample(CUMULUS)
    height, width = seq.grid.shape
    row, col = seq.cloud_at[k]
    assert row >= 0 and col >= 0
    rows = slice(row, min(row + sample.cloud.shape[0], height))
    cols = slice(col, min(col + sample.cloud.shape[1], width))
    cloud = np.zeros((height, width), bool)
    cloud[rows, cols] = sample.cloud[:rows.stop - row, :cols.stop - col]
    assert cloud.sum() > 100
    written = open_scene(seq.scenes[k]).read()
    pasted = sample.values[:, :rows.stop - row, :cols.stop - col]
    inside = cloud[rows, cols]
    np.testing.assert_array_equal(written[:, rows, cols][:, inside], pasted[:, inside])
    shadow = bench.shifted(cloud, *sample.shadow_offset) & ~cloud
    assert shadow.sum() > 10
    first, second = _real(seq)
    weight = bench.seasonal_weight(40 * k)
    unshaded = np.asarray(seq.gains[k])[:, None] * ((1 - weight) * first + weight * second)[
        :, shadow & ~seq.changed]
    nir = bench.BANDS.index("B08")
    assert np.median(written[nir][shadow & ~seq.changed] / unshaded[nir]) < 0.9
