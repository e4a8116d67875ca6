"""Write a run in the official Face-MoGLE format: `python -m experiments.export_official --run R --out DIR`.

DIR gets pytorch_lora_weights.safetensors and mogle.pt, the two files the official inference.py loads
(`--lora_ckpt`, `--moe_ckpt`, the MoGLE with strict=True). Only a run whose MoGLE the official class can
hold (dynamic gate, 20 mlp experts 64 -> 32 -> 64, gate time scale 1000) can be written; any other is an
error saying which setting differs.
"""

from __future__ import annotations

import argparse

from experiments.runs.io import add_allow_unverified
from experiments.runs.official import export_official
from facemogle.cli import run_cli


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m experiments.export_official", description=__doc__.split("\n")[0]
    )
    p.add_argument("--run", required=True, help="a run directory with an export/ folder")
    p.add_argument("--out", required=True, help="the folder the two official files are written to")
    add_allow_unverified(p)
    args = p.parse_args(argv)
    export_official(args.run, args.out, verify=not args.allow_unverified)


if __name__ == "__main__":
    run_cli(main)
