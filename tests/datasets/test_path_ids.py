"""Ids that name files: refused before any path is made when they could not name one."""

from __future__ import annotations

import pytest

from groundbreak.datasets.errors import InputError
from groundbreak.datasets.path_ids import MAX_ID_LENGTH, check_path_id


def test_an_id_is_capped_in_utf8_bytes_not_characters(tmp_path) -> None:
    emoji = "\U0001f3d7" * 100  # 100 characters, 400 bytes: no file system takes it
    with pytest.raises(InputError, match="at most 128 bytes") as info:
        check_path_id(emoji, where="pairs.csv")
    assert str(info.value).startswith("pairs.csv: ") and len(str(info.value)) < 300
    fits = "\U0001f3d7" * (MAX_ID_LENGTH // 4)
    assert check_path_id(fits) == fits
    (tmp_path / f"{fits}.tif.partial").mkdir()  # with a suffix it still names a file
    assert check_path_id("a" * MAX_ID_LENGTH) == "a" * MAX_ID_LENGTH
    with pytest.raises(InputError):
        check_path_id("a" * (MAX_ID_LENGTH + 1))
    with pytest.raises(InputError):
        check_path_id("bad\udcff")  # a lone surrogate names no file
