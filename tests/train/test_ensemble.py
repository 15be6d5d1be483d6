"""Ensembles of change models: the network, the bundle (round trip and refused files), the
``groundbreak ensemble`` command and the window defaults a bundle gives the predictor."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from groundbreak.datasets.errors import InputError
from groundbreak.infer.cli import main as groundbreak
from groundbreak.infer.prediction.predictor import TiledPredictor
from groundbreak.train.bundle import load_bundle, save_bundle
from groundbreak.train.ensemble import combine_bundles
from groundbreak.train.ensemble_network import ChangeEnsemble, logit_offset
from groundbreak.train.fc_networks import FCEFRes
from groundbreak.train.model import ChangeUNet

BANDS = ["B02", "B03", "B04", "B08"]


def unet(seed: int = 0) -> ChangeUNet:
    torch.manual_seed(seed)
    return ChangeUNet(4, "siamese_diff", "resnet18", encoder_depth=2, decoder_channels=(16, 8))


def fc_res(seed: int = 1) -> FCEFRes:
    torch.manual_seed(seed)
    return FCEFRes(4)


def meta(**overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "bands": list(BANDS),
        "normalization": {"mean": [1000.0, 1100.0, 1200.0, 2500.0], "std": [300.0, 310, 320, 900]},
        "chip_size": 32,
        "threshold": 0.6,
        "pixel_size_m": 10.0,
        "date_matching": "mean_std",
        "training": {"epochs": 1},
    }
    record.update(overrides)
    return record


@pytest.fixture
def members(tmp_path: Path) -> list[Path]:
    """Two member bundles: a small U-Net at threshold 0.6, FC-EF-Res at 0.2."""
    return [
        save_bundle(unet().eval(), meta(threshold=0.6), tmp_path / "unet"),
        save_bundle(fc_res().eval(), meta(threshold=0.2), tmp_path / "fc_res"),
    ]


def pair(seed: int = 2, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(2, 4, size, size, generator=generator) for _ in range(2))


def test_the_ensemble_averages_its_members_centred_logits() -> None:
    a, b = unet().eval(), fc_res().eval()
    ensemble = ChangeEnsemble([a, b], [logit_offset(0.6), logit_offset(0.2)]).eval()
    before, after = pair()
    with torch.inference_mode():
        expected = ((a(before, after) - math.log(0.6 / 0.4))
                    + (b(before, after) - math.log(0.2 / 0.8))) / 2
        got = ensemble(before, after)
    assert torch.allclose(got, expected, atol=1e-6)
    assert got.shape == (2, 1, 32, 32)
    assert ensemble.output_stride == 16  # lcm of the U-Net's 4 and FC-EF-Res's 16
    assert ensemble.in_channels == 4
    # a pixel at both members' operating points sits at the ensemble's 0.5
    assert logit_offset(0.6) == pytest.approx(math.log(1.5))


def test_an_input_one_member_cannot_take_is_refused() -> None:
    ensemble = ChangeEnsemble([unet(), fc_res()], [0.0, 0.0])
    before, after = pair(size=40)  # divisible by the U-Net's 4, not by FC-EF-Res's 16
    with pytest.raises(ValueError, match="divisible by 16"):
        ensemble.check_input(before, after)


@pytest.mark.parametrize(
    ("members", "offsets", "problem"),
    [
        (lambda: [unet()], [0.0], "2 to 8 members"),
        (lambda: [unet(), fc_res()], [0.0], "1 logit offsets for 2 members"),
        (lambda: [unet(), fc_res()], [0.0, math.inf], "must be finite"),
        (lambda: [unet(), ChangeEnsemble([unet(), fc_res()], [0.0, 0.0])], [0.0, 0.0],
         "cannot itself be an ensemble"),
        (lambda: [unet(), FCEFRes(5)], [0.0, 0.0], r"different numbers of bands: \[4, 5\]"),
    ],
)
def test_bad_ensembles_are_refused(members: Any, offsets: list[float], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        ChangeEnsemble(members(), offsets)


@pytest.mark.parametrize("threshold", [0.0, 1.0, 1.5])
def test_a_threshold_outside_0_1_has_no_logit(threshold: float) -> None:
    with pytest.raises(ValueError, match="must lie in"):
        logit_offset(threshold)


def test_combine_round_trip(members: list[Path], tmp_path: Path) -> None:
    loaded = [load_bundle(path) for path in members]
    bundle = combine_bundles(loaded, tmp_path / "ensemble", 0.45, window=64, name="both")
    assert isinstance(bundle.model, ChangeEnsemble)
    assert bundle.threshold == 0.45 and bundle.name == "both"
    assert (bundle.window, bundle.overlap) == (64, 16)  # a quarter, on the output stride
    assert bundle.bands == BANDS and bundle.date_matching == "mean_std"
    record = bundle.meta["training"]["ensemble_of"]
    assert [m["threshold"] for m in record] == [0.6, 0.2]  # each member's own, by default
    assert record[0]["training"] == {"epochs": 1}  # each member's provenance is kept
    assert bundle.meta["architecture"]["logit_offsets"] == pytest.approx(
        [math.log(1.5), math.log(0.25)]
    )
    weights = json.loads((tmp_path / "ensemble" / "model.json").read_text())
    assert weights["architecture"]["members"][1]["network"] == "fc_res"
    before, after = pair()
    with torch.inference_mode():
        expected = ChangeEnsemble([m.model for m in loaded],
                                  [logit_offset(0.6), logit_offset(0.2)])(before, after)
        assert torch.equal(bundle.model(before, after), expected)
    # given thresholds centre the members instead
    other = combine_bundles(loaded, tmp_path / "given", member_thresholds=[0.5, 0.5])
    assert other.meta["architecture"]["logit_offsets"] == [0.0, 0.0]
    assert other.threshold == 0.5 and other.window is None


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"bands": ["B02", "B03", "B04", "B8A"]}, "reads bands B02,B03,B04,B8A"),
        ({"normalization": {"mean": [1.0, 1.0, 1.0, 1.0], "std": [1.0, 1.0, 1.0, 1.0]}},
         "normalises its bands otherwise"),
        ({"date_matching": "none"}, "date_matching 'none' differs"),
        ({"pixel_size_m": 3.0}, "pixel_size_m 3.0 differs"),
    ],
)
def test_members_that_do_not_fit_together_are_refused(
    members: list[Path], tmp_path: Path, change: dict[str, Any], problem: str
) -> None:
    odd = save_bundle(fc_res().eval(), meta(**change), tmp_path / "odd")
    with pytest.raises(InputError, match=problem) as caught:
        combine_bundles([load_bundle(members[0]), load_bundle(odd)], tmp_path / "out")
    assert str(odd / "model.json") in str(caught.value)
    assert not (tmp_path / "out").exists()  # nothing written


def test_the_ensemble_command(members: list[Path], tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cmd"
    argv = ["ensemble", *map(str, members), "--out", str(out), "--threshold", "0.4",
            "--window", "128", "--overlap", "32", "--member-thresholds", "0.5,0.3"]
    assert groundbreak(argv) == 0
    printed = capsys.readouterr().out
    assert "2 members, threshold 0.400, window 128" in printed and "centred on 0.300" in printed
    bundle = load_bundle(out)
    assert (bundle.window, bundle.overlap, bundle.threshold) == (128, 32, 0.4)
    assert groundbreak(["ensemble", str(members[0]), "--out", str(tmp_path / "one")]) == 2
    assert "at least 2 member bundles" in capsys.readouterr().err
    assert groundbreak([*argv[:-2], "--member-thresholds", "0.5"]) == 2
    assert "1 member thresholds for 2 members" in capsys.readouterr().err
    assert groundbreak(["ensemble", str(out), str(members[0]), "--out", str(tmp_path / "n")]) == 2
    assert f"{out / 'model.json'}: is an ensemble itself" in capsys.readouterr().err
    assert groundbreak([*argv[:5], "--window", "120"]) == 2  # not on the output stride 16
    assert "window 120 is not divisible by the model's output stride 16" in (
        capsys.readouterr().err
    )


def crafted(folder: Path, **architecture_changes: Any) -> None:
    """Rewrite an ensemble bundle's architecture record."""
    path = folder / "model.json"
    record = json.loads(path.read_text())
    record["architecture"].update(architecture_changes)
    path.write_text(json.dumps(record))


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"members": "all"}, "architecture.members must list 2 to 8 architectures"),
        ({"logit_offsets": [0.0]}, "logit_offsets must list one finite number per member"),
        ({"members": [{"network": "ensemble", "members": [], "logit_offsets": [],
                       "in_channels": 4}] * 2}, r"members\[0\].network must be one of"),
        ({"members": [{"network": "fc", "fusion": "sideways", "in_channels": 4}] * 2},
         r"members\[0\].fusion must be one of"),
        ({"members": [{"network": "fc_res", "fusion": "early", "in_channels": 5}] * 2},
         r"members\[0\].in_channels 5 differs from architecture.in_channels 4"),
    ],
)
def test_crafted_ensemble_records_are_refused(
    members: list[Path], tmp_path: Path, change: dict[str, Any], problem: str
) -> None:
    combine_bundles([load_bundle(p) for p in members], tmp_path / "e")
    crafted(tmp_path / "e", **change)
    with pytest.raises(InputError, match=problem):
        load_bundle(tmp_path / "e")


