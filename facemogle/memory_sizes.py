"""The memory plan's inputs: the backbone's sizes (FLUX.1-dev's by default), the settings a step's peak depends
on, and the bytes by kind of a predicted step (facemogle.memory_plan)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from facemogle.flux_forward import ConditionSettings
from facemogle.lora import LoRASettings
from facemogle.mogle import MoGLEConfig

GiB = 2**30
QUANTIZATIONS = ("none", "int8", "nf4", "fp8")
OPTIMIZERS = ("adamw", "prodigy", "adamw8bit")
# Where T5 is and when it runs: on the accelerator encoding each step's captions (data.cache_text false); on the
# accelerator with the captions' embeddings cached; in host memory (backbone.t5_on_cpu)
TEXT_PATHS = ("encoded", "cached", "cpu")
DTYPE_BYTES = {torch.float32: 4, torch.bfloat16: 2, torch.float16: 2}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Bytes per quantised nn.Linear weight, and per output row or per tensor on top: bitsandbytes LLM.int8 keeps a
# float32 scale per row; NF4 an absmax per block of 64 (float32; double quantisation would make it ~8 bits);
# fp8 one float32 scale per tensor.
QUANT_BYTES = {"int8": 1.0, "nf4": 0.5 + 4 / 64, "fp8": 1.0}
# Optimizer state tensors per trainable parameter, each the parameter's size and dtype: AdamW's two moments,
# Prodigy's two moments, s and p0 (prodigyopt). AdamW8bit (bitsandbytes): two 8-bit moments plus a float32
# absmax per block of 256 for tensors of at least 4096 elements, two float32 moments for smaller ones.
OPTIMIZER_STATES = {"adamw": 2, "prodigy": 4}
BNB_MIN_8BIT_SIZE, BNB_BLOCK = 4096, 256
# (double, single) blocks traced: the last two of each kind show what one block leaves behind for the next
# (the first double block leaves less than the rest: its input was made before it)
BASE = (3, 2)

# FLUX.1-dev's configs (black-forest-labs/FLUX.1-dev, the config.json of each folder, sizes only).
FLUX_DEV_TRANSFORMER = {
    "patch_size": 1,
    "in_channels": 64,
    "num_layers": 19,
    "num_single_layers": 38,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,
    "pooled_projection_dim": 768,
    "guidance_embeds": True,
    "axes_dims_rope": [16, 56, 56],
}
FLUX_DEV_T5 = {
    "vocab_size": 32128,
    "d_model": 4096,
    "d_kv": 64,
    "d_ff": 10240,
    "num_layers": 24,
    "num_heads": 64,
    "feed_forward_proj": "gated-gelu",
}
FLUX_DEV_CLIP = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
}
FLUX_DEV_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "latent_channels": 16,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
}


@dataclass(frozen=True)
class Architecture:
    """The backbone's sizes: each folder's config.json (FluxTransformer2DModel, T5, CLIP, AutoencoderKL)."""

    transformer: dict = field(default_factory=lambda: dict(FLUX_DEV_TRANSFORMER))
    text_encoder_2: dict = field(default_factory=lambda: dict(FLUX_DEV_T5))
    text_encoder: dict = field(default_factory=lambda: dict(FLUX_DEV_CLIP))
    vae: dict = field(default_factory=lambda: dict(FLUX_DEV_VAE))

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae["block_out_channels"]) - 1)

    def image_tokens(self, resolution: int) -> int:
        side = resolution // self.vae_scale_factor // 2  # 2x2 latent patches per token
        return side * side


@dataclass
class MemorySettings:
    """Everything the peak depends on besides the architecture. precision is Lightning's: a `-true` half
    precision casts the whole module (backbone included) to it; otherwise the backbone keeps `dtype` and the
    trainable weights are float32."""

    batch: int = 1
    resolution: int = 512
    precision: str = "bf16-true"
    dtype: str = "bfloat16"
    gradient_checkpointing: bool = True
    transformer_quantization: str = "none"
    text_encoder_2_quantization: str = "none"
    optimizer: str = "prodigy"
    text_path: str = "encoded"
    max_sequence_length: int = 512
    lora: LoRASettings = field(default_factory=LoRASettings)
    mogle: MoGLEConfig = field(default_factory=MoGLEConfig)
    condition: ConditionSettings = field(default_factory=ConditionSettings)

    def __post_init__(self) -> None:
        for key, value, allowed in (
            ("transformer_quantization", self.transformer_quantization, QUANTIZATIONS),
            ("text_encoder_2_quantization", self.text_encoder_2_quantization, QUANTIZATIONS),
            ("optimizer", self.optimizer, OPTIMIZERS),
            ("text_path", self.text_path, TEXT_PATHS),
            ("dtype", self.dtype, tuple(DTYPES)),
        ):
            if value not in allowed:
                raise ValueError(f"{key}={value!r}: expected one of {allowed}")
        if self.batch < 1 or self.resolution < 1:
            raise ValueError(f"batch={self.batch} and resolution={self.resolution} must be >= 1")

    @property
    def frozen_dtype(self) -> torch.dtype:
        return {"bf16-true": torch.bfloat16, "16-true": torch.float16}.get(self.precision, DTYPES[self.dtype])

    @property
    def trainable_dtype(self) -> torch.dtype:
        return {"bf16-true": torch.bfloat16, "16-true": torch.float16}.get(self.precision, torch.float32)

    def describe(self) -> str:
        quant = f"transformer {self.transformer_quantization}, T5 {self.text_encoder_2_quantization}"
        return (
            f"batch {self.batch}, {self.resolution}^2, {self.precision}, {quant}, "
            f"checkpointing {'on' if self.gradient_checkpointing else 'off'}, {self.optimizer}, "
            f"text {self.text_path}"
        )


@dataclass(frozen=True)
class StepMemory:
    """Predicted bytes of one step at its peak, by kind."""

    weights: int
    gradients: int
    optimizer: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations

    def describe(self) -> str:
        parts = ("weights", "gradients", "optimizer", "activations")
        split = ", ".join(f"{p} {getattr(self, p) / GiB:.2f}" for p in parts)
        return f"{self.total / GiB:.2f} GiB ({split})"


@dataclass(frozen=True)
class MemoryPlan:
    training: StepMemory
    sampling: StepMemory
    settings: MemorySettings


_MEMO: dict[tuple, object] = {}


def memo(key: tuple, compute):
    """Counting and tracing depend only on their key's settings; the table and the search of what fits ask
    for the same ones many times."""
    if key not in _MEMO:
        _MEMO[key] = compute()
    return _MEMO[key]
