"""``groundbreak export`` and ``groundbreak evaluate`` on checkpoints of a real (tiny) training run.

One short Lightning fit of ChangeSegmentationTask on chips cut from the OSCD fixtures makes the
checkpoints and the CSV log that every test here reads.
"""

from __future__ import annotations

import json
import pathlib
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from groundbreak.datasets.datamodule import ChangeDataModule, ChipsDirectory
from groundbreak.datasets.errors import InputError
from groundbreak.infer.cli import main as groundbreak
from groundbreak.infer.evaluation.evaluate import evaluate_bundle
from groundbreak.train import bundle as bundle_module
from groundbreak.train.bundle import load_bundle, save_bundle
from groundbreak.train.export import export_checkpoint
from groundbreak.train.model import ChangeUNet
from groundbreak.train.task import ChangeSegmentationTask

BANDS = ["B02", "B03", "B04", "B08"]
ARCHITECTURE = {
    "in_channels": 4,
    "fusion": "siamese_diff",
    "encoder_name": "resnet18",
    "encoder_depth": 3,
    "decoder_channels": [16, 8, 8],
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, oscd_chips_dir: Path) -> Path:
    """A two-epoch fit: ``checkpoints/{best,last}.ckpt`` and ``logs/version_0/metrics.csv``."""
    root = tmp_path_factory.mktemp("run")
    seed_everything(0)
    datamodule = ChangeDataModule(
        oscd_chips_dir, bands=BANDS, batch_size=4, augment=False, balance=False
    )
    task = ChangeSegmentationTask(**ARCHITECTURE, scheduler="none")
    trainer = Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        logger=CSVLogger(str(root), name="logs"),
        callbacks=[
            ModelCheckpoint(
                dirpath=root / "checkpoints", filename="best", monitor="val/f1", mode="max",
                save_last=True,
            )
        ],
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    trainer.fit(task, datamodule)
    return root


def read_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def edited_checkpoint(run_dir: Path, name: str, edit: Any) -> Path:
    """A copy of best.ckpt, changed by ``edit(checkpoint)``, in the run's checkpoint folder."""
    checkpoint = read_checkpoint(run_dir / "checkpoints" / "best.ckpt")
    edit(checkpoint)
    path = run_dir / "checkpoints" / name
    torch.save(checkpoint, path)
    return path


def logged_validation(run_dir: Path) -> pd.DataFrame:
    (metrics_csv,) = run_dir.glob("logs/*/metrics.csv")
    log = pd.read_csv(metrics_csv)
    return log[log["val/best_threshold"].notna()]


# -- export ------------------------------------------------------------------------------------
def test_export_from_the_checkpoint_record(run_dir: Path, tmp_path: Path) -> None:
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    bundle = export_checkpoint(ckpt, tmp_path / "oscd-tiny")
    checkpoint = read_checkpoint(ckpt)
    record = checkpoint["groundbreak"]

    assert bundle.model.architecture == ARCHITECTURE
    assert bundle.bands == BANDS
    np.testing.assert_allclose(bundle.mean, record["mean"])
    np.testing.assert_allclose(bundle.std, record["std"])
    assert bundle.chip_size == 32 and bundle.pixel_size_m == pytest.approx(record["pixel_size_m"])
    assert bundle.threshold == pytest.approx(record["val_metrics"]["best_threshold"], abs=1e-6)
    assert bundle.meta["metrics"]["val/f1"] == pytest.approx(record["val_metrics"]["f1"])
    assert bundle.meta["training"]["epoch"] == checkpoint["epoch"]
    assert bundle.meta["training"]["hyperparameters"]["fusion"] == "siamese_diff"
    assert bundle.name == "oscd-tiny"

    trained = {
        k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items()
        if k.startswith("model.")
    }
    for name, tensor in bundle.model.state_dict().items():
        assert torch.equal(tensor, trained[name]), name


