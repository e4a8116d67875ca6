"""`python -m tests.signal_worker CONFIG STEP`: trains CONFIG, and at the start of training step STEP writes
RUN_DIR/at-step and waits for a signal from outside (tests/test_requeue.py sends a real one)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from lightning import Callback

from callbacks.requeue import RequeueOnSignal
from experiments.config.load import load_config
from experiments.training.run import train
from facemogle.cli import run_cli


class WaitForSignalAt(Callback):
    def __init__(self, step: int, run_dir: Path):
        self.step, self.run_dir = step, run_dir

    def on_train_batch_start(self, trainer, *args):
        if trainer.global_step != self.step:
            return
        (self.run_dir / "at-step").write_text(str(self.step))
        [stopper] = [c for c in trainer.callbacks if isinstance(c, RequeueOnSignal)]
        deadline = time.monotonic() + 60
        while stopper.received is None and time.monotonic() < deadline:
            time.sleep(0.02)


if __name__ == "__main__":
    config = load_config(sys.argv[1])
    run_cli(lambda: train(config, extra_callbacks=[WaitForSignalAt(int(sys.argv[2]), Path(config.run_dir))]))
