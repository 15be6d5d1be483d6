"""The CUDA libraries' code taken out of a CPU-only process's resident memory.

A CUDA build of torch (what ``pip install torch`` gives on x86-64 Linux) maps cuBLASLt, NVRTC,
nvJitLink, libtorch_cuda and the other NVIDIA libraries on ``import torch``, and the kernel maps
in their code pages as they are read: 226 MB resident after ``import torch`` on the 2-core AMD
EPYC with kernel 6.18 (the thirteenth session's kernel had 120 MB of the three largest
resident) in a process without a GPU, which never runs that code. The nightly memory budget is
2 GB (bench/README.md).

``madvise(MADV_DONTNEED)`` on those libraries' executable mappings takes their pages out of the
process: the files stay in the page cache, which the kernel reclaims when it needs the memory,
and a page that is executed after all is read back from its file on first use. Only mappings
that are read-and-execute and hold no page the process changed (``Private_Dirty`` and
``Anonymous`` zero in ``/proc/self/smaps``) are advised, so nothing can be lost.
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

MADV_DONTNEED = 4
TORCH_CUDA_LIBRARIES = ("libtorch_cuda", "libc10_cuda", "libcaffe2_nvrtc", "libtorch_nvshmem")
"""torch's own libraries that serve CUDA only (``torch/lib``); NVIDIA's come from the
``nvidia-*`` wheels, under ``site-packages/nvidia/``."""


def is_cuda_library(path: str) -> bool:
    """Whether a mapped file is a CUDA library a CPU-only process never runs."""
    name = path.rsplit("/", 1)[-1]
    return "/nvidia/" in path or name.startswith(TORCH_CUDA_LIBRARIES)


def clean_cuda_code(smaps: str) -> list[tuple[int, int]]:
    """``(start, end)`` of the read-and-execute mappings of CUDA libraries in ``smaps`` (the text
    of ``/proc/<pid>/smaps``) that hold no page the process changed."""
    found: list[tuple[int, int]] = []
    current: tuple[int, int] | None = None
    for line in smaps.splitlines():
        fields = line.split()
        if not fields:
            continue
        if "-" in fields[0] and not fields[0].endswith(":"):  # a mapping's header line
            path = fields[5] if len(fields) > 5 else ""
            start, end = (int(x, 16) for x in fields[0].split("-"))
            current = (start, end) if fields[1] == "r-xp" and is_cuda_library(path) else None
            if current is not None:
                found.append(current)
        elif current is not None and fields[0] in ("Private_Dirty:", "Anonymous:") and int(
            fields[1]
        ):
            found.remove(current)  # a page the process wrote: the mapping is left alone
            current = None
    return found


def drop_cuda_code_pages(smaps: Path = Path("/proc/self/smaps")) -> int:
    """Take the CUDA libraries' code pages out of this process when torch sees no CUDA device;
    the bytes of the mappings advised (0 off Linux, before torch is imported, with a CUDA device,
    or without any). Called again after a later import of torch, it drops what that mapped."""
    torch = sys.modules.get("torch")  # not imported: its libraries are not mapped either
    if torch is None or not sys.platform.startswith("linux") or not smaps.is_file():
        return 0
    if torch.cuda.is_available():
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    advised = 0
    for start, end in clean_cuda_code(smaps.read_text()):
        if libc.madvise(start, end - start, MADV_DONTNEED) == 0:
            advised += end - start
    return advised
