"""Sample faces from a finished run's export.

    python -m experiments.sample --run runs/tiny --prompt "She has blond wavy hair." --out samples/
    python -m experiments.sample --run runs/tiny --masks data/synthetic/mask --out samples/ [--prompt ...]
    python -m experiments.sample --run runs/tiny --mask m.png --region-scale hair=1.5 --out samples/

A prompt alone is text-to-face, a mask alone mask-to-face, both text+mask-to-face; `--n` images of each
(image i of the command from seed `--seed` + i, so mask j's k-th image is seed + j * n + k). Masks are label
maps (palette, grayscale or RGB palette colours); a mask that is not square is an error, or with
`--mask-fit crop` its centred square, never stretched. `--text-only-condition none|background` overrides
how text-to-face is conditioned (facemogle.sampling; the run's `train.sample.text_only_condition`
otherwise). `--region-scale PART=S` multiplies that region expert's contribution (PART in
facemogle.face_parts.PARTS, or `global`).
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from data_modules.face_files import read_label_map
from experiments.runs.io import add_allow_unverified, load_run
from experiments.runs.prerequisites import require_run
from facemogle.cli import run_cli
from facemogle.face_parts import CONDITION_MAPS
from facemogle.sampling import TEXT_ONLY_CONDITIONS, seed_generators

MASK_SUFFIXES = (".png", ".bmp")
log = logging.getLogger(__name__)


def region_scales(pairs: list[str]) -> dict[str, float]:
    """`hair=1.5 global=0.8` -> {"hair": 1.5, "global": 0.8}."""
    scales = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        if name not in CONDITION_MAPS or not value:
            raise ValueError(
                f"--region-scale {pair!r} (from the command line): expected PART=SCALE with PART one of "
                f"{list(CONDITION_MAPS)}"
            )
        try:
            scale = float(value)
        except ValueError:
            scale = math.nan
        if not math.isfinite(scale) or scale < 0:
            raise ValueError(
                f"--region-scale {pair!r} (from the command line): SCALE must be a finite number >= 0"
            )
        scales[name] = scale
    return scales


def mask_files(args: argparse.Namespace) -> list[Path | None]:
    """The conditions: one mask file, a folder's, or (text mode) None."""
    if args.mask:
        return [Path(args.mask)]
    if args.masks:
        found = sorted(p for p in Path(args.masks).iterdir() if p.is_file())
        files = [p for p in found if p.suffix.lower() in MASK_SUFFIXES]
        skipped = [p.name for p in found if p not in files]
        if skipped:  # a JPEG's compression shifts a label map's values: not read as a mask
            log.warning(
                "--masks %s: skipped %d file(s) that are not %s masks: %s",
                args.masks,
                len(skipped),
                "/".join(MASK_SUFFIXES),
                ", ".join(skipped),
            )
        if not files:
            raise ValueError(
                f"--masks {args.masks}: no .png masks found ({len(skipped)} other files skipped)"
            )
        return files
    return [None]


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
    p.add_argument("--n", type=int, default=1, help="images per condition (per mask; in text mode, in all)")
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
    add_allow_unverified(p)
    args = p.parse_args(argv)
    if args.n < 1:
        p.error(f"--n {args.n}: give at least 1 image")
    if args.mask and args.masks:
        p.error("give --mask or --masks, not both")
    if not (args.prompt or args.mask or args.masks):
        p.error("give --prompt, --mask / --masks, or both")

    require_run(args.run)
    run = load_run(args.run, verify=not args.allow_unverified)
    pipe = run.pipeline
    pipe.set_progress_bar_config(disable=True)
    res = run.config.data.resolution
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scales = region_scales(args.region_scale)
    run.config.model.mogle.expert_scale(scales)  # an expert the run lacks: an error before sampling
    items = [(f, k) for f in mask_files(args) for k in range(args.n)]  # image i: seed + i
    masks = {f: read_mask(f, res, args.mask_fit) for f in dict.fromkeys(f for f, _ in items) if f}
    for start in tqdm(range(0, len(items), args.batch), desc="sampling", unit="batch"):
        chunk = items[start : start + args.batch]
        result = pipe(
            prompt=[args.prompt] * len(chunk) if args.prompt else None,
            mask_image=torch.stack([masks[f] for f, _ in chunk]) if chunk[0][0] else None,
            height=res,
            width=res,
            num_inference_steps=args.steps,
            guidance_scale=args.guidance,
            text_scale=args.text_scale,
            mask_scale=args.mask_scale,
            text_only_condition=args.text_only_condition,
            region_scale=scales,
            generator=seed_generators(args.seed + start, len(chunk)),
        )
        for i, ((f, _), image) in enumerate(zip(chunk, result.images, strict=True)):
            image.save(out / f"{f.stem if f else 'text'}_seed{args.seed + start + i}.png")


if __name__ == "__main__":
    run_cli(main)