def test_export_cli_with_chips_threshold_and_name(
    run_dir: Path, oscd_chips_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bundle"
    code = groundbreak(
        [
            "export", str(run_dir / "checkpoints" / "last.ckpt"), "--out", str(out),
            "--chips", str(oscd_chips_dir), "--threshold", "0.3", "--name", "tiny-s2",
        ]
    )
    assert code == 0
    assert "threshold 0.300 from --threshold" in capsys.readouterr().out
    bundle = load_bundle(out)
    mean, std = ChipsDirectory(oscd_chips_dir).band_statistics(BANDS)
    np.testing.assert_array_equal(bundle.mean, mean)
    np.testing.assert_array_equal(bundle.std, std)
    assert (bundle.threshold, bundle.name) == (0.3, "tiny-s2")
    dataset = bundle.meta["training"]["dataset"]
    assert dataset["layout"] == "oscd"
    assert dataset["pairs"] == {"train": ["beirut"], "val": ["abudhabi"], "test": ["dubai"]}


def test_threshold_from_the_csv_log_of_the_checkpoint_epoch(run_dir: Path, tmp_path: Path) -> None:
    def forget_validation(checkpoint: dict[str, Any]) -> None:
        checkpoint["groundbreak"]["val_metrics"] = {}

    ckpt = edited_checkpoint(run_dir, "no-val-record.ckpt", forget_validation)
    bundle = export_checkpoint(ckpt, tmp_path / "b")
    rows = logged_validation(run_dir)
    row = rows[rows["epoch"] == read_checkpoint(ckpt)["epoch"]].iloc[-1]
    assert bundle.threshold == pytest.approx(row["val/best_threshold"], abs=1e-6)
    assert bundle.meta["metrics"]["val/f1"] == pytest.approx(row["val/f1"])
    assert "metrics.csv (epoch" in bundle.meta["training"]["threshold_source"]


def test_threshold_from_the_best_logged_epoch_when_its_own_is_absent(
    run_dir: Path, tmp_path: Path
) -> None:
    def unlogged_epoch(checkpoint: dict[str, Any]) -> None:
        checkpoint["groundbreak"]["val_metrics"] = {}
        checkpoint["epoch"] = 99

    ckpt = edited_checkpoint(run_dir, "e99.ckpt", unlogged_epoch)
    bundle = export_checkpoint(ckpt, tmp_path / "b")
    rows = logged_validation(run_dir)
    best = rows.loc[rows["val/f1"].idxmax()]
    assert bundle.meta["metrics"]["val/f1"] == pytest.approx(best["val/f1"])
    assert bundle.threshold == pytest.approx(best["val/best_threshold"], abs=1e-6)


def test_threshold_falls_back_to_the_task_threshold(run_dir: Path, tmp_path: Path) -> None:
    checkpoint = read_checkpoint(run_dir / "checkpoints" / "best.ckpt")
    checkpoint["groundbreak"]["val_metrics"] = {}
    checkpoint["hyper_parameters"]["threshold"] = 0.4
    lone = tmp_path / "elsewhere" / "checkpoints" / "lone.ckpt"  # no CSV log around it
    lone.parent.mkdir(parents=True)
    torch.save(checkpoint, lone)
    bundle = export_checkpoint(lone, tmp_path / "b")
    assert bundle.threshold == 0.4
    assert bundle.meta["metrics"] == {}
    assert "no validation found" in bundle.meta["training"]["threshold_source"]


def test_normalisation_from_the_datamodule_chips_dir(run_dir: Path, tmp_path: Path) -> None:
    def drop_record_statistics(checkpoint: dict[str, Any]) -> None:
        for key in ("bands", "mean", "std", "chip_size"):
            del checkpoint["groundbreak"][key]

    bundle = export_checkpoint(
        edited_checkpoint(run_dir, "no-stats.ckpt", drop_record_statistics), tmp_path / "b"
    )
    chips_dir = read_checkpoint(run_dir / "checkpoints" / "best.ckpt")[
        "datamodule_hyper_parameters"
    ]["chips_dir"]
    assert bundle.meta["training"]["normalization_source"] == str(chips_dir)
    assert bundle.bands == BANDS


def test_no_normalisation_anywhere(run_dir: Path, tmp_path: Path) -> None:
    def drop_everything(checkpoint: dict[str, Any]) -> None:
        del checkpoint["groundbreak"]
        del checkpoint["datamodule_hyper_parameters"]

    ckpt = edited_checkpoint(run_dir, "bare.ckpt", drop_everything)
    with pytest.raises(InputError, match="pass --chips") as err:
        export_checkpoint(ckpt, tmp_path / "b")
    assert err.value.path == str(ckpt)


def test_export_bad_checkpoints(run_dir: Path, oscd_chips_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="checkpoint does not exist"):
        export_checkpoint(tmp_path / "missing.ckpt", tmp_path / "b")
    with pytest.raises(InputError, match="is not a torch checkpoint"):
        export_checkpoint(oscd_chips_dir / "stats.json", tmp_path / "b")

    not_lightning = tmp_path / "weights.ckpt"
    torch.save({"weights": torch.zeros(2)}, not_lightning)
    with pytest.raises(InputError, match="no 'state_dict'"):
        export_checkpoint(not_lightning, tmp_path / "b")


def test_export_refuses_unsafe_pickles_unless_trusted(run_dir: Path, tmp_path: Path) -> None:
    def add_path_object(checkpoint: dict[str, Any]) -> None:
        checkpoint["hyper_parameters"]["note"] = pathlib.PurePosixPath("made/by/me")

    ckpt = edited_checkpoint(run_dir, "with-objects.ckpt", add_path_object)
    with pytest.raises(InputError, match=r"\(pathlib.PurePosixPath\); .*--trust-checkpoint"):
        export_checkpoint(ckpt, tmp_path / "b")
    bundle = export_checkpoint(ckpt, tmp_path / "b", trust_checkpoint=True)
    assert bundle.meta["training"]["hyperparameters"]["note"] == "made/by/me"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: [c["hyper_parameters"].pop("fusion"), c.pop("groundbreak")],
         "records no model architecture"),
        (lambda c: c["hyper_parameters"].update(encoder_depth=2, decoder_channels=[16, 8]),
         r"does not fit the architecture .*unexpected tensor\(s\): decoder.blocks.2"),
        (lambda c: c["hyper_parameters"].update(fusion="fancy"), "cannot be built: unknown fusion"),
        (lambda c: c.update(state_dict={"criterion.w": torch.zeros(1)}), "no 'model.\\*' weights"),
        (lambda c: c["groundbreak"].update(bands=["B02"], mean=[0.0], std=[1.0]),
         "the model takes 4 bands but the normalisation from .* has 1"),
    ],
    ids=["no-architecture", "wrong-depth", "bad-fusion", "no-model-weights", "band-count"],
)
def test_export_inconsistent_checkpoints(
    run_dir: Path, tmp_path: Path, edit: Any, message: str
) -> None:
    ckpt = edited_checkpoint(run_dir, "inconsistent.ckpt", edit)
    with pytest.raises(InputError, match=message) as err:
        export_checkpoint(ckpt, tmp_path / "b")
    assert err.value.path == str(ckpt)


