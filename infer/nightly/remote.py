"""Which remote hosts a night may read scene bands from (STAC assets, scene manifests).

A night reads what its source names, and a source (a STAC file, a drop folder) is less trusted
than the operator. By default a band URL is refused when its host is, or resolves to, an
address that is not public: loopback (``127.0.0.1``, ``localhost``, ``::1``), link-local (the
cloud metadata service ``169.254.169.254``, ``fe80::``), private networks (``10/8``,
``172.16/12``, ``192.168/16``, ``fc00::/7``), shared or reserved ranges. With the config key
``remote_hosts`` (a list of host names; ``.example.com`` or ``*.example.com`` also admits its
subdomains) only those hosts are read, private ones included. A host that cannot be resolved is
let through: its read fails by itself. Cloud object stores (``s3://``, ``gs://``, ``/vsis3/``...)
are reached at the endpoint GDAL is configured with; with ``remote_hosts`` their bucket must be
listed too.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Sequence
from urllib.parse import urlparse

_VSI_URL = re.compile(r"^/vsi(curl|curl_streaming)/(?P<url>.+)$")
_VSI_BUCKET = re.compile(r"^/vsi(?P<store>s3|gs|az|adls|oss|swift)(_streaming)?/(?P<bucket>[^/]+)")


def remote_host(location: str) -> tuple[str, bool] | None:
    """(host, reached over the network by name/address) of a remote location, else None."""
    vsi = _VSI_URL.match(location)
    if vsi:
        location = vsi["url"]
    bucket = _VSI_BUCKET.match(location)
    if bucket:
        return bucket["bucket"].lower(), False
    parsed = urlparse(location)
    if not parsed.scheme or len(parsed.scheme) < 2:
        return None
    host = (parsed.hostname or "").lower()
    return host, parsed.scheme.lower() in ("http", "https", "ftp")


def refusal(location: str, allowed_hosts: Sequence[str] | None) -> str | None:
    """Why a remote location may not be read (None when it may, or when it is local)."""
    found = remote_host(location)
    if found is None:
        return None
    host, networked = found
    if allowed_hosts is not None:
        if any(_host_matches(host, entry) for entry in allowed_hosts):
            return None
        return f"host {host!r} is not in the config's remote_hosts"
    if not networked:
        return None
    for address in _addresses(host):
        if not address.is_global:
            return (f"host {host!r} is a non-public address ({address}); list it in the config's "
                    "remote_hosts to read from it")
    return None


def _host_matches(host: str, entry: str) -> bool:
    entry = entry.lower().removeprefix("*")
    return host == entry or (entry.startswith(".") and host.endswith(entry))


def _addresses(host: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The addresses a host is, or resolves to (none when it cannot be resolved)."""
    if not host:
        return [ipaddress.ip_address("0.0.0.0")]
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return []
    return [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]
