"""Whole-scene ``groundbreak evaluate`` (--oscd-root / --pairs) on the OSCD fixtures.

The model of these tests is a ChangeUNet with every weight zero and the head's bias set to
logit(0.7): it predicts 0.7 at every pixel, so every count is known from the label alone.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from scipy import ndimage

from groundbreak.infer.cli import main as groundbreak
from groundbreak.infer.evaluation.scene_evaluate import ChangeHistogram, RegionCounts, label_regions
from groundbreak.train.bundle import save_bundle
from groundbreak.train.model import ChangeUNet

BANDS = ["B02", "B03", "B04", "B08"]
CONSTANT = 0.7


def constant_bundle(out: Path, bands: list[str] = BANDS, threshold: float = 0.5) -> Path:
    """A bundle whose model predicts CONSTANT everywhere."""
    model = ChangeUNet(
        in_channels=len(bands), fusion="siamese_diff", encoder_name="resnet18",
        encoder_depth=3, decoder_channels=(16, 8, 8),
    )
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        model.segmentation_head[0].bias.fill_(math.log(CONSTANT / (1 - CONSTANT)))
    meta = {
        "bands": bands,
        "normalization": {"mean": [0.0] * len(bands), "std": [1.0] * len(bands)},
        "chip_size": 32,
        "threshold": threshold,
    }
    return save_bundle(model, meta, out)


@pytest.fixture(scope="module")
def constant(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The constant bundle, threshold 0.5."""
    return constant_bundle(tmp_path_factory.mktemp("bundles") / "constant")


def raw_counts(fixtures_dir: Path, city: str) -> tuple[int, int]:
    """(changed, unchanged) pixels of an OSCD label read straight from the file (2 / 1)."""
    with rasterio.open(fixtures_dir / "oscd" / city / "cm" / f"{city}-cm.tif") as src:
        label = src.read(1)
    return int((label == 2).sum()), int((label == 1).sum())


def test_histogram_counts_by_hand() -> None:
    histogram = ChangeHistogram()
    probability = np.array([[0.1, 0.37, 0.37, 0.9], [0.6, np.nan, 0.9, 0.2]], np.float32)
    label = np.array([[0, 1, 0, 1], [255, 1, 0, 0]], np.uint8)
    assert histogram.add(probability, label) == 1  # the NaN pixel: no prediction, "no change"
    assert histogram.counts(0.3) == {"tp": 2, "fp": 2, "fn": 1, "tn": 2}
    assert histogram.counts(0.5) == {"tp": 1, "fp": 1, "fn": 2, "tn": 3}
    assert histogram.counts(0.95) == {"tp": 0, "fp": 0, "fn": 3, "tn": 4}
    at = histogram.scores(0.3)
    assert (at["precision"], at["recall"], at["f1"], at["iou"]) == pytest.approx(
        (1 / 2, 2 / 3, 4 / 7, 2 / 5)
    )
    assert histogram.scores(0.95)["precision"] == 0.0  # 0/0 is 0, not NaN
    best = histogram.best()  # F1 4/7 for every threshold in (0.2, 0.37]: the nearest 0.5
    assert best["threshold"] == 0.37 and best["f1"] == pytest.approx(4 / 7)
    again = ChangeHistogram.from_json(json.loads(json.dumps(histogram.to_json())))
    assert (again + histogram).counts(0.3) == {"tp": 4, "fp": 4, "fn": 2, "tn": 4}


def test_recall_by_region_size_by_hand() -> None:
    label = np.zeros((16, 16), np.uint8)
    probability = np.full((16, 16), 0.2, np.float32)
    label[0, 0] = label[1, 1] = 1  # A: two diagonal pixels, one 8-connected region of 2 px
    probability[0, 0], probability[1, 1] = 0.9, 0.1
    label[3:6, 0:4] = 1  # B: 12 px, 4 of them (33 %) at 0.8, one unpredicted
    probability[3, 0:4] = 0.8
    probability[5, 3] = np.nan
    label[6:16, 6:16] = 1  # D: 100 px, 29 of them (29 %) at 0.9
    probability[6:16, 6:16].flat[:29] = 0.9
    label[0, 8:12] = 255  # no label: not change
    regions, count = label_regions(label)
    assert count == 3
    counts = RegionCounts.from_pixels(regions[regions > 0], probability[regions > 0], count)
    assert sorted(counts.sizes.tolist()) == [2, 12, 100]

    def table(threshold: float) -> dict[str, tuple[int, int, float, float]]:
        return {r["size"]: (r["regions"], r["changed_pixels"], r["pixel_recall"],
                            r["regions_found"]) for r in counts.table(threshold)}

    assert table(0.5) == {
        "1-10": (1, 2, 0.5, 1.0), "10-30": (1, 12, 4 / 12, 1.0), "30-100": (0, 0, 0.0, 0.0),
        "100-300": (1, 100, 0.29, 0.0), "300+": (0, 0, 0.0, 0.0),
    }
    assert table(0.85)["10-30"] == (1, 12, 0.0, 0.0)  # B's 0.8 pixels are below
    assert table(0.85)["1-10"] == (1, 2, 0.5, 1.0)
    again = RegionCounts.from_json(json.loads(json.dumps(counts.to_json())))
    doubled = {r["size"]: r["regions"] for r in (again + counts).table(0.5)}
    assert doubled == {"1-10": 2, "10-30": 2, "30-100": 0, "100-300": 2, "300+": 0}


