"""Fixtures of the infer tests: a real nightly state of the bundled demo pairs, the review app
serving a copy of it on 127.0.0.1, and a fixture city's two dates as ESA .SAFE products."""

from __future__ import annotations

import shutil
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import rasterio
import rasterio.io
import torch
from affine import Affine
from rasterio.crs import CRS

from groundbreak.datasets.bands import SENTINEL2_BANDS
from groundbreak.datasets.product_writer import BandImage, read_band_images, write_product
from groundbreak.infer.cli import main as groundbreak
from groundbreak.infer.cli.demo import DEMO_PAIRS, DEMO_SITES
from groundbreak.infer.review.app import ReviewServer, make_server
from groundbreak.train.bundle import save_bundle
from groundbreak.train.model import ChangeUNet

DEMO_NIGHT = "2024-05-01"


def _on_utm(folder: Path) -> dict[str, BandImage]:
    """A fixture city's real bands on a UTM grid at 10, 20 and 60 m, as in an ESA product (the
    fixture's own grid is in degrees, where its 60 m bands do not nest in the 10 m ones)."""
    bands = read_band_images(folder)
    side = max(image.data.shape[1] for image in bands.values())
    return {
        name: BandImage(image.data, Affine(res, 0, 600_000, 0, -res, 4_000_020),
                        CRS.from_epsg(32636))
        for name, image in bands.items()
        for res in [{side: 10, side // 2: 20}.get(image.data.shape[1], 60)]
    }


@pytest.fixture
def jp2_decodes(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Pixels read at full resolution per JPEG 2000 file from now on, by file name (reads from
    overviews, ``out_shape``, are not decodes of the band's pixels and are left out)."""
    decoded: Counter[str] = Counter()
    read = rasterio.io.DatasetReader.read

    def counted(self, indexes=None, *args, **kwargs):  # type: ignore[no-untyped-def]
        window = kwargs.get("window")
        if kwargs.get("out_shape") is None and self.name.endswith(".jp2"):
            pixels = self.width * self.height if window is None else window.width * window.height
            decoded[self.name] += int(pixels)
        return read(self, indexes, *args, **kwargs)

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", counted)
    return decoded


@pytest.fixture(scope="session")
def beirut_safe(fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The Beirut fixture's two dates as L1C .SAFE products (JPEG 2000 bands, ESA's layout);
    read only."""
    out = tmp_path_factory.mktemp("beirut-safe")
    beirut = fixtures_dir / "oscd" / "beirut"
    return [write_product(out / folder, _on_utm(beirut / folder))
            for folder in ("imgs_1", "imgs_2")]


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny untrained 13-band bundle (random weights, fixed seed): the pages are under test."""
    torch.manual_seed(0)
    model = ChangeUNet(13, encoder_name="timm-mobilenetv3_small_minimal_100", encoder_depth=2,
                       decoder_channels=(8, 4))
    meta = {"name": "tiny-test", "bands": list(SENTINEL2_BANDS), "chip_size": 64,
            "normalization": {"mean": [1500.0] * 13, "std": [800.0] * 13}, "threshold": 0.5}
    return save_bundle(model, meta, tmp_path_factory.mktemp("bundle") / "tiny")


@pytest.fixture(scope="session")
def demo_state_template(tmp_path_factory: pytest.TempPathFactory, tiny_bundle: Path) -> Path:
    """One real night over the bundled demo pairs and watch-list; every site alerts (threshold
    0), so all 13 are in the queue."""
    state = tmp_path_factory.mktemp("demo-state") / "state"
    config = state.parent / "nightly.yaml"  # one detection makes an alert (no candidates)
    config.write_text("alerts:\n  confirm_score: 0.0\n")
    code = groundbreak(["nightly", "--config", str(config), "--state", str(state),
                        "--model", str(tiny_bundle),
                        "--pairs", str(DEMO_PAIRS), "--sites", str(DEMO_SITES),
                        "--alert-threshold", "0", "--run-id", DEMO_NIGHT, "--no-report",
                        "--device", "cpu", "--log-format", "json"])
    assert code == 0
    return state


@pytest.fixture
def demo_state(demo_state_template: Path, tmp_path: Path) -> Path:
    """A fresh copy of the demo night's state (its recorded output paths point at the
    template: the app must find the rasters inside the copy)."""
    return Path(shutil.copytree(demo_state_template, tmp_path / "state"))


@pytest.fixture
def review_server(demo_state: Path) -> Iterator[ReviewServer]:
    """The review app over a copy of the demo state, on 127.0.0.1 at a free port."""
    server = make_server(demo_state, "127.0.0.1", 0, analyst="Ada Tester", quiet=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)
