"""Make the README's pictures from a demo run: the report screenshot and a before/after/change
figure.

Usage: python scripts/make_readme_figures.py [RUNDIR]   (default: demo-run, from `groundbreak demo`)
Needs headless Chromium (Debian package `chromium`) for the screenshot.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image, ImageDraw

from groundbreak.datasets.layouts import read_pairs_csv
from groundbreak.infer.cli.demo import DEMO_PAIRS

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "img"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def true_colour(rgb: np.ndarray) -> np.ndarray:
    """(3, H, W) reflectances -> uint8 (H, W, 3) with a 2-98 percentile stretch."""
    lo, hi = np.nanpercentile(rgb, 2), np.nanpercentile(rgb, 98)
    return (
        (np.clip((np.nan_to_num(rgb) - lo) / (hi - lo), 0, 1) * 255)
        .astype(np.uint8)
        .transpose(1, 2, 0)
    )


def before_after_change(run_dir: Path, pair_id: str = "lasvegas", scale: int = 2) -> Path:
    """Three panels side by side: before, after, change probability (magma-like ramp)."""
    spec = next(p for p in read_pairs_csv(DEMO_PAIRS) if p.pair_id == pair_id)
    pair = spec.open()
    before, after = pair.read(["B04", "B03", "B02"])
    with rasterio.open(run_dir / "pairs" / pair_id / "probability.tif") as src:
        prob = np.nan_to_num(src.read(1))
    ramp = np.array([[0, 0, 4], [81, 18, 124], [183, 55, 121], [252, 137, 97], [252, 253, 191]])
    pos = prob * (len(ramp) - 1)
    low = np.floor(pos).astype(int).clip(0, len(ramp) - 2)
    frac = (pos - low)[..., None]
    change = (ramp[low] * (1 - frac) + ramp[low + 1] * frac).astype(np.uint8)
    panels = [true_colour(before), true_colour(after), change]
    height, width = prob.shape
    gap, label_h = 8, 28
    canvas = Image.new("RGB", (3 * width * scale + 2 * gap, height * scale + label_h), "white")
    draw = ImageDraw.Draw(canvas)
    titles = [f"before {pair.before.date}", f"after {pair.after.date}", "change probability"]
    for i, (panel, title) in enumerate(zip(panels, titles, strict=True)):
        x = i * (width * scale + gap)
        canvas.paste(Image.fromarray(panel).resize((width * scale, height * scale)), (x, label_h))
        draw.text((x + 4, 6), title, fill="black")
    path = OUT / "before_after_change.png"
    canvas.quantize(colors=192).save(path, optimize=True)
    return path


def report_screenshot(run_dir: Path) -> Path:
    """A 1280 px wide screenshot of the report's top, made by headless Chromium."""
    raw = OUT / "report_raw.png"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                "chromium",
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                f"--screenshot={raw}",
                "--window-size=1280,1500",
                (run_dir / "report.html").resolve().as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    path = OUT / "report.png"
    Image.open(raw).convert("RGB").resize((960, 1125)).quantize(colors=128).save(
        path, optimize=True
    )
    raw.unlink()
    return path


def main() -> int:
    run_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "demo-run")
    if not (run_dir / "report.html").exists():
        print(f"{run_dir}: no report.html; run `groundbreak demo --out {run_dir}` first")
        return 1
    OUT.mkdir(parents=True, exist_ok=True)
    print(before_after_change(run_dir))
    print(report_screenshot(run_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
