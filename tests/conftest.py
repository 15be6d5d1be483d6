"""Fixtures shared by every test package: the small real fixtures and the shared data folder."""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
FIXTURES_DIR = TESTS_DIR / "fixtures"
SHARED_DATA_DIR = (TESTS_DIR.parent / ".." / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """tests/fixtures: small real crops of OSCD (``oscd/``) and LEVIR-CD samples (``levir/``)."""
    return FIXTURES_DIR


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The project's shared real data (``../shared/data``); skips the test when it is missing."""
    if not SHARED_DATA_DIR.is_dir():
        pytest.skip(f"shared data not available: {SHARED_DATA_DIR} is missing")
    return SHARED_DATA_DIR
