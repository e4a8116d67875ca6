"""FSDP2 (`torch.distributed.fsdp.fully_shard`) for the denoiser, and its weights gathered back.

Units: each FLUX block (19 double- and 38 single-stream blocks in FLUX.1-dev) is one, MoGLE is one, and
the Denoiser holds the rest (embedders, output layers). A unit's parameters, frozen and trainable (the
LoRA inside a block), are split along dim 0 across the data-parallel ranks: each rank keeps 1/N of every
tensor, gathers the unit's weights just before the unit runs and frees them after, and keeps 1/N of the
averaged gradients (a reduce-scatter). The blocks run through `forward_streams`
(facemogle/flux_forward.py), registered as a forward method so that the gathering happens around it; so do
the sampler's calls that are not `forward`: MoGLE's `expert_outputs` and `mix`, the Denoiser's `predict`.

Weights are gathered in the dtype they are stored in (LoRA in backbone.dtype, MoGLE in float32, all of
them in bfloat16 with trainer.precision=bf16-true); gradients are averaged across ranks in float32. FSDP
wants one dtype among the trainable parameters of a unit, which is why MoGLE is a unit of its own.
"""

from __future__ import annotations

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method
from torch.distributed.tensor import DTensor

from facemogle.denoiser import Denoiser
from facemogle.flux_forward import install_condition_forward


def shard_denoiser(denoiser: Denoiser, mesh: DeviceMesh) -> None:
    """Shard block by block, then the rest; a denoiser sharded already is left as it is."""
    if isinstance(denoiser, FSDPModule):
        return
    tr = denoiser.transformer
    install_condition_forward(tr)
    policy = MixedPrecisionPolicy(reduce_dtype=torch.float32)
    for block in [*tr.transformer_blocks, *tr.single_transformer_blocks]:
        fully_shard(block, mesh=mesh, mp_policy=policy)
        register_fsdp_forward_method(block, "forward_streams")
    fully_shard(denoiser.mogle, mesh=mesh, mp_policy=policy)
    for method in ("expert_outputs", "mix"):
        register_fsdp_forward_method(denoiser.mogle, method)
    fully_shard(denoiser, mesh=mesh, mp_policy=policy)
    register_fsdp_forward_method(denoiser, "predict")


def is_sharded(module: torch.nn.Module) -> bool:
    return any(isinstance(p, DTensor) for p in module.parameters())


def trainable_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The module's trainable parameters and persistent buffers as whole tensors on every rank; the
    frozen parameters are left out. Collective when the module is sharded: every rank must call it."""
    if is_sharded(module):
        options = StateDictOptions(full_state_dict=True, ignore_frozen_params=True)
        return {k: v.detach().cpu() for k, v in get_model_state_dict(module, options=options).items()}
    frozen = {n for n, p in module.named_parameters() if not p.requires_grad}
    return {k: v.detach().cpu() for k, v in module.state_dict().items() if k not in frozen}
