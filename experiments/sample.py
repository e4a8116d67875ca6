"""Sample faces from a finished run's export.

    python -m experiments.sample --run runs/tiny --prompt "She has blond wavy hair." --out samples/
    python -m experiments.sample --run runs/tiny --masks data/synthetic/mask --out samples/ [--prompt ...]
    python -m experiments.sample --run runs/tiny --mask m.png --region-scale hair=1.5 --out samples/

A prompt alone is text-to-face, a mask alone mask-to-face, both text+mask-to-face. Masks are label
maps (palette, grayscale or RGB palette colours); a mask that is not square is an error, or with
`--mask-fit crop` its centred square, never stretched. `--text-only-condition none|background` overrides
how text-to-face is conditioned (facemogle.sampling; the run's `train.sample.text_only_condition`
otherwise). `--region-scale PART=S` multiplies that region expert's contribution (PART in
facemogle.face_parts.PARTS, or `global`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from data_modules.layouts import read_label_map
from experiments.prerequisites import require_run
from experiments.run_io import load_run
from facemogle.cli import run_cli
from facemogle.face_parts import PARTS
from facemogle.mogle import MoGLEConfig
from facemogle.sampling import TEXT_ONLY_CONDITIONS, SampleSettings, sample


def expert_scale(config: MoGLEConfig, pairs: list[str]) -> torch.Tensor | None:
    """`hair=1.5 global=0.8` -> a (num_experts,) multiplier in the order of the active experts."""
    if not pairs:
        return None
    names = ["global", *PARTS]
    scale = torch.ones(config.num_experts)
    for pair in pairs:
        name, _, value = pair.partition("=")
        if name not in names or not value:
            raise ValueError(f"--region-scale {pair!r}: expected PART=SCALE with PART one of {names}")
        index = names.index(name)
        if index not in config.expert_indices:
            raise ValueError(
                f"--region-scale {name}: this run has no {name} expert (expert_set={config.expert_set})"
            )
        scale[config.expert_indices.index(index)] = float(value)
    return scale


def mask_files(args: argparse.Namespace) -> list[Path | None]:
    if args.mask:
        return [Path(args.mask)]
    if args.masks:
        files = sorted(p for p in Path(args.masks).iterdir() if p.suffix.lower() in (".png", ".bmp"))
        if not files:
            raise ValueError(f"--masks {args.masks}: no .png masks found")
        return files
    return [None] * args.n


def read_mask(path: Path, resolution: int, fit: str) -> torch.Tensor:
    """A mask file as (H, W) labels; one of another aspect ratio than the square samples is an error
    naming the file, or with `fit="crop"` its centred square."""
    labels = torch.from_numpy(read_label_map(path).astype(np.int64))
    h, w = labels.shape
    if h != w:
        if fit != "crop":
            raise ValueError(
                f"{path}: mask is {w}x{h}, the samples are {resolution}x{resolution}; give a square mask "
                "or --mask-fit crop to use its centred square"
            )
        s = min(h, w)
        labels = labels[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    return labels


def save(images: torch.Tensor, names: list[str], out: Path) -> None:
    for image, name in zip(images, names, strict=True):
        array = (image.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
        Image.fromarray(array).save(out / f"{name}.png")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m experiments.sample", description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, help="a run directory with an export/ folder")
    p.add_argument("--prompt", help="the caption (text or text+mask mode)")
    p.add_argument("--mask", help="one mask file")
    p.add_argument(
        "--mask-fit",
        choices=("error", "crop"),
        default="error",
        help="a mask that is not square: an error (default), or its centred square",
    )
    p.add_argument("--masks", help="a folder of mask files")
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=int, default=1, help="text mode: how many images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int)
    p.add_argument("--guidance", type=float, help="FLUX guidance embedding (guidance-distilled backbones)")
    p.add_argument("--text-scale", type=float, help="true CFG text scale")
    p.add_argument("--mask-scale", type=float, help="true CFG mask scale")
    p.add_argument(
        "--text-only-condition",
        choices=TEXT_ONLY_CONDITIONS,
        help="text mode: an all-background mask as the condition, or no condition tokens "
        "(default: the run's train.sample.text_only_condition)",
    )
    p.add_argument("--region-scale", nargs="*", default=[], metavar="PART=S")
    p.add_argument("--batch", type=int, default=8)
    args = p.parse_args(argv)
    if args.n < 1:
        p.error(f"--n {args.n}: give at least 1 image")
    if args.mask and args.masks:
        p.error("give --mask or --masks, not both")
    if not (args.prompt or args.mask or args.masks):
        p.error("give --prompt, --mask / --masks, or both")

    require_run(args.run)
    run = load_run(args.run)
    res = run.config.data.resolution
    defaults = vars(run.config.train.sample)
    chosen = {
        "steps": args.steps,
        "guidance": args.guidance,
        "text_scale": args.text_scale,
        "mask_scale": args.mask_scale,
        "text_only_condition": args.text_only_condition,
    }
    settings = SampleSettings(**{**defaults, **{k: v for k, v in chosen.items() if v is not None}})
    scale = expert_scale(run.config.model.mogle, args.region_scale)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files = mask_files(args)
    for start in tqdm(range(0, len(files), args.batch), desc="sampling", unit="batch"):
        chunk = files[start : start + args.batch]
        masks = None
        if chunk[0] is not None:
            masks = torch.stack([read_mask(f, res, args.mask_fit) for f in chunk])
        prompts = [args.prompt] * len(chunk) if args.prompt else None
        result = sample(
            run.backbone,
            run.denoiser,
            prompts,
            masks,
            height=res,
            width=res,
            settings=settings,
            seed=args.seed + start,
            expert_scale=scale,
        )
        names = [
            f"{f.stem}_seed{args.seed + start + i}" if f else f"text_seed{args.seed + start + i}"
            for i, f in enumerate(chunk)
        ]
        save(result.images, names, out)


if __name__ == "__main__":
    run_cli(main)
