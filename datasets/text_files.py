"""Small text inputs (JSON and YAML documents) read with bounds: size, kind of file, structure.

Inputs such as STAC items, scene manifests, watch-lists and configs are small documents; a path
that names a device (``/dev/zero``), a FIFO, a huge file, a YAML alias bomb or a deeply nested
JSON array must end in one :class:`InputError` naming the file, not a hang, a memory blow-up or
a traceback.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import yaml

from groundbreak.datasets.errors import InputError

MAX_TEXT_BYTES = 64 * 2**20
"""The largest JSON or YAML document read (64 MiB; a STAC ItemCollection of thousands of items
is a few MiB)."""

MAX_ERROR_CHARS = 300
"""The longest parser message quoted in an error."""


def read_text_file(
    path: str | os.PathLike[str], limit: int = MAX_TEXT_BYTES, what: str = "file"
) -> str:
    """The UTF-8 text of a regular file of at most ``limit`` bytes.

    Raises:
        InputError: Naming the file when it is missing, not a regular file (a folder, device,
            FIFO or socket), larger than ``limit``, unreadable or not UTF-8.
    """
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise InputError(path, f"{what} does not exist") from None
    except OSError as err:
        raise InputError(path, f"cannot read the {what} ({err.strerror or err})") from err
    if not stat.S_ISREG(info.st_mode):
        raise InputError(path, f"{what} is not a regular file (a folder, device, FIFO or socket)")
    if info.st_size > limit:
        raise InputError(path, f"{what} is {info.st_size:,} bytes, more than the limit of "
                         f"{limit:,}")
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as err:
        raise InputError(path, f"cannot read the {what} ({err.strerror or err})") from err
    if len(data) > limit:  # grew since stat
        raise InputError(path, f"{what} is larger than the limit of {limit:,} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(path, f"{what} is not UTF-8 text ({short_error(err)})") from err


def load_json_text(text: str, source: str | os.PathLike[str] | None, what: str = "JSON") -> Any:
    """A parsed JSON document; invalid or too deeply nested JSON is an InputError."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(source, f"cannot be read as {what} ({short_error(err)})") from err
    except RecursionError:
        raise InputError(source, f"cannot be read as {what} (nested too deeply)") from None


def load_json_file(
    path: str | os.PathLike[str], what: str = "JSON file", limit: int = MAX_TEXT_BYTES
) -> Any:
    """:func:`read_text_file` then :func:`load_json_text` (``what`` names it in errors)."""
    return load_json_text(read_text_file(path, limit, what), path, f"{what} (JSON)")


class _NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader refusing anchors and aliases (no alias bombs)."""

    def compose_node(self, parent: Any, index: Any) -> Any:  # noqa: D102
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(
                None, None, "anchors and aliases (&name, *name) are not accepted",
                event.start_mark,
            )
        return super().compose_node(parent, index)


def load_yaml_text(text: str, source: str | os.PathLike[str] | None, what: str = "YAML") -> Any:
    """A parsed YAML document (safe types, no anchors or aliases); invalid YAML is an
    InputError quoting at most :data:`MAX_ERROR_CHARS` of the parser's message."""
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as err:
        raise InputError(source, f"cannot be read as {what} ({short_error(err)})") from err
    except RecursionError:
        raise InputError(source, f"cannot be read as {what} (nested too deeply)") from None


def short_error(err: BaseException | str, limit: int = MAX_ERROR_CHARS) -> str:
    """An error's message on one line, cut to ``limit`` characters."""
    line = " ".join(str(err).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."
