"""ChangeSegmentationTask: fit, validate and test on real chips cut from the fixtures, on a CPU."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything

from groundbreak.datasets.datamodule import ChangeDataModule
from groundbreak.train.export import export_checkpoint
from groundbreak.train.task import CHECKPOINT_KEY, ChangeSegmentationTask, schedule_factor

VAL_KEYS = ("val/loss", "val/precision", "val/recall", "val/f1", "val/iou", "val/best_f1",
            "val/best_threshold")


def trainer(tmp_path: Path, **kwargs: object) -> Trainer:
    """A quiet single-device CPU trainer."""
    options = dict(
        accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
        num_sanity_val_steps=0,
    )
    options.update(kwargs)
    return Trainer(**options)


@pytest.mark.parametrize("loss", ["bce", "bce_dice", "focal_dice", "bce_lovasz"])
def test_fit_logs_pooled_metrics(
    oscd_chips_dir: Path, tiny_model: dict, tmp_path: Path, loss: str
) -> None:
    seed_everything(0)
    dm = ChangeDataModule(oscd_chips_dir, bands=["B04", "B03", "B02", "B08"], batch_size=4)
    task = ChangeSegmentationTask(in_channels=dm.num_bands, loss=loss, **tiny_model)
    fit_trainer = trainer(tmp_path, limit_train_batches=2)
    fit_trainer.fit(task, datamodule=dm)
    metrics = fit_trainer.callback_metrics
    assert "train/loss_epoch" in metrics
    for key in VAL_KEYS:
        assert key in metrics and math.isfinite(float(metrics[key])), key
    assert 0.05 <= float(metrics["val/best_threshold"]) <= 0.95
    assert float(metrics["val/best_f1"]) >= float(metrics["val/f1"])


def test_validate_and_test_on_unlabelled_chips_give_zero_not_nan(
    oscd_chips_dir: Path, tiny_model: dict, tmp_path: Path
) -> None:
    dm = ChangeDataModule(oscd_chips_dir, batch_size=4, test_split="test")
    task = ChangeSegmentationTask(in_channels=dm.num_bands, fusion="siamese_diff", **tiny_model)
    runner = trainer(tmp_path)
    (validated,) = runner.validate(task, datamodule=dm)
    assert all(math.isfinite(v) for v in validated.values())
    (tested,) = runner.test(task, datamodule=dm)
    # dubai has no label: every pixel is ignored, so the scores are 0, not NaN.
    assert tested["test/f1"] == 0.0 and tested["test/recall"] == 0.0
    assert tested["test/loss"] == 0.0


def test_forward_pads_to_the_stride_and_crops_back(tiny_model: dict) -> None:
    task = ChangeSegmentationTask(in_channels=3, **tiny_model)
    before, after = torch.randn(2, 3, 30, 27), torch.randn(2, 3, 30, 27)
    assert task(before, after).shape == (2, 1, 30, 27)


def test_hyperparameters_and_export_metadata_are_checkpointed(
    oscd_chips_dir: Path, tiny_model: dict, tmp_path: Path
) -> None:
    dm = ChangeDataModule(oscd_chips_dir, bands=["B02", "B03", "B04"], batch_size=4)
    task = ChangeSegmentationTask(in_channels=3, scheduler="onecycle", **tiny_model)
    runner = trainer(tmp_path, limit_train_batches=1, limit_val_batches=1)
    runner.fit(task, datamodule=dm)
    path = tmp_path / "model.ckpt"
    runner.save_checkpoint(path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert checkpoint["hyper_parameters"]["in_channels"] == 3
    assert checkpoint["hyper_parameters"]["scheduler"] == "onecycle"
    record = checkpoint[CHECKPOINT_KEY]
    assert record["bands"] == ["B02", "B03", "B04"] and record["chip_size"] == 32
    assert len(record["mean"]) == len(record["std"]) == 3
    assert record["architecture"]["encoder_depth"] == 3
    assert set(record["val_metrics"]) >= {"f1", "best_threshold"}
    restored = ChangeSegmentationTask.load_from_checkpoint(path)
    assert restored.hparams.decoder_channels == tiny_model["decoder_channels"]


def test_unbounded_run_needs_a_bounded_schedule(
    oscd_chips_dir: Path, tiny_model: dict, tmp_path: Path
) -> None:
    dm = ChangeDataModule(oscd_chips_dir, batch_size=4)
    task = ChangeSegmentationTask(in_channels=dm.num_bands, scheduler="cosine", **tiny_model)
    with pytest.raises(ValueError, match="bounded run"):
        trainer(tmp_path, max_epochs=-1, max_steps=-1).fit(task, datamodule=dm)


@pytest.mark.parametrize("total", [1, 7, 20])
def test_schedules_cosine_and_one_cycle(total: int) -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.1)
    reference = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    cosine = schedule_factor("cosine", total)
    for step in range(total + 1):
        assert 0.1 * cosine(step) == pytest.approx(reference.get_last_lr()[0], abs=1e-9)
        optimizer.step()
        reference.step()
    assert cosine(total + 5) == pytest.approx(0.0)  # past the end: stays at the end

    onecycle = [schedule_factor("onecycle", total)(step) for step in range(total + 1)]
    peak = onecycle.index(max(onecycle))
    warmup = min(max(round(0.3 * total), 1), total - 1)
    assert peak == warmup and onecycle[peak] == pytest.approx(1.0)
    assert onecycle[0] == pytest.approx(1 / 25 if warmup else 1.0)
    assert onecycle[-1] == pytest.approx(1 / 25 / 1e4)
    rising, falling = onecycle[: peak + 1], onecycle[peak:]
    assert rising == sorted(rising) and falling == sorted(falling, reverse=True)


def test_unknown_schedule_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown scheduler 'linear'"):
        schedule_factor("linear", 10)  # type: ignore[arg-type]


def test_papers_recipe_adam_with_per_epoch_exponential_decay(
    oscd_chips_dir: Path, tmp_path: Path
) -> None:
    """FC-Siam-diff trained for 3 epochs with Adam (L2 decay) and lr x 0.5 after every epoch."""
    seed_everything(0)
    dm = ChangeDataModule(oscd_chips_dir, bands=["B04", "B03", "B02", "B08"], batch_size=4)
    task = ChangeSegmentationTask(
        in_channels=dm.num_bands, network="fc", fusion="siamese_diff", loss="bce",
        pos_weight=4.27, lr=0.01, optimizer="adam", scheduler="exponential", lr_decay=0.5,
        channels_last=False,
    )
    runner = trainer(tmp_path, max_epochs=3, limit_train_batches=1, limit_val_batches=1)
    runner.fit(task, datamodule=dm)
    optimizer = runner.optimizers[0]
    assert type(optimizer) is torch.optim.Adam
    assert optimizer.param_groups[0]["weight_decay"] == 1e-4
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * 0.5**3)
    # The checkpoint exports as an FC-Siam-diff bundle that predicts what the task does.
    runner.save_checkpoint(tmp_path / "fc.ckpt")
    bundle = export_checkpoint(tmp_path / "fc.ckpt", tmp_path / "bundle", chips_dir=oscd_chips_dir)
    assert bundle.meta["architecture"] == {
        "network": "fc", "fusion": "siamese_diff", "in_channels": 4
    }
    before, after = torch.randn(2, 1, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(bundle.model(before, after), task.eval()(before, after))
    with pytest.raises(ValueError, match="lr_decay must be in"):
        ChangeSegmentationTask(in_channels=4, scheduler="exponential", lr_decay=1.5,
                               **{"encoder_depth": 2, "decoder_channels": (8, 8)}
                               ).configure_optimizers()
