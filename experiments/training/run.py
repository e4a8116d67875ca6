"""Stage-2 training as a library: the Trainer, its callbacks and logger from a Config, and `train`.

`python -m experiments.train` is its command line; the ablation study calls `train` for each run.
The run directory (`run_dir`) holds:
    config.yaml               the resolved config
    checkpoints/last.ckpt     Lightning checkpoint for exact resume (+ step-NNNNNN.ckpt every N steps)
    checkpoints/requeue.ckpt  written when SIGUSR1 (a requeue), SIGTERM or SIGINT stops the run (callbacks/requeue.py)
    export/                   LoRA + MoGLE + config for sampling (experiments/runs/io.py)
    resume_log.jsonl          one line per --resume: its checkpoint and the keys changed (experiments/runs/resume.py)
    logs/ or wandb/           the logger's files
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lightning as L
from filelock import FileLock, Timeout
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from callbacks.checkpoints import AtomicCheckpointIO, FinalLastCheckpoint
from callbacks.export import ExportCallback
from callbacks.generation_eval import GenerationEvaluator
from callbacks.requeue import RequeueOnSignal
from data_modules.datamodule import FaceDataModule
from experiments.config.checks import check_config
from experiments.config.load import Sources, to_yaml
from experiments.config.schema import Config
from experiments.runs.checkpoints import newest_checkpoint
from experiments.runs.io import export_run
from experiments.runs.resume import check_resume, record_resume
from experiments.training.build import build_module
from experiments.training.loggers import make_logger
from experiments.training.memory import check_memory
from experiments.training.strategy import make_strategy
from experiments.training.trainer import build_trainer
from facemogle.atomic import atomic_write_text
from facemogle.metrics.suite import build_generation_metrics

CHECKPOINTS = "checkpoints"
REQUEUE_CHECKPOINT = "requeue.ckpt"
log = logging.getLogger(__name__)

# data_modules.resumable skips the batches a resumed epoch already trained on, which Lightning cannot see.
warnings.filterwarnings(
    "ignore", message="You're resuming from a checkpoint that ended before the epoch ended"
)


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


def plugins(config: Config) -> list:
    # FSDP writes its own sharded folders (experiments.training.strategy.FSDP2Strategy); everything else a file
    found = [] if config.trainer.strategy == "fsdp" else [AtomicCheckpointIO()]
    if SLURMEnvironment.detect():  # srun starts the processes; requeueing is RequeueOnSignal's
        found.append(SLURMEnvironment(auto_requeue=False))
    return found


def make_trainer(config: Config, extra_callbacks: list[L.Callback] | None = None) -> L.Trainer:
    t = config.trainer
    return build_trainer(
        config.run_dir,
        t,
        t.max_steps,
        make_logger(config),
        make_callbacks(config) + list(extra_callbacks or []),
        plugins(config),
        accumulate_grad_batches=t.accumulate_grad_batches,
        gradient_clip_val=t.gradient_clip_val,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=make_strategy(t),
        # data_modules.resumable splits the training order by rank itself; a DistributedSampler around it
        # would split it again (and break mid-epoch resume)
        use_distributed_sampler=False,
        val_check_interval=t.val_check_interval,
        check_val_every_n_epoch=None if t.val_check_interval else 1,
    )


def last_checkpoint(config: Config) -> Path | None:
    """The newest checkpoint of the run that loads (experiments.runs.checkpoints.newest_checkpoint)."""
    return newest_checkpoint(Path(config.run_dir) / CHECKPOINTS)


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Held while a run trains, so a second training of the same run_dir stops at once. The OS drops a
    flock when its process dies, so a crash cannot leave the run locked. Only the launching process (rank 0,
    or no rank yet) takes it: the ranks Lightning or srun start share the run."""
    if rank_zero_only.rank != 0:
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(run_dir / ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ValueError(f"run_dir={run_dir} is in use by another training process") from None
    try:
        yield
    finally:
        lock.release()


def check_fresh(config: Config, resume: bool) -> None:
    """A new run never writes into another run's checkpoints and export."""
    folder = Path(config.run_dir) / CHECKPOINTS
    if not resume and folder.is_dir() and any(folder.glob("*.ckpt")):
        raise ValueError(
            f"run_dir={config.run_dir} holds the checkpoints of an earlier run: continue it with --resume, "
            "or give another run_dir"
        )


def train(
    config: Config,
    resume: bool = False,
    extra_callbacks: list[L.Callback] | None = None,
    sources: Sources | None = None,
) -> L.Trainer:
    """sources: where the config's values came from, for the start-up checks' messages."""
    check_config(config, sources)
    run_dir = Path(config.run_dir)
    with run_lock(run_dir):
        check_fresh(config, resume)
        check_memory(config)  # before the backbone loads: a step that cannot fit stops here, not in an OOM
        changes = check_resume(config, run_dir / CHECKPOINTS) if resume else {}
        return _fit(config, resume, extra_callbacks, changes)


def _fit(
    config: Config, resume: bool, extra_callbacks: list[L.Callback] | None, changes: dict | None = None
) -> L.Trainer:
    L.seed_everything(config.seed, workers=True)
    run_dir = Path(config.run_dir)
    atomic_write_text(run_dir / "config.yaml", to_yaml(config))
    checkpoint = last_checkpoint(config) if resume else None
    module = build_module(config, init=checkpoint is None)  # a checkpoint holds the weights init_from gave
    data = FaceDataModule(config.data, module.backbone)
    trainer = make_trainer(config, extra_callbacks)
    if resume and checkpoint is None:
        log.warning("--resume: no checkpoint in %s loads: training starts at step 0", run_dir / CHECKPOINTS)
    elif resume:
        record_resume(config, checkpoint, changes or {})
    # data only (facemogle.data_only): Lightning's checkpoints hold tensors and plain values
    trainer.fit(module, datamodule=data, ckpt_path=checkpoint, weights_only=True)
    if isinstance(trainer.logger, WandbLogger):
        # close the W&B run: wandb keeps one global run per process, and a later WandbLogger in this process
        # (the next ablation variant, another test) would otherwise log into this one
        trainer.logger.experiment.finish()
    return trainer
