"""Remote band locations (``http(s)://``, ``s3://``, ``/vsi...``) and the GDAL HTTP limits they
are read under."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import rasterio


def is_remote(location: str) -> bool:
    """True for an ``http(s)://``, ``s3://`` or GDAL ``/vsi...`` location (not a local file)."""
    return "://" in location or location.startswith("/vsi")


REMOTE_READ_OPTIONS = {
    "GDAL_HTTP_TIMEOUT": "30",
    "GDAL_HTTP_CONNECTTIMEOUT": "10",
    "GDAL_HTTP_MAX_RETRY": "2",
    "GDAL_HTTP_RETRY_DELAY": "1",
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
}
"""GDAL's HTTP limits for remote band reads (seconds; retries): a server that accepts and never
answers fails the read within about a minute and a half instead of hanging; no directory
listing or side-car files are asked for. Each is overridden by the environment variable of its
name."""


def remote_read_options() -> dict[str, str]:
    """The HTTP limits in force: :data:`REMOTE_READ_OPTIONS`, each overridden by the
    environment variable of its name."""
    return {key: os.environ.get(key) or value for key, value in REMOTE_READ_OPTIONS.items()}


def remote_reads(location: str | Path) -> contextlib.AbstractContextManager[object]:
    """A GDAL environment with :func:`remote_read_options` for a remote location (nothing for
    a local file)."""
    if isinstance(location, str) and is_remote(location):
        return rasterio.Env(**remote_read_options())
    return contextlib.nullcontext()

def remote_hint(err: BaseException, remote: bool) -> str:
    """An error's text; for a remote location, with the HTTP limits it was read under."""
    text = " ".join(str(err).split())
    if not remote:
        return text
    options = remote_read_options()
    return (f"{text}; remote reads give up after GDAL_HTTP_TIMEOUT={options['GDAL_HTTP_TIMEOUT']} "
            f"s and GDAL_HTTP_MAX_RETRY={options['GDAL_HTTP_MAX_RETRY']} retries")

