"""Distillation: a network trained towards a teacher bundle's probabilities on real chips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from lightning.pytorch import Trainer, seed_everything

from groundbreak.datasets.datamodule import ChangeDataModule
from groundbreak.datasets.errors import InputError
from groundbreak.infer.evaluation.crossval import train_command
from groundbreak.train.bundle import save_bundle
from groundbreak.train.fc_networks import FCEFRes
from groundbreak.train.task import CHECKPOINT_KEY, ChangeSegmentationTask

BANDS = ["B04", "B03", "B02", "B08"]


def datamodule(chips: Path) -> ChangeDataModule:
    dm = ChangeDataModule(chips, bands=BANDS, batch_size=4)
    dm.setup("fit")
    return dm


def teacher_bundle(folder: Path, dm: ChangeDataModule, **meta: object) -> Path:
    """An untrained FC-EF-Res saved as a bundle that reads the chips as ``dm`` serves them."""
    torch.manual_seed(3)
    record = {
        "bands": BANDS, "chip_size": 32, "threshold": 0.5,
        "normalization": {"mean": dm.mean.tolist(), "std": dm.std.tolist()},
        "date_matching": dm.date_matching, **meta,
    }
    return save_bundle(FCEFRes(len(BANDS)).eval(), record, folder)


def test_the_loss_mixes_labels_and_the_teachers_probabilities(
    oscd_chips_dir: Path, tiny_model: dict, tmp_path: Path
) -> None:
    dm = datamodule(oscd_chips_dir)
    teacher = teacher_bundle(tmp_path / "teacher", dm)
    task = ChangeSegmentationTask(in_channels=4, teacher=str(teacher), distill_weight=0.3,
                                  **tiny_model)
    plain = ChangeSegmentationTask(in_channels=4, **tiny_model)
    plain.model.load_state_dict(task.model.state_dict())
    batch = next(iter(dm.train_dataloader()))
    batch["mask"][0, :5] = 255  # unlabelled rows count in neither term

    with torch.no_grad():
        logits, label_loss = task._shared_step(batch)
        target = torch.sigmoid(task._teacher.model(batch["before"], batch["after"]))
        labelled = (batch["mask"] != 255).unsqueeze(1)
        expected = F.binary_cross_entropy_with_logits(logits[labelled], target[labelled])
        assert float(task._teacher.loss(logits, batch)) == pytest.approx(float(expected), 1e-5)
        assert float(plain._shared_step(batch)[1]) == pytest.approx(float(label_loss), 1e-6)
    # the teacher is no module of the task: not trained, not checkpointed, not exported
    assert not any(name.startswith("_teacher") for name, _ in task.named_parameters())
    assert all(key.startswith("model.") for key in task.state_dict())


def test_fit_with_a_teacher(
    oscd_chips_dir: Path, tiny_model: dict, tmp_path: Path
) -> None:
    seed_everything(0)
    dm = ChangeDataModule(oscd_chips_dir, bands=BANDS, batch_size=4)
    probe = datamodule(oscd_chips_dir)
    teacher = teacher_bundle(tmp_path / "teacher", probe)
    task = ChangeSegmentationTask(in_channels=4, teacher=str(teacher), **tiny_model)
    teacher_weights = {k: v.clone() for k, v in task._teacher.model.state_dict().items()}
    runner = Trainer(accelerator="cpu", devices=1, max_epochs=1, logger=False,
                     enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, default_root_dir=tmp_path,
                     num_sanity_val_steps=0, limit_train_batches=2, limit_val_batches=1)
    runner.fit(task, datamodule=dm)
    assert np.isfinite(float(runner.callback_metrics["train/distill_loss"]))
    for key, value in task._teacher.model.state_dict().items():
        assert torch.equal(value, teacher_weights[key]), key  # the teacher stays frozen
    path = tmp_path / "student.ckpt"
    runner.save_checkpoint(path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert checkpoint["hyper_parameters"]["teacher"] == str(teacher)
    assert all(key.startswith("model.") for key in checkpoint["state_dict"])
    assert checkpoint[CHECKPOINT_KEY]["architecture"]["encoder_depth"] == 3
    restored = ChangeSegmentationTask.load_from_checkpoint(path)  # a resumed run: teacher again
    assert restored._teacher is not None


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ({"bands": ["B02", "B03", "B04", "B08"]}, "the teacher reads bands"),
        ({"normalization": {"mean": [1.0] * 4, "std": [2.0] * 4}},
         "normalisation mean differs from the chips' statistics"),
    ],
)
def test_a_teacher_that_reads_other_chips_is_refused(
    oscd_chips_dir: Path, tiny_model: dict, tmp_path: Path, meta: dict, message: str
) -> None:
    dm = datamodule(oscd_chips_dir)
    teacher = teacher_bundle(tmp_path / "teacher", dm, **meta)
    task = ChangeSegmentationTask(in_channels=4, teacher=str(teacher), **tiny_model)
    runner = Trainer(accelerator="cpu", devices=1, max_epochs=1, logger=False,
                     enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, default_root_dir=tmp_path,
                     limit_train_batches=1, limit_val_batches=0)
    with pytest.raises(InputError, match=message) as error:
        runner.fit(task, datamodule=ChangeDataModule(oscd_chips_dir, bands=BANDS, batch_size=4))
    assert "model.json" in str(error.value)


def test_bad_distill_weight_and_missing_teacher(tiny_model: dict, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"distill_weight must be in \[0, 1\]"):
        ChangeSegmentationTask(in_channels=4, teacher=None, distill_weight=1.5, **tiny_model)
    with pytest.raises(InputError, match="nowhere: model bundle does not exist"):
        ChangeSegmentationTask(in_channels=4, teacher=str(tmp_path / "nowhere"), **tiny_model)


def test_cv_gives_each_fold_its_own_teacher(tmp_path: Path) -> None:
    extra = ["--model.teacher", "runs/cv/ens/{fold_dir}/bundle", "--model.distill_weight", "0.5"]
    for fold_dir in ("fold3", "final"):
        command = train_command(Path("c.yaml"), tmp_path / "chips", tmp_path / fold_dir / "train",
                                extra)
        assert command[command.index("--model.teacher") + 1] == f"runs/cv/ens/{fold_dir}/bundle"


def test_a_teacher_predicted_with_matched_dates_is_a_warning(
    oscd_chips_dir: Path, tiny_model: dict, tmp_path: Path
) -> None:
    """The shipped ensemble is predicted with dates matched but was trained on unmatched chips:
    distilling it on such chips is allowed, with a warning naming its model.json."""
    dm = datamodule(oscd_chips_dir)
    teacher = teacher_bundle(tmp_path / "teacher", dm, date_matching="mean_std")
    task = ChangeSegmentationTask(in_channels=4, teacher=str(teacher), **tiny_model)
    with pytest.warns(UserWarning, match="model.json: the teacher is predicted with dates matched"):
        task._teacher.check_inputs(dm)
