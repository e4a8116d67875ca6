"""Stage 1 of the embedded default: pretrain the tiny FLUX, our stand-in for FLUX.1-dev's pretraining.

1. Tokenizers are trained on the training captions; the CLIP and T5 text encoders stay randomly
   initialised and frozen. A frozen random encoder is still an injective, deterministic map from
   token sequences to features, which is all a text-to-image transformer needs to learn from at this
   scale; it keeps stage 1 independent of the evaluator CLIP, so CLIP score is not measured with the
   generator's own text tower.
2. The VAE is trained to reconstruct the synthetic training images and, for a share of its samples
   (`vae.map_share`), the training masks' condition maps (the colour map or one part's binary map), MSE +
   a small KL term. FLUX.1-dev's VAE was trained on general images and encodes a flat-coloured mask
   faithfully; a VAE that had only seen faces would blur a 3-pixel eye mask away before MoGLE ever saw it.
   Its latent shift and scale are then set from the face latents' mean and std, as FLUX's VAE config
   carries.
3. The FLUX transformer is trained in full, text-to-image, with the rectified-flow loss on the cached
   latents and text dropout (`flux.text_dropout`, so classifier-free guidance has an unconditional branch).

`pretrain_backbone(config)` runs it (experiments/pretrain_backbone.py is its command line) and writes
    OUT/                                    a diffusers FLUX directory that `load_flux` reads, with
                                            stage1.json (the report); written atomically
    RUN_DIR/config.yaml                     the resolved config
    RUN_DIR/checkpoints/{vae,flux}/last.ckpt  each stage's Lightning checkpoint
    RUN_DIR/wandb/ or logs/{vae,flux}/      the logger's files
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from lightning.pytorch.loggers import WandbLogger
from torch.utils.data import DataLoader

from data_modules.pretrain import ImagesAndMaps, LatentCaptions, TrainFaces, load_train_faces
from experiments.config.load import to_yaml
from experiments.config.schema import PretrainConfig
from experiments.training.trainer import stage_loggers, stage_trainer
from facemogle.atomic import atomic_dir, atomic_write_text
from facemogle.backbone import FluxBackbone, save_flux
from facemogle.encode import encode_prompts
from facemogle.packing import image_ids
from facemogle.pretrain import FluxPretrain, VAEPretrain, encode_captions, normalise_latents
from facemogle.tiny_backbone import tiny_flux

log = logging.getLogger(__name__)

REPORT_FILE = "stage1.json"
STAGES = ("vae", "flux")


@dataclass
class Stage1Report:
    train_images: int
    vae_mse: float  # the last logged VAE batch's reconstruction MSE
    flux_loss: float  # the last logged FLUX batch's rectified-flow loss
    vae_seconds: float  # VAE training and the latents' normalisation
    flux_seconds: float  # caption encoding and FLUX training


def pretrain_backbone(config: PretrainConfig) -> Stage1Report:
    """Train the tiny FLUX's VAE, then its transformer, on `config.data`'s training faces; write `config.out`."""
    torch.manual_seed(config.seed)
    faces = load_train_faces(config.data, config.split, config.resolution)
    log.info("stage 1: %d training faces from %s", len(faces.captions), config.data)
    for stage in STAGES:
        _check_batch_size(config, stage, len(faces.captions))
    corpus = [c for cs in faces.captions for c in cs]
    backbone = tiny_flux(config.backbone, seed=config.seed, corpus=corpus)
    run_dir = Path(config.run_dir)
    atomic_write_text(run_dir / "config.yaml", to_yaml(config))
    loggers = stage_loggers(config, STAGES)
    try:
        start = time.perf_counter()
        vae_mse = train_vae(backbone, faces, config, loggers["vae"])
        latents = normalise_latents(backbone, faces.images)
        vae_seconds = time.perf_counter() - start

        start = time.perf_counter()
        flux_loss = train_flux(backbone, latents, faces.captions, config, loggers["flux"])
        flux_seconds = time.perf_counter() - start
    finally:
        for logger in set(loggers.values()):
            if isinstance(logger, WandbLogger):
                # wandb keeps one global run per process: a later WandbLogger here would log into this one
                logger.experiment.finish()

    report = Stage1Report(len(faces.captions), vae_mse, flux_loss, vae_seconds, flux_seconds)
    with atomic_dir(config.out) as tmp:
        save_flux(backbone, tmp)
        (tmp / REPORT_FILE).write_text(json.dumps(asdict(report), indent=2))
    log.info("stage 1: wrote %s", config.out)
    return report


def train_vae(backbone: FluxBackbone, faces: TrainFaces, config: PretrainConfig, logger) -> float:
    """Train `backbone.vae` in place; -> its last logged MSE."""
    c = config.vae
    samples = ImagesAndMaps(faces.images, faces.labels, c.map_share)
    data = DataLoader(samples, batch_size=c.batch_size, shuffle=True, drop_last=True)
    trainer = stage_trainer(config, "vae", c.steps, logger, lr_monitor=False)  # the VAE's lr is constant
    backbone.vae.train()
    trainer.fit(VAEPretrain(backbone.vae, c), data)
    backbone.vae.eval()
    return float(trainer.callback_metrics["vae/mse"])


def train_flux(
    backbone: FluxBackbone, latents: torch.Tensor, captions: list[list[str]], config: PretrainConfig, logger
) -> float:
    """Train `backbone.transformer` in place on the faces' latents (n, l, d) and captions; -> its last
    logged loss."""
    c = config.flux
    text = encode_captions(backbone, captions)
    samples = LatentCaptions(latents, text, encode_prompts(backbone, [""]), c.text_dropout)
    data = DataLoader(samples, batch_size=c.batch_size, shuffle=True, drop_last=True)
    side = config.resolution // backbone.vae_scale_factor
    module = FluxPretrain(backbone.transformer.train(), image_ids(side, side), c, config.seed)
    trainer = stage_trainer(config, "flux", c.steps, logger)
    trainer.fit(module, data)
    backbone.transformer.eval()
    return float(trainer.callback_metrics["flux/loss"])


def _check_batch_size(config: PretrainConfig, stage: str, faces: int) -> None:
    batch_size = getattr(config, stage).batch_size
    if batch_size > faces:  # the stage's DataLoader drops the last partial batch: there would be none
        raise ValueError(
            f"{stage}.batch_size={batch_size} is more than the {faces} training faces in {config.data}"
        )
