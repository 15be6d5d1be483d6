"""Fixtures of the training tests: a real chips directory cut from tests/fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from groundbreak.infer.cli import main as groundbreak


@pytest.fixture(scope="session")
def oscd_chips_dir(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path) -> Path:
    """32 px chips of the OSCD fixtures: beirut (train), abudhabi (val), dubai (test, no label)."""
    out = tmp_path_factory.mktemp("oscd_chips") / "chips"
    code = groundbreak(
        [
            "chips", "--layout", "oscd", "--root", str(fixtures_dir / "oscd"), "--size", "32",
            "--stride", "32", "--out", str(out), "--val-pairs", "abudhabi", "--quiet",
        ]
    )
    assert code == 0
    return out
