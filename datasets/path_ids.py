"""Ids that become file or folder names: checked in this one place before any path is made.

Pair ids name chip folders (``chips/<pair_id>/``) and prediction folders
(``pairs/<pair_id>/``); grounds name scene folders (``scenes/<ground>/``) and start nightly
pair ids. An id from a file (a CSV cell, a STAC property, a drop-folder name) is input: one
that could leave its folder (``..``, ``/``, an absolute path), hide (a leading ``.``) or hold
control characters is refused with a one-line :class:`InputError`.
"""

from __future__ import annotations

import os
import re

from groundbreak.datasets.errors import InputError

MAX_ID_LENGTH = 128
"""The longest id accepted, in bytes of UTF-8 (a file name holds 255 bytes; a pair id gets
suffixes)."""

_PATH_ID = re.compile(r"^[^./\\\x00-\x1f\x7f][^/\\\x00-\x1f\x7f]*$")
GROUND_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
"""A ground: letters, digits and ``-`` (no ``_``: it separates a nightly pair id's parts)."""


def check_path_id(
    value: object, what: str = "pair id", where: str | os.PathLike[str] | None = None
) -> str:
    """``value`` when it is safe as one file or folder name; else an InputError naming it.

    Safe: a non-empty string of at most :data:`MAX_ID_LENGTH` bytes in UTF-8, without ``/``,
    ``\\``, control characters or a leading ``.`` (so neither ``.`` nor ``..``).
    """
    if not (isinstance(value, str) and _PATH_ID.match(value)) or _utf8_size(value) > MAX_ID_LENGTH:
        shown = repr(value)
        raise InputError(
            where,
            f"{what} {shown[:80] + '...' if len(shown) > 80 else shown} cannot name a folder: "
            f"use at most {MAX_ID_LENGTH} bytes (UTF-8) without '/', '\\' or control "
            "characters, not starting with '.'",
        )
    return value


def _utf8_size(value: str) -> int:
    """Bytes of ``value`` in UTF-8 (a lone surrogate, which no file name holds, counts as too
    long)."""
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError:
        return MAX_ID_LENGTH + 1


def check_ground_id(value: object, where: str | os.PathLike[str] | None = None) -> str:
    """``value`` when it is a ground id (letters, digits, ``-``); else an InputError."""
    if not isinstance(value, str) or not GROUND_ID.match(value) or len(value) > 64:
        raise InputError(where, f"ground {value!r} must be 1-64 letters, digits or '-'")
    return value