def test_whole_scenes_of_a_constant_model(
    fixtures_dir: Path, constant: Path, tmp_path: Path
) -> None:
    bundle = constant
    out = tmp_path / "metrics.json"
    code = groundbreak([
        "evaluate", "--model", str(bundle), "--oscd-root", str(fixtures_dir / "oscd"),
        "--cities", "beirut,abudhabi", "--out", str(out), "--maps", str(tmp_path / "maps"),
    ])
    assert code == 0
    result = json.loads(out.read_text())
    counts = {city: raw_counts(fixtures_dir, city) for city in ("beirut", "abudhabi")}
    changed = sum(c for c, _ in counts.values())
    unchanged = sum(u for _, u in counts.values())
    pooled = result["pooled"]  # 0.7 >= 0.5 everywhere: every pixel predicted changed
    assert (pooled["tp"], pooled["fp"], pooled["fn"]) == (changed, unchanged, 0)
    assert pooled["precision"] == pytest.approx(changed / (changed + unchanged))
    assert pooled["recall"] == 1.0
    assert result["pixels"] == changed + unchanged and result["unpredicted_pixels"] == 0
    for row in result["per_pair"]:
        assert (row["tp"], row["fp"]) == counts[row["pair_id"]]
    # Every threshold up to 0.7 gives the same F1, every one above gives 0: the nearest 0.5.
    assert result["best"]["threshold"] == 0.5
    # Every labelled region is found whole; the bins hold every changed pixel once.
    by_size = result["by_region_size"]
    assert sum(row["changed_pixels"] for row in by_size) == changed
    assert all(row["pixel_recall"] == 1.0 and row["regions_found"] == 1.0
               for row in by_size if row["regions"])
    assert sum(row["regions"] for row in by_size) > 2
    assert (tmp_path / "maps" / "beirut" / "probability.tif").is_file()


