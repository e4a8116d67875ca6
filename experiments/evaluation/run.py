"""Evaluate a finished run: generate a split's faces from their captions and/or masks and score them.

`evaluate_run` is what `python -m experiments.evaluate` and the ablation study call. It writes
RUN_DIR/eval/SPLIT.json ({mode: {fid, kid, kid_std, cmmd, clip_score, mask_miou, pixel_acc, n,
iou: {part: value}}, "meta": {...}}) and RUN_DIR/eval/SPLIT.md (the paper's columns). Faces are the
split's first N in key order, with their first caption; item i is sampled from seed + i. The text mode
is conditioned as `text_only_condition` says (default: the run's train.sample.text_only_condition;
facemogle.sampling explains both); meta and the table record it. Real-image features are cached in
`cache_dir`, keyed by the data, the resolution and the evaluator models, so they are computed once per
data set.

`protocol="paper"` also scores every mode as Face-MoGLE's own evaluation does (facemogle.metrics.paper:
clean-fid FID / KID, CMMD, the DINO structure distance, the CLIP text score, ImageReward), under
{mode: {"paper": {...}}}, and adds that table to SPLIT.md. Every JSON carries "protocol"
(experiments.evaluation.protocol): the models with their files' sha256, preprocessing, resolution, face ids,
sampler settings, seed and commit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from data_modules.datamodule import DataConfig
from data_modules.dataset import load_faces
from data_modules.layouts import FaceRecord, scan
from data_modules.split import SPLITS, split_records
from experiments.evaluation.feature_cache import add, paper_cache_file, real_cache_file
from experiments.evaluation.protocol import (
    evaluator_paths,
    models_record,
    ours_preprocessing,
    paper_table,
    per_class_table,
    protocol_record,
)
from experiments.runs.io import LoadedRun, load_run
from experiments.runs.official import source_record
from facemogle.atomic import atomic_write_json, atomic_write_text
from facemogle.evaluators import EvaluatorConfig
from facemogle.evaluators.config import PaperEvaluatorConfig
from facemogle.export import EXPORT
from facemogle.face_parts import PARTS
from facemogle.faces import Faces
from facemogle.metrics.paper import PaperMetrics, build_paper_metrics
from facemogle.metrics.suite import GenerationMetrics, MetricsConfig, build_generation_metrics
from facemogle.sampling import (
    MODES,
    TEXT_ONLY_CONDITIONS,
    SampleSettings,
    check_modes,
    mode_inputs,
    seed_generators,
)

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
PROTOCOLS = ("ours", "paper")  # paper: Face-MoGLE's own evaluation beside ours


@dataclass
class EvalSettings:
    run: str  # a finished run directory, with export/ (experiments.train)
    split: str = "test"
    n: int | None = None  # the split's first n faces; None: all of them
    modes: tuple[str, ...] = MODES
    batch_size: int = 8
    steps: int | None = None  # sampling steps; None: the run's train.sample.steps
    seed: int = 0
    text_only_condition: str | None = None  # None: the run's train.sample.text_only_condition
    device: str | None = None  # None: cuda when there is one
    evaluators: EvaluatorConfig = field(default_factory=EvaluatorConfig)
    kid_subset_size: int = MetricsConfig.kid_subset_size
    cache_dir: str | None = "cache/eval"  # real-image features; None: computed every time
    overrides: list[str] = field(default_factory=list)  # key=value overrides of the run's config
    verify: bool = True  # False: an export that does not match its manifest loads, with warnings
    protocol: str = "ours"  # "paper": also Face-MoGLE's own metrics, with the models in `paper`
    paper: PaperEvaluatorConfig = field(default_factory=PaperEvaluatorConfig)

    def __post_init__(self) -> None:
        self.modes = check_modes(self.modes, "modes")
        if self.split not in SPLITS:
            raise ValueError(f"split {self.split!r}: expected one of {SPLITS}")
        if self.n is not None and self.n < 2:
            raise ValueError(f"n={self.n}: FID and KID need at least 2 faces")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol {self.protocol!r}: expected one of {PROTOCOLS}")
        if self.protocol == "paper" and not any(self.paper.paths().values()):
            raise ValueError(
                "protocol 'paper' needs at least one of the paper's models (--inception-torchscript, --cmmd-clip, "
                "--text-clip, --dino, --image-reward)"
            )
        if self.text_only_condition not in (None, *TEXT_ONLY_CONDITIONS):
            raise ValueError(
                f"text_only_condition={self.text_only_condition!r}: expected one of {TEXT_ONLY_CONDITIONS}"
            )


@dataclass
class Evaluation:
    results: dict[str, dict]  # mode -> metrics
    table: str  # the markdown table written to markdown_path
    json_path: Path
    markdown_path: Path


def run_sample_settings(run: LoadedRun, steps: int | None, text_only_condition: str | None) -> SampleSettings:
    """The run's train.sample, with `steps` and `text_only_condition` in place of its own where given."""
    sampling = SampleSettings(**vars(run.config.train.sample))
    if steps is not None:
        sampling.steps = steps
    if text_only_condition is not None:
        sampling.text_only_condition = text_only_condition
    return sampling


