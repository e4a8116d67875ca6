"""trainer.strategy -> what Lightning's Trainer gets.

Several processes ("ddp", or "auto" with more than one device in all) train with DDP and a static graph:
the condition tokens' output of the last single-stream block is never read, so the LoRA weights of that
block's MLP never get a gradient, and plain DDP stops at the first step ("parameters that were not used in
producing the loss"). The unused set is the same in every step, which is what `static_graph` needs; it
costs nothing per step, unlike `find_unused_parameters`, which walks the autograd graph every step. With
gradient accumulation (`trainer.accumulate_grad_batches` > 1, as the paper's config) DDP runs the first
micro-batches under `no_sync`, which a static graph does not survive (pytorch/pytorch#143580: an internal
assert at the first backward), so there it finds the unused parameters each step instead.
"fsdp" shards the FLUX transformer block by block with FSDP2 (facemogle/sharding.py) through Lightning's
`ModelParallelStrategy`, whose `configure_model` hook applies the sharding; it runs on GPUs and, with gloo,
on CPUs (Lightning's FSDP1 `FSDPStrategy` needs an accelerator). Every rank writes its shard of the
trainable weights and optimizer state (torch.distributed.checkpoint); see `FSDP2Strategy`.
Any other value ("auto" on one device, "ddp_spawn", "deepspeed", ...) goes to Lightning as it is.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.strategies.fsdp import _is_sharded_checkpoint
from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy, Strategy
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint import load as load_sharded
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from experiments.config.schema import TrainerConfig
from experiments.runs.checkpoints import METADATA_FILENAME
from facemogle.data_only import load_data


def make_strategy(t: TrainerConfig) -> str | Strategy:
    if t.strategy == "fsdp":
        return FSDP2Strategy(process_count(t))
    if t.strategy == "ddp" or (t.strategy == "auto" and process_count(t) > 1):
        if t.accumulate_grad_batches > 1:
            return DDPStrategy(find_unused_parameters=True)
        return DDPStrategy(static_graph=True)
    return t.strategy


class FSDP2Strategy(ModelParallelStrategy):
    """FSDP2 over all processes (no tensor parallelism); the LightningModule's `configure_model` shards.

    A checkpoint is a folder (`last.ckpt/`): `meta.pt` with the loops' and callbacks' state (rank 0), and
    torch.distributed.checkpoint's `.metadata` and one `__RANK_0.distcp` per rank with that rank's shard of
    the trainable weights, the MoGLE buffers and the optimizer state. Lightning's own saves and loads every
    weight of the model; the frozen backbone comes from backbone.path instead, so here a checkpoint holds
    and restores what the LightningModule's `on_save_checkpoint` keeps.
    """

    def __init__(self, world_size: int):
        super().__init__(data_parallel_size=world_size, tensor_parallel_size=1)

    def save_checkpoint(
        self, checkpoint: dict[str, Any], filepath, storage_options: Any | None = None
    ) -> None:
        """Every rank writes its shard into a temporary folder beside the target; rank 0 then swaps it in,
        so a checkpoint folder that exists is complete (a full disk or a kill mid-save leaves the old one)."""
        path = Path(self.broadcast(str(filepath)))
        tmp, old = path.with_name(f".{path.name}.tmp"), path.with_name(f".{path.name}.old")
        if self.global_rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        self.barrier("fsdp_checkpoint_tmp")
        super().save_checkpoint(checkpoint, tmp, storage_options)
        self.barrier("fsdp_checkpoint_written")
        if self.global_rank == 0:
            shutil.rmtree(old, ignore_errors=True)
            if path.exists():
                path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        self.barrier("fsdp_checkpoint_renamed")

    def lightning_module_state_dict(self) -> dict[str, Any]:
        options = StateDictOptions(ignore_frozen_params=True, cpu_offload=True)
        return get_model_state_dict(self.model, options=options)

    def load_checkpoint(self, checkpoint_path, weights_only: bool | None = None) -> dict[str, Any]:
        path = Path(self.broadcast(checkpoint_path))
        if not _is_sharded_checkpoint(path):
            raise ValueError(f"{path} is not a sharded checkpoint folder (with {METADATA_FILENAME})")
        saved = FileSystemReader(path).read_metadata().state_dict_metadata.keys()
        current = get_model_state_dict(self.model, options=StateDictOptions(ignore_frozen_params=True))
        weights = {k: v for k, v in current.items() if f"state_dict.{k}" in saved}
        trainable = [n for n, p in self.model.named_parameters() if p.requires_grad]
        missing = [n for n in trainable if n not in weights]
        if missing:
            raise ValueError(
                f"{path} lacks trainable weights {missing[:3]}: written for another model config?"
            )
        state = {"state_dict": weights}
        for i, optimizer in enumerate(self.optimizers):
            key = f"optimizer_{i}"
            state[key] = _held_in(get_optimizer_state_dict(self.model, optimizer), saved, key)
        load_sharded(state, checkpoint_id=path)
        partial = StateDictOptions(strict=False)  # the frozen weights; the state of never-trained params
        set_model_state_dict(self.model, weights, options=partial)
        for i, optimizer in enumerate(self.optimizers):
            set_optimizer_state_dict(self.model, optimizer, state[f"optimizer_{i}"], options=partial)
        return load_data(
            path / METADATA_FILENAME
        )  # data only, whatever the caller asks (facemogle.data_only)


def _held_in(optimizer_state: dict, saved, prefix: str) -> dict:
    """The optimizer state of the parameters that have one in the checkpoint: a parameter that never got a
    gradient (the last single block's MLP LoRA) has none there, but a fresh one here after
    get_optimizer_state_dict's zero-gradient, zero-lr step, which changes no weight."""
    held = {
        fqn: entry
        for fqn, entry in optimizer_state["state"].items()
        if all(f"{prefix}.state.{fqn}.{name}" in saved for name in entry)
    }
    return {**optimizer_state, "state": held}


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
