"""The frozen FLUX backbone, loaded from a local FLUX.1-dev directory (`facemogle.tiny_backbone` builds it tiny).

Both give the same diffusers / transformers classes, in the diffusers pipeline directory layout:

    PATH/model_index.json
    PATH/transformer/     FluxTransformer2DModel      (config.json + *.safetensors)
    PATH/vae/             AutoencoderKL               (config.json + *.safetensors)
    PATH/text_encoder/    CLIPTextModel               (config.json + *.safetensors)
    PATH/text_encoder_2/  T5EncoderModel              (config.json + *.safetensors)
    PATH/tokenizer/       CLIP tokenizer
    PATH/tokenizer_2/     T5 tokenizer
    PATH/scheduler/       FlowMatchEulerDiscreteScheduler (scheduler_config.json)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from transformers import AutoTokenizer, CLIPTextModel, PreTrainedTokenizerBase, T5EncoderModel

from facemogle.quantization import QuantizationConfig, load_text_encoder_2, load_transformer
from facemogle.release import check_released

FLUX_DOWNLOAD_HINT = (
    "download FLUX.1-dev (gated: accept the licence at https://huggingface.co/black-forest-labs/FLUX.1-dev) "
    "with `huggingface-cli download black-forest-labs/FLUX.1-dev --local-dir {path}` on a machine with "
    "internet access and copy the directory here"
)
MODEL_FOLDERS = ("transformer", "vae", "text_encoder", "text_encoder_2")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}  # backbone.dtype
TOKENIZER_FOLDERS = ("tokenizer", "tokenizer_2")


@dataclass
class FluxBackbone:
    transformer: FluxTransformer2DModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    text_encoder_2: T5EncoderModel
    tokenizer: PreTrainedTokenizerBase
    tokenizer_2: PreTrainedTokenizerBase
    scheduler: FlowMatchEulerDiscreteScheduler
    max_sequence_length: int = 512

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def token_dim(self) -> int:
        return self.transformer.config.in_channels

    def modules(self) -> list[torch.nn.Module]:
        return [self.transformer, self.vae, self.text_encoder, self.text_encoder_2]

    def freeze(self) -> FluxBackbone:
        for module in self.modules():
            module.requires_grad_(False)
            module.eval()
        return self

    def to(self, device=None, dtype=None) -> FluxBackbone:
        # dtype only when given: diffusers' and transformers' `to` refuse any dtype argument on a quantised model
        for module in self.modules():
            module.to(device=device) if dtype is None else module.to(device=device, dtype=dtype)
        return self


def _missing_parts(root: Path) -> list[str]:
    missing = [] if (root / "model_index.json").is_file() else ["model_index.json"]
    for folder in MODEL_FOLDERS:
        if not (root / folder / "config.json").is_file():
            missing.append(f"{folder}/config.json")
        if not any((root / folder).glob("*.safetensors")):
            missing.append(f"{folder}/*.safetensors")
        for index in (root / folder).glob("*.safetensors.index.json"):
            shards = set(json.loads(index.read_text())["weight_map"].values())
            missing += [f"{folder}/{s}" for s in sorted(shards) if not (root / folder / s).is_file()]
    for folder in TOKENIZER_FOLDERS:
        if not (root / folder).is_dir() or not any((root / folder).iterdir()):
            missing.append(f"{folder}/")
    if not (root / "scheduler" / "scheduler_config.json").is_file():
        missing.append("scheduler/scheduler_config.json")
    return missing


def load_flux(
    path: str | Path,
    dtype: torch.dtype = torch.bfloat16,
    max_sequence_length: int | None = None,
    quantization: QuantizationConfig | None = None,
) -> FluxBackbone:
    """Load a FLUX.1-dev diffusers directory from local disk; never touches the network.

    max_sequence_length: T5 tokens per prompt; defaults to the T5 tokenizer's model_max_length (512 for
    FLUX.1-dev, the paper's setting). quantization: the transformer's and T5's storage
    (facemogle.quantization); by default both in `dtype`."""
    quantization = quantization or QuantizationConfig()
    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"FLUX directory {root} does not exist: {FLUX_DOWNLOAD_HINT.format(path=root)}")
    missing = _missing_parts(root)
    if missing:
        raise ValueError(
            f"FLUX directory {root} is incomplete, missing: {', '.join(missing)}; "
            + FLUX_DOWNLOAD_HINT.format(path=root)
        )
    check_released(root)  # the shipped tiny backbone: every file as released
    kw = {"torch_dtype": dtype, "local_files_only": True}
    tokenizer_2 = AutoTokenizer.from_pretrained(root / "tokenizer_2", local_files_only=True)
    return FluxBackbone(
        transformer=load_transformer(root, quantization.transformer, dtype),
        vae=AutoencoderKL.from_pretrained(root, subfolder="vae", **kw),
        text_encoder=CLIPTextModel.from_pretrained(root, subfolder="text_encoder", **kw),
        text_encoder_2=load_text_encoder_2(root, quantization.text_encoder_2, dtype),
        tokenizer=AutoTokenizer.from_pretrained(root / "tokenizer", local_files_only=True),
        tokenizer_2=tokenizer_2,
        scheduler=FlowMatchEulerDiscreteScheduler.from_pretrained(
            root, subfolder="scheduler", local_files_only=True
        ),
        max_sequence_length=max_sequence_length or min(512, tokenizer_2.model_max_length),
    )


def save_flux(backbone: FluxBackbone, path: str | Path) -> Path:
    """Write the backbone in the diffusers FluxPipeline layout that `load_flux` reads."""
    pipe = FluxPipeline(
        scheduler=backbone.scheduler,
        vae=backbone.vae,
        text_encoder=backbone.text_encoder,
        tokenizer=backbone.tokenizer,
        text_encoder_2=backbone.text_encoder_2,
        tokenizer_2=backbone.tokenizer_2,
        transformer=backbone.transformer,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    return Path(path)
