"""Two-process DDP fit on the CPU (gloo) via ``groundbreak train``: it finishes and checkpoints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
import yaml


def test_ddp_fit_on_two_cpu_processes(oscd_chips_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    config = {
        "seed_everything": 3,
        "trainer": {
            "default_root_dir": str(run), "max_epochs": 1, "accelerator": "cpu", "devices": 2,
            "strategy": "ddp", "limit_train_batches": 2, "limit_val_batches": 2,
            "num_sanity_val_steps": 0, "enable_progress_bar": False,
            "enable_model_summary": False,
        },
        # Depth 5: every encoder stage is used, as DDP requires (no unused parameters).
        "model": {"encoder_name": "resnet18", "encoder_depth": 5,
                  "decoder_channels": [16, 16, 8, 8, 8]},
        "data": {"chips_dir": str(oscd_chips_dir), "bands": ["B02", "B03", "B04", "B08"],
                 "batch_size": 2},
    }
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(config))
    # A fresh interpreter: Lightning's DDP launcher re-runs this command for the second rank.
    command = [sys.executable, "-m", "groundbreak.infer.cli", "train", "fit", "--config", str(path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Starting with 2 processes" in result.stderr + result.stdout
    last = run / "checkpoints" / "last.ckpt"
    assert last.is_file()
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    assert checkpoint["epoch"] == 0 and checkpoint["global_step"] == 2
