"""Helpers for the data-layer tests: small generated rasters written with rasterio."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning

RasterWriter = Callable[..., Path]


def write_raster(
    path: Path,
    data: np.ndarray,
    transform: Affine | None = None,
    crs: str | None = None,
    nodata: float | None = None,
    descriptions: Sequence[str] | None = None,
    driver: str = "GTiff",
) -> Path:
    """Write a (C, H, W) or (H, W) array; without ``crs`` the file has no georeference."""
    array = data if data.ndim == 3 else data[np.newaxis]
    profile = {
        "driver": driver,
        "width": array.shape[2],
        "height": array.shape[1],
        "count": array.shape[0],
        "dtype": array.dtype,
    }
    if crs is not None:
        profile.update(crs=crs, transform=transform)
    if nodata is not None:
        profile["nodata"] = nodata
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(array)
            if descriptions:
                dst.descriptions = tuple(descriptions)
    return path


@pytest.fixture
def make_raster() -> RasterWriter:
    """The :func:`write_raster` helper."""
    return write_raster


@pytest.fixture
def oscd_dir(fixtures_dir: Path) -> Path:
    """The OSCD fixture folder (beirut, abudhabi: train; dubai: test)."""
    return fixtures_dir / "oscd"


@pytest.fixture
def levir_dir(fixtures_dir: Path) -> Path:
    """The LEVIR-CD fixture folder (A/ B/ label/ with train_/val_/test_ samples)."""
    return fixtures_dir / "levir"
