"""A run's export, as sampling reads it (experiments.runs.io.export_run writes it):

    RUN_DIR/export/config.yaml                          the resolved config
    RUN_DIR/export/lora/pytorch_lora_weights.safetensors diffusers FLUX LoRA (alpha kept in its metadata)
    RUN_DIR/export/mogle.safetensors                     MoGLE weights
    RUN_DIR/export/manifest.json                         each file's sha256, checked when the export loads

The backbone itself is not copied: config.yaml names its directory (`backbone.path`). `read_export_spec`
reads what sampling needs from config.yaml without the training config's schema (experiments.config),
each part through its own dataclass, so a key it does not know is still an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from facemogle.flux_forward import ConditionSettings
from facemogle.lora import LORA_FILE
from facemogle.mogle import MoGLEConfig
from facemogle.sampling import SampleSettings

EXPORT = "export"
CONFIG = "config.yaml"
MANIFEST = "manifest.json"
MOGLE_FILE = "mogle.safetensors"
LORA = f"lora/{LORA_FILE}"
log = logging.getLogger(__name__)


@dataclass
class ExportSpec:
    """What an export's config.yaml says about sampling it."""

    backbone_path: str
    backbone_dtype: str = "float32"
    max_sequence_length: int | None = None  # None: the T5 tokenizer's model_max_length (at most 512)
    resolution: int = 64
    mogle: MoGLEConfig = field(default_factory=MoGLEConfig)
    condition: ConditionSettings = field(default_factory=ConditionSettings)
    cond_id_offset: tuple[float, float, float] = (0.0, 0.0, 0.0)
    sample: SampleSettings = field(default_factory=SampleSettings)


def _typed(cls, values):
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), values or {}))


def read_export_spec(export: str | Path) -> ExportSpec:
    """The sampling settings of export/config.yaml (run it through `check_export` first)."""
    raw = OmegaConf.load(Path(export) / CONFIG)
    backbone, model = raw.backbone, raw.model
    return ExportSpec(
        backbone_path=str(backbone.path),
        backbone_dtype=str(backbone.get("dtype", "float32")),
        max_sequence_length=backbone.get("max_sequence_length"),
        resolution=int(raw.data.resolution),
        mogle=_typed(MoGLEConfig, model.mogle),
        condition=_typed(ConditionSettings, model.condition),
        cond_id_offset=tuple(model.get("cond_id_offset", (0.0, 0.0, 0.0))),
        sample=_typed(SampleSettings, raw.train.sample),
    )


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def manifest(folder: Path) -> dict[str, str]:
    """Every file under `folder` (relative path) -> its sha256."""
    return {str(p.relative_to(folder)): sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def check_export(export: str | Path, run_dir: str | Path | None = None) -> Path:
    """The export's files are there and, where the manifest lists them, have their recorded sha256: a
    truncated copy or a corrupted download is an error naming the file, not a model that samples black
    images. -> the export folder."""
    export = Path(export)
    for needed in (CONFIG, LORA, MOGLE_FILE):
        if not (export / needed).is_file():
            raise ValueError(
                f"{export / needed} is missing: is {run_dir or export.parent} a finished facemogle run?"
            )
    listed = export / MANIFEST
    if not listed.is_file():
        log.warning("%s has no %s (written before manifests): its files are not checked", export, MANIFEST)
        return export
    for name, digest in json.loads(listed.read_text(encoding="utf-8")).items():
        file = export / name
        if not file.is_file():
            raise ValueError(f"{file} is missing from the export (listed in {listed})")
        if sha256(file) != digest:
            raise ValueError(
                f"{file} is corrupted or incomplete: its sha256 differs from the one {listed} records "
                "(copy or download the export again)"
            )
    return export
