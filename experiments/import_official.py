"""Import the official Face-MoGLE release as a run every tool reads.

    python -m experiments.import_official --lora pytorch_lora_weights.safetensors --mogle mogle.pt \\
        --backbone checkpoints/FLUX.1-dev --out runs/official [--convention sampler|training] [key=value ...]

Writes RUN/export (config.yaml, the LoRA, mogle.safetensors, official.json with the source files' sha256,
manifest.json): experiments.sample, experiments.evaluate, experiments.demo, FaceMoGLEPipeline.from_pretrained
and `model.init_from` read it as any run. `--convention sampler` (default) reproduces the released images;
`training` gives the gate the official training's inputs, for fine-tuning (facemogle.official). key=value
overrides of the run's config come last (data.root=..., for evaluation).
"""

from __future__ import annotations

import argparse

from experiments.runs.official import import_official
from facemogle.cli import run_cli
from facemogle.official import OFFICIAL_TIME_SCALES


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m experiments.import_official", description=__doc__.split("\n")[0]
    )
    p.add_argument("--lora", required=True, help="the released pytorch_lora_weights.safetensors")
    p.add_argument(
        "--mogle", required=True, help="the released mogle.pt (torch, read data-only) or .safetensors"
    )
    p.add_argument("--backbone", required=True, help="the diffusers FLUX.1-dev directory it runs on")
    p.add_argument("--out", required=True, help="the run directory written (its export/ folder)")
    p.add_argument("--convention", choices=sorted(OFFICIAL_TIME_SCALES), default="sampler")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args(argv)
    import_official(args.lora, args.mogle, args.backbone, args.out, args.convention, args.overrides)


if __name__ == "__main__":
    run_cli(main)
