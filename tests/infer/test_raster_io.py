"""Writing prediction rasters: a full disk under GDAL, and the leftovers of killed writers."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS

from groundbreak.datasets.errors import is_disk_full
from groundbreak.infer.prediction.raster_io import TiledRasterWriter, remove_stale_partials

GRID_ARGS = (512, 512, Affine(10, 0, 600000, 0, -10, 4000000), CRS.from_epsg(32636))


def grid():  # noqa: ANN201
    from groundbreak.datasets.grid import Grid

    return Grid(*GRID_ARGS)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full")
@pytest.mark.parametrize("cog", [False, True])
def test_gdal_writing_to_a_full_disk_is_a_full_disk_and_stays_quiet(
    tmp_path: Path, capfd: pytest.CaptureFixture, cog: bool
) -> None:
    writer = TiledRasterWriter(tmp_path / "probability.tif", grid(), "float32", float("nan"),
                               cog=cog)
    writer._partial.symlink_to("/dev/full")  # every write fails with ENOSPC, as on a full disk
    rows = np.random.default_rng(0).random((512, 512), dtype=np.float32)
    with pytest.raises(OSError) as raised, writer:
        writer.write_rows(0, rows)
        writer.commit()
    assert raised.value.errno == errno.ENOSPC and is_disk_full(raised.value)
    assert "No space left on device" in str(raised.value)
    assert capfd.readouterr().err == ""  # no raw GDAL / libtiff lines
    assert not (tmp_path / "probability.tif").exists()


def test_a_write_error_on_a_disk_with_space_is_not_a_full_disk(tmp_path: Path) -> None:
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied", str(tmp_path)))
    assert is_disk_full(OSError("TIFFAppendToStrip: Write error: [Errno 28] no space"))


def test_partials_of_a_killed_writer_are_removed_by_the_next_one(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".probability.tif.{dead_pid}-0123abcd.partial.tif"
    stale_cog = tmp_path / f".mask.tif.{dead_pid}-0123abcd.cog.tif"
    live = tmp_path / f".mask.tif.{os.getpid()}-89abcdef.partial.tif"
    other = tmp_path / ".notes.partial.tif"
    for path in (stale, stale_cog, live, other):
        path.write_bytes(b"half a raster")
    with TiledRasterWriter(tmp_path / "probability.tif", grid(), "float32", float("nan"),
                           cog=False) as writer:
        writer.write_rows(0, np.zeros((512, 512), dtype=np.float32))
        writer.commit()
    assert not stale.exists() and not stale_cog.exists()
    assert live.exists() and other.exists()  # a running writer's files, and not ours
    assert remove_stale_partials(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "probability.tif"]
