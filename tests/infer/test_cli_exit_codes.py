"""One exit-code convention for every subcommand: a user's bad path or option value is exit 2
with one line, never a traceback; only a full disk or quota is exit 4."""

from __future__ import annotations

import errno
import pickle
from pathlib import Path

import pytest
import torch

from groundbreak.datasets.bands import SENTINEL2_BANDS
from groundbreak.infer.cli import main as groundbreak
from groundbreak.train.bundle import save_bundle
from groundbreak.train.model import ChangeUNet

OSCD = Path(__file__).resolve().parents[1] / "fixtures" / "oscd"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = ChangeUNet(13, encoder_depth=1, decoder_channels=(8,))
    meta = {"bands": list(SENTINEL2_BANDS), "chip_size": 32, "threshold": 0.5,
            "normalization": {"mean": [1500.0] * 13, "std": [800.0] * 13}}
    return save_bundle(model, meta, tmp_path_factory.mktemp("bundle") / "tiny")


def one_line_error(capsys: pytest.CaptureFixture, *words: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("groundbreak")]
    assert len(lines) == 1, err
    assert all(word in lines[0] for word in words), lines[0]
    return lines[0]


def test_out_that_is_an_existing_file_is_a_usage_error(tmp_path: Path, bundle: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    scenes = ["--before", str(OSCD / "beirut" / "imgs_1"), "--after",
              str(OSCD / "beirut" / "imgs_2")]
    assert groundbreak(["predict", *scenes, "--out", str(taken), "--model", str(bundle),
                        "--device", "cpu"]) == 2
    one_line_error(capsys, "groundbreak predict: error:", str(taken))
    assert groundbreak(["predict", *scenes, "--out", str(taken / "sub"), "--model",
                        str(bundle), "--device", "cpu"]) == 2
    one_line_error(capsys, "groundbreak predict: error:")
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"pair_id,before,after\nbeirut,{scenes[1]},{scenes[3]}\n")
    assert groundbreak(["nightly", "--state", str(taken), "--pairs", str(pairs), "--model",
                        str(bundle), "--log-format", "json"]) == 2
    one_line_error(capsys, "groundbreak nightly: error:", str(taken))
    assert taken.read_text() == "not a folder"


def test_disk_full_is_exit_4_and_other_os_errors_exit_2(capsys: pytest.CaptureFixture,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from groundbreak.infer.cli import alerts as alerts_cli

    def raises(error: OSError):  # noqa: ANN202
        def main(argv):  # noqa: ANN001, ANN202
            raise error
        return main

    monkeypatch.setattr(alerts_cli, "main", raises(OSError(errno.EDQUOT, "Disk quota exceeded")))
    assert groundbreak(["alerts"]) == 4
    assert "stopped" in capsys.readouterr().err
    monkeypatch.setattr(alerts_cli, "main", raises(PermissionError(errno.EACCES,
                                                                   "Permission denied", "/x")))
    assert groundbreak(["alerts"]) == 2
    one_line_error(capsys, "groundbreak alerts: error: /x: Permission denied")


@pytest.mark.parametrize("command", [
    ["predict", "--before", "a", "--after", "b", "--out", "o"],
    ["rank", "--pairs", "p.csv", "--out", "o"],
    ["demo"],
    ["nightly", "--state", "s", "--pairs", "p.csv"],
    ["evaluate", "--chips", "c"],
])
def test_bogus_device_is_a_usage_error(command: list[str], capsys: pytest.CaptureFixture) -> None:
    assert groundbreak([*command, "--device", "bogus"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "unknown device 'bogus'" in err


def test_negative_workers_is_a_usage_error(capsys: pytest.CaptureFixture) -> None:
    assert groundbreak(["evaluate", "--chips", "c", "--workers", "-1"]) == 2
    assert "--workers: must be at least 0" in capsys.readouterr().err


@pytest.mark.parametrize(("text", "message"), [
    ("1: x\n", "are not names"),
    ("predictor: {device: bogus}\n", "key 'predictor': unknown device 'bogus'"),
    ("predictor: {1: 2}\n", "key 'predictor': unknown option(s) 1"),
])
def test_nightly_config_values_that_are_not_names(tmp_path: Path, text: str, message: str,
                                                  capsys: pytest.CaptureFixture) -> None:
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("pair_id,before,after\nx,a,b\n")
    config = tmp_path / "nightly.yaml"
    config.write_text(f"state_dir: state\npairs: pairs.csv\n{text}")
    assert groundbreak(["nightly", "--config", str(config)]) == 2
    one_line_error(capsys, message)
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize("contents", [
    {"state_dict": [1, 2]},
    {"state_dict": {"model.x": 5}, "hyper_parameters": "fusion"},
    {"state_dict": {}, "datamodule_record": "bands"},
])
def test_export_of_malformed_checkpoint_contents(tmp_path: Path, contents: dict,
                                                 capsys: pytest.CaptureFixture) -> None:
    checkpoint = tmp_path / "odd.ckpt"
    torch.save(contents, checkpoint)
    assert groundbreak(["export", str(checkpoint), "--out", str(tmp_path / "bundle")]) == 2
    one_line_error(capsys, str(checkpoint))
    assert not (tmp_path / "bundle").exists()


def test_train_resume_from_a_pickle_is_refused(tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    pickled = tmp_path / "last.ckpt"
    pickled.write_bytes(pickle.dumps({"state_dict": {}}))
    assert groundbreak(["train", "fit", "--ckpt_path", str(pickled)]) == 2
    one_line_error(capsys, str(pickled), "not a torch checkpoint")
