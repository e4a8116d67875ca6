"""Checkpoint and stop when the cluster warns that the job is about to end, so that it can be requeued.

SLURM sends the warning with `sbatch --signal=USR1@SECONDS` (before the time limit; at preemption too where
the cluster sets `preempt_send_user_signal`). The handler only sets a flag: the checkpoint is written at the
next optimizer-step boundary, where the state is the one an ordinary checkpoint holds, the ranks agree on
that step through one all-reduce, and the run stops with exit status 75 (EX_TEMPFAIL). The batch script
(experiments/slurm/run.sh) requeues the job on that status, and the restarted job resumes from the newest
checkpoint.

Lightning's own `SLURMEnvironment(auto_requeue=True)` saves inside the signal handler, i.e. at whatever
point of a training step the signal lands (a mid-step state, a barrier racing the step's collectives;
Lightning issue #21406), so experiments.training.run turns it off and uses this callback instead.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import lightning as L

REQUEUE_EXIT_CODE = os.EX_TEMPFAIL


class StoppedForRequeue(SystemExit):
    """Raised on every rank once the checkpoint is written; the process exits with REQUEUE_EXIT_CODE."""

    def __init__(self, checkpoint: Path, step: int):
        super().__init__(REQUEUE_EXIT_CODE)
        self.checkpoint, self.step = checkpoint, step


class RequeueOnSignal(L.Callback):
    def __init__(self, checkpoint: str | Path, signum: signal.Signals = signal.SIGUSR1):
        self.checkpoint = Path(checkpoint)
        self.signum = signum
        self.received = False
        self._previous_handler = None
        self._step_at_batch_start = 0

    def _on_signal(self, signum, frame) -> None:
        self.received = True  # nothing else here: the work happens at the next step boundary

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after Lightning's signal connector has recorded the handlers it restores at the end of the run
        if threading.current_thread() is threading.main_thread():
            self.received = False
            self._previous_handler = signal.signal(self.signum, self._on_signal)

    def on_train_batch_start(self, trainer: L.Trainer, *args) -> None:
        self._step_at_batch_start = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        if trainer.global_step == self._step_at_batch_start:
            return  # inside a gradient-accumulation window: not a step boundary
        if not trainer.strategy.reduce_boolean_decision(self.received, all=False):
            return
        trainer.save_checkpoint(self.checkpoint)
        raise StoppedForRequeue(self.checkpoint, trainer.global_step)

    def _restore_handler(self) -> None:
        if self._previous_handler is not None:
            signal.signal(self.signum, self._previous_handler)
            self._previous_handler = None

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._restore_handler()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore_handler()
