"""Predict a config's peak accelerator memory: `python -m experiments.plan_memory --config C [key=value ...]`.

One training step and one sampling step at the config's real sizes (the backbone directory's config.json files,
FLUX.1-dev's where it has none), broken into weights, gradients, optimizer state and activations; no GPU, and
nothing of the model allocated (facemogle.memory_plan). `--table` writes docs/memory.md's table instead.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from experiments.config.load import load_config
from experiments.training.memory import architecture, memory_settings
from facemogle.cli import run_cli
from facemogle.memory_plan import plan_memory
from facemogle.memory_sizes import Architecture, GiB, MemorySettings

CARDS = (24, 48, 80)  # GiB: an RTX 4090's 24564 MiB, an A6000's or L40S's 48, an A100's or H100's 80
TABLE_BASES = ("none", "int8", "nf4")


def describe(arch: Architecture, source: str, settings: MemorySettings) -> str:
    plan = plan_memory(arch, settings)
    return "\n".join(
        [
            f"settings:      {settings.describe()}",
            f"architecture:  {source}",
            f"training step: {plan.training.describe()}",
            f"sampling step: {plan.sampling.describe()}",
            "(GiB; add 0.5-1.5 GiB for the CUDA context and the allocator's fragmentation)",
        ]
    )


def fits(total: int) -> str:
    """The smallest card the step fits on, leaving 1 GiB for the CUDA context."""
    for card in CARDS:
        if total + GiB <= card * GiB:
            return f"{card} GB"
    return "> 80 GB"


def table(arch: Architecture, base: MemorySettings) -> str:
    rows = [
        "| base (transformer and T5) | checkpointing | batch | resolution | text path | training step GiB "
        "| sampling step GiB | smallest card |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for quant in TABLE_BASES:
        for resolution in (512, 1024):
            for ckpt in (True, False):
                for batch in (1, 2, 4):
                    # "cached" (T5 on the accelerator, not run) gives the same training peak as "encoded"
                    for text in ("encoded", "cpu"):
                        s = replace(
                            base,
                            transformer_quantization=quant,
                            text_encoder_2_quantization=quant,
                            gradient_checkpointing=ckpt,
                            batch=batch,
                            resolution=resolution,
                            text_path=text,
                        )
                        plan = plan_memory(arch, s)
                        t = plan.training.total
                        rows.append(
                            f"| {quant} | {'on' if ckpt else 'off'} | {batch} | {resolution}² | {text} "
                            f"| {t / GiB:.1f} | {plan.sampling.total / GiB:.1f} | {fits(t)} |"
                        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(prog="python -m experiments.plan_memory", description=__doc__.split("\n")[0])
    p.add_argument("--config", help="a YAML file mirroring experiments.config.Config")
    p.add_argument(
        "--table",
        action="store_true",
        help="the table of bases, checkpointing, batch, resolution and text path (docs/memory.md)",
    )
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args(argv)
    config = load_config(args.config, args.overrides)
    arch, source = architecture(config.backbone.path)
    settings = memory_settings(config)
    text = table(arch, settings) if args.table else describe(arch, source, settings)
    print(text)
    return text


if __name__ == "__main__":
    run_cli(main)
