"""CLIP: a CLIPModel with its processor, from a local transformers directory or built small.

`ClipEmbedder` gives image / text embeddings; it is also the FID/KID feature extractor for synthetic data
(projected image embeddings, not normalised) and the model behind CLIPScore and CMMD. The small one is
trained by facemogle.evaluators.lit_modules.ClipModule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import (
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    CLIPProcessor,
    CLIPTextConfig,
    CLIPVisionConfig,
    PreTrainedTokenizerBase,
)

from facemogle.data_only import reading_weights_in
from facemogle.evaluators.common import MAKE_EVALUATORS, normalise_images, require_model_dir

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_HINT = (
    f"{MAKE_EVALUATORS}; for real faces download a CLIP (CLIPModel + CLIPProcessor), e.g. "
    "`huggingface-cli download openai/clip-vit-large-patch14 --local-dir checkpoints/clip-vit-large-patch14`"
)


@dataclass
class Tokens:
    input_ids: torch.Tensor  # (b, s)
    attention_mask: torch.Tensor  # (b, s)


class ClipEmbedder(nn.Module):
    """A CLIPModel with its processor: embeddings from tensors, and the model interface CLIPScore calls.

    forward(images (b, 3, H, W) in [0, 1]) -> projected image embeddings (b, projection_dim), unnormalised.
    """

    def __init__(self, model: CLIPModel, processor: CLIPProcessor):
        super().__init__()
        self.model = model.eval()
        self.processor = processor
        self.num_features = model.config.projection_dim
        image_processor = processor.image_processor
        self.mean = tuple(getattr(image_processor, "image_mean", None) or CLIP_MEAN)
        self.std = tuple(getattr(image_processor, "image_std", None) or CLIP_STD)
        self.image_size = model.config.vision_config.image_size

    @property
    def config(self):
        return self.model.config

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.get_image_features(self.pixel_values(images)).float()

    def pixel_values(self, images: torch.Tensor) -> torch.Tensor:
        """images (b, 3, H, W) in [0, 1] -> the vision tower's input, resized and normalised."""
        pixels = normalise_images(images, (self.image_size, self.image_size), self.mean, self.std)
        return pixels.to(self.model.dtype)

    def tokenize(self, captions: list[str]) -> Tokens:
        """captions -> padded token ids and mask, on the model's device."""
        tokens = self.processor.tokenizer(captions, padding=True, truncation=True, return_tensors="pt")
        device = self.model.logit_scale.device
        return Tokens(tokens["input_ids"].to(device), tokens["attention_mask"].to(device))

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return _pooled(self.model.get_image_features(pixel_values=pixel_values))

    def get_text_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return _pooled(self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask))

    def text_embeddings(self, captions: list[str]) -> torch.Tensor:
        """captions -> (b, projection_dim) unnormalised."""
        tokens = self.tokenize(captions)
        return self.get_text_features(tokens.input_ids, tokens.attention_mask).float()

    def clip_score_factory(self) -> Callable[[], tuple[ClipEmbedder, CLIPProcessor]]:
        """What torchmetrics' CLIPScore(model_name_or_path=...) accepts for a local model."""
        return lambda: (self, self.processor)


def _pooled(output) -> torch.Tensor:
    # transformers >= 5 returns a model output whose pooler_output is the projected embedding
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def load_clip(path: str | Path) -> ClipEmbedder:
    """CLIPModel + CLIPProcessor from a local directory (both saved there)."""
    path = require_model_dir(path, "CLIP model", CLIP_HINT)
    if not (path / "tokenizer_config.json").is_file():
        raise ValueError(
            f"{path}: CLIP tokenizer missing (tokenizer_config.json); save the CLIPProcessor there"
        )
    with reading_weights_in(path):
        return ClipEmbedder(CLIPModel.from_pretrained(path), CLIPProcessor.from_pretrained(path))


@dataclass
class SmallClipConfig:
    image_size: int = 64  # the vision tower's input; other image sizes are resized to it
    patch_size: int = 8
    hidden_size: int = 64
    layers: int = 2
    heads: int = 2
    projection_dim: int = 64
    max_text_length: int = 77


def build_small_clip(
    tokenizer: PreTrainedTokenizerBase, config: SmallClipConfig | None = None, seed: int = 0
) -> ClipEmbedder:
    """A CLIPModel with small towers and its processor (PIL image processor, `tokenizer`)."""
    config = config or SmallClipConfig()
    torch.manual_seed(seed)
    text = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=2 * config.hidden_size,
        num_hidden_layers=config.layers,
        num_attention_heads=config.heads,
        max_position_embeddings=config.max_text_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision = CLIPVisionConfig(
        image_size=config.image_size,
        patch_size=config.patch_size,
        hidden_size=config.hidden_size,
        intermediate_size=2 * config.hidden_size,
        num_hidden_layers=config.layers,
        num_attention_heads=config.heads,
    )
    model = CLIPModel(
        CLIPConfig(text_config=text, vision_config=vision, projection_dim=config.projection_dim)
    )
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": config.image_size},
        crop_size={"height": config.image_size, "width": config.image_size},
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
    )
    return ClipEmbedder(model, CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer))


def save_clip(clip: ClipEmbedder, path: str | Path) -> None:
    clip.model.save_pretrained(path)
    clip.processor.save_pretrained(path)
