"""A run's export: what sampling needs, without any training state (the files: facemogle.export).

The export is written to a temporary folder and renamed into place, so a reader never sees half of it.
`load_run` reads it into a FaceMoGLEPipeline (facemogle.pipeline) with the run's typed config, whose
`key=value` overrides reach the pipeline (another backbone.path, for instance).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from experiments.config.load import load_config, to_yaml
from experiments.config.schema import Config
from facemogle.atomic import atomic_dir, atomic_write_json
from facemogle.backbone import FluxBackbone
from facemogle.denoiser import Denoiser
from facemogle.export import CONFIG, EXPORT, MANIFEST, MOGLE_FILE, ExportSpec, check_export, manifest
from facemogle.lora import save_lora
from facemogle.pipeline import FaceMoGLEPipeline


def add_allow_unverified(parser: argparse.ArgumentParser) -> None:
    """The sampling commands' opt-in to an export whose manifest is missing or does not match its files."""
    parser.add_argument(
        "--allow-unverified",
        action="store_true",
        help="load the run's export although its manifest.json is missing or does not match its files "
        "(refused by default: a file missing, changed or added)",
    )


@dataclass
class LoadedRun:
    config: Config
    pipeline: FaceMoGLEPipeline

    @property
    def backbone(self) -> FluxBackbone:
        return self.pipeline.backbone

    @property
    def denoiser(self) -> Denoiser:
        return self.pipeline.denoiser


def export_run(
    run_dir: str | Path, config: Config, denoiser: Denoiser, weights: dict[str, torch.Tensor] | None = None
) -> Path:
    """weights: the denoiser's state (at least LoRA and MoGLE) as whole tensors, for a denoiser whose own
    are sharded (FSDP); by default its state_dict()."""
    weights = denoiser.state_dict() if weights is None else weights
    final = Path(run_dir) / EXPORT
    with atomic_dir(final) as tmp:
        (tmp / CONFIG).write_text(to_yaml(config))
        save_lora(denoiser.transformer, tmp / "lora", state_dict=_under(weights, "transformer."))
        state = {k: v.detach().float().cpu().contiguous() for k, v in _under(weights, "mogle.").items()}
        save_file(state, tmp / MOGLE_FILE)
        atomic_write_json(tmp / MANIFEST, manifest(tmp))
    return final


def _under(weights: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}


def export_spec(config: Config) -> ExportSpec:
    """What sampling reads from a run's typed config."""
    model = config.model
    return ExportSpec(
        backbone_path=config.backbone.path,
        backbone_dtype=config.backbone.dtype,
        max_sequence_length=config.backbone.max_sequence_length,
        quantization=config.backbone.quantization,
        resolution=config.data.resolution,
        mogle=model.mogle,
        condition=model.condition,
        cond_id_offset=tuple(model.cond_id_offset),
        sample=config.train.sample,
    )


def load_run(run_dir: str | Path, overrides: list[str] | None = None, verify: bool = True) -> LoadedRun:
    """A run's export as a pipeline: the backbone from `backbone.path`, LoRA, MoGLE; files checked first
    against the manifest (facemogle.export.check_manifest; `verify=False` warns instead)."""
    export = check_export(Path(run_dir) / EXPORT, run_dir, verify)
    config = load_config(export / CONFIG, overrides)
    return LoadedRun(config, FaceMoGLEPipeline.from_export(export, export_spec(config)))
