"""Config -> the built objects: backbone, denoiser, LightningModule."""

from __future__ import annotations

from pathlib import Path

from peft import set_peft_model_state_dict

from experiments.config.load import load_config
from experiments.config.schema import BackboneConfig, Config, ModelConfig
from facemogle.backbone import DTYPES, FluxBackbone, load_flux
from facemogle.data_only import load_tensors
from facemogle.denoiser import Denoiser
from facemogle.export import CONFIG, EXPORT, LORA, MOGLE_FILE, check_export
from facemogle.lit_module import FaceMoGLEModule
from facemogle.lora import ADAPTER, add_lora, lora_layer_names
from facemogle.mogle import MoGLE


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


def build_denoiser(
    backbone: FluxBackbone, cfg: ModelConfig, lora: bool = True, init: bool = True
) -> Denoiser:
    """LoRA injected into the frozen transformer (unless `lora=False`, e.g. to load a saved one) + MoGLE,
    started from `cfg.init_from` unless `init=False` (a resumed run: its checkpoint holds the weights)."""
    if cfg.mogle.token_dim != backbone.token_dim:
        raise ValueError(
            f"model.mogle.token_dim={cfg.mogle.token_dim} but the backbone's packed tokens have width "
            f"{backbone.token_dim}"
        )
    if lora:
        add_lora(backbone.transformer, cfg.lora)
    mogle = MoGLE(cfg.mogle).to(backbone.transformer.device)
    denoiser = Denoiser(backbone.transformer, mogle, cfg.condition, cfg.cond_id_offset)
    if lora and init and cfg.init_from is not None:
        init_from(denoiser, cfg)
    return denoiser


def init_from(denoiser: Denoiser, cfg: ModelConfig) -> None:
    """Start LoRA and MoGLE from the export of the run `cfg.init_from` (its manifest checked), whose
    model.mogle and model.lora must be this config's: the same modules and, for the gate, the same time scale
    (facemogle.official: import with --convention training to give the gate the official training's inputs)."""
    given = Path(cfg.init_from)
    export = given / EXPORT if (given / EXPORT).is_dir() else given
    check_export(export, given)
    source = load_config(export / CONFIG).model
    for part in ("mogle", "lora"):
        ours, theirs = vars(getattr(cfg, part)), vars(getattr(source, part))
        for key in ours:
            if ours[key] != theirs[key]:
                raise ValueError(
                    f"model.init_from={cfg.init_from}: its model.{part}.{key} is {theirs[key]!r}, this run's "
                    f"{ours[key]!r}; set model.{part}.{key}={theirs[key]!r} to start from it"
                )
    denoiser.mogle.load_state_dict(load_tensors(export / MOGLE_FILE), strict=True)
    lora = {k.removeprefix("transformer."): v for k, v in load_tensors(export / LORA).items()}
    result = set_peft_model_state_dict(denoiser.transformer, lora, adapter_name=ADAPTER)
    unset = [k for k in result.missing_keys if "lora_" in k]
    unexpected = [k for k in result.unexpected_keys if "lora_" in k]
    if unset or unexpected or not lora_layer_names(denoiser.transformer):
        raise ValueError(
            f"model.init_from={cfg.init_from}: {export / LORA} does not fit this run's LoRA (not in the file: "
            f"{unset[:3]}, not in the run: {unexpected[:3]})"
        )


def build_module(config: Config, init: bool = True) -> FaceMoGLEModule:
    """init=False: model.init_from is not read (a resumed run, whose checkpoint holds the weights)."""
    backbone = build_backbone(config.backbone)
    denoiser = build_denoiser(backbone, config.model, init=init)
    return FaceMoGLEModule(
        backbone,
        denoiser,
        config.train,
        config.data.resolution,
        config.seed,
        t5_on_accelerator=not config.backbone.t5_on_cpu,
    )
