"""The ``cluster`` key of the nightly config: ``local:N`` or a Dask scheduler's address.

Parsed here, apart from :mod:`~groundbreak.infer.nightly.cluster`, so that the config checks a
value without importing Dask, and the cluster reads the value the config checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

LOCAL_PREFIX = "local:"
ADDRESS_SCHEMES = ("tcp://", "tls://")


@dataclass(frozen=True)
class ClusterSpec:
    """A validated ``cluster`` value: ``local:N`` (``workers``) or a scheduler ``address``."""

    text: str
    workers: int | None = None
    address: str | None = None


def parse_cluster(raw: Any) -> ClusterSpec:
    """Parse ``local:N`` or ``tcp://host:port``; a ValueError says what is expected."""
    expected = "expected 'local:N' (N worker processes) or a scheduler address 'tcp://host:port'"
    if not isinstance(raw, str):
        raise ValueError(f"{expected}, got {raw!r}")
    text = raw.strip()
    if text.startswith(LOCAL_PREFIX):
        count = text[len(LOCAL_PREFIX):]
        if not count.isdigit() or int(count) < 1:
            raise ValueError(f"N of 'local:N' must be a whole number >= 1, got {raw!r}")
        return ClusterSpec(f"{LOCAL_PREFIX}{int(count)}", workers=int(count))
    if text.startswith(ADDRESS_SCHEMES):
        host, _, port = text.split("://", 1)[1].rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{expected}; {raw!r} lacks a host or a port")
        return ClusterSpec(text, address=text)
    raise ValueError(f"{expected}, got {raw!r}")