def test_a_threshold_above_every_probability_scores_zero(
    fixtures_dir: Path, constant: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = constant
    pairs = tmp_path / "pairs.csv"
    city = fixtures_dir / "oscd" / "beirut"
    pairs.write_text(
        f"pair_id,before,after,label\nbeirut,{city}/imgs_1,{city}/imgs_2,{city}/cm/beirut-cm.tif\n"
    )
    code = groundbreak(
        ["evaluate", "--model", str(bundle), "--pairs", str(pairs), "--threshold", "0.9"]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "pooled at threshold 0.900: precision 0.0000  recall 0.0000  F1 0.0000" in printed
    assert "best pooled threshold 0.50" in printed


def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert groundbreak(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_bad_inputs_are_one_line_errors(
    fixtures_dir: Path, constant: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = str(constant)
    oscd = str(fixtures_dir / "oscd")
    base = ["evaluate", "--model", bundle, "--oscd-root", oscd, "--cities"]
    assert "unknown pair(s) atlantis" in one_line_error(capsys, [*base, "beirut,atlantis"])
    assert "pair dubai has no label" in one_line_error(capsys, [*base, "dubai"])

    rgb = str(constant_bundle(tmp_path / "rgb", bands=["red", "green", "blue"]))
    err = one_line_error(capsys, ["evaluate", "--model", rgb, "--oscd-root", oscd])
    assert "needs band(s) red, green, blue" in err

    broken = tmp_path / "oscd"
    shutil.copytree(fixtures_dir / "oscd", broken)
    (broken / "abudhabi" / "cm" / "abudhabi-cm.tif").unlink()
    err = one_line_error(capsys, ["evaluate", "--model", bundle, "--oscd-root", str(broken)])
    assert "label of train city abudhabi does not exist" in err

    pairs = tmp_path / "pairs.csv"
    city = fixtures_dir / "oscd" / "dubai"
    pairs.write_text(f"pair_id,before,after\ndubai,{city}/imgs_1,{city}/imgs_2\n")
    err = one_line_error(capsys, ["evaluate", "--model", bundle, "--pairs", str(pairs)])
    assert "pair dubai has no label" in err


def test_whole_scene_options_need_a_scene_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = groundbreak(["evaluate", "--chips", str(tmp_path), "--cities", "beirut"])
    assert code == 2
    assert "use --oscd-root or --pairs" in capsys.readouterr().err
    code = groundbreak(["evaluate", "--chips", str(tmp_path), "--date-matching", "mean_std"])
    assert code == 2
    assert "--date-matching score whole scenes" in capsys.readouterr().err
    assert groundbreak(["evaluate", "--chips", str(tmp_path), "--pairs", "x.csv"]) == 2


def test_unobserved_labelled_pixels_count_as_no_change(
    fixtures_dir: Path, constant: Path, tmp_path: Path
) -> None:
    city = fixtures_dir / "oscd" / "beirut"
    band = next((city / "imgs_1").glob("*_B02.tif"))
    with rasterio.open(band) as src:
        profile = {**src.profile, "dtype": "uint8", "count": 1, "nodata": None}
        hidden = np.zeros((src.height, src.width), np.uint8)
    hidden[:, : src.width // 2] = 1  # clouds over the left half of the before date
    with rasterio.open(tmp_path / "clouds.tif", "w", **profile) as dst:
        dst.write(hidden, 1)
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(
        "pair_id,before,after,label,before_mask\n"
        f"beirut,{city}/imgs_1,{city}/imgs_2,{city}/cm/beirut-cm.tif,{tmp_path}/clouds.tif\n"
    )
    out = tmp_path / "metrics.json"
    argv = ["evaluate", "--model", str(constant), "--pairs", str(pairs), "--out", str(out)]
    assert groundbreak([*argv, "--maps", str(tmp_path / "maps")]) == 0
    result = json.loads(out.read_text())
    with rasterio.open(tmp_path / "maps" / "beirut" / "mask.tif") as src:
        unobserved = src.read(1) == 255
    with rasterio.open(city / "cm" / "beirut-cm.tif") as src:
        label = src.read(1)  # 2 = change, 1 = no change
    assert unobserved[:, 0].all() and not unobserved[:, -1].any()
    pooled = result["pooled"]  # seen pixels: all predicted changed; unobserved: "no change"
    assert result["unpredicted_pixels"] == int(unobserved.sum())
    assert pooled["tp"] == int(((label == 2) & ~unobserved).sum())
    assert pooled["fn"] == int(((label == 2) & unobserved).sum()) > 0
    assert result["unpredicted_changed_pixels"] == pooled["fn"]  # the recall the mask costs
    assert result["per_pair"][0]["unpredicted_changed_pixels"] == pooled["fn"]
    assert pooled["fp"] == int(((label == 1) & ~unobserved).sum())
    # By region size: a region is found when >= 30 % of it lies in the observed (right) half.
    regions, count = ndimage.label(label == 2, structure=np.ones((3, 3)))
    expected = {name: [0, 0, 0, 0] for name in ("1-10", "10-30", "30-100", "100-300", "300+")}
    for region in range(1, count + 1):
        inside = regions == region
        size, seen = int(inside.sum()), int((inside & ~unobserved).sum())
        name = next(n for n, high in (("1-10", 10), ("10-30", 30), ("30-100", 100),
                                      ("100-300", 300), ("300+", 10**9)) if size < high)
        row = expected[name]
        row[0] += 1
        row[1] += size
        row[2] += seen
        row[3] += 10 * seen >= 3 * size
    assert any(0 < row[2] < row[1] for row in expected.values())  # some bins half seen
    for row in result["by_region_size"]:
        regions_in, pixels, seen, found = expected[row["size"]]
        assert (row["regions"], row["changed_pixels"]) == (regions_in, pixels)
        assert row["pixel_recall"] == pytest.approx(seen / pixels if pixels else 0.0)
        assert row["regions_found"] == pytest.approx(found / regions_in if regions_in else 0.0)


def test_pairs_the_bundle_was_trained_or_selected_on_are_flagged(
    fixtures_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = constant_bundle(tmp_path / "trained")
    meta = json.loads((bundle / "model.json").read_text())
    meta["training"] = {  # as export records a `train fit` on beirut, validated on abudhabi
        "datamodule": {"train_split": "train", "val_split": "val"},
        "dataset": {"layout": "oscd", "pairs": {"train": ["beirut"], "val": ["abudhabi"]}},
    }
    (bundle / "model.json").write_text(json.dumps(meta))
    out = tmp_path / "metrics.json"
    code = groundbreak([
        "evaluate", "--model", str(bundle), "--oscd-root", str(fixtures_dir / "oscd"),
        "--cities", "beirut,abudhabi", "--out", str(out),
    ])
    assert code == 0
    err = capsys.readouterr().err
    assert "warning: beirut is in the training data of model 'trained'" in err
    assert "warning: abudhabi is in the validation data of model 'trained'" in err
    flags = {row["pair_id"]: row["seen_in_training"]
             for row in json.loads(out.read_text())["per_pair"]}
    assert flags == {"beirut": "training", "abudhabi": "validation"}

    # A bundle that does not record its data, or held-out pairs: no warning, flag null.
    code = groundbreak([
        "evaluate", "--model", str(constant_bundle(tmp_path / "plain")), "--oscd-root",
        str(fixtures_dir / "oscd"), "--cities", "beirut", "--out", str(out),
    ])
    assert code == 0 and "warning" not in capsys.readouterr().err
    assert json.loads(out.read_text())["per_pair"][0]["seen_in_training"] is None
