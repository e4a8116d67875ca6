"""`python -m tests.ddp_worker CONFIG OUT`, run by tests/test_train_ddp.py with trainer.devices=2: Lightning's
DDP launcher starts rank 1 with the same command. Each rank trains, then saves its trainable weights (at the
start and the end) and its generation-metrics result to OUT/rankN.pt."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from lightning import Callback

from callbacks.generation_eval import GenerationEvaluator
from experiments.config.load import load_config
from experiments.training.run import train


def trainable(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}


class RecordRank(Callback):
    def __init__(self, out: Path):
        self.out = out
        self.initial: dict[str, torch.Tensor] = {}

    def on_train_start(self, trainer, pl_module):
        self.initial = trainable(pl_module)

    def on_train_end(self, trainer, pl_module):
        evaluator = next(c for c in trainer.callbacks if isinstance(c, GenerationEvaluator))
        record = {
            "world_size": trainer.world_size,
            "initial": self.initial,
            "final": trainable(pl_module),
            "metrics": evaluator.last,
        }
        torch.save(record, self.out / f"rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    config_file, out = sys.argv[1:3]
    train(load_config(config_file), extra_callbacks=[RecordRank(Path(out))])
