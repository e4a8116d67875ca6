"""The tiny FLUX: the same diffusers / transformers classes as FLUX.1-dev at small dimensions, random weights
and offline tokenizers; what tests, CI and `make smoke` use in place of `facemogle.backbone.load_flux`."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

from facemogle.backbone import FluxBackbone
from facemogle.tiny_tokenizers import build_clip_tokenizer, build_t5_tokenizer


@dataclass
class TinyFluxConfig:
    """Dimensions of a FLUX built from config. The defaults are the embedded tiny backbone: VAE scale factor
    2^(len(vae_channels)-1) = 4, so 64^2 images give 16^2 latents and 8^2 = 64 packed tokens of width
    4 * latent_channels = 64 (FLUX.1-dev's width). `FLUX_DEV_SHAPED` and `FLUX_DEV` below are FLUX.1-dev."""

    num_layers: int = 2
    num_single_layers: int = 4
    num_heads: int = 4
    head_dim: int = 32
    axes_dims_rope: tuple[int, int, int] = (8, 12, 12)
    latent_channels: int = 16
    # 16 channels at full resolution: faster VAE steps than 32, so stage 1 affords more of them
    vae_channels: tuple[int, ...] = (16, 32, 64)
    # GroupNorm groups in the VAE: one channel per group would normalise every channel on its own and strip
    # its mean, the colour
    vae_norm_groups: int = 8
    vae_layers_per_block: int = 1
    # FLUX decoding computes latents / scale + shift, so both must be numbers
    vae_scaling_factor: float = 1.0
    vae_shift_factor: float = 0.0
    clip_dim: int = 64  # CLIP hidden size = the pooled projection's width (pooled_projection_dim)
    clip_heads: int = 2
    t5_dim: int = 64  # T5 d_model = the transformer's joint_attention_dim
    t5_heads: int = 4
    t5_kv: int | None = None  # per-head width; None: t5_dim // t5_heads
    t5_ff: int | None = None  # None: 2 * t5_dim
    text_layers: int = 2
    vocab_size: int = 2048
    max_sequence_length: int = 32
    guidance_embeds: bool = False


# FLUX.1-dev's structure (black-forest-labs/FLUX.1-dev, the config.json of transformer/, vae/, text_encoder/,
# text_encoder_2/ and scheduler/; tests/test_backbone.py checks them) with depth and width cut: guidance
# embedding, head dim 128 with rope axes (16, 56, 56), 64 input channels, a 4-level VAE (scale factor 8) with
# FLUX.1-dev's scaling and shift, CLIP pooled width 768, T5 width 4096 and 512 tokens.
FLUX_DEV_SHAPED = TinyFluxConfig(
    num_layers=1,
    num_single_layers=2,
    num_heads=2,
    head_dim=128,
    axes_dims_rope=(16, 56, 56),
    latent_channels=16,
    vae_channels=(32, 32, 32, 32),
    vae_norm_groups=32,
    vae_layers_per_block=1,
    vae_scaling_factor=0.3611,
    vae_shift_factor=0.1159,
    clip_dim=768,
    clip_heads=2,
    t5_dim=4096,
    t5_heads=2,
    t5_kv=64,
    t5_ff=256,
    text_layers=1,
    max_sequence_length=512,
    guidance_embeds=True,
)
# FLUX.1-dev at full size (random weights): the GPU step benchmark's transformer and VAE.
FLUX_DEV = replace(
    FLUX_DEV_SHAPED,
    num_layers=19,
    num_single_layers=38,
    num_heads=24,
    vae_channels=(128, 256, 512, 512),
    vae_layers_per_block=2,
)


def flux_dev_shaped(seed: int = 0, corpus=None) -> FluxBackbone:
    """FLUX.1-dev's structure at a size that runs on a CPU: what tests load in place of the real weights."""
    return tiny_flux(FLUX_DEV_SHAPED, seed=seed, corpus=corpus)


def tiny_flux(config: TinyFluxConfig | None = None, seed: int = 0, corpus=None) -> FluxBackbone:
    """The FLUX classes at small dimensions with randomly initialised weights and offline tokenizers."""
    c = config or TinyFluxConfig()
    if sum(c.axes_dims_rope) != c.head_dim:
        raise ValueError(f"axes_dims_rope {c.axes_dims_rope} must sum to head_dim {c.head_dim}")
    torch.manual_seed(seed)
    tokenizer = build_clip_tokenizer(c.vocab_size, corpus)
    tokenizer_2 = build_t5_tokenizer(c.vocab_size, corpus, max_length=c.max_sequence_length)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4 * c.latent_channels,
        num_layers=c.num_layers,
        num_single_layers=c.num_single_layers,
        attention_head_dim=c.head_dim,
        num_attention_heads=c.num_heads,
        joint_attention_dim=c.t5_dim,
        pooled_projection_dim=c.clip_dim,  # CLIP's hidden size must equal pooled_projection_dim
        guidance_embeds=c.guidance_embeds,
        axes_dims_rope=c.axes_dims_rope,
    )
    n = len(c.vae_channels)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=c.vae_channels,
        layers_per_block=c.vae_layers_per_block,
        latent_channels=c.latent_channels,
        norm_num_groups=c.vae_norm_groups,
        use_quant_conv=False,
        use_post_quant_conv=False,
        scaling_factor=c.vae_scaling_factor,
        shift_factor=c.vae_shift_factor,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=c.clip_dim,
            intermediate_size=2 * c.clip_dim,
            num_hidden_layers=c.text_layers,
            num_attention_heads=c.clip_heads,
            max_position_embeddings=tokenizer.model_max_length,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    text_encoder_2 = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer_2),
            d_model=c.t5_dim,
            d_kv=c.t5_kv or c.t5_dim // c.t5_heads,
            d_ff=c.t5_ff or 2 * c.t5_dim,
            num_layers=c.text_layers,
            num_heads=c.t5_heads,
            feed_forward_proj="gated-gelu",
            dropout_rate=0.0,
            pad_token_id=tokenizer_2.pad_token_id,
            eos_token_id=tokenizer_2.eos_token_id,
        )
    )
    # FLUX.1-dev's scheduler settings (resolution-dependent shift).
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_image_seq_len=256,
        max_image_seq_len=4096,
        base_shift=0.5,
        max_shift=1.15,
    )
    for module in (transformer, vae, text_encoder, text_encoder_2):
        module.eval()  # as from_pretrained returns them
    return FluxBackbone(
        transformer=transformer,
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        scheduler=scheduler,
        max_sequence_length=c.max_sequence_length,
    )
