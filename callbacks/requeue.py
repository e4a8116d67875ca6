"""Checkpoint and stop when the cluster warns that the job is about to end, so that it can be requeued; and
the same, without a requeue, when the run is told to stop (SIGTERM, SIGINT).

SLURM sends the warning with `sbatch --signal=USR1@SECONDS` (before the time limit; at preemption too where
the cluster sets `preempt_send_user_signal`). The handler only sets a flag: the checkpoint is written at the
next optimizer-step boundary, where the state is the one an ordinary checkpoint holds, the ranks agree on
that step through one all-reduce, and the run stops with exit status 75 (EX_TEMPFAIL). The batch script
(experiments/slurm/run.sh) requeues the job on that status, and the restarted job resumes from the newest
checkpoint.

SIGTERM (what a cluster, a container runtime or `kill` sends first) and SIGINT (Ctrl-C) take the same path:
the step in progress finishes, the checkpoint is written, and the process exits with 128 + the signal's
number (143, 130), not 0, so that nothing takes the stopped run for a finished one; `--resume` continues
it exactly. Lightning's own SIGTERM handling stops at the next step without a checkpoint and exits 0, and
its Ctrl-C handling raises KeyboardInterrupt mid-step; this callback's handlers replace both while training.
A second Ctrl-C before the step ends interrupts at once, as Ctrl-C always did.

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
# the signal that stops the run -> its exit status: the requeue's, else the shell's 128 + N for "killed by N"
STOP_SIGNALS = {
    signal.SIGUSR1: REQUEUE_EXIT_CODE,
    signal.SIGTERM: 128 + signal.SIGTERM,
    signal.SIGINT: 128 + signal.SIGINT,
}


class StoppedForRequeue(SystemExit):
    """Raised on every rank once the checkpoint is written; the process exits with the signal's status
    (REQUEUE_EXIT_CODE for the requeue signal)."""

    def __init__(self, checkpoint: Path, step: int, code: int = REQUEUE_EXIT_CODE):
        super().__init__(code)
        self.checkpoint, self.step = checkpoint, step


class RequeueOnSignal(L.Callback):
    def __init__(self, checkpoint: str | Path, signals: dict[signal.Signals, int] | None = None):
        """signals: each signal handled -> the exit status it stops with (default STOP_SIGNALS)."""
        self.checkpoint = Path(checkpoint)
        self.signals = dict(STOP_SIGNALS if signals is None else signals)
        self.received: signal.Signals | None = None
        self._previous_handlers: dict[signal.Signals, object] = {}
        self._step_at_batch_start = 0

    def _on_signal(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.received == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: the user does not want to wait for the step
        self.received = signal.Signals(signum)  # nothing else here: the work happens at the step boundary

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after Lightning's signal connector has recorded the handlers it restores at the end of the run
        if threading.current_thread() is threading.main_thread():
            self.received = None
            for signum in self.signals:
                self._previous_handlers[signum] = signal.signal(signum, self._on_signal)

    def on_train_batch_start(self, trainer: L.Trainer, *args) -> None:
        self._step_at_batch_start = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        if trainer.global_step == self._step_at_batch_start:
            return  # inside a gradient-accumulation window: not a step boundary
        if not trainer.strategy.reduce_boolean_decision(self.received is not None, all=False):
            return
        trainer.save_checkpoint(self.checkpoint)
        # a rank the signal did not reach (it was sent to one process) stops with the requeue's status
        code = self.signals.get(self.received, REQUEUE_EXIT_CODE)
        raise StoppedForRequeue(self.checkpoint, trainer.global_step, code)

    def _restore_handler(self) -> None:
        for signum, previous in self._previous_handlers.items():
            signal.signal(signum, previous)
        self._previous_handlers = {}

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._restore_handler()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore_handler()
