"""The groundbreak command's large torch tensors are backed by transparent huge pages.

The night maps every allocation of 16 MB or more on its own and unmaps it when freed, so without
huge pages each window's activations were faulted in again 4 kB at a time (bench/README.md,
"Huge pages by default"). torch reads ``THP_MEM_ALLOC_ENABLE`` at its first
allocation, so this is checked in fresh interpreters that import groundbreak.infer first.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")

PROBE = """
import os
import groundbreak.infer
from groundbreak.datasets.scenes.strips import map_large_allocations
map_large_allocations()
import torch
tensor = torch.ones(8 << 20)  # 32 MB, mapped on its own as the night's activations are
address = tensor.data_ptr()
huge_kb = 0
inside = False
for line in open("/proc/self/smaps"):
    fields = line.split()
    if "-" in fields[0] and len(fields) >= 5:
        low, high = (int(end, 16) for end in fields[0].split("-"))
        inside = low <= address < high
    elif inside and fields[0] == "AnonHugePages:":
        huge_kb = int(fields[1])
print(os.environ["THP_MEM_ALLOC_ENABLE"], huge_kb)
"""


def thp_mode() -> str | None:
    """The kernel's transparent huge page mode ("always", "madvise", "never"), None without."""
    try:
        text = THP_MODE.read_text()
    except OSError:
        return None
    return text.split("[", 1)[1].split("]", 1)[0] if "[" in text else None


def probe(setting: str | None) -> tuple[str, int]:
    """The variable and the tensor's huge-page kB in a fresh interpreter."""
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    if setting is not None:
        env["THP_MEM_ALLOC_ENABLE"] = setting
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    value, huge_kb = done.stdout.split()
    return value, int(huge_kb)


pytestmark = pytest.mark.skipif(
    thp_mode() not in ("madvise", "always"), reason="no transparent huge pages on this machine"
)


def test_importing_the_package_before_torch_backs_large_tensors_with_huge_pages() -> None:
    value, huge_kb = probe(None)
    assert value == "1"
    assert huge_kb >= 2048


@pytest.mark.skipif(thp_mode() != "madvise", reason="huge pages only where asked for")
def test_a_user_who_turns_it_off_gets_small_pages() -> None:
    assert probe("0") == ("0", 0)
