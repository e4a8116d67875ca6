"""Frozen-backbone encoders: prompts -> FLUX text inputs, images <-> packed latent tokens.

Image latents are the VAE posterior *mean* by default (deterministic, so cached latents are exact);
`sample=True` draws from the posterior instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from facemogle.backbone import FluxBackbone
from facemogle.face_parts import split_mask
from facemogle.packing import pack_latents, unpack_latents


@dataclass
class TextEmbeddings:
    sequence: torch.Tensor  # (b, s, text_dim) T5 hidden states
    pooled: torch.Tensor  # (b, pooled_dim) CLIP pooled output

    def __len__(self) -> int:
        return self.sequence.shape[0]


@torch.no_grad()
def encode_prompts(backbone: FluxBackbone, prompts: list[str]) -> TextEmbeddings:
    """FLUX's text conditioning: CLIP pooled output + T5 last hidden state (padded to max length)."""
    device = backbone.text_encoder.device
    clip_ids = backbone.tokenizer(
        prompts,
        padding="max_length",
        max_length=backbone.tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    t5_ids = backbone.tokenizer_2(
        prompts,
        padding="max_length",
        max_length=backbone.max_sequence_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    pooled = backbone.text_encoder(clip_ids.to(device), output_hidden_states=False).pooler_output
    # T5 may sit in host memory (backbone.t5_on_cpu) while CLIP is on the accelerator
    sequence = backbone.text_encoder_2(t5_ids.to(backbone.text_encoder_2.device))[0].to(device)
    return TextEmbeddings(sequence, pooled)


def text_ids(sequence: torch.Tensor) -> torch.Tensor:
    """FLUX gives text tokens all-zero position ids: (s, 3) for a (b, s, D) text sequence."""
    return sequence.new_zeros(sequence.shape[1], 3)


@torch.no_grad()
def encode_images(
    backbone: FluxBackbone, images: torch.Tensor, sample: bool = False, device=None, dtype=None
) -> torch.Tensor:
    """images (..., 3, H, W) in [-1, 1] -> packed latent tokens (..., H/2f * W/2f, 4c), f the VAE factor.
    device: where the VAE runs, by default where it is (under model CPU offload it moves there on encode).
    dtype: the VAE's; a loop over many batches passes both, as diffusers walks every module to find them."""
    vae = backbone.vae
    lead = images.shape[:-3]
    flat = images.reshape(-1, *images.shape[-3:]).to(device=device or vae.device, dtype=dtype or vae.dtype)
    posterior = vae.encode(flat).latent_dist
    latents = scale_latents(vae, posterior.sample() if sample else posterior.mean)
    tokens = pack_latents(latents)
    return tokens.reshape(*lead, *tokens.shape[-2:])


def scale_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """Raw VAE latents -> the transformer's: (x - shift_factor) * scaling_factor, elementwise (so it commutes
    with packing)."""
    return (latents - vae.config.shift_factor) * vae.config.scaling_factor


@torch.no_grad()
def decode_tokens(backbone: FluxBackbone, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """packed tokens (b, l, d) -> images (b, 3, height, width) in [0, 1]; height, width in pixels."""
    vae, f = backbone.vae, backbone.vae_scale_factor
    latents = unpack_latents(tokens, height // f, width // f)
    latents = latents / vae.config.scaling_factor + vae.config.shift_factor
    images = vae.decode(latents.to(vae.dtype)).sample
    return (images.float() / 2 + 0.5).clamp(0, 1)


@torch.no_grad()
def encode_masks(backbone: FluxBackbone, labels: torch.Tensor, device=None) -> torch.Tensor:
    """labels (b, H, W) in 0..18 -> packed latents of the 20 condition maps, (b, 20, l, d)."""
    return encode_images(backbone, split_mask(labels), device=device)
