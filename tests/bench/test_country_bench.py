"""``bench/country_bench.py``: a COG-only run builds its pairs, and a failed night has no rate."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
OSCD = ROOT / "tests" / "fixtures" / "oscd"


BENCH = ROOT / "bench" / "country_bench.py"


def load_bench() -> ModuleType:
    """The bench script as a module."""
    spec = importlib.util.spec_from_file_location("country_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cog_only_pairs_name_the_written_cogs(tmp_path: Path) -> None:
    bench = load_bench()
    args = argparse.Namespace(pairs=1, chain=False, size=64, data=OSCD, cache=tmp_path,
                              formats=bench.format_list("cog"))
    rows = bench.build_pairs(args)
    assert set(rows) == {"cog"}
    (row,) = rows["cog"]
    for key in ("before", "after"):
        folder = Path(row[key])
        assert folder.is_dir() and len(list(folder.glob("*_B04.tif"))) == 1
    assert not list(tmp_path.rglob("*.SAFE"))  # the format not asked for is not built
    assert bench.build_pairs(args) == rows  # reused from the cache, the same paths


def test_a_failed_pair_fails_the_night() -> None:
    bench = load_bench()
    failed = {"pairs": [("beirut-0", "failed", 0.0, "x: file does not exist")], "exit_code": 1,
              "failures": [{"pair_id": "beirut-0", "reason": "x: file does not exist"}]}
    assert bench.night_failures(failed) == ["beirut-0: x: file does not exist"]
    scored = {"pairs": [("beirut-0", "scored", 3.0, None)], "exit_code": 0, "failures": []}
    assert bench.night_failures(scored) == []
    with pytest.raises(argparse.ArgumentTypeError, match="unknown format"):
        bench.format_list("cog,jp2")
