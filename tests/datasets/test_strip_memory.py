"""Once reads keep decoded pixels, large arrays are memory maps of their own, returned to the
system when freed (issue 25 item 4: a full-tile .SAFE pair kept about 200 MB of freed strips,
batches and decoded tiles resident in glibc's heaps)."""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys

import pytest

GLIBC = sys.platform.startswith("linux") and hasattr(ctypes.CDLL(None), "mallinfo2")

# In a fresh process: earlier tests' freed blocks in this one could serve the array from the
# heap whatever the threshold.
CHILD = """
import ctypes, json
import numpy as np
from groundbreak.datasets.scene import files_kept_open

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks",
                "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = MallInfo2
freed = np.ones(30 * 2**20, dtype=np.uint8)
del freed  # glibc's default: blocks up to 30 MB come from the heap from now on
with files_kept_open():
    before = mallinfo2().hblkhd
    strip = np.ones(24 * 2**20, dtype=np.uint8)  # a 10 m strip's size
    mapped = mallinfo2().hblkhd - before
    del strip
    left = mallinfo2().hblkhd - before
print(json.dumps({"mapped": mapped, "left": left}))
"""


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_large_arrays_are_mapped_and_given_back_once_strips_serve_reads() -> None:
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                          check=True)
    figures = json.loads(done.stdout)
    assert figures["mapped"] >= 24 * 2**20  # a map of its own ...
    assert figures["left"] == 0  # ... given back to the system when freed
