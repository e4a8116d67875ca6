"""What an evaluation JSON records about how it was made, and the paper-protocol tables.

`protocol_record` gives: each evaluator model's name, path and the sha256 of every file in it, how each
metric reads an image (resize, normalisation), the resolution, the image count, the split and its face ids,
the sampler settings, the seed and the code's commit. `paper_table` is Face-MoGLE's Table 1 in its columns
and units; `per_class_table` the parser's IoU per face part.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

from facemogle.atomic import atomic_write_json
from facemogle.evaluators import EvaluatorConfig
from facemogle.evaluators.config import PaperEvaluatorConfig
from facemogle.face_parts import PARTS
from facemogle.release import sha256

REPO = Path(__file__).resolve().parents[1]
SKIPPED_WEIGHTS = (".h5", ".msgpack", ".onnx", ".ot")  # other frameworks' copies that no loader here reads
PAPER_COLUMNS = (  # json key, header, format: Table 1's columns and units, then ours beside them
    ("fid", "FID ↓", "{:.2f}"),
    ("kid", "KID ×10³ ↓", "{:.2f}"),
    ("cmmd", "CMMD ↓", "{:.3f}"),
    ("mask", "Mask ↓", "{:.4f}"),
    ("text", "Text ↑", "{:.2f}"),
    ("image_reward", "IR ↑", "{:.3f}"),
    ("mask_per_image", "Mask per image ↓", "{:.5f}"),
    ("mask_splice_per_image", "Mask per image, Splice ↓", "{:.5f}"),
)


def evaluator_paths(e: EvaluatorConfig, paper: PaperEvaluatorConfig | None) -> dict[str, str | None]:
    """Every evaluator model the evaluation read, by name."""
    ours = {"clip": e.clip_path, "parser": e.parser_path}
    if e.features == "inception":
        ours["inception"] = e.inception_path
    paper_paths = paper.paths() if paper is not None else {}
    return {**ours, **{f"paper/{name}": path for name, path in paper_paths.items()}}


def ours_preprocessing(e: EvaluatorConfig) -> dict[str, str]:
    resize = "bicubic antialiased resize to the model's input, its mean/std"
    features = (
        f"the CLIP's projected image embedding; {resize}"
        if e.features == "clip"
        else "uint8, torch-fidelity's Inception-v3 pool3 (its own resize to 299)"
    )
    out = {"ours/fid_kid": f"torchmetrics FID / KID on {features}"}
    if e.clip_path:
        out["ours/cmmd_clip_score"] = f"the CLIP of clip_path; {resize}; CLIPScore on the first caption"
    if e.parser_path:
        order = e.parser_label_order or "its config's id2label"
        out["ours/mask_miou"] = f"the face parser, classes in {order} order; {resize}"
    return out


def model_files(path: str | Path) -> list[Path]:
    path = Path(path)
    if path.is_file():
        return [path]
    return sorted(
        p
        for p in path.rglob("*")
        if p.is_file()
        and p.suffix not in SKIPPED_WEIGHTS
        and not any(part.startswith(".") for part in p.parts)
    )


def model_record(path: str | Path, digests: dict[str, str]) -> dict:
    """{path, files: {relative name: sha256}}; digests caches sha256 by (path, size, mtime)."""
    path = Path(path)
    files = {}
    for file in model_files(path):
        stat = file.stat()
        key = f"{file.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
        if key not in digests:
            digests[key] = sha256(file)
        files[str(file.relative_to(path)) if path.is_dir() else file.name] = digests[key]
    return {"path": str(path), "files": files}


def models_record(models: dict[str, str | None], cache_dir: str | None) -> dict[str, dict]:
    """name -> model_record for each named model; the digests are cached in cache_dir/digests.json."""
    cache = Path(cache_dir) / "digests.json" if cache_dir else None
    digests = json.loads(cache.read_text()) if cache is not None and cache.is_file() else {}
    record = {name: model_record(path, digests) for name, path in models.items() if path}
    if cache is not None:  # atomically: parallel evaluations (the ablation's SLURM array) share the cache
        atomic_write_json(cache, digests)
    return record


def git_commit(exclude: str | Path | None = None, repo: Path = REPO) -> dict[str, str | bool | None]:
    """The commit of the code that ran, and whether tracked files differed from it; changes under `exclude`
    (the caller's own output directory, whose committed files it is rewriting) do not count."""
    pathspec = []
    if exclude is not None:
        # outside the checkout there is nothing to exclude, and git rejects the pathspec
        target, root = Path(exclude).resolve(), repo.resolve()
        if target.is_relative_to(root):
            pathspec = ["--", ".", f":(exclude){target.relative_to(root).as_posix()}"]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", *pathspec],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(status.strip())}


def protocol_record(
    *,
    models: dict[str, dict],
    preprocessing: dict[str, str],
    resolution: int,
    split: str,
    ids: list[str],
    sample: dict,
    seed: int,
    protocol: str,
) -> dict:
    return {
        "protocol": protocol,
        "models": models,
        "preprocessing": preprocessing,
        "resolution": resolution,
        "images": len(ids),
        "split": split,
        "ids": ids,
        "sample": sample,
        "seed": seed,
        "seeds": f"face i is sampled from noise seed {seed} + i",
        **git_commit(),
    }


# Face-MoGLE's own rows of its Table 1 (arXiv 2509.00428v1: MM-CelebA-HQ, the last 3,000 faces as test, 512^2,
# 28 steps; KID x 1000, CLIP score in %), by our mode names; the values as issue 29 quotes them.
PAPER_SOURCE = "arXiv 2509.00428v1, Table 1 (Face-MoGLE's rows, MM-CelebA-HQ test, 512², 28 steps)"
PAPER_REFERENCE = {
    "text+mask": {
        "fid": 22.24,
        "kid": 10.87,
        "cmmd": 0.477,
        "mask": 2.44,
        "text": 26.32,
        "image_reward": 0.7014,
    },
    "mask": {"fid": 19.63, "kid": 8.29, "cmmd": 0.399, "mask": 2.57, "text": 24.53, "image_reward": 0.0398},
    "text": {"fid": 34.81, "kid": 21.85, "cmmd": 0.636, "mask": 4.94, "text": 26.91, "image_reward": 0.9527},
}
# The same model's zero-shot row (MM-FFHQ-Female, multimodal), for a run evaluated on that set.
PAPER_ZERO_SHOT = {
    "fid": 62.93,
    "kid": 31.27,
    "cmmd": 1.238,
    "mask": 2.77,
    "text": 28.06,
    "image_reward": 0.1801,
}
PAPER_DIFFERENCES = (
    "the image count (the paper's 3,000 test faces; FID, KID and the official Mask depend on it)",
    "the crop and resize each metric applies to the faces (the protocol record's `preprocessing`)",
    "Text: the official runs OpenAI's CLIP in float16 (clip.load on a GPU), this evaluation in float32",
    "the evaluator models named by path (the protocol record's `models`), which must be the paper's",
)


def _cell(value, fmt: str) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else fmt.format(value)


def paper_table(results: dict[str, dict], labels: dict[str, str]) -> str:
    """Face-MoGLE's Table 1 columns (its own evaluation's protocol), a row per mode; a column no mode has
    (its model not given) is left out."""
    columns = [c for c in PAPER_COLUMNS if any(c[0] in v.get("paper", {}) for v in results.values())]
    lines = [
        "## Paper protocol (Face-MoGLE's src/eval)",
        "",
        "| Mode | " + " | ".join(h for _, h, _ in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for mode, values in results.items():
        paper = values.get("paper", {})
        cells = [_cell(paper.get(key), fmt) for key, _, fmt in columns]
        lines.append(f"| {labels.get(mode, mode)} | " + " | ".join(cells) + " |")
        if mode in PAPER_REFERENCE:
            cells = [_cell(PAPER_REFERENCE[mode].get(key), fmt) for key, _, fmt in columns]
            lines.append(f"| {labels.get(mode, mode)}: the paper's Face-MoGLE | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Mask is the official figure (per-image distances summed over batches of 64, averaged over the "
        "batches: it depends on the image count); the per-image columns do not.",
        "",
        f"The paper's rows: {PAPER_SOURCE}; its zero-shot row (MM-FFHQ-Female, text+mask): "
        + ", ".join(f"{key} {value}" for key, value in PAPER_ZERO_SHOT.items())
        + ". What still differs from its protocol:",
        *(f"- {difference}" for difference in PAPER_DIFFERENCES),
    ]
    return "\n".join(lines) + "\n"


def per_class_table(results: dict[str, dict]) -> str:
    """The parser's IoU per face part (mean over the images where the part is in the mask or the parse)."""
    modes = [m for m, v in results.items() if v.get("iou")]
    if not modes:
        return ""
    lines = [
        "## Parser IoU per part",
        "",
        "| Part | " + " | ".join(modes) + " |",
        "|---|" + "---:|" * len(modes),
    ]
    for part in PARTS:
        lines.append(
            f"| {part} | " + " | ".join(_cell(results[m]["iou"].get(part), "{:.3f}") for m in modes) + " |"
        )
    return "\n".join(lines) + "\n"
