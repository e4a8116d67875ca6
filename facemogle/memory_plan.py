"""Predicted peak accelerator memory of one training step and one sampling step, without allocating the model.

    weights      every frozen parameter and buffer held on the device, counted exactly from the models built
                 on the meta device, at the bytes per weight of its dtype or quantisation (QUANT_BYTES), plus
                 the trainable LoRA and MoGLE parameters
    gradients    one gradient per trainable parameter (they persist across gradient-accumulation micro-batches)
    optimizer    the optimizer's state per trainable parameter (OPTIMIZER_STATES)
    activations  what the step itself allocates at its peak (saved activations, recomputation, temporaries,
                 the batch): torch's MemTracker following the real Denoiser's forward and backward under
                 FakeTensorMode, so nothing is allocated

Tracing FLUX.1-dev whole (57 blocks) takes minutes, and its blocks repeat, so the transformer is traced once at
full width with 2 double and 2 single blocks. The blocks entered one after the other show what each leaves
behind (its saved activations, or under gradient checkpointing its output alone); a deep transformer's step
peaks inside the blocks' backward, with every block's leavings alive, so each block beyond the traced ones
adds its leavings to that peak (19 and 38 blocks for FLUX.1-dev).

The sizes and settings are in facemogle.memory_sizes, the weights' count in memory_weights, the tracing in
memory_trace; this module adds them up and searches settings near a config's that fit.

Not counted: the CUDA context and allocator fragmentation (typically 0.5-1.5 GiB on top), the VAE decoding at
the end of sampling, and the T5 encoding's own activations (freed before the transformer runs, and far below
its peak).
"""

from __future__ import annotations

from dataclasses import replace

from facemogle.memory_sizes import DTYPE_BYTES, Architecture, MemoryPlan, MemorySettings, StepMemory
from facemogle.memory_trace import traced_activations
from facemogle.memory_weights import (
    dequantized_transient,
    frozen_weight_bytes,
    optimizer_bytes,
    trainable_numels,
)


def plan_memory(arch: Architecture, s: MemorySettings) -> MemoryPlan:
    frozen = frozen_weight_bytes(arch, s)
    trainable = trainable_numels(arch, s)
    width = DTYPE_BYTES[s.trainable_dtype]
    params = sum(trainable) * width
    grads = sum(trainable) * width
    transient = dequantized_transient(arch, s)
    training = StepMemory(
        weights=frozen + params,
        gradients=grads,
        optimizer=optimizer_bytes(trainable, width, s.optimizer),
        activations=traced_activations(arch, s, train=True) + transient,
    )
    sampling = StepMemory(
        weights=frozen + params,
        gradients=0,
        optimizer=0,
        activations=traced_activations(arch, s, train=False) + transient,
    )
    return MemoryPlan(training, sampling, s)


# --- what fits -----------------------------------------------------------------------------------------------


def candidates(s: MemorySettings) -> list[MemorySettings]:
    """Settings near `s`, in the order worth trying: the fewest changes first (checkpointing on, a smaller
    batch, a quantised base, the text embeddings cached, T5 in host memory, 8-bit AdamW)."""
    batches = sorted({s.batch, *(b for b in (4, 2, 1) if b < s.batch)}, reverse=True)
    found = []
    for quant in ("none", "int8", "nf4"):
        for text in dict.fromkeys([s.text_path, "cached", "cpu"]):
            for optimizer in dict.fromkeys([s.optimizer, "adamw8bit"]):
                for batch in batches:
                    for ckpt in dict.fromkeys([s.gradient_checkpointing, True]):
                        q = s.transformer_quantization if quant == "none" else quant
                        q5 = s.text_encoder_2_quantization if quant == "none" else quant
                        found.append(
                            replace(
                                s,
                                transformer_quantization=q,
                                text_encoder_2_quantization=q5,
                                text_path=text,
                                optimizer=optimizer,
                                batch=batch,
                                gradient_checkpointing=ckpt,
                            )
                        )
    unique = {repr(c): c for c in found}
    return sorted(unique.values(), key=lambda c: changes(s, c))


CHANGEABLE = (
    "gradient_checkpointing",
    "batch",
    "transformer_quantization",
    "text_encoder_2_quantization",
    "text_path",
    "optimizer",
)


def changes(a: MemorySettings, b: MemorySettings) -> tuple[int, int]:
    """How far b is from a: how many settings differ, then how much the batch shrank."""
    return (sum(getattr(a, k) != getattr(b, k) for k in CHANGEABLE), a.batch - b.batch)


def fitting(arch: Architecture, s: MemorySettings, free: int, limit: int = 3) -> list[MemoryPlan]:
    """Up to `limit` plans near `s` whose training step fits in `free` bytes, nearest first."""
    found = []
    for c in candidates(s):
        plan = plan_memory(arch, c)
        if plan.training.total <= free:
            found.append(plan)
            if len(found) == limit:
                break
    return found
