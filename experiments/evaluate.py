"""Evaluate a finished run: generate a split's faces from their captions and/or masks and score them.

    python -m experiments.evaluate --run RUN_DIR --split test [--n N] [--modes text,mask,text+mask]

writes RUN_DIR/eval/SPLIT.json ({mode: {fid, kid, kid_std, cmmd, clip_score, mask_miou, pixel_acc, n,
iou: {part: value}}, "meta": {...}}) and RUN_DIR/eval/SPLIT.md (the paper's columns). Faces are the
split's first N in key order, with their first caption; item i is sampled from seed + i. The text mode is
conditioned as `--text-only-condition none|background` says (default: the run's
train.sample.text_only_condition; facemogle.sampling explains both); meta and the table record it.
Evaluator models: --clip DIR (needed for the default --features clip) and --parser DIR, the small
synthetic ones from `make evaluators` (checkpoints/evaluators/synthetic/{clip,parser}); for real data
--features inception --inception FILE --clip DIR --parser DIR. Real-image features are cached in --cache-dir,
keyed by the data, the resolution and the evaluator models, so they are computed once per data set.
"""

from __future__ import annotations

import argparse
import hashlib
import math
from pathlib import Path

import torch
from tqdm import tqdm

from callbacks.generation_eval import MODES
from data_modules.dataset import load_faces
from data_modules.layouts import FaceRecord, scan
from data_modules.split import split_keys
from experiments.run_io import load_run
from facemogle.atomic import atomic_write, atomic_write_json, atomic_write_text
from facemogle.cli import run_cli
from facemogle.evaluators import EvaluatorConfig
from facemogle.face_parts import PARTS
from facemogle.metrics.suite import GenerationMetrics, MetricsConfig, RealFeatures, build_generation_metrics
from facemogle.sampling import TEXT_ONLY_CONDITIONS, SampleSettings, sample

SPLITS = ("train", "val", "test")
COLUMNS = (  # json key, table header, format
    ("fid", "FID ↓", "{:.2f}"),
    ("kid", "KID ↓", "{:.4f}"),
    ("cmmd", "CMMD ↓", "{:.3f}"),
    ("clip_score", "CLIP Score ↑", "{:.2f}"),
    ("mask_miou", "Mask mIoU ↑", "{:.3f}"),
    ("pixel_acc", "Pixel Acc ↑", "{:.3f}"),
    ("n", "n", "{:d}"),
)
TEXT_ONLY_LABELS = {"background": "all-background mask", "none": "no condition tokens"}


def split_records(config, split: str, n: int | None) -> list[FaceRecord]:
    if split not in SPLITS:
        raise ValueError(f"--split {split!r}: expected one of {SPLITS}")
    found = scan(config.data.root, config.data.layout, config.data.captions)
    by_key = {r.key: r for r in found.records}
    keys = getattr(split_keys(by_key, config.data.split), split)
    if not keys:
        raise ValueError(f"{config.data.root}: the {split} split is empty")
    if n is not None and n < 2:
        raise ValueError(f"--n {n}: FID and KID need at least 2 faces")
    records = [by_key[k] for k in (keys[:n] if n is not None else keys)]
    if len(records) < 2:
        raise ValueError(f"--n {n}: FID and KID need at least 2 faces")
    for r in records:
        if not r.captions:
            raise ValueError(f"{r.caption_file or r.image}: face {r.key} has no caption")
    return records


