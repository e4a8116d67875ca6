"""Drawing synthetic faces: milliseconds a face (label map and shaded image) at a few sizes.

    python -m experiments.benchmark synthetic [--faces 40] [--sizes 64,512]

`make data` draws 3000 faces at 64^2; data_modules.synthetic paints with whole-array numpy operations,
so a face's cost grows with its pixel count, not with Python loops over pixels.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from data_modules.synthetic import draw_face


def ms_per_face(size: int, faces: int) -> float:
    """Median over three passes of drawing `faces` faces, in ms a face."""
    passes = []
    for _ in range(3):
        start = time.perf_counter()
        for i in range(faces):
            draw_face(np.random.default_rng([5, i]), size)
        passes.append((time.perf_counter() - start) / faces * 1e3)
    return float(np.median(passes))


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.benchmark synthetic")
    parser.add_argument("--faces", type=int, default=40, help="faces drawn per pass (three passes)")
    parser.add_argument("--sizes", default="64,512", help="comma-separated image sizes")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    print(f"synthetic faces: {args.faces} a pass, median of 3 passes, one process")
    print("| size | ms/face | faces/s |\n|---|---|---|")
    for size in sizes:
        ms = ms_per_face(size, args.faces)
        print(f"| {size} | {ms:.2f} | {1e3 / ms:.0f} |")
