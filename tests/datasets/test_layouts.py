"""Dataset layouts: OSCD (both folder forms), A/B/label folders, pairs CSV."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from groundbreak.datasets import InputError
from groundbreak.datasets.layouts import (
    layout_pairs,
    levir_pairs,
    oscd_pairs,
    read_oscd_dates,
    read_pairs_csv,
)


def test_oscd_fixture_pairs(oscd_dir: Path) -> None:
    specs = {s.pair_id: s for s in oscd_pairs(oscd_dir)}
    assert list(specs) == ["beirut", "abudhabi", "dubai"]
    assert specs["beirut"].split == "train" and specs["abudhabi"].split == "train"
    assert specs["dubai"].split == "test" and specs["dubai"].label is None
    beirut = specs["beirut"]
    assert beirut.before == oscd_dir / "beirut" / "imgs_1"
    assert beirut.label == oscd_dir / "beirut" / "cm" / "beirut-cm.tif"
    assert (beirut.before_date, beirut.after_date) == ("2015-08-20", "2017-10-03")
    assert beirut.label_convention == "1-2"
    pair = beirut.open()
    assert pair.label is not None and pair.read_label().max() == 1


def test_oscd_val_cities(oscd_dir: Path) -> None:
    splits = {s.pair_id: s.split for s in oscd_pairs(oscd_dir, val_pairs=["abudhabi"])}
    assert splits == {"beirut": "train", "abudhabi": "val", "dubai": "test"}
    with pytest.raises(InputError, match=r"train\.txt: validation cities paris are not train"):
        oscd_pairs(oscd_dir, val_pairs=["paris"])


def test_oscd_as_distributed(oscd_dir: Path, tmp_path: Path) -> None:
    # images/<city>/..., images/train.txt, train-labels/<city>/cm/<city>-cm.tif
    root = tmp_path / "oscd"
    for city in ("beirut", "abudhabi", "dubai"):
        skip_labels = shutil.ignore_patterns("cm")
        shutil.copytree(oscd_dir / city, root / "images" / city, ignore=skip_labels)
        if (oscd_dir / city / "cm").exists():
            shutil.copytree(oscd_dir / city / "cm", root / "train-labels" / city / "cm")
    for name in ("train.txt", "test.txt"):
        shutil.copy(oscd_dir / name, root / "images" / name)
    specs = oscd_pairs(root)
    assert [s.split for s in specs] == ["train", "train", "test"]
    assert specs[0].label == root / "train-labels" / "beirut" / "cm" / "beirut-cm.tif"
    (root / "train-labels" / "abudhabi" / "cm" / "abudhabi-cm.tif").unlink()
    with pytest.raises(InputError, match=r"abudhabi-cm\.tif: label of train city abudhabi"):
        oscd_pairs(root)


def test_oscd_bad_folders(oscd_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="OSCD folder does not exist"):
        oscd_pairs(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"train\.txt: city list does not exist"):
        oscd_pairs(tmp_path / "empty")
    dates = tmp_path / "dates.txt"
    dates.write_text("date_1: 2015\n")
    with pytest.raises(InputError, match=r"dates\.txt: expected two lines"):
        read_oscd_dates(dates)


def test_levir_fixture_splits_from_prefixes(levir_dir: Path) -> None:
    specs = {s.pair_id: s for s in levir_pairs(levir_dir)}
    assert {k: s.split for k, s in specs.items()} == {
        "test_2_0000_0000": "test", "train_36_0512_0512": "train", "val_27_0000_0256": "val",
    }
    spec = specs["val_27_0000_0256"]
    assert spec.before == levir_dir / "A" / "val_27_0000_0256.png"
    assert spec.after == levir_dir / "B" / "val_27_0000_0256.png"
    assert spec.label == levir_dir / "label" / "val_27_0000_0256.png"


def test_levir_list_files_and_unlabelled_pairs(levir_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "set"
    shutil.copytree(levir_dir, root)
    (root / "label" / "test_2_0000_0000.png").unlink()
    (root / "list").mkdir()
    (root / "list" / "val.txt").write_text("train_36_0512_0512.png\n")
    specs = {s.pair_id: s for s in levir_pairs(root)}
    assert specs["train_36_0512_0512"].split == "val"  # the list wins over the prefix
    assert specs["test_2_0000_0000"].label is None


def test_levir_split_subfolders(levir_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "set"
    for split, name in (("train", "train_36_0512_0512"), ("test", "val_27_0000_0256")):
        for folder in ("A", "B", "label"):
            (root / split / folder).mkdir(parents=True)
            shutil.copy(levir_dir / folder / f"{name}.png", root / split / folder / f"{name}.png")
    splits = {s.pair_id: s.split for s in levir_pairs(root)}
    assert splits == {"train_36_0512_0512": "train", "val_27_0000_0256": "test"}


def test_levir_without_prefix_is_train_and_bad_folders(levir_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "set"
    for folder in ("A", "B"):
        (root / folder).mkdir(parents=True)
        shutil.copy(levir_dir / folder / "val_27_0000_0256.png", root / folder / "tile.png")
    assert [s.split for s in levir_pairs(root)] == ["train"]
    (root / "B" / "tile.png").unlink()
    with pytest.raises(InputError, match=r"tile\.png: no after-image tile\.\*"):
        levir_pairs(root)
    (root / "A" / "tile.png").unlink()
    with pytest.raises(InputError, match=r"A: folder holds no images"):
        levir_pairs(root)
    (tmp_path / "none").mkdir()
    with pytest.raises(InputError, match="expected A/ B/ label/"):
        levir_pairs(tmp_path / "none")


def test_pairs_csv(tmp_path: Path, oscd_dir: Path) -> None:
    csv = tmp_path / "pairs.csv"
    csv.write_text(
        "pair_id,before,after,label,split,before_date,after_date\n"
        f"b,{oscd_dir}/beirut/imgs_1,{oscd_dir}/beirut/imgs_2,"
        f"{oscd_dir}/beirut/cm/beirut-cm.tif,train,2015-08-20,2017-10-03\n"
        "rel,imgs/a.tif,imgs/b.tif,,,,\n"
    )
    first, second = read_pairs_csv(csv)
    assert first.split == "train" and first.label == oscd_dir / "beirut" / "cm" / "beirut-cm.tif"
    assert first.before_date == "2015-08-20"
    assert second.before == tmp_path / "imgs" / "a.tif" and second.label is None
    assert second.split == "predict" and second.after_date is None
    assert first.open().read_label().max() == 1


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("pair_id,before\nx,a.tif\n", r"CSV lacks column\(s\) after"),
        ("pair_id,before,after,split\nx,a.tif,b.tif,training\n", "line 2: unknown split"),
        ("pair_id,before,after\nx,,b.tif\n", "line 2: pair_id, before and after"),
        ("pair_id,before,after\nx,a.tif,b.tif\nx,c.tif,d.tif\n", "pair id 'x' appears twice"),
        ("pair_id,before,after\n", "CSV lists no pairs"),
        ("pair_id,before,after\nx,a.tif,b.tif,extra\n", "line 2: more cells than the header"),
        ("pair_id,before,after\nx,a.tif,s3://b/c.tif\n", "line 2: after is a URL; .* manifest"),
    ],
)
def test_bad_pairs_csv(tmp_path: Path, text: str, problem: str) -> None:
    csv = tmp_path / "pairs.csv"
    csv.write_text(text)
    with pytest.raises(InputError, match=rf"pairs\.csv: {problem}"):
        read_pairs_csv(csv)


def test_missing_csv_and_layout_val_pairs(tmp_path: Path, levir_dir: Path) -> None:
    with pytest.raises(InputError, match="pairs CSV does not exist"):
        read_pairs_csv(tmp_path / "nope.csv")
    specs = layout_pairs("levir", levir_dir, val_pairs=["test_2_0000_0000"])
    assert {s.pair_id: s.split for s in specs}["test_2_0000_0000"] == "val"
    with pytest.raises(InputError, match="validation pairs nope are not in the dataset"):
        layout_pairs("levir", levir_dir, val_pairs=["nope"])
