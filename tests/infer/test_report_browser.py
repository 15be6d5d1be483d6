"""report.html in real headless Chromium: loads offline, no errors, cards in rank order, images.

The report is made from the real OSCD fixture crops, a small watch-list and a tiny untrained
bundle (the page is under test, not the model). Skipped only when Chromium is not installed
(Debian package ``chromium``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from rasterio.warp import transform_geom
from shapely.geometry import box, mapping

from groundbreak.datasets.bands import SENTINEL2_BANDS
from groundbreak.datasets.pair_spec import PairSpec
from groundbreak.infer.sites.ranking import rank_pairs
from groundbreak.infer.sites.sites import WGS84
from groundbreak.train.bundle import save_bundle
from groundbreak.train.model import ChangeUNet

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)

pytestmark = pytest.mark.skipif(
    not CHROMIUM.is_file() and shutil.which("chromium") is None,
    reason="Chromium is not installed (apt-get install -y chromium)",
)


def chromium(tmp_path: Path, *args: str) -> str:
    """Run headless Chromium once with its own profile folder; return stdout."""
    binary = str(CHROMIUM) if CHROMIUM.is_file() else shutil.which("chromium")
    profile = tmp_path / f"chromium-profile-{len(list(tmp_path.glob('chromium-profile-*')))}"
    completed = subprocess.run(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stdout


class PageParser(HTMLParser):
    """Collects the <body> attributes and the alert cards' attributes of a dumped DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.body: dict[str, str] = {}
        self.cards: list[dict[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "body":
            self.body = values
        elif tag == "article" and "alert" in values.get("class", "").split():
            self.cards.append(values)


def parse(dom: str) -> PageParser:
    parser = PageParser()
    parser.feed(dom)
    return parser


@pytest.fixture(scope="module")
def report(tmp_path_factory, fixtures_dir: Path) -> Path:
    """A ranking run over two real fixture pairs with a four-site watch-list; its report.html."""
    work = tmp_path_factory.mktemp("report")
    pairs = []
    features = []
    for city, dates, boxes in (
        ("beirut", ("20150820", "20171003"), [(8, 30, 10, 40), (55, 88, 25, 70)]),
        ("abudhabi", ("20160120", "20180328"), [(20, 60, 20, 60), (70, 74, 80, 83)]),
    ):
        root = fixtures_dir / "oscd" / city
        spec = PairSpec(city, root / "imgs_1", root / "imgs_2", None, "predict", *dates)
        pairs.append(spec)
        grid = spec.open(with_label=False).grid
        for number, (r0, r1, c0, c1) in enumerate(boxes, start=1):
            (x0, y0), (x1, y1) = grid.transform @ (c0, r0), grid.transform @ (c1, r1)
            polygon = box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
            features.append({
                "type": "Feature",
                "properties": {"site_id": f"{city}-{number}",
                               "name": f"{city.title()} <site {number}>"},
                "geometry": transform_geom(grid.crs, WGS84, mapping(polygon)),
            })
    watch = work / "watch.geojson"
    watch.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    torch.manual_seed(0)
    model = ChangeUNet(13, "early", "mobilenet_v2", 3, (32, 16, 8))
    bundle = save_bundle(model, {"bands": list(SENTINEL2_BANDS), "chip_size": 64,
                                 "threshold": 0.5, "normalization": {"mean": [1400.0] * 13,
                                                                     "std": [600.0] * 13}},
                         work / "bundle")
    result = rank_pairs(pairs, work / "run", bundle, sites=watch, alert_threshold=0.0,
                        predictor_kwargs={"device": "cpu"})
    assert result.report_path is not None and len(result.alerts) == 4
    return result.report_path


def test_report_is_self_contained(report: Path) -> None:
    page = report.read_text(encoding="utf-8")
    assert not re.search(r"https?://", page), "the report must reference no URL"
    references = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", page)
    assert references and all(ref.startswith("data:image/png;base64,") for ref in references)
    assert "&lt;site 1&gt;" in page  # names are escaped


def test_report_loads_without_errors_and_cards_are_in_rank_order(
    report: Path, tmp_path: Path
) -> None:
    page = parse(chromium(tmp_path, "--dump-dom", report.as_uri()))
    assert page.body.get("data-ready") == "true"
    assert page.body.get("data-errors") == "0"
    assert page.body.get("data-broken-images") == "0"
    alerts = pd.read_csv(report.parent / "alerts.csv")
    assert [card["data-site-id"] for card in page.cards] == list(alerts["site_id"])
    assert [int(card["data-rank"]) for card in page.cards] == list(range(1, 5))
    assert int(page.body["data-images"]) == 3 * len(page.cards)


def test_page_checks_catch_script_errors_and_broken_images(report: Path, tmp_path: Path) -> None:
    """The load checks are not vacuous: a broken image and a script error are reported."""
    broken = tmp_path / "broken.html"
    broken.write_text(
        report.read_text(encoding="utf-8").replace(
            "</main>",
            '<img src="data:image/png;base64,AAAA" alt="x"><script>notDefined();</script></main>',
        ),
        encoding="utf-8",
    )
    page = parse(chromium(tmp_path, "--dump-dom", broken.as_uri()))
    assert page.body.get("data-ready") == "true"
    assert page.body.get("data-errors") == "1"
    assert page.body.get("data-broken-images") == "1"


def test_report_screenshot_is_not_blank(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", report.as_uri())
    assert shot.is_file()
    with Image.open(shot) as image:
        assert image.size == (1280, 2000)
        pixels = np.asarray(image.convert("RGB"), dtype=np.int32)
    colours = np.unique(pixels.reshape(-1, 3) @ np.array([65536, 256, 1]))
    assert pixels.std() > 10.0
    assert colours.size > 1000, "satellite crops bring thousands of colours"


def test_report_reflows_at_phone_width(report: Path, tmp_path: Path) -> None:
    """At 375 px the page does not scroll sideways and no crop is cut off (the table scrolls
    inside its own box)."""
    page = parse(chromium(tmp_path, "--window-size=375,800", "--dump-dom", report.as_uri()))
    assert page.body.get("data-ready") == "true"
    assert int(page.body["data-images"]) == 3 * len(page.cards) > 0
    assert page.body.get("data-overflow-x") == "0"
    assert page.body.get("data-clipped-images") == "0"
    wide = parse(chromium(tmp_path, "--window-size=1280,900", "--dump-dom", report.as_uri()))
    assert wide.body.get("data-overflow-x") == "0"
