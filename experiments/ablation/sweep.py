"""The guidance sweep: one trained run sampled over a grid of true-CFG text and mask scales (facemogle.sampling:
v = v(-,-) + mask_scale (v(-,m) - v(-,-)) + text_scale (v(c,m) - v(-,m))), each point evaluated by
experiments.evaluation.run (mask mIoU, CLIP score, FID, ...) and scored for attribute accuracy; plus the text-only
mode at each text scale, the reference the CLIP score is held to.

    RUN/sweep/text2-mask4/export -> ../../export   the run's own export, sampled at other scales
    RUN/sweep/text2-mask4/eval/test.json            the evaluation (text+mask), meta.sample holds the scales
    RUN/sweep/text2-mask4/probe.json                attribute accuracy (experiments.ablation.probe)
    RUN/sweep/text2-text/...                        the text-only mode at text scale 2

A point already evaluated with these settings is kept. experiments.ablation.sweep_report chooses the
default and draws the surfaces.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from experiments.ablation.attributes import AttributeScorer
from experiments.ablation.probe import PROBE, ProbeSettings, probe_run
from experiments.ablation.reports import evaluated, probed
from experiments.config.load import load_config
from experiments.evaluation.run import EvalSettings, evaluate_run
from experiments.runs.io import EXPORT
from facemogle.atomic import atomic_write_json
from facemogle.evaluators import EvaluatorConfig

SWEEP = "sweep"
MASK_MODE, TEXT_MODE = "text+mask", "text"


@dataclass
class SweepSettings:
    run: str  # a finished run directory (with export/)
    text_scales: list[float]
    mask_scales: list[float]
    n: int | None = None  # test faces evaluated at each point; None: the whole split
    probe_n: int | None = None  # faces scored for attributes at each point; 0: none; None: n
    sample_steps: int | None = None  # None: the run's train.sample.steps
    evaluators: EvaluatorConfig | None = None  # None: the run's eval.evaluators
    cache_dir: str | None = "cache/eval"
    min_miou: float = 0.6
    min_clip_ratio: float = 0.95

    def __post_init__(self) -> None:
        for name in ("text_scales", "mask_scales"):
            scales = getattr(self, name)
            if not scales or any(not math.isfinite(s) for s in scales) or len(set(scales)) != len(scales):
                raise ValueError(f"--{name.replace('_', '-')} {scales}: give distinct finite numbers")


@dataclass(frozen=True)
class Point:
    text_scale: float
    mask_scale: float | None  # None: the text-only mode

    @property
    def name(self) -> str:
        return f"text{self.text_scale:g}-" + (
            "text" if self.mask_scale is None else f"mask{self.mask_scale:g}"
        )

    @property
    def mode(self) -> str:
        return TEXT_MODE if self.mask_scale is None else MASK_MODE

    @property
    def overrides(self) -> list[str]:
        scales = [f"train.sample.text_scale={self.text_scale}"]
        return scales + ([] if self.mask_scale is None else [f"train.sample.mask_scale={self.mask_scale}"])


@dataclass
class PointResult:
    point: Point
    metrics: dict  # the evaluation's values for the point's mode
    attributes: dict | None  # attribute -> {accuracy, n, chance}


def points(settings: SweepSettings) -> list[Point]:
    """Text-only points first (one per text scale), then the grid, text scale major."""
    text_only = [Point(t, None) for t in settings.text_scales]
    return text_only + [Point(t, m) for t in settings.text_scales for m in settings.mask_scales]


def point_dir(settings: SweepSettings, point: Point) -> Path:
    return Path(settings.run) / SWEEP / point.name


def _sample_values(settings: SweepSettings, point: Point) -> dict:
    values = {"text_scale": point.text_scale}
    if point.mask_scale is not None:
        values["mask_scale"] = point.mask_scale
    if settings.sample_steps is not None:
        values["steps"] = settings.sample_steps
    return values


def samples_with_true_cfg(backbone_path: str) -> bool:
    """Whether the backbone samples with true CFG (the scales) rather than a guidance embedding (FLUX.1-dev)."""
    transformer = Path(backbone_path) / "transformer" / "config.json"
    return not (transformer.is_file() and json.loads(transformer.read_text()).get("guidance_embeds", False))


def run_sweep(settings: SweepSettings, scorer: AttributeScorer | None) -> list[PointResult]:
    """Evaluate (and score) every point not yet done; -> every point's result."""
    run = Path(settings.run)
    if not (run / EXPORT / "config.yaml").is_file():
        raise ValueError(f"{run / EXPORT} is missing: the guidance sweep needs a finished run")
    config = load_config(run / EXPORT / "config.yaml")
    if not samples_with_true_cfg(config.backbone.path):
        raise ValueError(
            f"{config.backbone.path} has a guidance embedding (FLUX.1-dev): it samples at train.sample.guidance "
            "and ignores the true-CFG text and mask scales the sweep varies"
        )
    evaluators = settings.evaluators or config.eval.evaluators
    probe_n = settings.n if settings.probe_n is None else settings.probe_n
    for point in points(settings):
        folder = point_dir(settings, point)
        link = folder / EXPORT
        if not link.exists():
            folder.mkdir(parents=True, exist_ok=True)
            os.symlink(Path("..") / ".." / EXPORT, link, target_is_directory=True)
        sample = _sample_values(settings, point)
        if not evaluated(folder / "eval" / "test.json", (point.mode,), settings.n, sample):
            evaluate_run(
                EvalSettings(
                    run=str(folder),
                    n=settings.n,
                    modes=(point.mode,),
                    steps=settings.sample_steps,
                    evaluators=evaluators,
                    kid_subset_size=config.eval.metrics.kid_subset_size,
                    cache_dir=settings.cache_dir,
                    overrides=point.overrides,
                )
            )
        probe = folder / PROBE
        if scorer is not None and probe_n != 0 and not probed(probe, (point.mode,), probe_n, sample):
            probe_settings = ProbeSettings(
                probe_n, (point.mode,), settings.sample_steps, overrides=point.overrides
            )
            atomic_write_json(probe, probe_run(folder, probe_settings, scorer), indent=1)
    return read_sweep(settings)


def read_sweep(settings: SweepSettings) -> list[PointResult]:
    """The points evaluated so far, in `points` order."""
    results = []
    for point in points(settings):
        folder = point_dir(settings, point)
        sample = _sample_values(settings, point)
        report = folder / "eval" / "test.json"
        if not evaluated(report, (point.mode,), settings.n, sample):
            continue
        attributes = None
        if probed(folder / PROBE, (point.mode,), None, sample):
            attributes = json.loads((folder / PROBE).read_text())["modes"][point.mode]["attributes"]
        results.append(PointResult(point, json.loads(report.read_text())[point.mode], attributes))
    return results
