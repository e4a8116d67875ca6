"""LoRA adapters (peft) on the FLUX transformer, saved and loaded in diffusers' FLUX LoRA format."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from diffusers import FluxPipeline, FluxTransformer2DModel
from peft import LoraConfig, get_peft_model_state_dict
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors import safe_open

from facemogle.data_only import reading_safetensors
from facemogle.rules import AT_LEAST_ONE, POSITIVE, Range, check_ranges

ADAPTER = "mogle"
LORA_FILE = "pytorch_lora_weights.safetensors"

# The projections the paper's LoRA adapts (OminiControl's list): the condition-token input projection,
# double-block modulation, attention and feed-forward output, single-block modulation, MLP and attention.
PAPER_TARGETS = (
    r"x_embedder"
    r"|transformer_blocks\.\d+\.(norm1\.linear|attn\.to_[qkv]|attn\.to_out\.0|ff\.net\.2)"
    r"|single_transformer_blocks\.\d+\.(norm\.linear|proj_mlp|proj_out|attn\.to_[qkv])"
)
# Every layer facemogle.flux_forward routes per stream; LoRA elsewhere would bypass that routing.
SUPPORTED = re.compile(
    r"(x_embedder|context_embedder|proj_out|norm_out\.linear"
    r"|transformer_blocks\.\d+\.(norm1(_context)?\.linear|attn\.(to_[qkv]|to_out\.0|add_[qkv]_proj|to_add_out)"
    r"|ff(_context)?\.net\.(0\.proj|2))"
    r"|single_transformer_blocks\.\d+\.(norm\.linear|proj_mlp|proj_out|attn\.to_[qkv]))"
)


@dataclass
class LoRASettings:
    rank: int = 4
    alpha: float = 4.0
    # A regex over module names (peft matches it in full) or a list of module-name suffixes.
    target_modules: str | list[str] = field(default=PAPER_TARGETS)
    init: str = "gaussian"
    dropout: float = 0.0

    RULES: ClassVar[dict[str, Range]] = {"rank": AT_LEAST_ONE, "alpha": POSITIVE}

    def __post_init__(self) -> None:
        check_ranges(self)

    def peft_config(self) -> LoraConfig:
        targets = self.target_modules
        if isinstance(targets, str):
            targets = rf"(.*\.)?({targets})"  # peft full-matches a string against the module name
        return LoraConfig(
            r=self.rank,
            lora_alpha=self.alpha,
            target_modules=targets,
            init_lora_weights=self.init,
            lora_dropout=self.dropout,
        )


def lora_layer_names(transformer: torch.nn.Module) -> list[str]:
    return [name for name, module in transformer.named_modules() if isinstance(module, BaseTunerLayer)]


def add_lora(
    transformer: FluxTransformer2DModel, settings: LoRASettings, adapter: str = ADAPTER
) -> list[str]:
    """Inject LoRA into the transformer; only the LoRA weights require grad afterwards."""
    try:
        transformer.add_adapter(settings.peft_config(), adapter_name=adapter)
    except ValueError as err:  # peft's message for targets that match nothing
        raise ValueError(f"lora.target_modules={settings.target_modules!r} matched no layer: {err}") from err
    names = lora_layer_names(transformer)
    _check_supported(names)
    return names


def _check_supported(names: list[str]) -> None:
    if not names:
        raise ValueError("lora.target_modules matched no layer of the transformer")
    unsupported = [n for n in names if not SUPPORTED.fullmatch(n)]
    if unsupported:
        raise ValueError(
            f"lora.target_modules matched layers the condition-aware forward does not route per stream: "
            f"{unsupported[:5]}{' ...' if len(unsupported) > 5 else ''}"
        )


def lora_metadata(transformer: FluxTransformer2DModel, adapter: str = ADAPTER) -> dict:
    """peft's adapter config as a dict: saving it keeps `lora_alpha` (diffusers drops it otherwise)."""
    return transformer.peft_config[adapter].to_dict()


def save_lora(
    transformer: FluxTransformer2DModel,
    directory: str | Path,
    adapter: str = ADAPTER,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> Path:
    """state_dict: the transformer's weights to save, when its own are sharded; by default its state_dict()."""
    FluxPipeline.save_lora_weights(
        directory,
        transformer_lora_layers=get_peft_model_state_dict(transformer, state_dict, adapter_name=adapter),
        transformer_lora_adapter_metadata=lora_metadata(transformer, adapter),
        weight_name=LORA_FILE,
    )
    return Path(directory) / LORA_FILE


def load_lora(transformer: FluxTransformer2DModel, path: str | Path, adapter: str = ADAPTER) -> list[str]:
    """Load a diffusers FLUX LoRA file (ours or the official release) as adapter `adapter`."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"LoRA file {path} does not exist")
    with reading_safetensors(path):  # diffusers' own error would not say what is wrong with the file
        safe_open(path, framework="pt")
    state_dict, metadata = FluxPipeline.lora_state_dict(path, return_lora_metadata=True)
    transformer.load_lora_adapter(state_dict, prefix="transformer", adapter_name=adapter, metadata=metadata)
    names = lora_layer_names(transformer)
    _check_supported(names)
    return names
