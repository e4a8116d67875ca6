"""A run's export: what sampling needs, without any training state.

    RUN_DIR/export/config.yaml                          the resolved config
    RUN_DIR/export/lora/pytorch_lora_weights.safetensors diffusers FLUX LoRA (alpha kept in its metadata)
    RUN_DIR/export/mogle.safetensors                     MoGLE weights
    RUN_DIR/export/manifest.json                         each file's sha256, checked when the export loads

The export is written to a temporary folder and renamed into place, so a reader never sees half of it.
The backbone itself is not copied: config.yaml names its directory (`backbone.path`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from experiments.build import build_backbone, build_denoiser
from experiments.config import Config, load_config, to_yaml
from facemogle.atomic import atomic_dir, atomic_write_json
from facemogle.backbone import FluxBackbone
from facemogle.denoiser import Denoiser
from facemogle.lora import LORA_FILE, load_lora, save_lora

EXPORT = "export"
MANIFEST = "manifest.json"
log = logging.getLogger(__name__)


@dataclass
class LoadedRun:
    config: Config
    backbone: FluxBackbone
    denoiser: Denoiser


def export_run(
    run_dir: str | Path, config: Config, denoiser: Denoiser, weights: dict[str, torch.Tensor] | None = None
) -> Path:
    """weights: the denoiser's state (at least LoRA and MoGLE) as whole tensors, for a denoiser whose own
    are sharded (FSDP); by default its state_dict()."""
    weights = denoiser.state_dict() if weights is None else weights
    final = Path(run_dir) / EXPORT
    with atomic_dir(final) as tmp:
        (tmp / "config.yaml").write_text(to_yaml(config))
        save_lora(denoiser.transformer, tmp / "lora", state_dict=_under(weights, "transformer."))
        state = {k: v.detach().float().cpu().contiguous() for k, v in _under(weights, "mogle.").items()}
        save_file(state, tmp / "mogle.safetensors")
        manifest = {str(p.relative_to(tmp)): _sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        atomic_write_json(tmp / MANIFEST, manifest)
    return final


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_export(export: Path) -> None:
    """Every file the manifest lists is there with its recorded sha256: a truncated copy or a corrupted
    download is an error naming the file, not a model that samples black images."""
    manifest = export / MANIFEST
    if not manifest.is_file():
        log.warning("%s has no %s (written before manifests): its files are not checked", export, MANIFEST)
        return
    for name, digest in json.loads(manifest.read_text(encoding="utf-8")).items():
        file = export / name
        if not file.is_file():
            raise ValueError(f"{file} is missing from the export (listed in {manifest})")
        if _sha256(file) != digest:
            raise ValueError(
                f"{file} is corrupted or incomplete: its sha256 differs from the one {manifest} records "
                "(copy or download the export again)"
            )


def _under(weights: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}


def load_run(run_dir: str | Path, overrides: list[str] | None = None) -> LoadedRun:
    """Rebuild a run's denoiser from its export: the backbone from `backbone.path`, LoRA, MoGLE."""
    export = Path(run_dir) / EXPORT
    for needed in ("config.yaml", f"lora/{LORA_FILE}", "mogle.safetensors"):
        if not (export / needed).is_file():
            raise ValueError(f"{export / needed} is missing: is {run_dir} a finished facemogle run?")
    check_export(export)
    config = load_config(export / "config.yaml", overrides)
    backbone = build_backbone(config.backbone)
    denoiser = build_denoiser(backbone, config.model, lora=False)
    load_lora(backbone.transformer, export / "lora" / LORA_FILE)
    denoiser.mogle.load_state_dict(load_file(export / "mogle.safetensors"))
    denoiser.mogle.to(dtype=torch.float32)
    denoiser.eval()
    return LoadedRun(config, backbone, denoiser)
