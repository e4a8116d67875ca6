"""A run's export, as sampling reads it (experiments.runs.io.export_run writes it):

    RUN_DIR/export/config.yaml                          the resolved config
    RUN_DIR/export/lora/pytorch_lora_weights.safetensors diffusers FLUX LoRA (alpha kept in its metadata)
    RUN_DIR/export/mogle.safetensors                     MoGLE weights
    RUN_DIR/export/manifest.json                         each file's sha256, checked when the export loads

A saved pipeline (facemogle.pipeline) has a manifest.json too. A folder whose manifest is missing or does not
match its files is refused (`check_manifest`), unless the caller asks to load it anyway (--allow-unverified).

The backbone itself is not copied: config.yaml names its directory (`backbone.path`). `read_export_spec`
reads what sampling needs from config.yaml without the training config's schema (experiments.config),
each part through its own dataclass, so a key it does not know is still an error.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from facemogle.data_only import refuse_resolvers
from facemogle.flux_forward import ConditionSettings
from facemogle.lora import LORA_FILE
from facemogle.mogle import MoGLEConfig
from facemogle.quantization import QuantizationConfig
from facemogle.release import sha256
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
    # the base it samples on; an export holds only LoRA and MoGLE, so any setting loads any export
    quantization: QuantizationConfig = field(default_factory=QuantizationConfig)
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
    refuse_resolvers(raw, str(Path(export) / CONFIG))  # an export is data: no opt-in here
    backbone, model = raw.backbone, raw.model
    return ExportSpec(
        backbone_path=str(backbone.path),
        backbone_dtype=str(backbone.get("dtype", "float32")),
        max_sequence_length=backbone.get("max_sequence_length"),
        quantization=_typed(QuantizationConfig, backbone.get("quantization")),
        resolution=int(raw.data.resolution),
        mogle=_typed(MoGLEConfig, model.mogle),
        condition=_typed(ConditionSettings, model.condition),
        cond_id_offset=tuple(model.get("cond_id_offset", (0.0, 0.0, 0.0))),
        sample=_typed(SampleSettings, raw.train.sample),
    )


def manifest(folder: Path) -> dict[str, str]:
    """Every file under `folder` (relative path) -> its sha256; the manifest itself aside."""
    files = [p for p in sorted(folder.rglob("*")) if p.is_file() and p != folder / MANIFEST]
    return {str(p.relative_to(folder)): sha256(p) for p in files}


def check_manifest(folder: str | Path, verify: bool = True) -> Path:
    """`folder`'s files are the ones its manifest.json lists, each with its recorded sha256: a missing
    manifest, a file missing, changed or added is an error naming it (a truncated copy, a corrupted download,
    a deleted LoRA file, a file put there), not a model that samples black images or another model. With
    `verify=False` (the commands' --allow-unverified) each is a warning instead. -> the folder."""
    folder = Path(folder)
    for problem in manifest_problems(folder):
        if verify:
            raise ValueError(f"{problem} (--allow-unverified loads it anyway)")
        log.warning("%s: loading it anyway (--allow-unverified)", problem)
    return folder


def manifest_problems(folder: Path) -> list[str]:
    listed = folder / MANIFEST
    if not listed.is_file():
        return [f"{folder} has no {MANIFEST}: its files cannot be checked"]
    recorded = json.loads(listed.read_text(encoding="utf-8"))
    problems = []
    for name, digest in recorded.items():
        file = folder / name
        if not file.is_file():
            problems.append(f"{file} is missing from {folder} (listed in {listed})")
        elif sha256(file) != digest:
            problems.append(
                f"{file} is corrupted or incomplete: its sha256 differs from the one {listed} records "
                "(copy or download it again)"
            )
    present = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p != listed}
    problems += [f"{folder / name} is not listed in {listed}" for name in sorted(present - recorded.keys())]
    return problems


def check_export(export: str | Path, run_dir: str | Path | None = None, verify: bool = True) -> Path:
    """The export's files are there and match its manifest (`check_manifest`). -> the export folder."""
    export = Path(export)
    for needed in (CONFIG, LORA, MOGLE_FILE):
        if not (export / needed).is_file():
            raise ValueError(
                f"{export / needed} is missing: is {run_dir or export.parent} a finished facemogle run?"
            )
    return check_manifest(export, verify)
