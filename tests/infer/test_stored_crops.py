"""A JPEG 2000 pair's alert cards are cut from the rows its windows decoded, once its sites are
scored, and stored with its outputs: the report decodes no tile again and shows the same
pictures (issue 25 item 6)."""

from __future__ import annotations

import os
import re
import subprocess
from collections import Counter
from pathlib import Path

import rasterio

from groundbreak.datasets.pair_spec import PairSpec
from groundbreak.infer.atomic import TEMP_MARK, temp_sibling
from groundbreak.infer.report.report import write_report
from groundbreak.infer.report.stored_crops import DISPLAY_CROPS_FILE, SPILL_DIR
from groundbreak.infer.sites.ranking import RankResult, rank_pairs
from groundbreak.train.bundle import default_bundle_path, load_bundle

DISPLAY = ("B02", "B03", "B04")


def _band_decodes(decoded: Counter[str], band: str) -> int:
    """Pixels decoded of one band, both dates (file names end in ``_B02.jp2``...)."""
    return sum(n for name, n in decoded.items() if Path(name).stem.endswith(f"_{band}"))


def _pictures(page: str) -> list[str]:
    return re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)


def _rank(products: list[Path], out: Path) -> RankResult:
    bundle = load_bundle(default_bundle_path().parent / "oscd-s2-fast")
    spec = PairSpec("beirut", products[0], products[1])
    return rank_pairs([spec], out, bundle, alert_threshold=0.0, write_report=False,
                      predictor_kwargs={"device": "cpu"})


def _ended_process_id() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_safe_pairs_cards_come_from_the_rows_its_windows_decoded(
    beirut_safe: list[Path], tmp_path: Path, jp2_decodes: Counter[str]
) -> None:
    decoded = jp2_decodes
    pair_dir = tmp_path / "run" / "pairs" / "beirut"
    killed = pair_dir / f".{SPILL_DIR}{TEMP_MARK}{_ended_process_id()}"  # a killed rank's spill
    running = pair_dir / f".{SPILL_DIR}{TEMP_MARK}{os.getppid()}"  # another process's, running
    for folder in (killed, running):
        folder.mkdir(parents=True)
        (folder / "B02.rows").write_bytes(bytes(4096))
    result = _rank(beirut_safe, tmp_path / "run")
    assert (pair_dir / DISPLAY_CROPS_FILE).is_file()
    # the spilled rows are gone with the pair, and so is the killed process's spill
    assert list(pair_dir.glob(f".{SPILL_DIR}*")) == [running]
    with rasterio.open(next(beirut_safe[0].rglob("*_B02.jp2"))) as src:
        size = src.width * src.height
    # each pixel of both dates decoded once, by the windows; the crops came from the spill
    assert all(_band_decodes(decoded, band) == 2 * size for band in DISPLAY)
    assert len(result.alerts) > 1

    decoded.clear()
    specs = {"beirut": PairSpec("beirut", beirut_safe[0], beirut_safe[1])}
    stored = write_report(tmp_path / "stored.html", result, specs).read_text()
    assert not any(_band_decodes(decoded, band) for band in DISPLAY)  # none for the cards
    assert len(_pictures(stored)) == 3 * len(result.alerts)

    whole = (pair_dir / DISPLAY_CROPS_FILE).read_bytes()
    for damaged in (whole[: len(whole) // 2], b"not a zip"):  # read from the scenes instead
        (pair_dir / DISPLAY_CROPS_FILE).write_bytes(damaged)
        decoded.clear()
        read = write_report(tmp_path / "read.html", result, specs).read_text()
        assert all(_band_decodes(decoded, band) for band in DISPLAY)
        assert _pictures(read) == _pictures(stored)


def test_crops_are_read_from_the_scenes_when_no_rows_could_be_spilled(
    beirut_safe: list[Path], tmp_path: Path, fixtures_dir: Path
) -> None:
    blocked = temp_sibling(tmp_path / "run" / "pairs" / "beirut" / SPILL_DIR)
    blocked.parent.mkdir(parents=True)
    blocked.write_text("a file where the spill's folder would go")
    result = _rank(beirut_safe, tmp_path / "run")
    assert result.ok and not (blocked.parent / DISPLAY_CROPS_FILE).exists()
    specs = {"beirut": PairSpec("beirut", beirut_safe[0], beirut_safe[1])}
    page = write_report(tmp_path / "report.html", result, specs).read_text()
    assert len(_pictures(page)) == 3 * len(result.alerts)

    beirut = fixtures_dir / "oscd" / "beirut"  # GeoTIFFs: cheap to read again, not spilled
    bundle = load_bundle(default_bundle_path().parent / "oscd-s2-fast")
    rank_pairs([PairSpec("tif", beirut / "imgs_1", beirut / "imgs_2")], tmp_path / "tif", bundle,
               write_report=False, predictor_kwargs={"device": "cpu"})
    assert not (tmp_path / "tif" / "pairs" / "tif" / DISPLAY_CROPS_FILE).exists()


def test_a_cluster_worker_sends_the_stored_crops_back(beirut_safe: list[Path]) -> None:
    from groundbreak.infer.nightly.cluster import PairJob, compute_pair
    from groundbreak.infer.nightly.hashing import ContentHasher

    model = default_bundle_path().parent / "oscd-s2-fast"
    job = PairJob(PairSpec("beirut", beirut_safe[0], beirut_safe[1]), str(model),
                  ContentHasher(None).bundle_hash(model), {"device": "cpu"}, None, None,
                  min_area_m2=0.0, area_scale=1000.0)
    computed = compute_pair(job)
    assert computed.outcome.ok
    assert set(computed.files) == {"probability.tif", "mask.tif", DISPLAY_CROPS_FILE}
