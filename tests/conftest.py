"""Fixtures shared by every test package: the small real fixtures and the shared data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The suite runs the torch runtime where a test leaves the runtime to "auto", whatever the
# machine's environment says (OpenVINO would convert every tiny test model, seconds each); the
# CLI's subprocesses inherit this. The runtime tests (infer/test_cpu_runtimes.py,
# test_openvino_runtime.py, test_auto_runtime.py) choose their runtimes themselves.
os.environ["GROUNDBREAK_CPU_RUNTIME"] = "torch"

TESTS_DIR = Path(__file__).resolve().parent
FIXTURES_DIR = TESTS_DIR / "fixtures"
SHARED_DATA_DIR = (TESTS_DIR.parent / ".." / "shared" / "data").resolve()

TINY_MODEL: dict[str, object] = {
    "encoder_name": "resnet18",
    "encoder_depth": 3,
    "decoder_channels": [16, 8, 8],
}
"""A ChangeUNet small enough to fit a few 32 px chips in seconds on a CPU."""


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


@pytest.fixture
def tiny_model() -> dict[str, object]:
    """Keyword arguments of a tiny ChangeSegmentationTask model (training and cv tests)."""
    return dict(TINY_MODEL)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the Dask cluster tests last.

    A Dask client leaves threads (its event loop, offload pool) in the test process, and a
    process forked after that (``predict --devices 2`` uses ``ddp_fork`` on the CPU) can hang on
    a lock one of them held. Real runs never fork after a Dask client in one process; in one
    pytest process they would, so the cluster tests go after every other test.
    """
    items.sort(key=lambda item: "test_nightly_cluster" in item.nodeid)
