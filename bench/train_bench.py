"""Training throughput of the default model: chips per second of forward + backward + step.

Random chips through the model of a training config (default configs/oscd_s2.yaml: its fusion,
encoder, depth, decoder widths, layout and band count; 128 px, batch 16), so it measures compute
only, not data loading. Prints the device and chips/s.

    python bench/train_bench.py                      # CPU
    python bench/train_bench.py --device cuda        # GPU, bf16/fp16 autocast
    python bench/train_bench.py --bands 10 --steps 5 --chip-size 64
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import yaml
from torch.optim import AdamW

from groundbreak.train.task import ChangeSegmentationTask

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "oscd_s2.yaml"


def model_settings(args: argparse.Namespace) -> dict:
    """The task's model settings: the config's ``model`` section, overridden by the flags."""
    config = yaml.safe_load(args.config.read_text())
    settings = dict(config.get("model") or {})
    bands = (config.get("data") or {}).get("bands")
    settings["in_channels"] = args.bands or (len(bands) if bands else 13)
    if args.fusion:
        settings["fusion"] = args.fusion
    if args.encoder:
        settings["encoder_name"] = args.encoder
    return settings


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                        help="training config whose model to time (default configs/oscd_s2.yaml)")
    parser.add_argument("--bands", type=int, help="bands per date (default: the config's)")
    parser.add_argument("--chip-size", type=int, default=128, help="chip side in px (default 128)")
    parser.add_argument("--batch-size", type=int, default=16, help="chips per step (default 16)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    parser.add_argument("--fusion", choices=["early", "siamese_diff", "siamese_concat"],
                        help="default: the config's")
    parser.add_argument("--encoder", help="encoder name (default: the config's)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device available")
    torch.manual_seed(0)
    settings = model_settings(args)
    task = ChangeSegmentationTask(**settings).to(device)
    task.train()
    optimizer = AdamW(task.parameters(), lr=1e-3)
    shape = (args.batch_size, settings["in_channels"], args.chip_size, args.chip_size)
    before = torch.randn(shape, device=device)
    after = torch.randn(shape, device=device)
    mask = (torch.rand(shape[0], *shape[2:], device=device) < 0.05).long()
    autocast_dtype = torch.bfloat16
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        autocast_dtype = torch.float16
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler(enabled=use_amp and autocast_dtype == torch.float16)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=use_amp):
            loss = task.criterion(task(before, after), mask)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    chips = args.steps * args.batch_size
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"cpu ({torch.get_num_threads()} threads)"
    )
    precision = str(autocast_dtype).replace("torch.", "") + " autocast" if use_amp else "float32"
    print(f"device: {name}")
    print(
        f"model: {settings.get('fusion')} {settings.get('encoder_name')} U-Net "
        f"({args.config.name}), {settings['in_channels']} bands, "
        f"{args.chip_size}px chips, batch {args.batch_size}, {precision}"
    )
    print(f"steps: {args.steps} in {elapsed:.2f} s")
    print(f"throughput: {chips / elapsed:.1f} chips/s (forward + backward + optimizer step)")


if __name__ == "__main__":
    main()
