"""`python -m tests.fsdp_worker CONFIG OUT [--resume] [--kill-at STEP]`, run by tests/test_train_fsdp.py with
trainer.devices=2: Lightning's launcher starts rank 1 with the same command. Each rank trains through
experiments.training.run and saves to OUT/rankN.pt its loss per step, the gathered trainable weights at the start and the end,
how many elements of each frozen transformer weight it holds, and the generation metrics (with eval.enabled)."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from lightning import Callback
from torch.distributed.tensor import DTensor

from callbacks.generation_eval import GenerationEvaluator
from experiments.config.load import load_config
from experiments.training.run import train
from facemogle.sharding import trainable_state_dict
from tests.run_fixtures import KillAt


def held_elements(module: torch.nn.Module) -> dict[str, tuple[int, int]]:
    """Frozen parameter name -> (elements this rank holds, elements of the whole tensor)."""
    return {
        n: ((p.to_local() if isinstance(p, DTensor) else p).numel(), p.numel())
        for n, p in module.named_parameters()
        if not p.requires_grad
    }


class RecordRank(Callback):
    def __init__(self, out: Path):
        self.out = out
        self.losses: dict[int, float] = {}
        self.initial: dict[str, torch.Tensor] = {}

    def on_train_start(self, trainer, pl_module):
        # copies: unsharded on the CPU, the state dict holds the live parameters themselves
        self.initial = {k: v.clone() for k, v in trainable_state_dict(pl_module).items()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses[trainer.global_step] = float(outputs["loss"])

    def on_train_end(self, trainer, pl_module):
        evaluator = next((c for c in trainer.callbacks if isinstance(c, GenerationEvaluator)), None)
        record = {
            "world_size": trainer.world_size,
            "global_step": trainer.global_step,
            "losses": self.losses,
            "initial": self.initial,
            "final": trainable_state_dict(pl_module),  # every rank gathers
            "held": held_elements(pl_module.denoiser.transformer),
            "metrics": evaluator.last if evaluator else None,
        }
        torch.save(record, self.out / f"rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("config")
    p.add_argument("out", type=Path)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--kill-at", type=int)
    args = p.parse_args()
    callbacks = [RecordRank(args.out)] + ([KillAt(args.kill_at)] if args.kill_at is not None else [])
    train(load_config(args.config), resume=args.resume, extra_callbacks=callbacks)