def real_cache_file(
    cache_dir: Path, records: list[FaceRecord], resolution: int, evaluators: EvaluatorConfig
) -> Path:
    h = hashlib.sha256()
    for r in records:
        stat = Path(r.image).stat()
        h.update(f"{Path(r.image).resolve()}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    h.update(f"{resolution};{evaluators.features};".encode())
    model = evaluators.clip_path if evaluators.features == "clip" else evaluators.inception_path
    for path in (model, evaluators.clip_path):
        weights = (
            sorted(Path(path).glob("*.safetensors")) if path and Path(path).is_dir() else [Path(path or "")]
        )
        for w in weights:
            h.update(f"{w.resolve()}:{w.stat().st_mtime_ns if w.exists() else 0};".encode())
    return cache_dir / f"real_{h.hexdigest()[:16]}.pt"


def add_real(
    metrics: GenerationMetrics, images: torch.Tensor, batch: int, cache: Path | None, device
) -> None:
    if cache is not None and cache.is_file():
        stored = torch.load(cache)
        metrics.add_real(RealFeatures(stored["features"].to(device), _to(stored["clip"], device)))
        return
    parts = [metrics.extract_real(images[s : s + batch].to(device)) for s in range(0, len(images), batch)]
    real = RealFeatures(
        torch.cat([p.features for p in parts]),
        torch.cat([p.clip for p in parts]) if parts[0].clip is not None else None,
    )
    metrics.add_real(real)
    if cache is not None:  # runs evaluated in parallel (the ablation's SLURM array) share the cache
        features = {"features": real.features.cpu(), "clip": _to(real.clip, "cpu")}
        atomic_write(cache, lambda tmp: torch.save(features, tmp))


def _to(t: torch.Tensor | None, device) -> torch.Tensor | None:
    return None if t is None else t.to(device)


def evaluate_mode(run, metrics, images, labels, captions, mode, settings, seed, batch, device, bar) -> dict:
    metrics.reset()
    res = run.config.data.resolution
    for start in range(0, len(captions), batch):
        stop = min(start + batch, len(captions))
        out = sample(
            run.backbone,
            run.denoiser,
            captions[start:stop] if "text" in mode else None,
            labels[start:stop].to(device) if "mask" in mode else None,
            height=res,
            width=res,
            settings=settings,
            seed=seed + start,
        )
        metrics.update(out.images, captions[start:stop], labels[start:stop].to(device))
        bar.update(stop - start)
    values = metrics.compute()
    result = {k: v for k, v in values.items() if not k.startswith("iou/")}
    result["n"] = len(captions)
    result["iou"] = {p: values[f"iou/{p}"] for p in PARTS if f"iou/{p}" in values}
    return result


def markdown_table(results: dict[str, dict], title: str, text_only_condition: str) -> str:
    """The paper's columns, a row per mode; the text row names its `text_only_condition`."""
    lines = [f"# {title}", "", "| Mode | " + " | ".join(h for _, h, _ in COLUMNS) + " |"]
    lines.append("|---|" + "---:|" * len(COLUMNS))
    for mode, values in results.items():
        cells = []
        for key, _, fmt in COLUMNS:
            v = values.get(key)
            cells.append("–" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v))
        label = f"text ({TEXT_ONLY_LABELS[text_only_condition]})" if mode == "text" else mode
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if "text" in results:
        lines += ["", f"text: `text_only_condition: {text_only_condition}` (facemogle.sampling)."]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="Evaluate a finished facemogle run (FID, KID, CMMD, CLIP score, mask)."
    )
    ap.add_argument("--run", required=True, help="run directory with export/ (experiments.train)")
    ap.add_argument("--split", default="test", choices=SPLITS)
    ap.add_argument("--n", type=int, default=None, help="first N faces of the split (default: all)")
    ap.add_argument("--modes", default="text,mask,text+mask", help=f"comma-separated, from {MODES}")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument(
        "--steps", type=int, default=None, help="sampling steps (default: the run's train.sample)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--text-only-condition",
        choices=TEXT_ONLY_CONDITIONS,
        default=None,
        help="text mode: an all-background mask as the condition, or no condition tokens "
        "(default: the run's train.sample.text_only_condition)",
    )
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    defaults = EvaluatorConfig()
    ap.add_argument("--features", default=defaults.features, help="FID/KID features: clip | inception")
    ap.add_argument("--clip", default=None, help="CLIP directory (none: no CLIP score / CMMD)")
    ap.add_argument("--parser", default=None, help="SegFormer face parser directory (none: no mask mIoU)")
    ap.add_argument("--parser-label-order", default=None, help="celebamask-hq | face-parsing.pytorch")
    ap.add_argument("--inception", default=None, help="Inception weights file (--features inception)")
    ap.add_argument("--cache-dir", default="cache/eval", help="real-image feature cache ('' for none)")
    ap.add_argument("--kid-subset-size", type=int, default=MetricsConfig.kid_subset_size)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides of the run's config")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise ValueError(f"--modes {args.modes!r}: each must be one of {MODES}")
    evaluators = EvaluatorConfig(
        clip_path=args.clip or None,
        parser_path=args.parser or None,
        parser_label_order=args.parser_label_order,
        features=args.features,
        inception_path=args.inception or None,
    )
    run = load_run(args.run, args.set)
    device = torch.device(args.device)
    run.backbone.to(device)
    run.denoiser.to(device)
    settings = SampleSettings(**vars(run.config.train.sample))
    if args.steps is not None:
        settings.steps = args.steps
    if args.text_only_condition is not None:
        settings.text_only_condition = args.text_only_condition

    records = split_records(run.config, args.split, args.n)
    faces = load_faces(records, run.config.data.resolution)
    images, labels, captions = faces.images, faces.labels, faces.first_captions()
    metrics = build_generation_metrics(evaluators, MetricsConfig(kid_subset_size=args.kid_subset_size)).to(
        device
    )
    cache = (
        real_cache_file(Path(args.cache_dir), records, run.config.data.resolution, evaluators)
        if args.cache_dir
        else None
    )
    add_real(metrics, images, args.batch_size, cache, device)

    results = {}
    with tqdm(total=len(records) * len(modes), desc=f"evaluate {args.split}", unit="face") as bar:
        for mode in modes:
            bar.set_postfix_str(mode)
            results[mode] = evaluate_mode(
                run,
                metrics,
                images,
                labels,
                captions,
                mode,
                settings,
                args.seed,
                args.batch_size,
                device,
                bar,
            )
    out_dir = Path(args.run) / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "run": str(args.run),
        "split": args.split,
        "n": len(records),
        "seed": args.seed,
        "sample": vars(settings),
        "text_only_condition": settings.text_only_condition if "text" in modes else None,
        "evaluators": vars(evaluators),
    }
    atomic_write_json(out_dir / f"{args.split}.json", {**results, "meta": meta}, indent=2)
    title = f"{Path(args.run).name}: {args.split} split, {len(records)} faces"
    table = markdown_table(results, title, settings.text_only_condition)
    atomic_write_text(out_dir / f"{args.split}.md", table)
    print(table)
    print(f"wrote {out_dir / (args.split + '.json')} and {out_dir / (args.split + '.md')}")
    return results


if __name__ == "__main__":
    run_cli(main)
