"""ChangeChipDataset and ChangeDataModule on real chips cut from the fixtures and on edge cases."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from groundbreak.datasets.datamodule import (
    ChangeChipDataset,
    ChangeDataModule,
    balanced_sample_weights,
)
from groundbreak.datasets.errors import InputError
from groundbreak.datasets.transforms import LocalDarkening
from groundbreak.infer.cli import main as groundbreak

BANDS = ["B02", "B03", "B04", "B08"]


@pytest.fixture(scope="module")
def real_chips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """32 px chips of the OSCD fixtures, cut by the chip cutter (beirut: train, abudhabi: val)."""
    fixtures = Path(__file__).resolve().parents[1] / "fixtures" / "oscd"
    out = tmp_path_factory.mktemp("chips") / "oscd"
    args = ["chips", "--layout", "oscd", "--root", str(fixtures), "--size", "32", "--out", str(out)]
    assert groundbreak([*args, "--val-pairs", "abudhabi", "--quiet"]) == 0
    return out


def write_chips_dir(
    root: Path, labels: list[str], size: int = 16, split: str = "train", unlabelled: bool = False
) -> Path:
    """A chips directory following the contract: one chip per entry of ``labels``."""
    rng = np.random.default_rng(0)
    rows = []
    for i, label in enumerate(labels):
        before = rng.normal(1000, 100, (len(BANDS), size, size)).astype(np.float32)
        after = before + 50
        before[:, 0, 0] = np.nan
        mask = np.zeros((size, size), np.uint8)
        if label == "construction":
            mask[:4, :4] = 1
        mask[-1, :] = 255
        path = f"chips/p{i}/r0_c0.npz"
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        arrays = {"before": before, "after": after}
        if not unlabelled:
            arrays["label"] = mask
        np.savez(root / path, **arrays)
        rows.append(
            {"pair_id": f"p{i}", "split": split, "row_off": 0, "col_off": 0, "height": size,
             "width": size, "changed_fraction": float((mask == 1).mean()), "valid_fraction": 1.0,
             "label": "" if unlabelled else label, "path": path}
        )
    pd.DataFrame(rows).to_parquet(root / "manifest.parquet")
    info = {"layout": "csv", "root": ".", "bands": BANDS, "chip_size": size, "stride": size,
            "change_threshold": 0.01, "min_valid_fraction": 0.5, "pixel_size_m": 10.0,
            "pairs": [], "counts": {}}
    (root / "dataset.json").write_text(json.dumps(info))
    stats = {"bands": BANDS, "mean": [1000.0] * 4, "std": [100.0] * 4, "split": "train",
             "pixels": 1}
    (root / "stats.json").write_text(json.dumps(stats))
    return root


def test_dataset_reads_real_chips(real_chips: Path) -> None:
    dataset = ChangeChipDataset(real_chips, "train")
    manifest = pd.read_parquet(real_chips / "manifest.parquet")
    assert len(dataset) == int((manifest["split"] == "train").sum()) > 0
    item = dataset[0]
    assert item["before"].shape == item["after"].shape == (13, 32, 32)
    assert item["before"].dtype == torch.float32 and item["mask"].dtype == torch.int64
    assert item["mask"].shape == (32, 32)
    assert set(item["mask"].unique().tolist()) <= {0, 1, 255}
    assert torch.isfinite(item["before"]).all() and torch.isfinite(item["after"]).all()


def test_bands_are_selected_by_name_and_normalised(real_chips: Path) -> None:
    dataset = ChangeChipDataset(real_chips, "val", bands=["b04", "B03", "B02"])
    assert dataset.bands == ["B04", "B03", "B02"]
    stats = json.loads((real_chips / "stats.json").read_text())
    index = {b: i for i, b in enumerate(stats["bands"])}
    raw = np.load(real_chips / dataset.rows.at[0, "path"])
    all_bands = json.loads((real_chips / "dataset.json").read_text())["bands"]
    expected = np.stack(
        [(raw["after"][all_bands.index(b)] - stats["mean"][index[b]]) / stats["std"][index[b]]
         for b in ("B04", "B03", "B02")]
    )
    np.testing.assert_allclose(dataset[0]["after"].numpy(), np.nan_to_num(expected), rtol=1e-5)


def test_nan_becomes_zero_and_unlabelled_chips_are_ignored(tmp_path: Path) -> None:
    write_chips_dir(tmp_path, ["", ""], split="test", unlabelled=True)
    item = ChangeChipDataset(tmp_path, "test")[0]
    assert item["before"][:, 0, 0].eq(0).all()
    assert item["mask"].eq(255).all()


def test_unknown_band_names_the_chips_dir(real_chips: Path) -> None:
    with pytest.raises(InputError, match="B99") as info:
        ChangeChipDataset(real_chips, "train", bands=["B02", "B99"])
    assert str(real_chips) in str(info.value)


@pytest.mark.parametrize("missing", ["manifest.parquet", "dataset.json", "stats.json"])
def test_missing_metadata_file_is_named(tmp_path: Path, missing: str) -> None:
    write_chips_dir(tmp_path, ["construction"])
    (tmp_path / missing).unlink()
    with pytest.raises(InputError, match=missing):
        ChangeChipDataset(tmp_path, "train")


def test_bad_inputs_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="chips directory not found"):
        ChangeChipDataset(tmp_path / "nowhere", "train")
    write_chips_dir(tmp_path, ["construction", "no_construction"])
    with pytest.raises(InputError, match="no chips in split 'val'"):
        ChangeChipDataset(tmp_path, "val")
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(InputError, match="dataset.json: unreadable JSON"):
        ChangeChipDataset(tmp_path, "train")


def test_corrupt_or_incomplete_chip_file_is_named(tmp_path: Path) -> None:
    write_chips_dir(tmp_path, ["construction", "no_construction"])
    dataset = ChangeChipDataset(tmp_path, "train")
    (tmp_path / "chips/p0/r0_c0.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match=r"p0/r0_c0.npz: unreadable chip file"):
        dataset[0]
    np.savez(tmp_path / "chips/p1/r0_c0.npz", before=np.zeros((4, 16, 16), np.float32))
    with pytest.raises(InputError, match=r"p1/r0_c0.npz: chip file lacks array\(s\) after$"):
        dataset[1]
    np.savez(tmp_path / "chips/p1/r0_c0.npz", before=np.zeros((3, 16, 16), np.float32),
             after=np.zeros((3, 16, 16), np.float32))
    with pytest.raises(InputError, match="do not match 4 bands"):
        dataset[1]


def test_datamodule_exposes_export_fields_and_batches(real_chips: Path) -> None:
    dm = ChangeDataModule(real_chips, bands=["B04", "B03", "B02", "B08"], batch_size=4)
    assert dm.num_bands == 4 and dm.chip_size == 32
    assert dm.mean.shape == dm.std.shape == (4,) and dm.mean.dtype == np.float32
    assert dm.pixel_size_m == pytest.approx(10.0, abs=0.1)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["before"].shape == (4, 4, 32, 32) and batch["mask"].shape == (4, 32, 32)
    val = next(iter(dm.val_dataloader()))
    assert val["after"].shape[1:] == (4, 32, 32)
    assert ChangeDataModule(real_chips).num_bands == 13


def test_datamodule_is_seeded(real_chips: Path) -> None:
    batches = []
    for _ in range(2):
        dm = ChangeDataModule(real_chips, batch_size=3, seed=5)
        dm.setup("fit")
        batches.append(next(iter(dm.train_dataloader())))
    torch.testing.assert_close(batches[0]["before"], batches[1]["before"])
    torch.testing.assert_close(batches[0]["mask"], batches[1]["mask"])


def test_balanced_sampling_gives_equal_share(tmp_path: Path) -> None:
    labels = ["no_construction"] * 18 + ["construction"] * 2
    write_chips_dir(tmp_path, labels)
    weights = balanced_sample_weights(labels)
    assert weights[labels.index("construction")] == pytest.approx(0.25)
    dm = ChangeDataModule(tmp_path, train_split="train", val_split="train", balance=True, seed=0)
    dm.setup("fit")
    sampler = dm.train_dataloader().sampler
    assert sampler.num_samples == len(labels)
    drawn = Counter(labels[i] for _ in range(100) for i in sampler)
    share = drawn["construction"] / sum(drawn.values())
    assert 0.45 < share < 0.55
    plain = ChangeDataModule(tmp_path, val_split="train", balance=False)
    plain.setup("fit")
    assert sorted(plain.train_dataloader().sampler) == list(range(len(labels)))


def test_datamodule_rejects_bad_settings(tmp_path: Path) -> None:
    write_chips_dir(tmp_path, ["construction"])
    with pytest.raises(InputError, match="batch_size"):
        ChangeDataModule(tmp_path, batch_size=0)
    dm = ChangeDataModule(tmp_path, val_split="train")
    with pytest.raises(InputError, match="no test_split"):
        dm.setup("test")
    with pytest.raises(InputError, match=r"date_gain must be .* low > 0, got \[0.0, 1.2\]"):
        ChangeDataModule(tmp_path, date_gain=(0.0, 1.2))
    with pytest.raises(InputError, match=r"date_offset must be .*, got \[0.5, -0.5\]"):
        ChangeDataModule(tmp_path, date_offset=(0.5, -0.5))
    with pytest.raises(InputError, match=r"shadow_p must be a probability in \[0, 1\], got 1.5"):
        ChangeDataModule(tmp_path, shadow_p=1.5)


def test_date_photometry_ranges_reach_the_train_augmentation(tmp_path: Path) -> None:
    """Wide per-date gain/offset ranges (haze, season) are what the train chips get."""
    write_chips_dir(tmp_path, ["construction"])
    dm = ChangeDataModule(tmp_path, val_split="train", date_gain=(2.0, 2.0),
                          date_offset=(1.0, 1.0), seed=3)
    dm.setup("fit")
    photometric = dm.train_dataset.transform.photometric.transforms
    assert (photometric[0].gain, photometric[0].offset) == ((2.0, 2.0), (1.0, 1.0))
    raw = ChangeDataModule(tmp_path, val_split="train", augment=False)
    raw.setup("fit")
    plain = raw.train_dataset[0]["before"]
    # Each draw applies gain 2 and offset 1 (p=0.8) or not, up to flips and noise (std <= 0.05).
    means = [float(dm.train_dataset[0]["before"].mean()) for _ in range(6)]
    applied = [m for m in means if abs(m - float(plain.mean())) > 0.5]
    assert applied and all(m == pytest.approx(2 * float(plain.mean()) + 1, abs=0.05)
                           for m in applied)


def test_shadow_augmentation_gets_the_chips_statistics(tmp_path: Path) -> None:
    """Shadow-like darkening works on raw reflectance, so it carries the chips' band statistics."""
    write_chips_dir(tmp_path, ["construction"])
    dm = ChangeDataModule(tmp_path, val_split="train", shadow_p=0.4)
    dm.setup("fit")
    shadow = dm.train_dataset.transform.photometric.transforms[0]
    assert isinstance(shadow, LocalDarkening) and shadow.p == 0.4
    np.testing.assert_allclose(shadow.mean, dm.mean)
    np.testing.assert_allclose(shadow.std, dm.std)
    plain = ChangeDataModule(tmp_path, val_split="train")
    plain.setup("fit")
    assert not any(isinstance(t, LocalDarkening)
                   for t in plain.train_dataset.transform.photometric.transforms)


def test_balanced_sampling_never_draws_unlabelled_chips(tmp_path: Path) -> None:
    """Unlabelled chips (all pixels ignored) get no share of the draws: they give zero loss."""
    labels = ["no_construction"] * 8 + ["construction"] * 2 + [""] * 10
    weights = balanced_sample_weights(labels)
    assert weights[-10:].sum() == 0
    assert weights.sum() == pytest.approx(1.0)
    assert weights[labels.index("construction")] == pytest.approx(0.25)
    write_chips_dir(tmp_path, labels)
    dm = ChangeDataModule(tmp_path, val_split="train", balance=True, seed=0)
    dm.setup("fit")
    drawn = Counter(labels[i] for _ in range(50) for i in dm.train_dataloader().sampler)
    assert drawn[""] == 0
    assert 0.4 < drawn["construction"] / sum(drawn.values()) < 0.6


def test_balanced_sampling_without_labelled_chips_is_an_input_error(tmp_path: Path) -> None:
    write_chips_dir(tmp_path, ["", ""], unlabelled=True)
    dm = ChangeDataModule(tmp_path, val_split="train", balance=True)
    dm.setup("fit")
    with pytest.raises(InputError, match="no chip is labelled"):
        dm.train_dataloader()
