"""Config -> the built objects: backbone, denoiser, LightningModule."""

from __future__ import annotations

from experiments.config.schema import BackboneConfig, Config, ModelConfig
from facemogle.backbone import DTYPES, FluxBackbone, load_flux
from facemogle.denoiser import Denoiser
from facemogle.lit_module import FaceMoGLEModule
from facemogle.lora import add_lora
from facemogle.mogle import MoGLE
from facemogle.quantization import check_strategy


def build_backbone(cfg: BackboneConfig) -> FluxBackbone:
    if cfg.dtype not in DTYPES:
        raise ValueError(f"backbone.dtype={cfg.dtype!r}: expected one of {sorted(DTYPES)}")
    backbone = load_flux(
        cfg.path,
        DTYPES[cfg.dtype],
        max_sequence_length=cfg.max_sequence_length,
        quantization=cfg.quantization,
    )
    backbone.freeze()
    if cfg.gradient_checkpointing:
        backbone.transformer.enable_gradient_checkpointing()
    return backbone


def build_denoiser(backbone: FluxBackbone, cfg: ModelConfig, lora: bool = True) -> Denoiser:
    """LoRA injected into the frozen transformer (unless `lora=False`, e.g. to load a saved one) + MoGLE."""
    if cfg.mogle.token_dim != backbone.token_dim:
        raise ValueError(
            f"model.mogle.token_dim={cfg.mogle.token_dim} but the backbone's packed tokens have width "
            f"{backbone.token_dim}"
        )
    if lora:
        add_lora(backbone.transformer, cfg.lora)
    mogle = MoGLE(cfg.mogle).to(backbone.transformer.device)
    return Denoiser(backbone.transformer, mogle, cfg.condition, cfg.cond_id_offset)


def build_module(config: Config) -> FaceMoGLEModule:
    check_strategy(config.backbone.quantization, config.trainer.strategy)
    backbone = build_backbone(config.backbone)
    return FaceMoGLEModule(
        backbone, build_denoiser(backbone, config.model), config.train, config.data.resolution, config.seed
    )