def split_faces(data: DataConfig, split: str, n: int | None) -> tuple[list[FaceRecord], Faces]:
    """The split's first n faces (all with None) in key order, as evaluation takes them."""
    records = split_records(scan(data.root, data.layout, data.captions).records, data.split, split, n)
    return records, load_faces(records, data.resolution)


def evaluate_run(settings: EvalSettings) -> Evaluation:
    run = load_run(settings.run, settings.overrides, settings.verify)
    device = torch.device(settings.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    run.backbone.to(device)
    run.denoiser.to(device)
    sampling = run_sample_settings(run, settings.steps, settings.text_only_condition)

    data = run.config.data
    records, faces = split_faces(data, settings.split, settings.n)
    if settings.n is not None and len(records) < settings.n:  # not fewer faces than asked without a word
        raise ValueError(
            f"--n {settings.n} is more than the {len(records)} faces of the {settings.split} split of {data.root}"
        )
    if len(records) < 2:
        raise ValueError(
            f"{data.root}: the {settings.split} split has {len(records)} face; FID and KID need 2"
        )
    metrics = build_generation_metrics(
        settings.evaluators, MetricsConfig(kid_subset_size=settings.kid_subset_size)
    ).to(device)
    cache = (
        real_cache_file(Path(settings.cache_dir), records, data.resolution, settings.evaluators)
        if settings.cache_dir
        else None
    )
    add(metrics, faces.images, settings.batch_size, cache, device)
    paper = None
    if settings.protocol == "paper":
        paper = build_paper_metrics(settings.paper).to(device)
        paper_cache = (
            paper_cache_file(Path(settings.cache_dir), records, data.resolution, settings.paper)
            if settings.cache_dir
            else None
        )
        add(paper, faces.images, settings.batch_size, paper_cache, device)

    results = {}
    with tqdm(total=len(faces) * len(settings.modes), desc=f"evaluate {settings.split}", unit="face") as bar:
        for mode in settings.modes:
            bar.set_postfix_str(mode)
            results[mode] = evaluate_mode(run, metrics, faces, mode, sampling, settings, device, bar, paper)

    out_dir = Path(settings.run) / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "run": str(settings.run),
        "split": settings.split,
        "n": len(faces),
        "seed": settings.seed,
        "sample": vars(sampling),
        "text_only_condition": sampling.text_only_condition if "text" in settings.modes else None,
        "evaluators": vars(settings.evaluators),
        # an imported official release: its source files and their sha256 (experiments.import_official)
        "official_release": source_record(Path(settings.run) / EXPORT),
    }
    protocol = protocol_record(
        models=models_record(
            evaluator_paths(settings.evaluators, settings.paper if settings.protocol == "paper" else None),
            settings.cache_dir,
        ),
        preprocessing={**ours_preprocessing(settings.evaluators), **(paper.preprocessing() if paper else {})},
        resolution=data.resolution,
        split=settings.split,
        ids=[r.key for r in records],
        sample=vars(sampling),
        seed=settings.seed,
        protocol=settings.protocol,
    )
    json_path, markdown_path = out_dir / f"{settings.split}.json", out_dir / f"{settings.split}.md"
    atomic_write_json(json_path, {**results, "meta": meta, "protocol": protocol}, indent=2)
    title = f"{Path(settings.run).name}: {settings.split} split, {len(faces)} faces"
    table = markdown_table(results, title, sampling.text_only_condition)
    if paper is not None:
        table += "\n" + paper_table(results, mode_labels(results, sampling.text_only_condition))
    table += "\n" + per_class_table(results)
    atomic_write_text(markdown_path, table)
    return Evaluation(results, table, json_path, markdown_path)


def mode_labels(results: dict[str, dict], text_only_condition: str) -> dict[str, str]:
    return {m: f"text ({TEXT_ONLY_LABELS[text_only_condition]})" if m == "text" else m for m in results}


def evaluate_mode(
    run: LoadedRun,
    metrics: GenerationMetrics,
    faces: Faces,
    mode: str,
    sampling: SampleSettings,
    settings: EvalSettings,
    device,
    bar,
    paper: PaperMetrics | None = None,
) -> dict:
    metrics.reset()
    if paper is not None:
        paper.reset()
    run.pipeline.set_progress_bar_config(disable=True)
    for start in range(0, len(faces), settings.batch_size):
        part = faces[start : start + settings.batch_size]
        labels = part.labels.to(device)
        out = run.pipeline(
            *mode_inputs(mode, part.captions, labels),
            settings=sampling,
            generator=seed_generators(settings.seed + start, len(part)),
            output_type="pt",
        )
        metrics.update(out.images, part.captions, labels)
        if paper is not None:
            paper.update(out.images, part.captions, part.images.to(device))
        bar.update(len(part))
    values = metrics.compute()
    result = {k: v for k, v in values.items() if not k.startswith("iou/")}
    result["n"] = len(faces)
    result["iou"] = {p: values[f"iou/{p}"] for p in PARTS if f"iou/{p}" in values}
    if paper is not None:
        result["paper"] = paper.compute()
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
        lines.append(f"| {mode_labels(results, text_only_condition)[mode]} | " + " | ".join(cells) + " |")
    if "text" in results:
        lines += ["", f"text: `text_only_condition: {text_only_condition}` (facemogle.sampling)."]
    return "\n".join(lines) + "\n"