def test_export_chips_without_the_trained_bands(
    run_dir: Path, oscd_chips_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rgb_chips = tmp_path / "chips"
    shutil.copytree(oscd_chips_dir, rgb_chips)
    info = json.loads((rgb_chips / "dataset.json").read_text())
    info["bands"] = [f"X{i}" for i in range(len(info["bands"]))]
    (rgb_chips / "dataset.json").write_text(json.dumps(info))
    code = groundbreak(
        ["export", str(run_dir / "checkpoints" / "best.ckpt"), "--out", str(tmp_path / "b"),
         "--chips", str(rgb_chips)]
    )
    assert code == 2
    error = capsys.readouterr().err
    assert f"{rgb_chips}: band(s) B02, B03, B04, B08 not in this chips directory" in error


# -- evaluate ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def exported(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("exported") / "oscd-tiny"
    export_checkpoint(run_dir / "checkpoints" / "best.ckpt", out)
    return out


def labelled_pixels(chips_dir: Path, split: str) -> tuple[int, int]:
    """(labelled, changed) pixel counts of a split, read straight from the chip files."""
    manifest = pd.read_parquet(chips_dir / "manifest.parquet")
    labelled = changed = 0
    for path in manifest.loc[manifest["split"] == split, "path"]:
        with np.load(chips_dir / path) as chip:
            label = chip["label"]
        labelled += int((label != 255).sum())
        changed += int((label == 1).sum())
    return labelled, changed


def test_evaluate_pools_every_labelled_pixel(exported: Path, oscd_chips_dir: Path) -> None:
    result = evaluate_bundle(load_bundle(exported), oscd_chips_dir, split="val", batch_size=4)
    labelled, changed = labelled_pixels(oscd_chips_dir, "val")
    assert (result["pixels"], result["changed_pixels"]) == (labelled, changed)
    assert result["tp"] + result["fn"] == changed
    assert result["tp"] + result["fp"] + result["fn"] <= labelled
    tp, fp, fn = result["tp"], result["fp"], result["fn"]
    assert result["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert result["iou"] == pytest.approx(tp / (tp + fp + fn))
    assert result["chips_count"] == 9 and result["split"] == "val"
    assert result["bundle"] == "oscd-tiny"


def test_evaluate_reproduces_the_validation_of_training(
    exported: Path, oscd_chips_dir: Path
) -> None:
    bundle = load_bundle(exported)
    result = evaluate_bundle(bundle, oscd_chips_dir, split="val", threshold=0.5, batch_size=3)
    # The checkpoint was saved right after this validation pass, at the task's threshold 0.5.
    assert result["f1"] == pytest.approx(bundle.meta["metrics"]["val/f1"], abs=1e-4)
    assert result["precision"] == pytest.approx(bundle.meta["metrics"]["val/precision"], abs=1e-4)


def test_evaluate_cli_writes_json(
    exported: Path, oscd_chips_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "reports" / "metrics.json"
    code = groundbreak(
        ["evaluate", "--model", str(exported), "--chips", str(oscd_chips_dir), "--split", "train",
         "--threshold", "0.25", "--out", str(out), "--device", "cpu"]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "oscd-tiny on train (9 chips" in printed and "F1 " in printed
    result = json.loads(out.read_text())
    assert result["threshold"] == 0.25 and result["split"] == "train"
    assert set(result) >= {"precision", "recall", "f1", "iou", "pixels", "chips_count", "bundle"}


def test_evaluate_without_predicted_change_is_zero_not_nan(
    exported: Path, oscd_chips_dir: Path, tmp_path: Path
) -> None:
    bundle = load_bundle(exported)
    head = bundle.model.segmentation_head[0]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(-50.0)  # probability ~0 everywhere: no tp, no fp
    result = evaluate_bundle(bundle, oscd_chips_dir, split="val")
    assert result["tp"] == result["fp"] == 0
    assert result["precision"] == result["recall"] == result["f1"] == result["iou"] == 0.0
    json.dumps(result, allow_nan=False)


def test_evaluate_bad_inputs(exported: Path, oscd_chips_dir: Path, tmp_path: Path) -> None:
    bundle = load_bundle(exported)
    with pytest.raises(InputError, match="split 'test' has no labelled chips"):
        evaluate_bundle(bundle, oscd_chips_dir, split="test")
    with pytest.raises(InputError, match="no chips in split 'holdout'"):
        evaluate_bundle(bundle, oscd_chips_dir, split="holdout")
    with pytest.raises(InputError, match="chips directory not found"):
        evaluate_bundle(bundle, tmp_path / "nowhere")


def test_date_matching_travels_from_the_chips_to_the_bundle(
    run_dir: Path, oscd_chips_dir: Path, exported: Path, tmp_path: Path
) -> None:
    """The chips' mode is in the checkpoint record and the bundle; a checkpoint trained on
    matched chips is not exported with unmatched ones, nor scored on them."""
    record = read_checkpoint(run_dir / "checkpoints" / "best.ckpt")["groundbreak"]
    assert record["date_matching"] == "none" and load_bundle(exported).date_matching == "none"

    def trained_matched(checkpoint: dict[str, Any]) -> None:
        checkpoint["groundbreak"]["date_matching"] = "mean_std"

    ckpt = edited_checkpoint(run_dir, "matched.ckpt", trained_matched)
    matched = export_checkpoint(ckpt, tmp_path / "matched")
    assert matched.date_matching == "mean_std"
    with pytest.raises(InputError, match="date matching 'mean_std' but .* has 'none'") as err:
        export_checkpoint(ckpt, tmp_path / "b", chips_dir=oscd_chips_dir)
    assert err.value.path == str(ckpt)
    with pytest.raises(InputError, match="cut with date matching 'none' but model"):
        evaluate_bundle(matched, oscd_chips_dir, split="val")


def test_evaluate_bundle_whose_bands_the_chips_lack(oscd_chips_dir: Path, tmp_path: Path) -> None:
    rgb = ChangeUNet(3, "early", encoder_depth=2, decoder_channels=(8, 8))
    meta = {
        "bands": ["red", "green", "blue"],
        "normalization": {"mean": [0.0] * 3, "std": [1.0] * 3},
        "chip_size": 32,
        "threshold": 0.5,
    }
    save_bundle(rgb, meta, tmp_path / "rgb")
    with pytest.raises(InputError, match="needs band\\(s\\) red, green, blue") as err:
        evaluate_bundle(load_bundle(tmp_path / "rgb"), oscd_chips_dir)
    assert err.value.path == str(oscd_chips_dir / "dataset.json")


def test_evaluate_corrupt_chip(exported: Path, oscd_chips_dir: Path, tmp_path: Path) -> None:
    chips = tmp_path / "chips"
    shutil.copytree(oscd_chips_dir, chips)
    manifest = pd.read_parquet(chips / "manifest.parquet")
    broken = chips / manifest.loc[manifest["split"] == "val", "path"].iloc[0]
    broken.write_bytes(b"not an npz")
    with pytest.raises(InputError, match="unreadable chip file") as err:
        evaluate_bundle(load_bundle(exported), chips)
    assert err.value.path == str(broken)


def test_evaluate_uses_the_default_bundle_when_no_model_is_given(
    exported: Path, oscd_chips_dir: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(bundle_module, "DEFAULT_BUNDLE_DIR", exported)
    assert groundbreak(["evaluate", "--chips", str(oscd_chips_dir)]) == 0
    assert "oscd-tiny on val" in capsys.readouterr().out


def test_evaluate_refuses_a_checkpoint_as_model(
    run_dir: Path, oscd_chips_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    code = groundbreak(["evaluate", "--model", str(ckpt), "--chips", str(oscd_chips_dir)])
    assert code == 2
    assert f"{ckpt}: is a training checkpoint" in capsys.readouterr().err
