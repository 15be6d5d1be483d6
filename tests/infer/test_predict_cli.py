"""``groundbreak predict`` end to end: scenes in, rasters and their paths out; bad input exits 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from rasterio.crs import CRS

from groundbreak.datasets.bands import RGB_BANDS, SENTINEL2_L2A_BANDS
from groundbreak.infer.cli import main
from groundbreak.train.bundle import default_bundle_path, load_bundle, save_bundle
from groundbreak.train.model import ChangeUNet


def save_tiny_bundle(
    out_dir: Path, bands: list[str], mean: float, std: float, **meta: object
) -> Path:
    """A seeded, untrained one-stage ChangeUNet as a bundle folder (``meta``: more keys)."""
    torch.manual_seed(0)
    model = ChangeUNet(len(bands), encoder_depth=1, decoder_channels=(8,))
    meta = {
        "bands": bands,
        "normalization": {"mean": [mean] * len(bands), "std": [std] * len(bands)},
        "chip_size": 32,
        "threshold": 0.5,
        **meta,
    }
    return save_bundle(model, meta, out_dir)


@pytest.fixture(scope="module")
def s2_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_bundle(
        tmp_path_factory.mktemp("s2"), list(SENTINEL2_L2A_BANDS), 1500.0, 800.0
    )


@pytest.fixture(scope="module")
def rgb_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_bundle(tmp_path_factory.mktemp("rgb"), list(RGB_BANDS), 100.0, 50.0)


@pytest.fixture
def beirut(fixtures_dir: Path) -> tuple[Path, Path]:
    root = fixtures_dir / "oscd" / "beirut"
    return root / "imgs_1", root / "imgs_2"


def write_geotiff(path: Path, left: float) -> Path:
    """A 10-band 32x32 uint16 GeoTIFF in UTM 33N whose left edge is at ``left`` metres."""
    data = np.full((10, 32, 32), 1000, dtype=np.uint16)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=32,
        height=32,
        count=10,
        dtype="uint16",
        crs=CRS.from_epsg(32633),
        transform=Affine(10, 0, left, 0, -10, 4_000_000),
    ) as dst:
        dst.write(data)
        dst.descriptions = tuple(SENTINEL2_L2A_BANDS)
    return path


def run(
    capsys: pytest.CaptureFixture[str],
    before: Path,
    after: Path,
    out: Path,
    model: Path,
    *extra: str,
) -> tuple[int, str, str]:
    """``groundbreak predict`` on two scenes; returns (exit code, stdout, stderr)."""
    args = ["--before", str(before), "--after", str(after), "--out", str(out)]
    code = main(["predict", *args, "--model", str(model), *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_predict_per_band_folders_prints_the_output_paths(
    s2_model: Path, beirut: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before, after = beirut
    out = tmp_path / "beirut"
    code, stdout, _ = run(
        capsys,
        before, after, out, s2_model, "--window", "64", "--overlap", "32", "--batch-size", "2",
        "--device", "cpu", "--tta",
    )
    assert code == 0
    assert stdout.split() == [str(out / "probability.tif"), str(out / "mask.tif")]
    reference = next(before.glob("*B02.tif"))
    with rasterio.open(out / "mask.tif") as src, rasterio.open(reference) as ref:
        assert (src.width, src.height, src.crs) == (ref.width, ref.height, ref.crs)
        assert src.transform.almost_equals(ref.transform)
        assert set(np.unique(src.read(1))) <= {0, 1}


def test_predict_on_two_processes(
    s2_model: Path, beirut: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before, after = beirut
    threads = torch.get_num_threads()
    code, stdout, _ = run(
        capsys,
        before, after, tmp_path, s2_model, "--window", "64", "--device", "cpu", "--devices", "2",
    )
    torch.set_num_threads(threads)
    assert code == 0
    assert stdout.split() == [str(tmp_path / "probability.tif"), str(tmp_path / "mask.tif")]


def test_predict_rgb_images(
    rgb_model: Path, fixtures_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    levir = fixtures_dir / "levir"
    name = "val_27_0000_0256.png"
    code, _, _ = run(
        capsys,
        levir / "A" / name, levir / "B" / name, tmp_path, rgb_model, "--device", "cpu",
    )
    assert code == 0
    with rasterio.open(tmp_path / "probability.tif") as src:
        assert (src.width, src.height) == (256, 256) and src.crs is None


def assert_one_line_error(code: int, stderr: str, *needles: str) -> None:
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    for needle in needles:
        assert needle in lines[0]


def test_unreadable_scene_is_named(
    s2_model: Path, beirut: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corrupt = tmp_path / "before.tif"
    corrupt.write_bytes(b"II*\x00 this is not really a tiff")
    code, _, err = run(capsys, corrupt, beirut[1], tmp_path / "o", s2_model)
    assert_one_line_error(code, err, str(corrupt), "cannot be read")
    assert not (tmp_path / "o").exists()


def test_missing_scene_is_named(
    s2_model: Path, beirut: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere"
    code, _, err = run(capsys, beirut[0], missing, tmp_path / "o", s2_model)
    assert_one_line_error(code, err, str(missing), "does not exist")


def test_scenes_that_do_not_overlap(
    s2_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = write_geotiff(tmp_path / "before.tif", 500_000)
    after = write_geotiff(tmp_path / "after.tif", 600_000)
    code, _, err = run(capsys, before, after, tmp_path / "o", s2_model)
    assert_one_line_error(code, err, str(after), "does not overlap")


def test_bands_the_model_cannot_get_are_named_first(
    s2_model: Path, fixtures_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    levir = fixtures_dir / "levir"
    before = levir / "A" / "test_2_0000_0000.png"
    code, _, err = run(
        capsys,
        before, levir / "B" / "test_2_0000_0000.png", tmp_path / "o", s2_model,
    )
    assert_one_line_error(code, err, str(before), "B02", "B12")


def test_missing_model_bundle_is_named(
    beirut: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, beirut[0], beirut[1], tmp_path / "o", tmp_path / "no-bundle")
    assert_one_line_error(code, err, str(tmp_path / "no-bundle"))


def test_window_that_does_not_fit_the_model_is_a_usage_error(
    s2_model: Path, beirut: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, beirut[0], beirut[1], tmp_path, s2_model, "--window", "33")
    assert code == 2
    assert "window 33" in err


def cut_at(out: Path) -> tuple[np.ndarray, np.ndarray]:
    """The valid probabilities of a prediction and its mask there."""
    with rasterio.open(out / "probability.tif") as p, rasterio.open(out / "mask.tif") as m:
        probability, mask = p.read(1), m.read(1)
    valid = np.isfinite(probability)
    return probability[valid], mask[valid]


def test_threshold_option_and_the_bundles_tta_threshold(
    beirut: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before, after = beirut
    options = ("--window", "64", "--device", "cpu", "--cloud-mask", "none", "--tta")
    plain = save_tiny_bundle(tmp_path / "plain", list(SENTINEL2_L2A_BANDS), 1500.0, 800.0)
    assert run(capsys, before, after, tmp_path / "a", plain, *options)[0] == 0
    probability, mask = cut_at(tmp_path / "a")
    assert np.array_equal(mask, probability >= 0.5)  # no TTA threshold: the bundle's
    low, high = (float(np.quantile(probability, q)) for q in (0.25, 0.75))
    assert low < high
    tta = save_tiny_bundle(tmp_path / "tta", list(SENTINEL2_L2A_BANDS), 1500.0, 800.0,
                           threshold=high, tta_threshold=low)  # the same weights
    assert run(capsys, before, after, tmp_path / "b", tta, *options)[0] == 0
    assert np.array_equal(cut_at(tmp_path / "b")[1], probability >= low)
    assert run(capsys, before, after, tmp_path / "c", tta, *options, "--threshold", "0.9")[0] == 0
    assert np.array_equal(cut_at(tmp_path / "c")[1], probability >= 0.9)
    code, _, err = run(capsys, before, after, tmp_path / "d", tta, "--threshold", "1.5")
    assert code == 2 and "threshold must lie in (0, 1)" in err


def test_the_fast_bundle_marks_much_of_what_the_default_marks(
    beirut: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--model checkpoints/oscd-s2-fast`` (the U-Net distilled from the default ensemble)
    predicts a real pair at its own threshold; its change agrees with its teacher's."""
    before, after = beirut
    checkpoints = default_bundle_path().parent
    for name in ("oscd-s2-fast", "oscd-s2-default"):
        assert run(capsys, before, after, tmp_path / name, checkpoints / name)[0] == 0
    fast = load_bundle(checkpoints / "oscd-s2-fast")
    probability, mask = cut_at(tmp_path / "oscd-s2-fast")
    assert np.array_equal(mask, probability >= fast.threshold)
    teacher = cut_at(tmp_path / "oscd-s2-default")[1].astype(bool)
    agreement = 2 * (mask.astype(bool) & teacher).sum() / (mask.sum() + teacher.sum())
    assert teacher.sum() > 100 and agreement > 0.6  # 0.74 when shipped


