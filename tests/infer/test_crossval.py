"""``groundbreak cv``: folds by city, settings kept, and a 2-fold run end to end on the fixtures."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml

from groundbreak.datasets.errors import InputError
from groundbreak.datasets.layouts import oscd_pairs
from groundbreak.infer.cli import main as groundbreak
from groundbreak.infer.evaluation import scene_evaluate
from groundbreak.infer.evaluation.crossval import (
    balanced_folds,
    check_settings,
    config_content_sha256,
    date_matching_of,
    read_folds,
)
from groundbreak.infer.evaluation.cv_markdown import region_markdown
from groundbreak.infer.evaluation.cv_pooling import aggregate, region_table
from groundbreak.train.bundle import load_bundle

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def tiny_config(tmp_path: Path, tiny_model: dict) -> Path:
    """A one-epoch CPU training config on four bands."""
    config = {
        "seed_everything": 0,
        "trainer": {
            "max_epochs": 1, "accelerator": "cpu", "devices": 1, "log_every_n_steps": 1,
            "enable_progress_bar": False, "enable_model_summary": False,
        },
        "model": {**tiny_model, "fusion": "siamese_diff", "scheduler": "none"},
        "checkpoint": {"save_last": True},  # as configs/oscd_s2.yaml: one last.ckpt all the same
        "data": {"chips_dir": "set-by-cv", "bands": ["B02", "B03", "B04", "B08"],
                 "batch_size": 4, "augment": False},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def held_out_of(record: dict) -> list[str]:
    """The cities an evaluation record scored."""
    return [row["pair_id"] for row in record["per_pair"]]


def test_balanced_folds_and_fold_files(fixtures_dir: Path, tmp_path: Path) -> None:
    specs = [s for s in oscd_pairs(fixtures_dir / "oscd") if s.label is not None]
    assert sorted(balanced_folds(specs, 2)) == [["abudhabi"], ["beirut"]]
    with pytest.raises(InputError, match="between 2 and 2 folds"):
        balanced_folds(specs, 3)
    cities = ["abudhabi", "beirut"]
    path = tmp_path / "folds.yaml"
    path.write_text("folds: [[beirut], [abudhabi]]\n")
    assert read_folds(path, cities) == [["beirut"], ["abudhabi"]]
    for text, problem in [
        ("folds: [[beirut], [abudhabi, beirut]]", "twice: beirut"),
        ("folds: [[beirut], [atlantis]]", "unknown or unlabelled cities: atlantis"),
        ("folds: [[beirut]]", "at least two"),
    ]:
        path.write_text(text)
        with pytest.raises(InputError, match=problem):
            read_folds(path, cities)


def test_the_committed_oscd_folds_cover_the_14_cities_once() -> None:
    cities = [
        "aguasclaras", "bercy", "bordeaux", "nantes", "paris", "rennes", "saclay_e", "abudhabi",
        "cupertino", "pisa", "beihai", "hongkong", "beirut", "mumbai",
    ]
    folds = read_folds(CONFIGS / "cv" / "oscd_folds5.yaml", cities)
    assert len(folds) == 5


@pytest.mark.slow
def test_two_fold_cv_end_to_end_then_resume(
    fixtures_dir: Path, tiny_model: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tiny_config(tmp_path, tiny_model)
    out = tmp_path / "cv"
    argv = [
        "cv", "--config", str(config), "--folds", "2", "--out", str(out),
        "--oscd-root", str(fixtures_dir / "oscd"), "--size", "32", "--stride", "32",
    ]
    assert groundbreak([*argv, "--only-folds", "1"]) == 0
    assert "1 of 2 folds done" in capsys.readouterr().out
    assert groundbreak([*argv, "--only-final"]) == 0  # the final model, beside the folds
    assert "final model trained" in capsys.readouterr().out
    assert not (out / "final" / "bundle").exists()  # exported only at the OOF threshold
    assert groundbreak([*argv, "--final"]) == 0
    printed = capsys.readouterr().out
    assert "fold 1: done, skipped" in printed and "out-of-fold, 2 folds, 2 cities" in printed
    assert "final: training" not in printed  # trained already
    for k, held_out in enumerate(balanced_folds(
        [s for s in oscd_pairs(fixtures_dir / "oscd") if s.label is not None], 2
    )):
        fold = out / f"fold{k}"
        record = json.loads((fold / "evaluation.json").read_text())
        assert record["held_out"] == held_out and held_out[0] not in record["trained_on"]
        chips = json.loads((fold / "chips" / "dataset.json").read_text())
        assert [p["pair_id"] for p in chips["pairs"]] == record["trained_on"]  # held out: unseen
        checkpoints = sorted(p.name for p in (fold / "train" / "checkpoints").iterdir())
        assert checkpoints == ["last.ckpt"]  # no "best": nothing selected on the held-out city
        assert (fold / "bundle" / "model.json").is_file()
    result = json.loads((out / "cv.json").read_text())
    assert set(result["per_city_f1"]) == {"abudhabi", "beirut"}
    assert len(result["per_fold_f1"]) == 2 and 0.0 <= result["pooled"]["f1"] <= 1.0
    assert "| cv | " in (out / "cv.md").read_text()
    final = load_bundle(out / "final" / "bundle")  # trained on both cities, OOF threshold
    assert final.threshold == result["oof_threshold"]
    assert final.meta["metrics"]["oof/f1"] == pytest.approx(result["pooled"]["f1"])
    trained = json.loads((out / "final" / "chips" / "dataset.json").read_text())["pairs"]
    assert sorted(p["pair_id"] for p in trained) == ["abudhabi", "beirut"]

    # Done folds are skipped; other settings in the same folder are refused.
    assert groundbreak(argv) == 0
    assert "fold 0: done, skipped" in capsys.readouterr().out
    assert groundbreak([*argv[:-1], "64"]) == 2
    assert "started with other settings (stride)" in capsys.readouterr().err

    # Flip TTA rescores the same trained folds (nothing retrained) into their own files.
    done_before = [(out / f"fold{k}" / "train" / "DONE").read_text() for k in range(2)]
    assert groundbreak([*argv, "--tta"]) == 0
    printed = capsys.readouterr().out
    assert "training (" not in printed and "out-of-fold, 2 folds, 2 cities" in printed
    assert [(out / f"fold{k}" / "train" / "DONE").read_text() for k in range(2)] == done_before
    for k in range(2):
        plain = json.loads((out / f"fold{k}" / "evaluation.json").read_text())
        flipped = json.loads((out / f"fold{k}" / "evaluation_tta.json").read_text())
        assert flipped["tta"] is True and plain["tta"] is False
        assert [r["pair_id"] for r in flipped["per_pair"]] == held_out_of(plain)
        assert flipped["per_pair"][0]["histogram"] != plain["per_pair"][0]["histogram"]
    tta_result = json.loads((out / "cv_tta.json").read_text())
    assert tta_result["name"] == "cv + flip TTA"
    assert json.loads((out / "cv.json").read_text()) == result  # the plain scores are kept

    # Date matching asked at prediction rescores them the same way, and the final bundle says so.
    assert groundbreak([*argv, "--date-matching", "mean_std", "--final"]) == 0
    assert "training (" not in capsys.readouterr().out
    for k in range(2):
        matched = json.loads((out / f"fold{k}" / "evaluation_mean_std.json").read_text())
        assert matched["date_matching"] == "mean_std"
    matched_result = json.loads((out / "cv_mean_std.json").read_text())
    assert matched_result["name"] == "cv + date matching mean_std"
    assert load_bundle(out / "final" / "bundle").date_matching == "mean_std"

    # Other prediction windows rescore them too, and the final bundle takes them as its own.
    windows = ["--window", "96", "--overlap", "32"]
    assert groundbreak([*argv, "--date-matching", "mean_std", *windows, "--final",
                        "--keep-maps"]) == 0
    assert "training (" not in capsys.readouterr().out
    for k in range(2):
        assert (out / f"fold{k}" / "maps_w96o32").is_dir()  # its own maps, not the plain ones
        assert not (out / f"fold{k}" / "maps").exists()
        plain = json.loads((out / f"fold{k}" / "evaluation_mean_std.json").read_text())
        windowed = json.loads((out / f"fold{k}" / "evaluation_mean_std_w96o32.json").read_text())
        assert windowed["window"] == [96, 32] and plain["window"] != [96, 32]
    windowed_result = json.loads((out / "cv_mean_std_w96o32.json").read_text())
    assert windowed_result["name"] == "cv + date matching mean_std + windows 96/32"
    final = load_bundle(out / "final" / "bundle")
    assert (final.window, final.overlap) == (96, 32)
    assert final.threshold == windowed_result["oof_threshold"]

    # With flips, the final bundle keeps the plain threshold and gains a tta_threshold; a TTA
    # rescoring without its plain one is refused before the final bundle is touched.
    assert groundbreak([*argv, "--date-matching", "mean_std", *windows, "--tta", "--final"]) == 0
    assert "training (" not in capsys.readouterr().out
    flipped_result = json.loads((out / "cv_mean_std_w96o32_tta.json").read_text())
    final = load_bundle(out / "final" / "bundle")
    assert final.threshold == windowed_result["oof_threshold"]
    assert final.tta_threshold == flipped_result["oof_threshold"]
    assert final.meta["metrics"]["oof/f1"] == pytest.approx(windowed_result["pooled"]["f1"])
    assert final.meta["metrics"]["oof_tta/f1"] == pytest.approx(flipped_result["pooled"]["f1"])
    assert "cv_mean_std_w96o32_tta.json" in final.meta["training"]["threshold_source"]
    stated = (out / "final" / "bundle" / "model.json").read_bytes()
    assert groundbreak([*argv, "--window", "64", "--overlap", "16", "--tta", "--final"]) == 2
    err = capsys.readouterr().err
    assert "cv_w64o16.json: missing: run cv without --tta first" in err
    assert (out / "final" / "bundle" / "model.json").read_bytes() == stated

    assert groundbreak([*argv, "--window", "64"]) == 2
    assert "--window and --overlap go together" in capsys.readouterr().err
    assert groundbreak([*argv, "--window", "64", "--overlap", "64"]) == 2
    assert "--overlap must be in [0, 64)" in capsys.readouterr().err


def test_date_matching_of_a_config_and_its_overrides(tmp_path: Path, tiny_model: dict) -> None:
    config = tiny_config(tmp_path, tiny_model)
    assert date_matching_of(config, []) == "none"
    assert date_matching_of(config, ["--data.date_matching", "mean_std"]) == "mean_std"
    assert date_matching_of(config, ["--data.date_matching=mean_std"]) == "mean_std"
    data = yaml.safe_load(config.read_text())
    data["data"]["date_matching"] = "mean_std"
    config.write_text(yaml.safe_dump(data))
    assert date_matching_of(config, ["--trainer.max_epochs", "2"]) == "mean_std"
    with pytest.raises(InputError, match=r"tiny.yaml.*unknown date matching 'hist'"):
        date_matching_of(config, ["--data.date_matching", "hist"])


@pytest.mark.slow
def test_cv_cuts_chips_the_way_the_config_matches_dates(
    fixtures_dir: Path, tiny_model: dict, tmp_path: Path
) -> None:
    config = tiny_config(tmp_path, tiny_model)
    data = yaml.safe_load(config.read_text())
    data["data"]["date_matching"] = "mean_std"
    config.write_text(yaml.safe_dump(data))
    out = tmp_path / "cv"
    assert groundbreak([
        "cv", "--config", str(config), "--folds", "2", "--out", str(out), "--only-folds", "0",
        "--oscd-root", str(fixtures_dir / "oscd"), "--size", "32", "--stride", "32",
    ]) == 0
    chips = json.loads((out / "fold0" / "chips" / "dataset.json").read_text())
    assert chips["date_matching"] == "mean_std" and "date_match" in chips["pairs"][0]
    bundle = load_bundle(out / "fold0" / "bundle")  # trained, exported and scored matched
    assert bundle.date_matching == "mean_std"
    assert json.loads((out / "fold0" / "evaluation.json").read_text())["per_pair"]


def test_out_of_fold_recall_by_region_size_and_its_spread(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    """Two folds scored from real fixture labels and constant probability maps: beirut's map
    0.7 everywhere, abudhabi's 0.3. Fold 1's record predates region counts: they come from its
    kept map."""
    specs = [s for s in oscd_pairs(fixtures_dir / "oscd") if s.label is not None]
    folds = [["beirut"], ["abudhabi"]]
    expected = {}
    for k, (city, value) in enumerate((("beirut", 0.7), ("abudhabi", 0.3))):
        pair = next(s for s in specs if s.pair_id == city).open()
        maps = tmp_path / f"fold{k}" / "maps" / city
        maps.mkdir(parents=True)
        height, width = pair.grid.shape
        profile = {"driver": "GTiff", "height": height, "width": width, "count": 1,
                   "dtype": "float32"}
        with rasterio.open(maps / "probability.tif", "w", **profile) as dst:
            dst.write(np.full((height, width), value, np.float32), 1)
        result = scene_evaluate.score_probability_map(pair, maps / "probability.tif")
        expected[city] = result.regions
        row = result.to_json(0.5)
        if k == 1:
            del row["regions"]
        record = {"per_pair": [row], "train_seconds": 60.0}
        (tmp_path / f"fold{k}" / "evaluation.json").write_text(scene_evaluate.dumps(record))

    result = aggregate(tmp_path, folds, "constant", "", specs)
    changed = sum(int(r.sizes.sum()) for r in expected.values())
    rows = result["by_region_size"]
    assert sum(row["changed_pixels"] for row in rows) == changed
    assert result["oof_threshold"] <= 0.3  # predicting every pixel is the best F1 here
    assert all(row["pixel_recall"] == 1.0 and row["fold_regions_found"]["std"] == 0.0
               for row in rows if row["regions"])
    assert len(result["per_fold_precision"]) == 2 and result["fold_recall"]["mean"] == 1.0

    # At 0.5 beirut's regions are all found and abudhabi's none: each fold found 1 or 0.
    at_half = region_table([[expected["beirut"]], [expected["abudhabi"]]], 0.5)
    beirut, abudhabi = expected["beirut"].table(0.5), expected["abudhabi"].table(0.5)
    for row, one, other in zip(at_half, beirut, abudhabi, strict=True):
        assert row["regions"] == one["regions"] + other["regions"]
        assert row["regions_found"] == pytest.approx(
            one["regions"] / row["regions"] if row["regions"] else 0.0
        )
        folds_found = [t["regions_found"] for t in (one, other) if t["regions"]]
        if folds_found:
            assert row["fold_regions_found"]["mean"] == pytest.approx(np.mean(folds_found))
            assert (row["fold_regions_found"]["min"], row["fold_regions_found"]["max"]) == (
                min(folds_found), max(folds_found)
            )
    assert sum(row["regions_found"] * row["regions"] for row in at_half) == pytest.approx(
        len(expected["beirut"].sizes)
    )
    markdown_lines = region_markdown(result)
    assert any(line.startswith("| region size (px) |") for line in markdown_lines)


def test_a_run_resumes_after_its_config_is_edited_in_comments_or_cv_set_paths(
    tmp_path: Path, tiny_model: dict
) -> None:
    config = tiny_config(tmp_path, tiny_model)

    def settings() -> dict:
        return {
            "config_sha256": hashlib.sha256(config.read_bytes()).hexdigest(),
            "config_content_sha256": config_content_sha256(config),
            "size": 32,
        }

    out = tmp_path / "cv"
    check_settings(out, settings())
    data = yaml.safe_load(config.read_text())
    data["trainer"]["default_root_dir"] = "../runs/elsewhere"  # cv sets it for every training
    data["data"]["chips_dir"] = "../runs/chips/oscd"
    config.write_text("# a new comment\n" + yaml.safe_dump(data))
    check_settings(out, settings())  # the same trainings: resumes
    data["trainer"]["max_epochs"] = 2
    config.write_text(yaml.safe_dump(data))
    with pytest.raises(InputError, match="other settings .config_content_sha256"):
        check_settings(out, settings())

    # A run recorded before content hashes compares the file itself.
    old = tmp_path / "old"
    check_settings(old, {k: v for k, v in settings().items() if k != "config_content_sha256"})
    config.write_text("# another comment\n" + config.read_text())
    with pytest.raises(InputError, match="other settings .config_sha256"):
        check_settings(old, settings())
