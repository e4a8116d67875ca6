"""trainer.strategy -> what Lightning's Trainer gets.

Several processes ("ddp", or "auto" with more than one device in all) train with DDP and a static graph:
the condition tokens' output of the last single-stream block is never read, so the LoRA weights of that
block's MLP never get a gradient, and plain DDP stops at the first step ("parameters that were not used in
producing the loss"). The unused set is the same in every step, which is what `static_graph` needs; it
costs nothing per step, unlike `find_unused_parameters`, which walks the autograd graph every step.
Any other value ("auto" on one device, "ddp_spawn", "deepspeed", ...) goes to Lightning as it is.
"""

from __future__ import annotations

import os

import torch
from lightning.pytorch.strategies import DDPStrategy, Strategy

from experiments.config import TrainerConfig


def make_strategy(t: TrainerConfig) -> str | Strategy:
    if t.strategy == "ddp" or (t.strategy == "auto" and process_count(t) > 1):
        return DDPStrategy(static_graph=True)
    return t.strategy


def process_count(t: TrainerConfig) -> int:
    """Processes the run will have: devices per node x nodes, `auto` / -1 resolved as Lightning does
    (SLURM's tasks inside a SLURM step, else every visible GPU, else one CPU process)."""
    devices = t.devices
    if isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        devices = int(devices)
    if isinstance(devices, (list, tuple)):
        return len(devices) * t.num_nodes
    if isinstance(devices, int) and devices > 0:
        return devices * t.num_nodes
    if devices in ("auto", -1):
        if "SLURM_NTASKS" in os.environ:
            return int(os.environ["SLURM_NTASKS"])
        gpus = torch.cuda.device_count() if t.accelerator in ("auto", "gpu", "cuda") else 0
        return max(gpus, 1) * t.num_nodes
    raise ValueError(f"trainer.devices={t.devices!r}: expected a positive int, a list of ids, 'auto' or -1")
