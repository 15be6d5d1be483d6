"""``groundbreak train``: fit from a YAML config, resume from last.ckpt, validate, bad input."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from groundbreak.infer.cli import main as groundbreak

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def write_config(tmp_path: Path, chips_dir: Path, tiny_model: dict, **data: object) -> Path:
    """A one-epoch, two-batch CPU config over the fixture chips."""
    config = {
        "seed_everything": 7,
        "trainer": {
            "default_root_dir": str(tmp_path / "run"), "max_epochs": 1, "accelerator": "cpu",
            "limit_train_batches": 2, "limit_val_batches": 2, "num_sanity_val_steps": 0,
            "log_every_n_steps": 1, "enable_progress_bar": False, "enable_model_summary": False,
        },
        "model": {**tiny_model, "loss": "bce_dice"},
        "data": {"chips_dir": str(chips_dir), "batch_size": 4, **data},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_fit_then_resume_from_last_checkpoint(
    oscd_chips_dir: Path, tiny_model: dict, tmp_path: Path
) -> None:
    config = write_config(tmp_path, oscd_chips_dir, tiny_model, bands=None)
    assert groundbreak(["train", "fit", "--config", str(config)]) == 0
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.ckpt"
    assert last.is_file()
    assert len(list((run / "checkpoints").glob("best-*.ckpt"))) == 1
    first = torch.load(last, map_location="cpu", weights_only=True)
    # bands: null -> every band of the chips; in_channels followed the datamodule.
    assert first["hyper_parameters"]["in_channels"] == 13
    assert first["groundbreak"]["bands"][0] == "B01"
    metrics = pd.read_csv(run / "logs" / "version_0" / "metrics.csv")
    assert {"train/loss_step", "val/f1", "val/best_threshold", "lr-AdamW"} <= set(metrics.columns)
    assert metrics["val/f1"].notna().any()

    assert 0 < first["groundbreak"]["train_seconds"] < 1000
    first["groundbreak"]["train_seconds"] = 1000.0  # as if the first run had trained 1000 s
    torch.save(first, last)

    args = ["train", "fit", "--config", str(config), "--ckpt_path", str(last)]
    assert groundbreak([*args, "--trainer.max_epochs", "2"]) == 0
    resumed = torch.load(last, map_location="cpu", weights_only=True)
    # Resumed, not restarted: two more steps on top of the first run's, in a later epoch.
    assert resumed["global_step"] == first["global_step"] + 2
    assert resumed["epoch"] > first["epoch"]
    assert 1000 < resumed["groundbreak"]["train_seconds"] < 1500  # both runs' training time


@pytest.mark.parametrize("scheduler", ["cosine", "onecycle"])
def test_resume_with_more_epochs_stretches_the_schedule(
    scheduler: str, oscd_chips_dir: Path, tiny_model: dict, tmp_path: Path
) -> None:
    config = write_config(tmp_path, oscd_chips_dir, tiny_model, bands=["B04", "B03", "B02"])
    args = ["train", "fit", "--config", str(config), "--model.scheduler", scheduler,
            "--model.lr", "0.01"]
    assert groundbreak(args) == 0
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    # Two epochs of two steps more than the first run planned for (its schedule ended at 2).
    assert groundbreak([*args, "--ckpt_path", str(last), "--trainer.max_epochs", "3"]) == 0
    resumed = torch.load(last, map_location="cpu", weights_only=True)
    assert resumed["global_step"] == 6
    final_lr = resumed["optimizer_states"][0]["param_groups"][0]["lr"]
    assert final_lr < 0.01 * 1e-3  # the end of the stretched schedule, not a restarted cycle
    lrs = pd.read_csv(tmp_path / "run" / "logs" / "version_1" / "metrics.csv")["lr-AdamW"]
    assert lrs.dropna().is_monotonic_decreasing


def test_last_checkpoint_is_the_last_epoch_even_without_a_new_best(
    oscd_chips_dir: Path, tiny_model: dict, tmp_path: Path
) -> None:
    config = write_config(tmp_path, oscd_chips_dir, tiny_model, bands=None)
    # No best checkpoint is ever saved (top-k 0): last.ckpt must still follow every epoch.
    args = ["train", "fit", "--config", str(config), "--checkpoint.save_top_k", "0"]
    assert groundbreak([*args, "--trainer.max_epochs", "2"]) == 0
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu",
                      weights_only=True)
    assert last["epoch"] == 1
    assert not list((tmp_path / "run" / "checkpoints").glob("best-*.ckpt"))


def test_validate_links_in_channels_to_the_selected_bands(
    oscd_chips_dir: Path, tiny_model: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, oscd_chips_dir, tiny_model, bands=["B04", "B03", "B02"])
    assert groundbreak(["train", "validate", "--config", str(config)]) == 0
    assert "val/f1" in capsys.readouterr().out


def test_unknown_band_is_a_one_line_error(
    oscd_chips_dir: Path, tiny_model: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, oscd_chips_dir, tiny_model, bands=["B02", "B99"])
    assert groundbreak(["train", "fit", "--config", str(config)]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("groundbreak train: error:")
    assert str(oscd_chips_dir) in error and "B99" in error


def test_missing_chips_dir_is_a_one_line_error(
    tiny_model: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, tmp_path / "no_chips", tiny_model)
    assert groundbreak(["train", "fit", "--config", str(config)]) == 2
    assert "no_chips: chips directory not found" in capsys.readouterr().err


TRAINING_CONFIGS = sorted(
    p.name for p in CONFIGS.glob("*.yaml") if p.name != "nightly.example.yaml"
)


def test_the_config_list_holds_the_shipped_recipes() -> None:
    assert {"oscd_s2.yaml", "oscd_s2_radio.yaml", "levir_smoke.yaml"} <= set(TRAINING_CONFIGS)


@pytest.mark.parametrize("name", TRAINING_CONFIGS)
def test_shipped_configs_parse(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # any working directory: the config's paths are the repo's
    assert groundbreak(["train", "fit", "--config", str(CONFIGS / name), "--print_config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["checkpoint"]["monitor"] == "val/f1"
    assert printed["data"]["chips_dir"].startswith(str(CONFIGS.parent / "runs" / "chips") + "/")
    assert printed["trainer"]["default_root_dir"].startswith(str(CONFIGS.parent / "runs") + "/")


def test_config_paths_resolve_against_the_config_file(
    oscd_chips_dir: Path, tiny_model: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Relative paths in a config are the config folder's; on the command line, the cwd's."""
    project = tmp_path / "project"
    (project / "configs").mkdir(parents=True)
    (project / "runs").mkdir()
    (project / "runs" / "chips").symlink_to(oscd_chips_dir)
    config = write_config(tmp_path, oscd_chips_dir, tiny_model, bands=["B04", "B03", "B02"])
    data = yaml.safe_load(config.read_text())
    data["trainer"]["default_root_dir"] = "../runs/fit"
    data["data"]["chips_dir"] = "../runs/chips"
    (project / "configs" / "run.yaml").write_text(yaml.safe_dump(data))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    args = ["train", "fit", "--config", "../project/configs/run.yaml"]
    assert groundbreak(args) == 0
    assert (project / "runs" / "fit" / "checkpoints" / "last.ckpt").is_file()
    assert not list(elsewhere.iterdir())  # nothing written where it ran
    assert groundbreak([*args, "--trainer.default_root_dir", "here"]) == 0  # the cwd's
    assert (elsewhere / "here" / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize("config", ["/dev/zero", "folder"])
def test_a_config_that_is_no_regular_file_is_one_line(
    config: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder").mkdir()
    assert groundbreak(["train", "fit", "--config", config]) == 2
    error = capsys.readouterr().err.strip()
    assert error == (f"groundbreak train: error: {config}: training config is not a regular file "
                     "(a folder, device, FIFO or socket)")


def test_ema_weights_are_what_last_ckpt_and_the_export_hold(
    oscd_chips_dir: Path, tiny_model: dict, tmp_path: Path
) -> None:
    """EMA from the config (Lightning's EMAWeightAveraging): saved, exported and resumed."""
    config = write_config(tmp_path, oscd_chips_dir, tiny_model, bands=["B04", "B03", "B02"])
    ema = "lightning.pytorch.callbacks.EMAWeightAveraging"
    args = ["train", "fit", "--config", str(config), "--model.lr", "0.05",
            "--trainer.callbacks+", ema, "--trainer.callbacks.decay", "0.5"]
    assert groundbreak([*args, "--trainer.max_epochs", "2"]) == 0
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    saved = torch.load(last, map_location="cpu", weights_only=True)
    averaged, current = saved["state_dict"], saved["current_model_state"]
    name = next(k for k in averaged if k.endswith("weight") and averaged[k].dtype.is_floating_point)
    assert not torch.equal(averaged[name], current[name])  # the average is not the last step
    assert groundbreak(["export", str(last), "--out", str(tmp_path / "bundle")]) == 0
    from groundbreak.train.bundle import load_bundle

    exported = load_bundle(tmp_path / "bundle").model.state_dict()
    assert torch.equal(exported[name.removeprefix("model.")], averaged[name])
    # A resume restores both the running and the averaged weights, then goes on.
    assert groundbreak([*args, "--ckpt_path", str(last), "--trainer.max_epochs", "3"]) == 0
    resumed = torch.load(last, map_location="cpu", weights_only=True)
    assert resumed["global_step"] == saved["global_step"] + 2
    assert not torch.equal(resumed["state_dict"][name], averaged[name])
