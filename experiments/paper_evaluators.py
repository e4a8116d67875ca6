"""Write the small stand-ins of the paper's evaluation models for the embedded default (seconds, untrained):

    python -m experiments.paper_evaluators --out checkpoints/evaluators/synthetic/paper [--image-size 64] [--seed 0]

OUT gets dino/, inception-2015-12-05.pt, image_reward/ and manifest.json (facemogle.evaluators.standins says
what each is and why untrained weights still give a figure). `experiments.evaluate --protocol paper` reads
them with --dino, --inception-torchscript and --image-reward; the CLIP columns use the trained small CLIP.
"""

from __future__ import annotations

import argparse

from facemogle.cli import run_cli
from facemogle.evaluators.standins import write_standins


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Write the paper-protocol stand-in evaluators (random, seeded).")
    ap.add_argument("--out", required=True)
    ap.add_argument("--image-size", type=int, default=64, help="the faces' resolution (the models' input)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    print(f"wrote {write_standins(args.out, args.image_size, args.seed)}")


if __name__ == "__main__":
    run_cli(main)
