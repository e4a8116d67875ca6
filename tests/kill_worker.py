"""`python -m tests.kill_worker CONFIG STEP`: trains CONFIG and kill -9s itself half-way through writing the
first checkpoint after training step STEP, as a crash or an OOM kill would (tests/test_checkpoints.py)."""

from __future__ import annotations

import os
import signal
import sys

import torch
from lightning import Callback

from experiments.config.load import load_config
from experiments.training.run import train


class KillMidSave(Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step < self.step:
            return
        stock = torch.save

        def half_then_killed(obj, f, *a, **kw):
            stock(obj, f, *a, **kw)
            with open(f, "r+b") as out:
                out.truncate(os.path.getsize(f) // 2)
            os.kill(os.getpid(), signal.SIGKILL)

        torch.save = half_then_killed


if __name__ == "__main__":
    train(load_config(sys.argv[1]), extra_callbacks=[KillMidSave(int(sys.argv[2]))])
