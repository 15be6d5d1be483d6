"""The inference commands take the CUDA libraries' code out of a CPU-only process's resident
memory (226 MB after ``import torch`` with the CUDA build here), and only pages nothing wrote."""

from __future__ import annotations

import subprocess
import sys

import pytest

from groundbreak.infer.prediction.cuda_pages import clean_cuda_code, is_cuda_library

NV = "/venv/site-packages/nvidia/cu13/lib/libnvrtc.so.13"
SMAPS = f"""\
7f0000000000-7f0000100000 r--p 00000000 fd:01 11 {NV}
Rss:                 400 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
7f0000100000-7f0000400000 r-xp 00100000 fd:01 11 {NV}
Rss:                3072 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
7f0000400000-7f0000500000 r-xp 00400000 fd:01 12 /venv/site-packages/torch/lib/libtorch_cuda.so
Rss:                 100 kB
Private_Dirty:         8 kB
Anonymous:             8 kB
7f0000500000-7f0000600000 r-xp 00000000 fd:01 13 /venv/site-packages/torch/lib/libtorch_cpu.so
Rss:                1024 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
7f0000600000-7f0000700000 rw-p 00000000 00:00 0
Rss:                1024 kB
Private_Dirty:      1024 kB
Anonymous:          1024 kB
"""


def test_only_clean_executable_mappings_of_cuda_libraries_are_chosen() -> None:
    assert is_cuda_library(NV) and is_cuda_library("/x/torch/lib/libc10_cuda.so")
    assert not is_cuda_library("/x/torch/lib/libtorch_cpu.so") and not is_cuda_library("")
    # not the read-only segment, not a mapping with a written page, not torch's CPU library
    assert clean_cuda_code(SMAPS) == [(0x7F0000100000, 0x7F0000400000)]


CUDA_CODE_RSS = """
def cuda_code_kb():
    from groundbreak.infer.prediction.cuda_pages import is_cuda_library
    total, counting = 0, False
    for line in open('/proc/self/smaps'):
        fields = line.split()
        if '-' in fields[0] and not fields[0].endswith(':'):
            counting = fields[1] == 'r-xp' and is_cuda_library(fields[5] if len(fields) > 5 else '')
        elif counting and fields[0] == 'Rss:':
            total += int(fields[1])
    return total
"""


def printed_by_child(code: str) -> list[str]:
    """The words a fresh interpreter running ``code`` printed (it must succeed)."""
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=300, check=False)
    assert child.returncode == 0, child.stderr
    return child.stdout.split()


def test_a_command_leaves_no_cuda_code_resident_on_a_cpu_only_machine() -> None:
    code = (CUDA_CODE_RSS + "import torch\nbefore = cuda_code_kb()\n"
            "from groundbreak.infer.cli import main\nmain(['predict', '--help'])\n"
            "print(torch.cuda.is_available(), before, cuda_code_kb())\n")
    cuda, before, after = printed_by_child(code)[-3:]
    if cuda == "True" or int(before) == 0:
        pytest.skip("a CUDA device, or a CPU build of torch: no CUDA code to drop")
    assert int(before) > 20_000 and int(after) < int(before) // 10  # 226 MB -> a few


def test_torch_imported_late_by_the_predictor_leaves_no_cuda_code_resident() -> None:
    """A prediction command starts without torch; when its predictor must build the torch model
    after all (torch runtime, or no kept OpenVINO graph), the CUDA code it mapped is dropped."""
    code = (CUDA_CODE_RSS + "import sys\nfrom groundbreak.infer.cli import prepare_process\n"
            "prepare_process('predict')\nimported = 'torch' in sys.modules\n"
            "from groundbreak.infer.prediction.predictor import TiledPredictor\n"
            "from groundbreak.train.bundle import default_bundle_path, load_bundle\n"
            "bundle = load_bundle(default_bundle_path(), build=False)\n"
            "TiledPredictor(bundle, device='cpu', runtime='torch').model\n"
            "import torch\nprint(imported, torch.cuda.is_available(), cuda_code_kb())\n")
    imported, cuda, after = printed_by_child(code)[-3:]
    if cuda == "True":
        pytest.skip("a CUDA device: its code is used")
    assert imported == "False" and int(after) < 20_000  # 226 MB when left resident
