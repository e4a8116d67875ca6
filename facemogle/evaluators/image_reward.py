"""ImageReward (Xu et al. 2023, ImageReward-v1.0) on transformers' BLIP classes, from its own checkpoint.

The `image-reward` package needs timm, fairscale and torchvision (and downloads bert-base-uncased when it
loads), so it cannot run in the CPU environment. The model is small enough to map instead:
    vision   BLIP's ViT-L/16 at 224 (timm layout, `blip.visual_encoder.*`) -> BlipVisionModel
    text     BLIP's med BertModel with cross-attention (`blip.text_encoder.*`) -> BlipTextModel (its port)
    head     `mlp.layers.*`, five Linear layers with dropout between, no activation -> the same nn.Sequential
score(image, prompt) = (head(text_encoder(prompt tokens, cross-attending to the image's tokens)[:, 0])
                        - 0.16717362830052426) / 1.0333394966054072,
prompts tokenised by bert-base-uncased plus BLIP's [DEC] and [ENC] tokens, padded to 35 tokens; images
preprocessed as OpenAI CLIP's `_transform(224)` (facemogle.evaluators.paper_clip.openai_clip_pixels).

A directory holds ImageReward.pt and med_config.json (both from THUDM/ImageReward) and tokenizer/ (the
bert-base-uncased tokenizer: vocab.txt, tokenizer_config.json). The vision tower's size is fixed in
ImageReward's code, not in its files; a small stand-in carries it in vision_config.json.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import BertTokenizer, BlipTextConfig, BlipTextModel, BlipVisionConfig, BlipVisionModel

from facemogle.data_only import load_data, load_weights
from facemogle.evaluators.clip import CLIP_MEAN, CLIP_STD
from facemogle.evaluators.common import require_file
from facemogle.evaluators.paper_clip import openai_clip_pixels

CHECKPOINT, MED_CONFIG, TOKENIZER_DIR, VISION_CONFIG = (
    "ImageReward.pt",
    "med_config.json",
    "tokenizer",
    "vision_config.json",
)
REWARD_MEAN, REWARD_STD = 0.16717362830052426, 1.0333394966054072  # ImageReward-v1.0's normalisation
MAX_PROMPT_TOKENS = 35
HEAD_WIDTHS = (1024, 128, 64, 16, 1)
# ImageReward-v1.0's vision tower: BLIP's create_vit("large", 224)
VIT_LARGE = {
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
}
IMAGE_REWARD_HINT = (
    "download ImageReward-v1.0 on a machine with internet access: `huggingface-cli download THUDM/ImageReward "
    "ImageReward.pt med_config.json --local-dir checkpoints/ImageReward` and `huggingface-cli download "
    "google-bert/bert-base-uncased vocab.txt tokenizer_config.json --local-dir checkpoints/ImageReward/tokenizer`, "
    "then pass checkpoints/ImageReward"
)
_UNUSED = re.compile(
    r"^blip\.(vision_proj|text_proj)\.|position_ids$"
)  # in the checkpoint, unused by scoring


def reward_head(width: int) -> nn.Sequential:
    """ImageReward's MLP: Linear layers with dropout (0.2, 0.2, 0.1) between the first four, no activation."""
    w = (width, *HEAD_WIDTHS)
    return nn.Sequential(
        nn.Linear(w[0], w[1]), nn.Dropout(0.2), nn.Linear(w[1], w[2]), nn.Dropout(0.2),
        nn.Linear(w[2], w[3]), nn.Dropout(0.1), nn.Linear(w[3], w[4]), nn.Linear(w[4], w[5]),
    )  # fmt: skip


