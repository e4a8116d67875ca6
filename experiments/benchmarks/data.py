"""Condition-path cost per training step: latent cache vs re-encoding the 20 condition maps every step.

    python -m experiments.benchmark data [--repeats 3] [--flux-maps 2] [--threads N] [--skip-flux]

Re-encoding is the published code's behaviour: split the label map into the 20 condition maps and run
them through the VAE encoder each step. With the cache (data_modules.cache) a step reads the cached
latents of its items (CachedDataset, region and text dropout on) and collates them.

Settings: the tiny backbone at 64^2 (batch 4) and FLUX.1-dev's VAE architecture (random weights) at
512^2 (batch 1). On CPU one 512^2 FLUX-VAE encode takes seconds, so the 512^2 re-encode time is
measured on `--flux-maps` maps and scaled to 20 (the encoder's cost is linear in the number of maps;
pass --flux-maps 20 to measure all). The 512^2 cache is built from a one-face tree whose mask has
three parts, to keep the build short: a cached read costs the same whatever the maps show.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL
from PIL import Image
from torch.utils.data import default_collate

from data_modules.cache import CachedDataset, build_cache
from data_modules.dataset import Dropout
from data_modules.layouts import scan
from data_modules.synthetic import write_synthetic
from facemogle.backbone import FluxBackbone
from facemogle.encode import encode_images
from facemogle.face_parts import NUM_CONDITION_MAPS, PART_INDEX, split_mask
from facemogle.tiny_backbone import tiny_flux


def flux_vae() -> AutoencoderKL:
    """FLUX.1-dev's VAE configuration with random weights."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=16,
        use_quant_conv=False,
        use_post_quant_conv=False,
        scaling_factor=0.3611,
        shift_factor=0.1159,
    ).eval()


def _time(fn, repeats: int) -> float:
    """Median seconds of `repeats` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _minimal_tree(root: Path, size: int) -> Path:
    labels = np.zeros((size, size), np.uint8)
    labels[size // 8 : -size // 8, size // 4 : -size // 4] = PART_INDEX["skin"]
    labels[: size // 4, size // 4 : -size // 4] = PART_INDEX["hair"]
    for folder in ("face", "mask", "text"):
        (root / folder).mkdir(parents=True)
    Image.fromarray(np.full((size, size, 3), 128, np.uint8)).save(root / "face" / "0.jpg")
    Image.fromarray(labels).save(root / "mask" / "0.png")
    (root / "text" / "0.txt").write_text("She has blond wavy hair.\n")
    return root


def measure(
    backbone: FluxBackbone, root: Path, resolution: int, batch: int, maps: int, repeats: int, work: Path
):
    """-> (re-encode s/step scaled to 20 maps, cached s/step)."""
    records = scan(root).records
    folder = build_cache(records, backbone, resolution, work / "cache", progress=False)
    dataset = CachedDataset(folder, records, train=True, dropout=Dropout(0.1, 0.1))
    labels = default_collate([dataset[i % len(dataset)]["labels"] for i in range(batch)])  # (b, H, W)

    def re_encode():
        encode_images(backbone, split_mask(labels)[:, :maps])  # (b, maps, 3, H, W) -> (b, maps, l, d)

    def cached():
        default_collate([dataset[i % len(dataset)] for i in range(batch)])

    return _time(re_encode, repeats) * NUM_CONDITION_MAPS / maps, _time(cached, max(repeats, 20))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--flux-maps", type=int, default=2, help="maps encoded per timed 512^2 step (scaled to 20)"
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--skip-flux", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tiny = tiny_flux()
        data = write_synthetic(work / "faces64", n=8, size=64, seed=0)
        rows.append(("tiny VAE", 64, 4, 20, *measure(tiny, data, 64, 4, 20, args.repeats, work / "tiny")))
        if not args.skip_flux:
            torch.manual_seed(0)
            big = FluxBackbone(**{**tiny.__dict__, "vae": flux_vae()})
            data = _minimal_tree(work / "faces512", 512)
            maps = args.flux_maps
            rows.append(
                (
                    "FLUX.1-dev VAE",
                    512,
                    1,
                    maps,
                    *measure(big, data, 512, 1, maps, args.repeats, work / "flux"),
                )
            )
    print(f"torch threads: {torch.get_num_threads()}")
    header = f"| {'setting':<15} | res | batch | maps timed | re-encode 20 maps ms/step | cached ms/step |    ratio |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for name, res, batch, maps, encode_s, cached_s in rows:
        print(
            f"| {name:<15} | {res:>3} | {batch:>5} | {maps:>10} | {encode_s * 1e3:>25.1f} | {cached_s * 1e3:>13.2f} "
            f"| {encode_s / cached_s:>7.0f}x |"
        )