def test_member_weights_that_do_not_fit_are_refused(members: list[Path], tmp_path: Path) -> None:
    combine_bundles([load_bundle(p) for p in members], tmp_path / "e")
    path = tmp_path / "e" / "model.json"
    record = json.loads(path.read_text())
    record["architecture"]["members"][0]["decoder_channels"] = [32, 8]
    path.write_text(json.dumps(record))
    with pytest.raises(InputError, match=r"decoder_channels \[32, 8\]"):
        load_bundle(tmp_path / "e")


@pytest.mark.parametrize(
    ("window", "problem"),
    [
        ({"window": 0}, "window must be an integer 1 to 4096"),
        ({"window": 64, "overlap": 64}, r"overlap must be an integer from 0 to window - 1 \(63\)"),
        ({"overlap": 16}, "overlap is set but window is not"),
        ({"window": 64, "overlap": 10}, "window - overlap 54 is not divisible"),
    ],
)
def test_bad_window_defaults_are_refused(
    members: list[Path], window: dict[str, Any], problem: str
) -> None:
    path = members[0] / "model.json"
    record = json.loads(path.read_text())
    record.update(window)
    path.write_text(json.dumps(record))
    with pytest.raises(InputError, match=problem):
        load_bundle(members[0])


def test_the_predictor_takes_the_bundles_window(members: list[Path], tmp_path: Path) -> None:
    bundle = combine_bundles([load_bundle(p) for p in members], tmp_path / "e",
                             window=96, overlap=32)
    predictor = TiledPredictor(bundle, device="cpu")
    assert (predictor.window, predictor.overlap) == (96, 32)
    assert (TiledPredictor(bundle, window=64, device="cpu").overlap) == 16  # its own quarter
    assert TiledPredictor(bundle, window=96, device="cpu").overlap == 32  # the bundle's window
    assert TiledPredictor(bundle, overlap=16, device="cpu").window == 96
    plain = TiledPredictor(load_bundle(members[0]), device="cpu")
    assert (plain.window, plain.overlap) == (64, 16)  # no window in model.json: 2 x chip_size
    # a batch holds BATCH_PIXELS window pixels by default, whatever the window
    assert TiledPredictor(bundle, window=256, device="cpu").batch_size == 4
    assert TiledPredictor(bundle, window=512, device="cpu").batch_size == 1
    assert TiledPredictor(bundle, window=512, batch_size=3, device="cpu").batch_size == 3
    assert np.isclose(bundle.threshold, 0.5)


def test_a_member_without_a_radiometry_record_reads_as_the_oscd_convention(
    members: list[Path], tmp_path: Path
) -> None:
    path = members[1] / "model.json"
    record = json.loads(path.read_text())
    del record["radiometry"]  # bundles before the key: OSCD's convention, as the loader reads it
    path.write_text(json.dumps(record))
    bundle = combine_bundles([load_bundle(p) for p in members], tmp_path / "e")
    assert len(bundle.model.members) == 2