def test_a_bad_tta_threshold_in_a_bundle_is_named(
    s2_model: Path, beirut: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(s2_model, bundle)
    meta = json.loads((bundle / "model.json").read_text())
    (bundle / "model.json").write_text(json.dumps({**meta, "tta_threshold": "0.5"}))
    code, _, err = run(capsys, beirut[0], beirut[1], tmp_path / "o", bundle)
    assert_one_line_error(code, err, "model.json", "tta_threshold must be a number in (0, 1)")


def fresh_process(code: str) -> subprocess.CompletedProcess[str]:
    """Python ``code`` run in a new interpreter (what it imports is its own), output captured."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600, check=False)


def test_predict_runs_without_triton_on_a_machine_without_cuda(
    beirut: tuple[Path, Path], tmp_path: Path
) -> None:
    """A fresh ``groundbreak predict`` process keeps triton (74 MB resident) out when torch sees
    no CUDA device, and still predicts with the default ensemble; ``train`` keeps it."""
    before, after = beirut
    code = (
        "import sys\n"
        "from groundbreak.infer.cli import main\n"
        f"code = main(['predict', '--before', {str(before)!r}, '--after', {str(after)!r}, "
        f"'--out', {str(tmp_path / 'out')!r}, '--device', 'cpu'])\n"
        "import torch\n"
        "from torch.utils._triton import has_triton_package\n"
        "print(code, torch.cuda.is_available(), 'triton' in sys.modules, "
        "sys.modules.get('triton') is None, has_triton_package())\n"
    )
    child = fresh_process(code)
    assert child.returncode == 0, child.stderr
    exit_code, cuda, listed, blocked, has_triton = child.stdout.split()[-5:]
    assert exit_code == "0" and (tmp_path / "out" / "mask.tif").is_file()
    if cuda == "True":
        pytest.skip("a CUDA device: triton is left for torch.compile")
    assert (listed, blocked, has_triton) == ("True", "True", "False")
    train = ("import sys\nfrom groundbreak.infer.cli import main\nmain(['train', '--help'])\n"
             "print(sys.modules.get('triton', 'absent') is not None)\n")
    child = fresh_process(train)
    assert child.stdout.split()[-1] == "True", child.stderr  # absent or imported, not blocked


def test_a_prediction_command_is_prepared_without_importing_torch() -> None:
    """``predict``, ``rank``, ``nightly`` and ``demo`` may run a kept OpenVINO graph without
    torch: their process is made lean (triton kept out) without importing it, and ``auto`` is
    the CPU without asking torch where no GPU driver is there."""
    code = ("import sys\nfrom groundbreak.infer.cli import prepare_process\n"
            "from groundbreak.train.devices import gpu_driver_absent, resolve_device_name\n"
            "prepare_process('predict')\n"
            "print(gpu_driver_absent(), resolve_device_name('auto'), 'torch' in sys.modules, "
            "sys.modules.get('triton', 'absent') is None)\n")
    child = fresh_process(code)
    assert child.returncode == 0, child.stderr
    absent, device, imported, blocked = child.stdout.split()[-4:]
    if absent == "False":
        pytest.skip("a GPU driver (or not Linux): torch is asked what 'auto' means")
    assert (device, imported, blocked) == ("cpu", "False", "True")


def test_evaluate_starts_without_a_warning_about_the_triton_it_kept_out() -> None:
    """``evaluate`` imports Lightning, whose import of torch's FLOP counter would warn "triton not
    found" on every start once triton is kept out; that warning is dropped, and others are not."""
    code = (
        "import logging, sys\n"
        "from groundbreak.infer.cli import main\n"
        "main(['evaluate', '--help'])\n"
        "import torch\n"
        "print(torch.cuda.is_available(), 'torch.utils.flop_counter' in sys.modules)\n"
        "logging.getLogger('torch.utils.flop_counter').warning('another warning')\n"
    )
    child = fresh_process(code)
    assert child.returncode == 0, child.stderr
    cuda, imported = child.stdout.split()[-2:]
    if cuda == "True":
        pytest.skip("a CUDA device: triton is not kept out")
    assert imported == "True"  # the warning's source was imported
    assert "triton not found" not in child.stderr
    assert "another warning" in child.stderr