class ImageRewardScorer(nn.Module):
    """forward(images (b, 3, H, W) in [0, 1], prompts) -> (b,) rewards."""

    def __init__(self, vision: BlipVisionModel, text: BlipTextModel, head: nn.Sequential, tokenizer):
        super().__init__()
        self.vision, self.text, self.head = vision.eval(), text.eval(), head.eval()
        self.tokenizer = tokenizer
        self.image_size = vision.config.image_size

    @torch.no_grad()
    def forward(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        if len(prompts) != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {len(prompts)} prompts")
        device = self.head[0].weight.device
        pixels = openai_clip_pixels(images, self.image_size, CLIP_MEAN, CLIP_STD).to(
            device, self.vision.dtype
        )
        image_tokens = self.vision(pixel_values=pixels).last_hidden_state  # (b, 1 + patches, D)
        tokens = self.tokenizer(
            list(prompts),
            padding="max_length",
            truncation=True,
            max_length=MAX_PROMPT_TOKENS,
            return_tensors="pt",
        ).to(device)
        text = self.text(
            input_ids=tokens["input_ids"],
            attention_mask=tokens["attention_mask"],
            encoder_hidden_states=image_tokens,
            encoder_attention_mask=torch.ones(image_tokens.shape[:-1], dtype=torch.long, device=device),
        ).last_hidden_state[:, 0]  # (b, width): the [CLS] token
        return ((self.head(text.float()) - REWARD_MEAN) / REWARD_STD).squeeze(-1)

    @property
    def preprocessing(self) -> str:
        return (
            f"uint8, shorter side to {self.image_size} (PIL bicubic), centre crop, /255, CLIP mean/std; "
            f"first caption, BERT tokens padded to {MAX_PROMPT_TOKENS}; (reward - {REWARD_MEAN}) / {REWARD_STD}"
        )


def checkpoint_key(key: str, part: str) -> str:
    """A transformers parameter name of `part` (vision | text | head) -> its name in ImageReward.pt."""
    if part == "head":
        return f"mlp.layers.{key}"
    if part == "text":
        return f"blip.text_encoder.{key}"
    for pattern, repl in (
        (r"^embeddings\.class_embedding$", "cls_token"),
        (r"^embeddings\.position_embedding$", "pos_embed"),
        (r"^embeddings\.patch_embedding\.", "patch_embed.proj."),
        (r"^encoder\.layers\.(\d+)\.layer_norm([12])\.", r"blocks.\1.norm\2."),
        (r"^encoder\.layers\.(\d+)\.self_attn\.qkv\.", r"blocks.\1.attn.qkv."),
        (r"^encoder\.layers\.(\d+)\.self_attn\.projection\.", r"blocks.\1.attn.proj."),
        (r"^encoder\.layers\.(\d+)\.mlp\.", r"blocks.\1.mlp."),
        (r"^post_layernorm\.", "norm."),
    ):
        renamed, hits = re.subn(pattern, repl, key)
        if hits:
            return f"blip.visual_encoder.{renamed}"
    raise ValueError(f"no ImageReward name for the vision parameter {key}")


def _parts(scorer: ImageRewardScorer) -> dict[str, nn.Module]:
    return {"vision": scorer.vision, "text": scorer.text, "head": scorer.head}


def load_state(scorer: ImageRewardScorer, state: dict[str, torch.Tensor], source: str) -> None:
    """ImageReward's state dict into the scorer; a missing parameter, or one the mapping does not know, is an error."""
    used = set()
    for part, module in _parts(scorer).items():
        mapped = {}
        for key in module.state_dict():
            name = checkpoint_key(key, part)
            if name not in state:
                raise ValueError(f"{source}: {name} missing (not an ImageReward-v1.0 checkpoint?)")
            mapped[key] = state[name]
            used.add(name)
        load_weights(module, mapped, source)
    unknown = sorted(k for k in state if k not in used and not _UNUSED.search(k))
    if unknown:
        raise ValueError(f"{source}: parameters the mapping does not know: {unknown[:5]}")


def load_image_reward(path: str | Path) -> ImageRewardScorer:
    """ImageReward-v1.0 from a local directory (see the module docstring for what it holds)."""
    if path is None or not Path(path).is_dir():
        raise ValueError(f"{path}: no ImageReward directory here; {IMAGE_REWARD_HINT}")
    path = Path(path)
    checkpoint = require_file(path / CHECKPOINT, "ImageReward checkpoint", IMAGE_REWARD_HINT)
    med = json.loads(
        require_file(path / MED_CONFIG, "ImageReward med_config.json", IMAGE_REWARD_HINT).read_text()
    )
    require_file(
        path / TOKENIZER_DIR / "tokenizer_config.json", "bert-base-uncased tokenizer", IMAGE_REWARD_HINT
    )
    vision_file = path / VISION_CONFIG
    vision_sizes = json.loads(vision_file.read_text()) if vision_file.is_file() else VIT_LARGE
    tokenizer = BertTokenizer.from_pretrained(path / TOKENIZER_DIR)
    tokenizer.add_special_tokens(
        {"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]}
    )  # as BLIP does
    scorer = _build(med, {"image_size": 224, "patch_size": 16, **vision_sizes}, tokenizer)
    if len(tokenizer) != scorer.text.config.vocab_size:
        raise ValueError(
            f"{path / TOKENIZER_DIR}: {len(tokenizer)} tokens, med_config.json says {med['vocab_size']}"
        )
    load_state(scorer, load_data(checkpoint, map_location="cpu"), str(checkpoint))
    return scorer


def _build(med: dict, vision_sizes: dict, tokenizer) -> ImageRewardScorer:
    vision = BlipVisionModel(BlipVisionConfig(**vision_sizes, layer_norm_eps=1e-6))  # timm's ViT eps
    text = BlipTextModel(
        BlipTextConfig(
            vocab_size=med["vocab_size"],
            hidden_size=med["hidden_size"],
            encoder_hidden_size=vision.config.hidden_size,  # BLIP sets encoder_width to the ViT's width
            intermediate_size=med["intermediate_size"],
            num_hidden_layers=med["num_hidden_layers"],
            num_attention_heads=med["num_attention_heads"],
            max_position_embeddings=med["max_position_embeddings"],
            hidden_act=med.get("hidden_act", "gelu"),
            layer_norm_eps=med.get("layer_norm_eps", 1e-12),
            pad_token_id=med.get("pad_token_id", 0),
            bos_token_id=tokenizer.bos_token_id,  # BLIP's [DEC]; the encoder forward reads none of these three
            sep_token_id=tokenizer.sep_token_id,
            eos_token_id=tokenizer.sep_token_id,
            is_decoder=True,  # builds the cross-attention; forward(is_decoder=False) keeps attention bidirectional
        ),
        add_pooling_layer=False,
    )
    return ImageRewardScorer(vision, text, reward_head(med["hidden_size"]), tokenizer)


@dataclass
class SmallImageRewardConfig:
    image_size: int = 64
    patch_size: int = 8
    vision_width: int = 32
    text_width: int = 32
    layers: int = 1
    heads: int = 2


def save_small_image_reward(
    path: str | Path, tokenizer, config: SmallImageRewardConfig | None = None, seed: int = 0
):
    """ImageReward's classes at a small size, random weights (seeded), written in ImageReward's file layout."""
    config = config or SmallImageRewardConfig()
    torch.manual_seed(seed)
    tokenizer.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    med = {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": len(tokenizer),
        "hidden_size": config.text_width,
        "num_hidden_layers": config.layers,
        "num_attention_heads": config.heads,
        "intermediate_size": 4 * config.text_width,
        "max_position_embeddings": 64,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-12,
        "pad_token_id": tokenizer.pad_token_id,
        "encoder_width": config.vision_width,
        "add_cross_attention": True,
    }
    vision_sizes = {
        "hidden_size": config.vision_width,
        "num_hidden_layers": config.layers,
        "num_attention_heads": config.heads,
        "intermediate_size": 4 * config.vision_width,
        "image_size": config.image_size,
        "patch_size": config.patch_size,
        "initializer_range": 0.02,  # BlipVisionConfig's default (1e-10) would leave a random tower ~constant
    }
    scorer = _build(med, vision_sizes, tokenizer)
    path = Path(path)
    (path / TOKENIZER_DIR).mkdir(parents=True, exist_ok=True)
    state = {
        checkpoint_key(k, part): v for part, m in _parts(scorer).items() for k, v in m.state_dict().items()
    }
    torch.save(state, path / CHECKPOINT)
    (path / MED_CONFIG).write_text(json.dumps(med, indent=2))
    (path / VISION_CONFIG).write_text(json.dumps(vision_sizes, indent=2))
    tokenizer.save_pretrained(path / TOKENIZER_DIR)
    return path
