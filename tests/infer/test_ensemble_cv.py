"""``groundbreak cv-ensemble``: fold ensembles centred on thresholds from the other folds only,
pooled like ``cv``, and the final ensemble at the out-of-fold threshold."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from groundbreak.datasets.errors import InputError
from groundbreak.datasets.layouts import oscd_pairs
from groundbreak.infer.cli import main as groundbreak
from groundbreak.infer.evaluation import crossval
from groundbreak.infer.evaluation.ensemble_cv import member_settings, member_threshold
from groundbreak.train.bundle import load_bundle, save_bundle
from groundbreak.train.ensemble_network import ChangeEnsemble, logit_offset
from groundbreak.train.fc_networks import FCEFRes
from groundbreak.train.model import ChangeUNet

BANDS = ["B02", "B03", "B04", "B08"]
FOLDS = [["abudhabi"], ["beirut"]]


def member_model(kind: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    if kind == "unet":
        return ChangeUNet(4, "siamese_diff", "resnet18", encoder_depth=2, decoder_channels=(16, 8))
    return FCEFRes(4)


def fake_cv_run(folder: Path, kind: str, fixtures: Path) -> Path:
    """A finished two-fold cv run of an untrained model: fold bundles, scored held-out cities
    (real predictions on the fixtures, through ``cv``'s own scoring) and a final bundle."""
    specs = [s for s in oscd_pairs(fixtures) if s.label is not None]
    (folder).mkdir(parents=True)
    (folder / "cv_settings.json").write_text(json.dumps(
        {"folds": FOLDS, "oscd_root": str(fixtures)}
    ))
    meta = {
        "bands": BANDS, "chip_size": 32, "threshold": 0.5,
        "normalization": {"mean": [1000.0, 1100.0, 1200.0, 2500.0],
                          "std": [300.0, 310.0, 320.0, 900.0]},
    }
    args = argparse.Namespace(out=folder, device="cpu", cloud_mask="none", tta=False,
                              date_matching=None, keep_maps=False)
    for k, held_out in enumerate(FOLDS):
        path = save_bundle(member_model(kind, k).eval(), meta, folder / f"fold{k}" / "bundle")
        crossval.score_fold(load_bundle(path), k, held_out, specs, 60.0, args)
    final = {**meta, "threshold": 0.3 if kind == "unet" else 0.7}
    save_bundle(member_model(kind, 9).eval(), final, folder / "final" / "bundle")
    return folder


@pytest.mark.slow
def test_cv_ensemble_end_to_end(fixtures_dir: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    root = fixtures_dir / "oscd"
    runs = [fake_cv_run(tmp_path / kind, kind, root) for kind in ("unet", "fc_res")]
    out = tmp_path / "ens"
    argv = ["cv-ensemble", "--members", ",".join(map(str, runs)), "--out", str(out),
            "--window", "64", "--overlap", "16", "--cloud-mask", "none", "--device", "cpu",
            "--final", ",".join(str(r / "final" / "bundle") for r in runs)]
    assert groundbreak(argv) == 0
    printed = capsys.readouterr().out
    assert "out-of-fold, 2 folds" in printed and "wrote the final ensemble" in printed
    for k in range(2):
        bundle = load_bundle(out / f"fold{k}" / "bundle")
        assert isinstance(bundle.model, ChangeEnsemble) and bundle.window == 64
        # centred on each member's best threshold over the *other* fold's city
        expected = [logit_offset(member_threshold(r, k, 2, "")) for r in runs]
        assert bundle.meta["architecture"]["logit_offsets"] == pytest.approx(expected)
        record = json.loads((out / f"fold{k}" / "evaluation.json").read_text())
        assert [row["pair_id"] for row in record["per_pair"]] == FOLDS[k]
        assert record["window"] == [64, 16] and record["train_seconds"] == 120.0
    result = json.loads((out / "cv.json").read_text())
    final = load_bundle(out / "final" / "bundle")
    assert final.threshold == result["oof_threshold"]
    assert final.meta["metrics"]["oof/f1"] == result["pooled"]["f1"]
    assert final.meta["architecture"]["logit_offsets"] == pytest.approx(
        [logit_offset(0.3), logit_offset(0.7)]  # the final members' own thresholds
    )
    assert (final.window, final.overlap) == (64, 16)
    assert groundbreak(argv) == 0  # a rerun skips the scored folds
    assert "fold 0: done, skipped" in capsys.readouterr().out
    assert groundbreak([*argv[:-2], "--window", "128"]) == 2  # other settings: refused
    assert "cv_settings.json" in capsys.readouterr().err

    # --tta: the same fold bundles (members centred without TTA: they have no TTA scores),
    # scored with flips into their own files and maps; the final bundle gains a tta_threshold
    plain_offsets = [load_bundle(out / f"fold{k}" / "bundle").meta["architecture"]["logit_offsets"]
                     for k in range(2)]
    assert groundbreak([*argv, "--tta", "--keep-maps"]) == 0
    capsys.readouterr()
    for k in range(2):
        record = json.loads((out / f"fold{k}" / "evaluation_tta.json").read_text())
        assert record["tta"] is True and [r["pair_id"] for r in record["per_pair"]] == FOLDS[k]
        assert (out / f"fold{k}" / "maps_tta" / FOLDS[k][0] / "probability.tif").is_file()
        assert not (out / f"fold{k}" / "maps").exists()  # the plain run kept none
        offsets = load_bundle(out / f"fold{k}" / "bundle").meta["architecture"]["logit_offsets"]
        assert offsets == pytest.approx(plain_offsets[k])
    tta_result = json.loads((out / "cv_tta.json").read_text())
    final = load_bundle(out / "final" / "bundle")
    assert final.threshold == result["oof_threshold"]  # the threshold without TTA
    assert final.tta_threshold == tta_result["oof_threshold"]
    assert final.meta["metrics"]["oof_tta/f1"] == tta_result["pooled"]["f1"]
    assert final.meta["metrics"]["oof/f1"] == result["pooled"]["f1"]
    (out / "cv.json").unlink()  # the final bundle's threshold without TTA is then unknown
    assert groundbreak([*argv, "--tta"]) == 2
    assert "cv.json: missing: run cv-ensemble without --tta first" in capsys.readouterr().err


def test_members_must_share_their_folds(tmp_path: Path) -> None:
    for name, folds in (("a", FOLDS), ("b", [["beirut"], ["abudhabi"]])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "cv_settings.json").write_text(
            json.dumps({"folds": folds, "oscd_root": "x"})
        )
    with pytest.raises(InputError, match="folds differs from"):
        member_settings([tmp_path / "a", tmp_path / "b"])
    with pytest.raises(InputError, match="missing: not a groundbreak cv run folder"):
        member_settings([tmp_path / "a", tmp_path / "c"])
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "cv_settings.json").write_text("{not json")
    with pytest.raises(InputError, match="cv_settings.json"):
        member_settings([tmp_path / "a", tmp_path / "c"])
    (tmp_path / "c" / "cv_settings.json").write_text("[]")
    with pytest.raises(InputError, match="not the settings of a groundbreak cv run"):
        member_settings([tmp_path / "a", tmp_path / "c"])
    with pytest.raises(InputError, match="fold 1 of this member is not scored yet"):
        member_threshold(tmp_path / "a", 0, 2, "")
