"""The one Trainer factory (`build_trainer`) every stage's Trainer comes from: stage 2
(experiments.training.run.make_trainer), and the runs made of stages trained one after another on one
device (`stage_trainer`): stage 1 (the VAE, then the FLUX transformer) and the evaluators (the parser, then
the CLIP). Each of those stages keeps its own last.ckpt; they share one W&B run (their metrics are prefixed
STAGE/), while CSV logs go apart, as each stage's steps count from 0."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import Logger, WandbLogger

from callbacks.checkpoints import AtomicCheckpointIO, FinalLastCheckpoint
from experiments.training.loggers import make_logger

CHECKPOINTS = "checkpoints"


def stage_loggers(config, stages: Sequence[str]) -> dict[str, Logger | bool]:
    """`config.logger`'s logger for each stage (config: PretrainConfig or EvaluatorsConfig)."""
    if config.logger.kind == "csv":
        return {stage: make_logger(config, csv_name=f"logs/{stage}") for stage in stages}
    shared = make_logger(config)
    if isinstance(shared, WandbLogger):
        shared.experiment  # noqa: B018  start the run now, so its start-up is not in the first stage's seconds
    return dict.fromkeys(stages, shared)


def build_trainer(
    run_dir: str | Path,
    t,
    max_steps: int,
    logger: Logger | bool,
    callbacks: list[L.Callback],
    plugins: list,
    **trainer_kwargs,
) -> L.Trainer:
    """A Trainer for `max_steps` steps from `t` (a TrainerConfig or StageTrainerConfig): its precision,
    accelerator, logging interval and progress bar; `trainer_kwargs` are the stage's own (devices, strategy)."""
    return L.Trainer(
        default_root_dir=run_dir,
        max_steps=max_steps,
        precision=t.precision,
        accelerator=t.accelerator,
        plugins=plugins,
        logger=logger,
        callbacks=callbacks,
        log_every_n_steps=t.log_every_n_steps,
        enable_progress_bar=t.progress_bar,
        enable_model_summary=False,
        **trainer_kwargs,
    )


def stage_trainer(
    config, stage: str, steps: int, logger: Logger | bool, lr_monitor: bool = True, **trainer_kwargs
) -> L.Trainer:
    """A one-device Trainer from `config.trainer` (a StageTrainerConfig) for `steps` steps of `stage`."""
    t = config.trainer
    callbacks: list[L.Callback] = [
        FinalLastCheckpoint(
            dirpath=Path(config.run_dir) / CHECKPOINTS / stage,
            every_n_train_steps=t.checkpoint_every_n_steps,
            save_top_k=0,
            save_last=True,
            enable_version_counter=False,  # a new run replaces the last one's last.ckpt
        )
    ]
    if logger and lr_monitor:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    return build_trainer(
        config.run_dir, t, steps, logger, callbacks, [AtomicCheckpointIO()], devices=1, **trainer_kwargs
    )
