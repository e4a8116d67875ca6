"""Latent cache size per face, text cached or not: the estimate made before building against the bytes written.

    python -m experiments.benchmark cache [--faces 4] [--resolution 512] [--dtype bfloat16]
                                          [--full-faces 30000] [--full-captions 10]

Builds the cache of `--faces` synthetic faces (data_modules.synthetic) with their captions on
facemogle.backbone.flux_dev_shaped, whose cached shapes are FLUX.1-dev's: (resolution / 16)^2 image tokens of
width 64, T5 4096 x 512 tokens, CLIP pooled 768. Each row is one choice of data.cache_text; the last
columns scale the estimate to MM-CelebA-HQ (`--full-faces` faces with `--full-captions` captions each),
keeping the synthetic faces' present condition maps per face.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

from data_modules.cache import DTYPES, build_cache, estimate_size, folder_bytes, format_bytes
from data_modules.layouts import scan
from data_modules.synthetic import write_synthetic
from facemogle.face_parts import NUM_CONDITION_MAPS
from facemogle.tiny_backbone import flux_dev_shaped


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=4)
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--dtype", default="bfloat16", choices=tuple(DTYPES))
    parser.add_argument("--full-faces", type=int, default=30_000)
    parser.add_argument("--full-captions", type=int, default=10, help="captions per face at full scale")
    args = parser.parse_args(argv)
    backbone = flux_dev_shaped()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        records = scan(write_synthetic(work / "faces", args.faces, args.resolution, seed=0)).records
        for text in (True, False):
            estimate = estimate_size(records, backbone, args.resolution, args.dtype, text)
            folder = build_cache(
                records, backbone, args.resolution, work / "cache", args.dtype, progress=False, text=text
            )
            full = estimate.scaled(args.full_faces, args.full_faces * args.full_captions)
            rows.append((text, estimate, folder_bytes(folder), full))
    e = rows[0][1]
    print(
        f"flux_dev_shaped at {args.resolution}^2, {args.dtype}: {e.shapes.tokens} x {e.shapes.token_dim} "
        f"image tokens, T5 {e.shapes.text_len} x {e.shapes.text_dim}, CLIP {e.shapes.pooled_dim}; "
        f"{e.faces} synthetic faces, {e.captions / e.faces:.2f} captions and "
        f"{e.present_maps / e.faces:.2f} present condition maps per face"
    )
    full_label = f"{args.full_faces} faces x {args.full_captions} captions"
    print(
        f"| text cached | estimate / face | written / face | estimate / written | {full_label}: / face | total |"
    )
    print("|---|---|---|---|---|---|")
    for text, estimate, written, full in rows:
        print(
            f"| {'yes' if text else 'no'} | {format_bytes(estimate.per_face())} "
            f"| {format_bytes(written / estimate.faces)} | {estimate.bytes / written:.4f} "
            f"| {format_bytes(full.per_face())} | {format_bytes(full.bytes)} |"
        )
    v1 = replace(rows[0][3], present_maps=rows[0][3].faces * NUM_CONDITION_MAPS)
    print(
        f"CACHE_VERSION 1 (all 20 condition maps stored, text cached), estimated: {format_bytes(v1.per_face())} "
        f"per face, {format_bytes(v1.bytes)} for {full_label}"
    )
