"""Training the small evaluator models (the face parser, then the CLIP) and their report; the command line is
`python -m experiments.train_evaluators` (its docstring lists the run directory and what is reported)."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import WandbLogger

from data_modules.evaluator_data import EvaluatorDataModule, SplitFaces
from experiments.config.load import to_yaml
from experiments.config.schema import EvaluatorsConfig
from experiments.training.trainer import stage_loggers, stage_trainer
from facemogle.atomic import atomic_dir, atomic_write_json, atomic_write_text
from facemogle.evaluators import build_small_clip, build_small_parser, save_clip, save_face_parser
from facemogle.evaluators.lit_modules import ClipModule, FaceParserModule, class_weights
from facemogle.face_parts import PARTS
from facemogle.tiny_tokenizers import build_clip_tokenizer

STAGES = ("parser", "clip")


def fit_and_test(
    module: L.LightningModule, data: EvaluatorDataModule, trainer: L.Trainer
) -> tuple[dict[str, float], float]:
    """-> the test split's logged scores, and the seconds training took."""
    start = time.monotonic()
    trainer.fit(module, datamodule=data)
    seconds = time.monotonic() - start
    (scores,) = trainer.test(module, datamodule=data, verbose=False)
    return scores, seconds


def parser_report(scores: dict[str, float]) -> dict:
    return {
        "miou": scores["parser/test/miou"],
        "pixel_acc": scores["parser/test/pixel_acc"],
        "per_class_iou": {part: scores[f"parser/test/iou/{part}"] for part in PARTS},
    }


def clip_report(scores: dict[str, float]) -> dict:
    prefix = "clip/test/"
    report = {k[len(prefix) :]: v for k, v in scores.items() if k.startswith(prefix)}
    report["retrieval_groups"] = int(report["retrieval_groups"])
    return report


def train_evaluators(config: EvaluatorsConfig) -> dict:
    """Train the parser, then the CLIP; save both and write RUN_DIR/report.json, which is returned."""
    L.seed_everything(config.seed)
    run_dir = Path(config.run_dir)
    atomic_write_text(run_dir / "config.yaml", to_yaml(config))
    faces = SplitFaces.load(config.data)
    loggers = stage_loggers(config, STAGES)
    test_batch = config.data.test_batch_size
    try:
        p = config.parser
        parser = FaceParserModule(
            build_small_parser(p.model, seed=config.seed), class_weights(faces.train.labels), p.train
        )
        parser_data = EvaluatorDataModule(
            faces, p.batch_size, p.max_blur, config.seed, test_batch_size=test_batch
        )
        parser_trainer = stage_trainer(config, "parser", p.steps, loggers["parser"], limit_val_batches=0)
        parser_scores, parser_seconds = fit_and_test(parser, parser_data, parser_trainer)

        c = config.clip
        tokenizer = build_clip_tokenizer(corpus=[t for caps in faces.train.captions for t in caps])
        clip = ClipModule(build_small_clip(tokenizer, c.model, seed=config.seed), c.train, seed=config.seed)
        # a stream of its own (seed + 1), not a replay of the parser's draws
        clip_data = EvaluatorDataModule(
            faces, c.batch_size, c.max_blur, config.seed + 1, contrastive=True, test_batch_size=test_batch
        )
        clip_trainer = stage_trainer(config, "clip", c.steps, loggers["clip"], limit_val_batches=0)
        clip_scores, clip_seconds = fit_and_test(clip, clip_data, clip_trainer)
    finally:
        for logger in set(loggers.values()):
            if isinstance(logger, WandbLogger):
                # wandb keeps one global run per process: a later WandbLogger here would log into this one
                logger.experiment.finish()

    with atomic_dir(run_dir / "parser") as tmp:
        save_face_parser(parser.parser.cpu(), tmp)
    with atomic_dir(run_dir / "clip") as tmp:
        save_clip(clip.clip.cpu(), tmp)
    report = {
        "data": config.data.root,
        "config": asdict(config),
        "train_faces": len(faces.train),
        "test_faces": len(faces.test),
        "parser": parser_report(parser_scores),
        "clip": clip_report(clip_scores),
        "seconds": {"parser": round(parser_seconds, 1), "clip": round(clip_seconds, 1)},
    }
    atomic_write_json(run_dir / "report.json", report, indent=2)
    return report


def summary(report: dict, run_dir: str) -> str:
    p, c = report["parser"], report["clip"]
    lines = ["face parser, test split: IoU per class (mean over the images where the class is present)"]
    lines += [f"  {part:10s} {iou:.3f}" for part, iou in p["per_class_iou"].items()]
    lines += [
        f"  overall mIoU (per image, averaged) {p['miou']:.3f}",
        f"  pixel accuracy {p['pixel_acc']:.3f}",
        "CLIP, test split",
        f"  own caption above a random other image's caption: {c['pairwise_accuracy']:.3f}",
        f"  image->text recall@1 / @5 among 100: {c['recall_at_1_of_100']:.3f} / {c['recall_at_5_of_100']:.3f}",
        f"saved {run_dir}/parser, {run_dir}/clip, {run_dir}/report.json "
        f"(training: parser {report['seconds']['parser']:.0f} s, CLIP {report['seconds']['clip']:.0f} s)",
    ]
    return "\n".join(lines)
