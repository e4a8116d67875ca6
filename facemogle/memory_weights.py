"""The exact bytes of a step's weights, gradients and optimizer state, counted from the models built on the
meta device (facemogle.memory_plan)."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, FluxTransformer2DModel
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

from facemogle.lora import add_lora
from facemogle.memory_sizes import (
    BNB_BLOCK,
    BNB_MIN_8BIT_SIZE,
    DTYPE_BYTES,
    OPTIMIZER_STATES,
    QUANT_BYTES,
    Architecture,
    MemorySettings,
    memo,
)
from facemogle.mogle import MoGLE


def meta_models(arch: Architecture) -> dict[str, nn.Module]:
    """The backbone's four models on the meta device: their parameters have shapes and no storage."""
    with torch.device("meta"):
        return {
            "transformer": FluxTransformer2DModel.from_config(arch.transformer),
            "text_encoder_2": T5EncoderModel(T5Config(**arch.text_encoder_2)),
            "text_encoder": CLIPTextModel(CLIPTextConfig(**arch.text_encoder)),
            "vae": AutoencoderKL.from_config(arch.vae),
        }


def module_bytes(module: nn.Module, dtype: torch.dtype, quantization: str) -> int:
    """Bytes of the module's parameters and buffers in dtype, its nn.Linear weights quantised; a tied weight
    (T5's shared embedding) once."""
    total, width, seen = 0, DTYPE_BYTES[dtype], set()
    for m in module.modules():
        for name, p in m.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            if quantization != "none" and isinstance(m, nn.Linear) and name == "weight":
                rows = m.out_features if quantization == "int8" else 1 if quantization == "fp8" else 0
                total += int(p.numel() * QUANT_BYTES[quantization]) + 4 * rows
            else:
                total += p.numel() * width
        total += sum(b.numel() * b.element_size() for b in m.buffers(recurse=False))
    return total


def frozen_weight_bytes(arch: Architecture, s: MemorySettings) -> int:
    """Transformer, CLIP and VAE always (the LightningModule holds them), T5 when the text path has it on the
    device."""
    key = (
        "frozen",
        repr(arch),
        s.frozen_dtype,
        s.transformer_quantization,
        s.text_encoder_2_quantization,
        s.text_path,
    )

    def count() -> int:
        models = meta_models(arch)
        total = module_bytes(models["transformer"], s.frozen_dtype, s.transformer_quantization)
        for name in ("text_encoder", "vae"):
            total += module_bytes(models[name], s.frozen_dtype, "none")
        if s.text_path != "cpu":
            total += module_bytes(models["text_encoder_2"], s.frozen_dtype, s.text_encoder_2_quantization)
        return total

    return memo(key, count)


def trainable_numels(arch: Architecture, s: MemorySettings) -> tuple[int, ...]:
    """The element count of every trainable tensor: LoRA's A and B of each targeted layer, MoGLE's."""

    def count() -> tuple[int, ...]:
        with torch.device("meta"):
            transformer = FluxTransformer2DModel.from_config(arch.transformer)
            transformer.requires_grad_(False)
            add_lora(transformer, s.lora)
            lora = [p.numel() for p in transformer.parameters() if p.requires_grad]
            return (*lora, *(p.numel() for p in MoGLE(s.mogle).parameters()))

    return memo(("trainable", repr(arch), repr(s.lora), repr(s.mogle)), count)


def optimizer_bytes(numels: tuple[int, ...], width: int, optimizer: str) -> int:
    if optimizer == "adamw8bit":
        return sum(
            2 * n + 2 * 4 * -(-n // BNB_BLOCK) if n >= BNB_MIN_8BIT_SIZE else 2 * 4 * n for n in numels
        )
    return sum(OPTIMIZER_STATES[optimizer] * n * width for n in numels)


def dequantized_transient(arch: Architecture, s: MemorySettings) -> int:
    """A quantised layer dequantises its weight for the matmul: the largest one, in the compute dtype."""
    if s.transformer_quantization == "none":
        return 0
    c = arch.transformer
    inner = c["attention_head_dim"] * c["num_attention_heads"]
    return inner * 4 * inner * DTYPE_BYTES[s.frozen_dtype]  # the feed-forward's (inner, 4 inner) weight
