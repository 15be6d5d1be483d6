"""Training throughput of the default model: chips per second of forward + backward + step.

Random chips (the default config's model: early-fusion resnet18 U-Net, 13 bands, 128 px, batch 16),
so it measures compute only, not data loading. Prints the device and chips/s.

    python bench/train_bench.py                      # CPU
    python bench/train_bench.py --device cuda        # GPU, bf16/fp16 autocast
    python bench/train_bench.py --bands 10 --steps 5 --chip-size 64
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.optim import AdamW

from groundbreak.train.task import ChangeSegmentationTask


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--bands", type=int, default=13, help="bands per date (default 13)")
    parser.add_argument("--chip-size", type=int, default=128, help="chip side in px (default 128)")
    parser.add_argument("--batch-size", type=int, default=16, help="chips per step (default 16)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    parser.add_argument("--fusion", default="early", choices=["early", "siamese_diff",
                                                            "siamese_concat"])
    parser.add_argument("--encoder", default="resnet18", help="encoder name (default resnet18)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device available")
    torch.manual_seed(0)
    task = ChangeSegmentationTask(
        in_channels=args.bands, fusion=args.fusion, encoder_name=args.encoder
    ).to(device)
    task.train()
    optimizer = AdamW(task.parameters(), lr=1e-3)
    shape = (args.batch_size, args.bands, args.chip_size, args.chip_size)
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
        f"model: {args.fusion} {args.encoder} U-Net, {args.bands} bands, "
        f"{args.chip_size}px chips, batch {args.batch_size}, {precision}"
    )
    print(f"steps: {args.steps} in {elapsed:.2f} s")
    print(f"throughput: {chips / elapsed:.1f} chips/s (forward + backward + optimizer step)")


if __name__ == "__main__":
    main()
