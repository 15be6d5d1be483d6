"""Bounded reads of small JSON/YAML inputs: devices, FIFOs, huge files, alias bombs, deep
nesting are one InputError naming the file."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from groundbreak.datasets.errors import InputError
from groundbreak.datasets.text_files import (
    MAX_ERROR_CHARS,
    load_json_file,
    load_yaml_text,
    read_text_file,
)

ALIAS_BOMB = "\n".join(
    ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]"
       for i in range(8)]
)


def test_a_device_is_refused_without_reading_it() -> None:
    with pytest.raises(InputError, match="/dev/zero: .*not a regular file"):
        read_text_file("/dev/zero")


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []
    reader = threading.Thread(target=lambda: _catch(outcome, fifo), daemon=True)
    reader.start()
    reader.join(timeout=10)
    if reader.is_alive():  # unblock the reader before failing
        os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        pytest.fail("reading a FIFO blocked")
    assert isinstance(outcome[0], InputError) and "not a regular file" in str(outcome[0])


def _catch(outcome: list[BaseException], path: Path) -> None:
    try:
        read_text_file(path)
    except BaseException as err:  # noqa: BLE001 (handed to the test)
        outcome.append(err)


def test_a_file_over_the_cap_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "items.json"
    big.write_text("[" + "0," * 600 + "0]")
    assert read_text_file(big, limit=2000).startswith("[0,")
    with pytest.raises(InputError, match=r"items\.json: file is 1,203 bytes, more than the limit"):
        read_text_file(big, limit=1000)


def test_deeply_nested_json_is_one_line(tmp_path: Path) -> None:
    deep = tmp_path / "scene.json"
    deep.write_text("[" * 200_000)
    with pytest.raises(InputError, match=r"scene\.json: cannot be read as .*nested too deeply"):
        load_json_file(deep, "scene manifest")


def test_a_yaml_alias_bomb_is_refused_with_a_short_line() -> None:
    assert len(ALIAS_BOMB) < 800
    with pytest.raises(InputError, match="anchors and aliases") as info:
        load_yaml_text(ALIAS_BOMB, "nightly.yaml")
    assert len(str(info.value)) < MAX_ERROR_CHARS + 100


def test_plain_yaml_loads_as_safe_types_and_errors_are_short() -> None:
    assert load_yaml_text("a: [1, {b: 2}]\nc: yes\n", "x.yaml") == {"a": [1, {"b": 2}], "c": True}
    with pytest.raises(InputError, match="x.yaml: cannot be read as YAML") as info:
        load_yaml_text("a: [" + "1, " * 100_000, "x.yaml")
    assert len(str(info.value)) < MAX_ERROR_CHARS + 100
    with pytest.raises(InputError, match="cannot be read as YAML"):
        load_yaml_text("!!python/object/apply:os.system ['true']", "x.yaml")
