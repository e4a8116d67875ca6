"""Stage-2 training as a library: the Trainer, its callbacks and logger from a Config, and `train`.

`python -m experiments.train` is its command line; the ablation study calls `train` for each run.
The run directory (`run_dir`) holds:
    config.yaml               the resolved config
    checkpoints/last.ckpt     Lightning checkpoint for exact resume (+ step-NNNNNN.ckpt every N steps)
    checkpoints/requeue.ckpt  written when SIGUSR1 stops the run for a requeue (callbacks/requeue.py)
    export/                   LoRA + MoGLE + config for sampling (experiments/run_io.py)
    logs/ or wandb/           the logger's files
"""

from __future__ import annotations

import os
import warnings
from dataclasses import asdict
from pathlib import Path

import lightning as L
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, WandbLogger

from callbacks.export import ExportCallback
from callbacks.generation_eval import GenerationEvaluator
from callbacks.requeue import RequeueOnSignal
from data_modules.datamodule import FaceDataModule
from experiments.build import build_module
from experiments.config import Config, to_yaml
from experiments.run_io import export_run
from experiments.strategy import make_strategy
from facemogle.metrics.suite import build_generation_metrics

CHECKPOINTS = "checkpoints"
REQUEUE_CHECKPOINT = "requeue.ckpt"

# data_modules.resumable skips the batches a resumed epoch already trained on, which Lightning cannot see.
warnings.filterwarnings(
    "ignore", message="You're resuming from a checkpoint that ended before the epoch ended"
)


def make_logger(config: Config):
    run_dir, cfg = Path(config.run_dir), config.logger
    if cfg.kind == "none":
        return False
    if cfg.kind == "csv":
        return CSVLogger(run_dir, name="logs")  # logs/version_N: a resumed run does not overwrite
    offline = "WANDB_API_KEY" not in os.environ or os.environ.get("WANDB_MODE") == "offline"
    return WandbLogger(
        project=cfg.project,
        name=cfg.name or run_dir.name,
        save_dir=run_dir,
        offline=offline,
        config=asdict(config),
    )


class FinalLastCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose last.ckpt also holds the final step. Lightning writes `last` only on the
    every-N-steps schedule (its own end-of-training save is skipped once any `last` exists), so with
    max_steps not a multiple of N the final steps would be in no checkpoint."""

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if self.save_last and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


def make_callbacks(config: Config) -> list[L.Callback]:
    run_dir = Path(config.run_dir)
    callbacks = [
        FinalLastCheckpoint(
            dirpath=run_dir / CHECKPOINTS,
            filename="step-{step:06d}",
            auto_insert_metric_name=False,
            every_n_train_steps=config.trainer.checkpoint_every_n_steps,
            save_top_k=-1,
            save_last=True,
        ),
        ExportCallback(lambda denoiser, weights: export_run(run_dir, config, denoiser, weights)),
        RequeueOnSignal(run_dir / CHECKPOINTS / REQUEUE_CHECKPOINT),
    ]
    if config.logger.kind != "none":
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    if config.eval.enabled:
        e = config.eval
        callbacks.append(
            GenerationEvaluator(lambda: build_generation_metrics(e.evaluators, e.metrics), e.callback)
        )
    return callbacks


def make_trainer(config: Config, extra_callbacks: list[L.Callback] | None = None) -> L.Trainer:
    t = config.trainer
    return L.Trainer(
        default_root_dir=config.run_dir,
        max_steps=t.max_steps,
        precision=t.precision,
        accumulate_grad_batches=t.accumulate_grad_batches,
        gradient_clip_val=t.gradient_clip_val,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=make_strategy(t),
        # srun starts the processes; requeueing is RequeueOnSignal's (see callbacks/requeue.py)
        plugins=[SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else None,
        # data_modules.resumable splits the training order by rank itself; a DistributedSampler around it
        # would split it again (and break mid-epoch resume)
        use_distributed_sampler=False,
        log_every_n_steps=t.log_every_n_steps,
        val_check_interval=t.val_check_interval,
        check_val_every_n_epoch=None if t.val_check_interval else 1,
        logger=make_logger(config),
        callbacks=make_callbacks(config) + list(extra_callbacks or []),
        enable_progress_bar=t.progress_bar,
        enable_model_summary=False,
    )


def last_checkpoint(config: Config) -> Path | None:
    """The newer of checkpoints/last.ckpt (periodic) and checkpoints/requeue.ckpt (a requeue signal): files,
    or folders of shards (trainer.strategy=fsdp) whose meta.pt rank 0 writes last."""
    folder = Path(config.run_dir) / CHECKPOINTS
    found = [p / "meta.pt" if p.is_dir() else p for p in (folder / "last.ckpt", folder / REQUEUE_CHECKPOINT)]
    found = [p for p in found if p.is_file()]
    newest = max(found, key=lambda p: p.stat().st_mtime_ns, default=None)
    return newest.parent if newest is not None and newest.name == "meta.pt" else newest


def train(config: Config, resume: bool = False, extra_callbacks: list[L.Callback] | None = None) -> L.Trainer:
    L.seed_everything(config.seed, workers=True)
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(to_yaml(config))
    module = build_module(config)
    data = FaceDataModule(config.data, module.backbone)
    trainer = make_trainer(config, extra_callbacks)
    trainer.fit(module, datamodule=data, ckpt_path=last_checkpoint(config) if resume else None)
    if isinstance(trainer.logger, WandbLogger):
        # close the W&B run: wandb keeps one global run per process, and a later WandbLogger in this process
        # (the next ablation variant, another test) would otherwise log into this one
        trainer.logger.experiment.finish()
    return trainer
