"""ImageReward on transformers' BLIP classes: a small model saved in ImageReward's own file layout, read
back through the checkpoint-key mapping, and its vision tower checked against BLIP's timm-style ViT."""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from facemogle.evaluators.clip import CLIP_MEAN, CLIP_STD
from facemogle.evaluators.image_reward import (
    CHECKPOINT,
    REWARD_MEAN,
    REWARD_STD,
    SmallImageRewardConfig,
    load_image_reward,
    save_small_image_reward,
)
from facemogle.evaluators.paper_clip import openai_clip_pixels
from facemogle.metrics import MeanScore
from facemogle.tiny_tokenizers import build_bert_tokenizer
from tests.test_paper_metrics import images

CAPTIONS = ["she has black hair", "he is bald and smiling", "a young woman", "blond wavy hair, no beard"]


@pytest.fixture(scope="module")
def reward_dir(tmp_path_factory):
    config = SmallImageRewardConfig(
        image_size=32, patch_size=8, vision_width=32, text_width=32, layers=2, heads=2
    )
    return save_small_image_reward(
        tmp_path_factory.mktemp("image_reward"), build_bert_tokenizer(), config, seed=1
    )


def test_saved_in_image_rewards_layout_and_read_back(reward_dir):
    state = torch.load(reward_dir / CHECKPOINT, weights_only=True)
    assert "blip.visual_encoder.blocks.1.attn.qkv.weight" in state and "mlp.layers.7.bias" in state
    assert "blip.text_encoder.encoder.layer.0.crossattention.self.key.weight" in state
    assert json.loads((reward_dir / "med_config.json").read_text())["add_cross_attention"] is True
    scorer = load_image_reward(reward_dir)
    rewards = scorer(images(4, 48), CAPTIONS)
    assert rewards.shape == (4,) and torch.isfinite(rewards).all()
    one_by_one = torch.cat([scorer(images(4, 48)[i : i + 1], CAPTIONS[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(
        rewards, one_by_one, rtol=1e-5, atol=1e-6
    )  # padding to 35 tokens: no batch effect


def timm_vit(state: dict, pixels: torch.Tensor, heads: int) -> torch.Tensor:
    """BLIP's VisionTransformer (ImageReward/models/BLIP/vit.py) from the checkpoint's own keys."""
    p = "blip.visual_encoder."
    x = F.conv2d(pixels, state[p + "patch_embed.proj.weight"], state[p + "patch_embed.proj.bias"], stride=8)
    x = torch.cat((state[p + "cls_token"].expand(len(x), -1, -1), x.flatten(2).transpose(1, 2)), 1)
    x = x + state[p + "pos_embed"][:, : x.shape[1]]
    b, t, width = x.shape

    def norm(y, name):
        return F.layer_norm(y, (width,), state[name + ".weight"], state[name + ".bias"], eps=1e-6)

    i = 0
    while f"{p}blocks.{i}.norm1.weight" in state:
        q = f"{p}blocks.{i}."
        qkv = F.linear(norm(x, q + "norm1"), state[q + "attn.qkv.weight"], state[q + "attn.qkv.bias"])
        qkv = qkv.reshape(b, t, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
        attn = ((qkv[0] @ qkv[1].transpose(-2, -1)) * (width // heads) ** -0.5).softmax(-1)
        mixed = (attn @ qkv[2]).transpose(1, 2).reshape(b, t, width)
        x = x + F.linear(mixed, state[q + "attn.proj.weight"], state[q + "attn.proj.bias"])
        hidden = F.gelu(
            F.linear(norm(x, q + "norm2"), state[q + "mlp.fc1.weight"], state[q + "mlp.fc1.bias"])
        )
        x = x + F.linear(hidden, state[q + "mlp.fc2.weight"], state[q + "mlp.fc2.bias"])
        i += 1
    return norm(x, p + "norm")


def test_vision_mapping_reproduces_blips_timm_vit(reward_dir):
    state = torch.load(reward_dir / CHECKPOINT, weights_only=True)
    scorer = load_image_reward(reward_dir)
    pixels = openai_clip_pixels(images(3, 32), 32, CLIP_MEAN, CLIP_STD)
    with torch.no_grad():
        got = scorer.vision(pixel_values=pixels).last_hidden_state
    torch.testing.assert_close(got, timm_vit(state, pixels, heads=2), rtol=1e-5, atol=1e-5)


def test_reward_is_the_heads_normalised_output_on_the_cls_token(reward_dir):
    scorer = load_image_reward(reward_dir)
    x = images(2, 32)
    tokens = scorer.tokenizer(
        CAPTIONS[:2], padding="max_length", truncation=True, max_length=35, return_tensors="pt"
    )
    assert tokens["input_ids"].shape == (2, 35)
    with torch.no_grad():
        image_tokens = scorer.vision(
            pixel_values=openai_clip_pixels(x, 32, CLIP_MEAN, CLIP_STD)
        ).last_hidden_state
        cls = scorer.text(
            input_ids=tokens["input_ids"],
            attention_mask=tokens["attention_mask"],
            encoder_hidden_states=image_tokens,
        ).last_hidden_state[:, 0]
        want = (scorer.head(cls) - REWARD_MEAN) / REWARD_STD
    torch.testing.assert_close(scorer(x, CAPTIONS[:2]), want[:, 0])
    mean = MeanScore()
    mean.update(scorer(x[:1], CAPTIONS[:1]))
    mean.update(scorer(x[1:], CAPTIONS[1:2]))
    torch.testing.assert_close(mean.compute().float(), want.mean(), rtol=1e-6, atol=1e-7)


def test_missing_files_and_unknown_parameters_are_named_errors(reward_dir, tmp_path):
    with pytest.raises(ValueError, match=r"no ImageReward directory here; .*THUDM/ImageReward"):
        load_image_reward(tmp_path / "nowhere")
    with pytest.raises(
        ValueError, match=r"ImageReward.pt: no ImageReward checkpoint here.*huggingface-cli download"
    ):
        load_image_reward(tmp_path)
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in reward_dir.rglob("*"):
        if f.is_file():
            (copy / f.relative_to(reward_dir)).parent.mkdir(parents=True, exist_ok=True)
            (copy / f.relative_to(reward_dir)).write_bytes(f.read_bytes())
    state = torch.load(copy / CHECKPOINT, weights_only=True)
    state["blip.itm_head.weight"] = torch.zeros(2, 32)
    state["blip.text_encoder.embeddings.position_ids"] = torch.arange(64)[
        None
    ]  # in real checkpoints: ignored
    torch.save(state, copy / CHECKPOINT)
    with pytest.raises(ValueError, match=r"parameters the mapping does not know: \['blip.itm_head.weight'\]"):
        load_image_reward(copy)
    del state["blip.itm_head.weight"], state["mlp.layers.0.bias"]
    torch.save(state, copy / CHECKPOINT)
    with pytest.raises(ValueError, match=r"mlp.layers.0.bias missing"):
        load_image_reward(copy)


def test_agrees_with_the_image_reward_package_on_the_real_checkpoint(tmp_path):
    """Where the `image-reward` package is installed and FACEMOGLE_IMAGE_REWARD names a directory with
    ImageReward-v1.0 as load_image_reward reads it (and bert-base-uncased is in the Hugging Face cache)."""
    package = pytest.importorskip(
        "ImageReward",
        reason="the image-reward package is not installed (it needs timm, fairscale, torchvision)",
    )
    root = os.environ.get("FACEMOGLE_IMAGE_REWARD")
    if not root:
        pytest.skip(
            "set FACEMOGLE_IMAGE_REWARD to a directory holding ImageReward.pt, med_config.json, tokenizer/"
        )
    reference = package.load(f"{root}/ImageReward.pt", device="cpu", med_config=f"{root}/med_config.json")
    ours = load_image_reward(root)
    x = images(4, 64)
    pictures = [Image.fromarray(a) for a in (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()]
    want = torch.tensor([reference.score(c, p) for c, p in zip(CAPTIONS, pictures, strict=True)])
    torch.testing.assert_close(ours(x, CAPTIONS).double(), want.double(), rtol=1e-4, atol=1e-4)
