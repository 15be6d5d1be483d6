"""Once reads keep decoded pixels, large arrays are memory maps of their own, returned to the
system when freed (issue 25 item 4: a full-tile .SAFE pair kept about 200 MB of freed strips,
batches and decoded tiles resident in glibc's heaps); and the free pages inside the heaps go back
to the system when a row band of windows is done (:func:`release_free_heap`)."""

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


TRIM_CHILD = """
import json
import numpy as np
from groundbreak.datasets.scene import release_free_heap
from groundbreak.datasets.scenes.strips import map_large_allocations

def anon_mb():
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("RssAnon:"))
    return int(line.split()[1]) / 1024

map_large_allocations()  # as a night: arrays under 16 MB come from the heaps
arrays = [np.ones(2**20, dtype=np.uint8) for _ in range(300)]  # 300 MB, touched
del arrays[:-1]  # freed, below the last one: not at the heap's top, so malloc keeps them
held = anon_mb()
released = release_free_heap()
print(json.dumps({"held": held, "after": anon_mb(), "released": released}))
"""


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_free_heap_pages_go_back_to_the_system() -> None:
    done = subprocess.run([sys.executable, "-c", TRIM_CHILD], capture_output=True, text=True,
                          check=True)
    figures = json.loads(done.stdout)
    assert figures["released"] is True
    assert figures["held"] - figures["after"] > 250  # MB: the freed arrays' pages
