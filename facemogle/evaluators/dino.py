"""DINO ViT keys for Splice's structure distance (Tumanyan et al. 2022), as Face-MoGLE's Mask column.

    keys      the key projection of block `layer` (11, the last, for ViT-B/8) for every token, CLS included,
              its heads side by side: (b, t, D)
    self-sim  cosine similarity of every token's key with every other's: (b, t, t), the norm product
              clamped at 1e-8 as the official code does

Preprocessing, two ways (`DINO_PREPROCESSING`):
    official  what src/eval/eval_mask.py runs: the image in [0, 1] at its own resolution, no resize and no
              normalisation (it defines both and never applies them); position embeddings interpolated
              to the patch grid the way DINO's own ViT does (bicubic, scale factor (n + 0.1) / sqrt(N))
    splice    Splice's definition: shorter side to 224 (bilinear, antialiased), ImageNet mean / std

The model is a transformers ViTModel directory in facebook/dino-vitb8's layout; `build_small_dino` gives
the same class at a small size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import ViTConfig, ViTModel

from facemogle.data_only import reading_weights_in
from facemogle.evaluators.common import require_model_dir
from facemogle.evaluators.parser import IMAGENET_MEAN, IMAGENET_STD

DINO_PREPROCESSING = ("official", "splice")
# DINO's ViTs use LayerNorm(eps=1e-6); the facebook/dino-* configs on the Hub say 1e-12
DINO_LAYER_NORM_EPS = 1e-6
SPLICE_SIZE = 224
COSINE_EPS = 1e-8
DINO_HINT = (
    "the paper's Mask column uses DINO ViT-B/8: `huggingface-cli download facebook/dino-vitb8 --local-dir "
    "checkpoints/dino-vitb8` on a machine with internet access, then pass that directory"
)


def key_self_similarity(keys: torch.Tensor, eps: float = COSINE_EPS) -> torch.Tensor:
    """keys (b, t, D) -> (b, t, t) cosine similarities, the norm product clamped at eps."""
    norms = keys.norm(dim=-1, keepdim=True)  # (b, t, 1)
    return (keys @ keys.transpose(1, 2)) / (norms @ norms.transpose(1, 2)).clamp_min(eps)


class DinoKeys(nn.Module):
    """forward(images (b, 3, H, W) in [0, 1]) -> key self-similarity (b, t, t) under `preprocessing`."""

    def __init__(self, model: ViTModel, layer: int | None = None, preprocessing: str = "official"):
        super().__init__()
        if preprocessing not in DINO_PREPROCESSING:
            raise ValueError(f"DINO preprocessing {preprocessing!r}: expected one of {DINO_PREPROCESSING}")
        blocks = _blocks(model)
        layer = len(blocks) - 1 if layer is None else layer
        if not 0 <= layer < len(blocks):
            raise ValueError(f"DINO layer {layer}: the model has blocks 0..{len(blocks) - 1}")
        self.model, self.layer, self.preprocessing = model.eval(), layer, preprocessing
        self.patch_size = model.config.patch_size

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images (b, 3, H, W) in [0, 1], got shape {tuple(images.shape)}")
        images = images.float()
        if self.preprocessing == "official":
            return images
        h, w = images.shape[-2:]
        size = (SPLICE_SIZE, int(SPLICE_SIZE * w / h)) if h <= w else (int(SPLICE_SIZE * h / w), SPLICE_SIZE)
        images = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
        mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
        return (images - mean) / std

    @torch.no_grad()
    def keys(self, images: torch.Tensor) -> torch.Tensor:
        """-> (b, t, D) keys of block `layer`, t = 1 + (H / patch) * (W / patch)."""
        pixels = self.pixels(images).to(self.model.dtype)
        embeddings = self.model.embeddings
        patches = embeddings.patch_embeddings.projection(pixels)  # (b, D, h, w)
        grid = patches.shape[-2:]
        tokens = torch.cat(
            (embeddings.cls_token.expand(len(pixels), -1, -1), patches.flatten(2).transpose(1, 2)), 1
        )
        hidden = tokens + dino_position_embeddings(embeddings.position_embeddings, grid)
        blocks = _blocks(self.model)
        for block in blocks[: self.layer]:
            out = block(hidden)
            hidden = out[0] if isinstance(out, tuple) else out  # transformers 4 returns a tuple
        target = blocks[self.layer]
        return _key_projection(target)(target.layernorm_before(hidden))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return key_self_similarity(self.keys(images).float())

    @property
    def preprocessing_text(self) -> str:
        if self.preprocessing == "official":
            return "[0, 1] at the image's resolution, no resize, no normalisation (eval_mask.py as it runs)"
        return "shorter side to 224 (bilinear, antialiased), ImageNet mean/std (Splice)"


def dino_position_embeddings(table: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """DINO's interpolate_pos_encoding: the (1, 1 + N, D) table to a (h, w) patch grid, bicubic with scale
    factors (h + 0.1) / sqrt(N) and (w + 0.1) / sqrt(N); the table itself when the grid is its own (and square)."""
    n = table.shape[1] - 1
    h, w = grid
    if h * w == n and h == w:
        return table
    side = int(math.sqrt(n))
    patch = table[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    patch = F.interpolate(patch, scale_factor=((h + 0.1) / side, (w + 0.1) / side), mode="bicubic")
    assert patch.shape[-2:] == (h, w), (patch.shape, grid)
    return torch.cat((table[:, :1], patch.permute(0, 2, 3, 1).reshape(1, h * w, -1)), 1)


def _blocks(model: ViTModel) -> nn.ModuleList:
    return model.layers if hasattr(model, "layers") else model.encoder.layer  # transformers 5 / 4


def _key_projection(block: nn.Module) -> nn.Linear:
    attention = block.attention
    return attention.k_proj if hasattr(attention, "k_proj") else attention.attention.key  # transformers 5 / 4


def load_dino(path: str | Path, layer: int | None = None, preprocessing: str = "official") -> DinoKeys:
    """A DINO ViT from a local transformers directory (facebook/dino-vitb8: config.json and weights), with
    DINO's LayerNorm eps whatever the config says."""
    path = require_model_dir(path, "DINO ViT", DINO_HINT)
    with reading_weights_in(path):
        model = ViTModel.from_pretrained(path, add_pooling_layer=False, layer_norm_eps=DINO_LAYER_NORM_EPS)
    return DinoKeys(model, layer, preprocessing)


@dataclass
class SmallDinoConfig:
    """DINO ViT-B/8's structure (patch 8, qkv bias, LayerNorm eps 1e-6, CLS token) at a small width."""

    image_size: int = 64
    patch_size: int = 8
    hidden_size: int = 32
    layers: int = 2
    heads: int = 2


def build_small_dino(config: SmallDinoConfig | None = None, seed: int = 0) -> ViTModel:
    config = config or SmallDinoConfig()
    torch.manual_seed(seed)
    vit = ViTConfig(
        image_size=config.image_size,
        patch_size=config.patch_size,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.layers,
        num_attention_heads=config.heads,
        intermediate_size=4 * config.hidden_size,
        qkv_bias=True,
        layer_norm_eps=DINO_LAYER_NORM_EPS,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return ViTModel(vit, add_pooling_layer=False).eval()


def save_dino(model: ViTModel, path: str | Path) -> Path:
    model.save_pretrained(path)
    return Path(path)
