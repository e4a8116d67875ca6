"""Stage 1's LightningModules: the tiny FLUX's VAE and transformer trained from scratch, our stand-in for
FLUX.1-dev's pretraining (experiments/training/backbone_stage.py runs them in order).

Both receive the built modules and do no file I/O; data come from data_modules.pretrain.
    VAEPretrain   image (b, 3, H, W) in [-1, 1]: a face or one of its condition maps
    FluxPretrain  latents (b, l, d) packed tokens, text_sequence (b, s, D), text_pooled (b, P)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import lightning as L
import torch

from facemogle.backbone import FluxBackbone
from facemogle.encode import TextEmbeddings, encode_images, encode_prompts, scale_latents, text_ids
from facemogle.flow import TimestepSampling, add_noise, velocity_target
from facemogle.flux_forward import flux_forward, install_condition_forward
from facemogle.lit_module import OptimConfig, with_lr_schedule
from facemogle.rules import AT_LEAST_ONE, NON_NEGATIVE, PROBABILITY, Range, check_ranges
from facemogle.seeding import derive_seed


@dataclass
class VAEStageConfig:
    # generated faces cannot follow a mask closer than the VAE draws it, so the VAE gets many steps
    steps: int = 1800
    lr: float = 1e-3
    batch_size: int = 16
    kl_weight: float = 1e-6
    # the share of samples that are a condition map instead of the face: the VAE must draw a 3-pixel eye mask
    map_share: float = 0.25

    RULES: ClassVar[dict[str, Range]] = {
        "steps": AT_LEAST_ONE,
        "batch_size": AT_LEAST_ONE,
        "map_share": PROBABILITY,
    }

    def __post_init__(self) -> None:
        check_ranges(self)


@dataclass
class FluxStageConfig:
    steps: int = 3000
    lr: float = 5e-4
    batch_size: int = 16
    decay_steps: int = 0  # the last N steps ramp the lr linearly to 0
    # the empty prompt's share, so classifier-free guidance has an unconditional branch
    text_dropout: float = 0.1
    timesteps: TimestepSampling = field(default_factory=TimestepSampling)

    RULES: ClassVar[dict[str, Range]] = {
        "steps": AT_LEAST_ONE,
        "batch_size": AT_LEAST_ONE,
        "decay_steps": NON_NEGATIVE,
        "text_dropout": PROBABILITY,
    }

    def __post_init__(self) -> None:
        check_ranges(self)


class VAEPretrain(L.LightningModule):
    """The VAE trained to reconstruct its inputs: MSE + a small KL term."""

    def __init__(self, vae, config: VAEStageConfig):
        super().__init__()
        self.vae, self.config = vae, config

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        x = batch["image"]
        posterior = self.vae.encode(x).latent_dist
        # Decode the posterior mean, as stage 2 and sampling encode with it; the KL term keeps the latents
        # bounded. (Decoding a sample, the noise swamps the latents until the log-variance has fallen.)
        recon = self.vae.decode(posterior.mean).sample
        mse = torch.nn.functional.mse_loss(recon, x)
        loss = mse + self.config.kl_weight * posterior.kl().mean()
        self.log("vae/mse", mse, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.vae.parameters(), lr=self.config.lr, weight_decay=0.0)


class FluxPretrain(L.LightningModule):
    """The FLUX transformer trained in full, text-to-image, with the rectified-flow loss."""

    def __init__(self, transformer, img_ids: torch.Tensor, config: FluxStageConfig, seed: int = 0):
        super().__init__()
        self.transformer, self.config, self.seed = transformer, config, seed
        install_condition_forward(transformer)  # the stock attention processor warns on every call
        self.register_buffer("img_ids", img_ids, persistent=False)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        x0 = batch["latents"]
        # a function of (seed, step), as stage 2's noise is: neither the global RNG's other draws nor a resume move it
        g = torch.Generator().manual_seed(derive_seed(self.seed, self.global_step))
        noise = torch.randn(x0.shape, generator=g).to(x0)
        t = self.config.timesteps.sample(x0.shape[0], generator=g).to(x0.device)
        seq = batch["text_sequence"]
        velocity = flux_forward(
            self.transformer,
            hidden_states=add_noise(x0, noise, t),
            encoder_hidden_states=seq,
            pooled_projections=batch["text_pooled"],
            timestep=t,
            img_ids=self.img_ids,
            txt_ids=text_ids(seq),
        )
        loss = torch.nn.functional.mse_loss(velocity, velocity_target(x0, noise))
        self.log("flux/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.transformer.parameters(), lr=self.config.lr, weight_decay=0.0)
        schedule = OptimConfig(decay_steps=self.config.decay_steps)
        return with_lr_schedule(optimizer, schedule, self.trainer.max_steps)


@torch.no_grad()
def normalise_latents(backbone: FluxBackbone, images: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """Set the VAE's shift / scale so the latents of `images` (n, 3, H, W) have mean 0 and std 1;
    -> those latents (n, l, d).

    One encoding pass: the raw latents go through encode_images' own scale_latents, so the result is
    what encode_images now returns, bit for bit."""
    backbone.vae.register_to_config(shift_factor=0.0, scaling_factor=1.0)
    raw = torch.cat([encode_images(backbone, part) for part in images.split(chunk)])
    backbone.vae.register_to_config(shift_factor=raw.mean().item(), scaling_factor=1.0 / raw.std().item())
    return scale_latents(backbone.vae, raw)


def encode_captions(
    backbone: FluxBackbone, captions: list[list[str]], chunk: int = 256
) -> list[TextEmbeddings]:
    """Each face's captions encoded, `chunk` prompts a call across faces (a prompt's embedding does not
    depend on its batch, and few large calls beat one call per face)."""
    flat = [c for cs in captions for c in cs]
    parts = [encode_prompts(backbone, flat[i : i + chunk]) for i in range(0, len(flat), chunk)]
    sizes = [len(cs) for cs in captions]
    sequences = torch.cat([p.sequence for p in parts]).split(sizes)
    pooled = torch.cat([p.pooled for p in parts]).split(sizes)
    return [TextEmbeddings(s, p) for s, p in zip(sequences, pooled, strict=True)]
