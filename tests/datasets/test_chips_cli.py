"""``groundbreak chips``: counts on success, one error line (exit 2) on bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from groundbreak.datasets.chips import ChipConfig, cut_chips
from groundbreak.datasets.layouts import oscd_pairs
from groundbreak.infer.cli import main as groundbreak


def test_chips_on_the_oscd_fixtures(oscd_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "chips"
    code = groundbreak([
        "chips", "--layout", "oscd", "--root", str(oscd_dir), "--size", "48", "--stride", "48",
        "--out", str(out), "--val-pairs", "abudhabi", "--bands", "B02,B03,B04,B08",
    ])
    assert code == 0
    printed = capsys.readouterr().out
    assert "wrote 12 chips of 48x48 at stride 48 (4 bands: B02,B03,B04,B08)" in printed
    lines = {line.split()[0]: line.split()[1:] for line in printed.splitlines()[2:]}
    assert lines["train"][:2] == ["1", "4"] and lines["val"][:2] == ["1", "4"]
    assert lines["test"][:2] == ["1", "4"]  # 64 px: windows at 0 and 16
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert len(manifest) == 12
    assert json.loads((out / "dataset.json").read_text())["bands"] == ["B02", "B03", "B04", "B08"]


def test_chips_on_a_pairs_csv(oscd_dir: Path, tmp_path: Path, capsys) -> None:
    csv = tmp_path / "pairs.csv"
    csv.write_text(
        "pair_id,before,after,label,split\n"
        f"beirut,{oscd_dir}/beirut/imgs_1,{oscd_dir}/beirut/imgs_2,"
        f"{oscd_dir}/beirut/cm/beirut-cm.tif,train\n"
    )
    code = groundbreak([
        "chips", "--layout", "csv", "--root", str(csv), "--size", "96", "--out",
        str(tmp_path / "c"), "--quiet", "--change-threshold", "0.5",
    ])
    assert code == 0
    (row,) = pd.read_parquet(tmp_path / "c" / "manifest.parquet").itertuples()
    assert row.label == "no_construction" and 0.05 < row.changed_fraction < 0.5


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    return err


def test_missing_root_is_one_line(tmp_path: Path, capsys) -> None:
    code = groundbreak(["chips", "--layout", "oscd", "--root", str(tmp_path / "nope"),
                        "--out", str(tmp_path / "c")])
    assert code == 2
    assert _error_line(capsys) == (
        f"groundbreak chips: error: {tmp_path / 'nope'}: OSCD folder does not exist"
    )


def test_unknown_band_is_one_line(oscd_dir: Path, tmp_path: Path, capsys) -> None:
    code = groundbreak(["chips", "--layout", "oscd", "--root", str(oscd_dir), "--bands", "B04,B99",
                        "--out", str(tmp_path / "c")])
    assert code == 2
    assert "imgs_1: scene has no band(s) B99" in _error_line(capsys)


def test_corrupt_band_file_is_one_line(oscd_dir: Path, tmp_path: Path, capsys) -> None:
    root = tmp_path / "oscd"
    shutil.copytree(oscd_dir, root)
    broken = next((root / "beirut" / "imgs_2").glob("*_B04.tif"))
    broken.write_bytes(broken.read_bytes()[:3000])
    code = groundbreak(["chips", "--layout", "oscd", "--root", str(root), "--bands", "B04",
                        "--out", str(tmp_path / "c")])
    assert code == 2
    assert str(broken) in _error_line(capsys)


def test_bad_options_are_usage_errors(oscd_dir: Path, tmp_path: Path) -> None:
    code = groundbreak(["chips", "--layout", "oscd", "--root", str(oscd_dir), "--size", "0",
                        "--out", str(tmp_path / "c")])
    assert code == 2
    code = groundbreak(["chips", "--layout", "oscd", "--root", str(oscd_dir), "--splits",
                        "training", "--out", str(tmp_path / "c")])
    assert code == 2
    assert not (tmp_path / "c").exists()


def test_error_from_a_subprocess(tmp_path: Path) -> None:
    csv = tmp_path / "pairs.csv"
    csv.write_text(f"pair_id,before,after\nx,{tmp_path / 'missing.tif'},{tmp_path / 'b.tif'}\n")
    result = subprocess.run(
        [sys.executable, "-m", "groundbreak.infer.cli", "chips", "--layout", "csv",
         "--root", str(csv), "--out", str(tmp_path / "c")],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"groundbreak chips: error: {tmp_path / 'missing.tif'}: scene does not exist"
    )


@pytest.mark.shared
def test_real_oscd_city(shared_data: Path, tmp_path: Path) -> None:
    specs = [s for s in oscd_pairs(shared_data / "oscd") if s.pair_id == "bercy"]
    assert specs and specs[0].split == "train"
    summary = cut_chips(specs, tmp_path / "c", ChipConfig(chip_size=128, stride=128), layout="oscd")
    assert summary.bands[0] == "B01" and len(summary.bands) == 13
    assert summary.counts["train"].chips == 12  # 395 rows: 0,128,256,267; 360 cols: 0,128,232
    assert summary.counts["train"].construction > 0
    with np.load(tmp_path / "c" / summary.manifest.path.iloc[-1]) as chip:
        assert chip["before"].shape == (13, 128, 128) and np.isfinite(chip["after"]).all()
    assert all(v > 0 for v in summary.stats.std)


def test_invalid_pairs_stop_the_run_or_are_skipped(levir_dir: Path, tmp_path: Path, capsys) -> None:
    from PIL import Image

    root = tmp_path / "levir"
    shutil.copytree(levir_dir, root)
    image = Image.open(levir_dir / "B" / "val_27_0000_0256.png")
    shutil.copy(levir_dir / "A" / "val_27_0000_0256.png", root / "A" / "odd.png")
    image.crop((0, 0, 256, 255)).save(root / "B" / "odd.png")  # one row short, no label
    args = ["chips", "--layout", "levir", "--root", str(root), "--size", "128", "--stride", "128",
            "--quiet"]
    assert groundbreak([*args, "--out", str(tmp_path / "a")]) == 2
    assert "odd.png: images without georeference must have the same size" in _error_line(capsys)
    assert not (tmp_path / "a" / "manifest.parquet").exists()
    assert groundbreak([*args, "--out", str(tmp_path / "b"), "--skip-invalid-pairs"]) == 0
    captured = capsys.readouterr()
    assert "skipped pair odd: " in captured.err
    meta = json.loads((tmp_path / "b" / "dataset.json").read_text())
    assert [p["pair_id"] for p in meta["skipped_pairs"]] == ["odd"]
    assert len(meta["pairs"]) == 3 and meta["counts"]["train"]["chips"] == 4


def test_a_failed_chips_run_does_not_block_its_rerun(oscd_dir: Path, tmp_path: Path,
                                                     capsys) -> None:
    broken = shutil.copytree(oscd_dir / "dubai" / "imgs_2", tmp_path / "broken")
    for band in broken.glob("*.tif"):  # the tags read, the compressed pixels cannot
        with Image.open(band) as image:
            start = min(image.tag_v2.get(273) or image.tag_v2[324])  # strip or tile offsets
        data = bytearray(band.read_bytes())
        data[start + 2:] = b"\xff" * (len(data) - start - 2)
        band.write_bytes(bytes(data))
    rows = "pair_id,before,after\n" + f"beirut,{oscd_dir}/beirut/imgs_1,{oscd_dir}/beirut/imgs_2\n"
    good = tmp_path / "good.csv"
    good.write_text(rows)
    bad = tmp_path / "bad.csv"
    bad.write_text(rows + f"dubai,{oscd_dir}/dubai/imgs_1,{broken}\n")
    out = tmp_path / "chips"
    args = ["chips", "--layout", "csv", "--size", "48", "--out", str(out), "--bands", "B02,B03"]
    assert groundbreak([*args, "--root", str(bad)]) == 2
    assert "broken" in capsys.readouterr().err and (out / "chips").is_dir()
    assert groundbreak([*args, "--root", str(good)]) == 0  # no --overwrite needed
    assert sorted(p.name for p in (out / "chips").iterdir()) == ["beirut"]
    capsys.readouterr()
    assert groundbreak([*args, "--root", str(good)]) == 2  # a finished dataset is kept
    assert "already holds a chip dataset" in capsys.readouterr().err


@pytest.mark.parametrize("pair_id", ["../../escaped", "/tmp/abs", ".hidden", "a\\b"])
def test_a_csv_pair_id_that_is_no_folder_name_is_refused(oscd_dir: Path, tmp_path: Path,
                                                          pair_id: str, capsys) -> None:
    csv = tmp_path / "sub" / "pairs.csv"
    csv.parent.mkdir()
    csv.write_text("pair_id,before,after\n"
                   f"{pair_id},{oscd_dir}/beirut/imgs_1,{oscd_dir}/beirut/imgs_2\n")
    out = tmp_path / "sub" / "chips"
    assert groundbreak(["chips", "--layout", "csv", "--root", str(csv), "--size", "48",
                        "--out", str(out)]) == 2
    assert "line 2: pair_id" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "escaped").exists()


def test_chips_cut_with_defaults_have_the_recipes_geometry(oscd_dir: Path, tmp_path: Path) -> None:
    """``chips`` without --size/--stride cuts what ``cv`` and the shipped bundle were made of."""
    from groundbreak.infer.evaluation.crossval import build_parser as cv_parser
    from groundbreak.train.bundle import DEFAULT_BUNDLE_DIR

    out = tmp_path / "chips"
    assert groundbreak(["chips", "--layout", "oscd", "--root", str(oscd_dir), "--out", str(out),
                        "--bands", "B02", "--quiet"]) == 0
    cut = json.loads((out / "dataset.json").read_text())
    recipe = cv_parser().parse_args(["--config", "c.yaml", "--folds", "f.yaml", "--out", "o"])
    assert (cut["chip_size"], cut["stride"]) == (recipe.size, recipe.stride) == (128, 64)
    shipped = json.loads((DEFAULT_BUNDLE_DIR / "model.json").read_text())
    assert shipped["chip_size"] == cut["chip_size"]
    assert ChipConfig().chip_size == 128 and ChipConfig().step == 64
    assert ChipConfig(chip_size=256).step == 128 and ChipConfig(32, stride=8).step == 8


def test_a_chip_size_beyond_memory_is_refused_before_reading(oscd_dir: Path, tmp_path: Path,
                                                             capsys) -> None:
    """Issue 26 item 23: 'chips --size 100000' on a 256 px pair tried to allocate 484 GiB."""
    csv = tmp_path / "pairs.csv"
    csv.write_text("pair_id,before,after\n"
                   f"beirut,{oscd_dir}/beirut/imgs_1,{oscd_dir}/beirut/imgs_2\n")
    code = groundbreak(["chips", "--layout", "csv", "--root", str(csv), "--size", "100000",
                        "--out", str(tmp_path / "chips")])
    assert code == 2 and "--size must be at most 4096" in capsys.readouterr().err
    assert not (tmp_path / "chips").exists()
    with pytest.raises(ValueError, match="at most 4096"):
        ChipConfig(chip_size=100_000)
