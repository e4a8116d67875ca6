"""The official Face-MoGLE release (github.com/XavierJiezou/Face-MoGLE) in and out of a facemogle run.

The release is two files: a diffusers FLUX LoRA (`pytorch_lora_weights.safetensors`, saved by the official
training without adapter metadata, so diffusers loads it with alpha = rank) and the official MoGLE class's
state dict (`mogle.pt`, also named `global_local_mask_moe.pt`), both used on FLUX.1-dev by the official
`inference.py`: 512^2, 28 steps, guidance 3.5, text-to-face with an all-background mask.

`import_official` writes a run export (facemogle.export's layout and manifest) that every tool reads: the
LoRA file copied byte for byte, MoGLE converted (facemogle.official), config.yaml the paper's config
(experiments/configs/flux_mmcelebahq.yaml) with the official sampler's settings and the LoRA's rank and
targets as the file holds them, and `official.json`: the source files' paths and sha256, the convention
and the sampler settings. `export_official` writes a run back as the two official files.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import FluxPipeline, FluxTransformer2DModel
from safetensors import safe_open
from safetensors.torch import save_file

from experiments.config.load import load_config, to_yaml
from experiments.config.schema import Config
from facemogle.atomic import atomic_dir, atomic_write, atomic_write_json
from facemogle.data_only import load_tensors, reading_safetensors
from facemogle.export import CONFIG, EXPORT, LORA, MANIFEST, MOGLE_FILE, check_export, manifest, sha256
from facemogle.lora import LORA_FILE, PAPER_TARGETS, SUPPORTED
from facemogle.official import (
    OFFICIAL_EXPERT_HIDDEN,
    OFFICIAL_TIME_SCALES,
    OfficialConvention,
    load_official_mogle,
    official_class_problem,
    read_state_dict,
    to_official_mogle,
)

REPO = Path(__file__).resolve().parents[2]
PAPER_CONFIG = REPO / "experiments" / "configs" / "flux_mmcelebahq.yaml"
SOURCE_RECORD = "official.json"
OFFICIAL_MOGLE_FILE = "mogle.pt"
# The official inference.py / src/flux/generate.py: size 512, FluxPipeline's 28 steps and guidance 3.5,
# text-to-face conditioned on an all-background mask.
OFFICIAL_SAMPLER = {
    "data.resolution": 512,
    "train.sample.steps": 28,
    "train.sample.guidance": 3.5,
    "train.sample.text_only_condition": "background",
}
_LORA_KEY = re.compile(r"transformer\.(?P<module>.+)\.lora_(?P<part>[AB])\.weight")


@dataclass
class OfficialLoRA:
    """What a released LoRA file holds: its rank, its alpha (= rank without metadata, as diffusers loads
    it), the modules it adapts and the peft targets that select exactly those."""

    rank: int
    alpha: float
    modules: list[str]
    targets: str | list[str]

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def _meta_transformer(backbone: Path) -> FluxTransformer2DModel:
    """The backbone's transformer with no weights (shapes only): a 12B FLUX.1-dev is not read to check a LoRA."""
    folder = backbone / "transformer"
    if not (folder / "config.json").is_file():
        raise ValueError(
            f"--backbone {backbone}: {folder / 'config.json'} is missing (a diffusers FLUX directory?)"
        )
    with torch.device("meta"):
        return FluxTransformer2DModel.from_config(FluxTransformer2DModel.load_config(folder))


def check_official_lora(path: str | Path, transformer: FluxTransformer2DModel) -> OfficialLoRA:
    """Every key a `transformer.<module>.lora_{A,B}.weight` of a Linear of the backbone's `transformer`, A
    (r, in) and B (out, r) with one rank r; anything else is a ValueError naming the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"LoRA file {path} does not exist")
    with reading_safetensors(path), safe_open(path, framework="pt") as f:
        shapes = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
    linears = {n: m for n, m in transformer.named_modules() if isinstance(m, torch.nn.Linear)}
    ranks: dict[str, int] = {}
    parts: dict[str, set[str]] = {}
    for key, shape in sorted(shapes.items()):
        match = _LORA_KEY.fullmatch(key)
        if not match:
            raise ValueError(
                f"{path}: key {key!r} is not a diffusers FLUX LoRA key (transformer.<module>.lora_A/B.weight)"
            )
        module, part = match["module"], match["part"]
        if module not in linears or not SUPPORTED.fullmatch(module):
            raise ValueError(
                f"{path}: key {key!r} names {module!r}, not a LoRA-able Linear of the backbone's transformer"
            )
        linear = linears[module]
        rank = (shape[0] if part == "A" else shape[-1]) if len(shape) == 2 else 0
        expected = (rank, linear.in_features) if part == "A" else (linear.out_features, rank)
        if shape != expected:
            raise ValueError(
                f"{path}: key {key!r} has shape {shape}, the backbone's {module} expects {expected}"
            )
        if ranks.setdefault(module, rank) != rank:
            raise ValueError(
                f"{path}: key {key!r} has rank {rank}, its lora_{'B' if part == 'A' else 'A'} {ranks[module]}"
            )
        parts.setdefault(module, set()).add(part)
    if not parts:
        raise ValueError(f"{path}: no LoRA weights in the file")
    for module, found in parts.items():
        if found != {"A", "B"}:
            raise ValueError(
                f"{path}: {module} has lora_{''.join(found)} but not lora_{''.join({'A', 'B'} - found)}"
            )
    if len(set(ranks.values())) != 1:
        raise ValueError(
            f"{path}: the modules have several ranks {sorted(set(ranks.values()))}; one rank is supported"
        )
    rank = next(iter(ranks.values()))
    alpha = lora_alpha(path, rank)
    modules = sorted(parts)
    paper = re.compile(rf"(.*\.)?({PAPER_TARGETS})")
    targets = PAPER_TARGETS if modules == sorted(n for n in linears if paper.fullmatch(n)) else modules
    return OfficialLoRA(rank, alpha, modules, targets)


def lora_alpha(path: Path, rank: int) -> float:
    """The LoRA file's alpha, from its adapter metadata (diffusers prefixes the keys with `transformer.`);
    without metadata, as the official training saves it, diffusers loads it with alpha = rank."""
    _, metadata = FluxPipeline.lora_state_dict(path, return_lora_metadata=True)
    metadata = {k.removeprefix("transformer."): v for k, v in (metadata or {}).items()}
    if metadata.get("alpha_pattern") or metadata.get("rank_pattern"):
        raise ValueError(
            f"{path}: per-module ranks or alphas (rank_pattern, alpha_pattern) are not supported"
        )
    return float(metadata.get("lora_alpha", rank))


def official_config(
    out: str | Path,
    backbone: str | Path,
    lora: OfficialLoRA,
    convention: OfficialConvention,
    expert_hidden: int,
    overrides: list[str] | None = None,
) -> Config:
    """The paper's config with the official sampler's settings and the released weights' sizes; `overrides`
    (key=value) last, e.g. data.root."""
    config = load_config(
        PAPER_CONFIG,
        [
            f"run_dir={out}",
            f"backbone.path={backbone}",
            *(f"{k}={v}" for k, v in OFFICIAL_SAMPLER.items()),
            "model.mogle.gate=dynamic",
            "model.mogle.experts=mlp",
            "model.mogle.expert_set=all",
            f"model.mogle.expert_hidden={expert_hidden}",
            f"model.mogle.time_scale={OFFICIAL_TIME_SCALES[convention]}",
            f"model.lora.rank={lora.rank}",
            f"model.lora.alpha={lora.alpha}",
            *(overrides or []),
        ],
    )
    config.model.lora.target_modules = lora.targets
    return config


def import_official(
    lora: str | Path,
    mogle: str | Path,
    backbone: str | Path,
    out: str | Path,
    convention: OfficialConvention = "sampler",
    overrides: list[str] | None = None,
) -> Path:
    """The release as the run `out` (out/export, written atomically). -> the export folder."""
    lora, mogle, backbone = Path(lora), Path(mogle), Path(backbone)
    if convention not in OFFICIAL_TIME_SCALES:
        raise ValueError(f"--convention {convention!r}: expected one of {sorted(OFFICIAL_TIME_SCALES)}")
    transformer = _meta_transformer(backbone)
    found = check_official_lora(lora, transformer)
    # the official MoGLE() has no size arguments: its shapes, for the backbone's token width, are the only ones
    loaded = load_official_mogle(mogle, transformer.config.in_channels, OFFICIAL_EXPERT_HIDDEN, convention)
    config = official_config(out, backbone, found, convention, loaded.config.expert_hidden, overrides)
    record = {
        "source": "the official Face-MoGLE release (github.com/XavierJiezou/Face-MoGLE)",
        "files": {
            "lora": {"path": str(lora.resolve()), "sha256": sha256(lora)},
            "mogle": {"path": str(mogle.resolve()), "sha256": sha256(mogle)},
        },
        "convention": convention,
        "gate_time_scale": loaded.config.time_scale,
        "lora": {"rank": found.rank, "alpha": found.alpha, "scale": found.scale, "modules": found.modules},
        "official_sampler": OFFICIAL_SAMPLER,
    }
    final = Path(out) / EXPORT
    with atomic_dir(final) as tmp:
        (tmp / CONFIG).write_text(to_yaml(config))
        (tmp / LORA).parent.mkdir(parents=True)
        shutil.copyfile(lora, tmp / LORA)  # byte for byte: what the official inference.py loads
        save_file(
            {k: v.detach().float().contiguous() for k, v in loaded.state_dict().items()}, tmp / MOGLE_FILE
        )
        atomic_write_json(tmp / SOURCE_RECORD, record)
        atomic_write_json(tmp / MANIFEST, manifest(tmp))
    return final


@dataclass
class OfficialFiles:
    lora: Path
    mogle: Path


def export_official(run_dir: str | Path, out: str | Path, verify: bool = True) -> OfficialFiles:
    """A run's export as the two files the official inference.py loads (`--lora_ckpt`, `--moe_ckpt`, the
    MoGLE with strict=True): the LoRA with alpha / rank folded into lora_B and no metadata (diffusers then
    loads it at scale 1, as the official training saved it), the MoGLE in the official class's keys."""
    export = check_export(Path(run_dir) / EXPORT, run_dir, verify)
    config = load_config(export / CONFIG)
    problem = official_class_problem(config.model.mogle)
    if problem:
        raise ValueError(f"--run {run_dir} cannot be written in the official format: {problem}")
    official = to_official_mogle(read_state_dict(export / MOGLE_FILE), config.model.mogle)
    tensors = load_tensors(export / LORA)
    ranks = {t.shape[0] for k, t in tensors.items() if ".lora_A." in k}
    if len(ranks) != 1:
        raise ValueError(f"{export / LORA}: the modules have ranks {sorted(ranks)}; one rank is supported")
    rank = ranks.pop()
    scale = lora_alpha(export / LORA, rank) / rank
    lora = {k: (t * scale if ".lora_B." in k and scale != 1 else t).contiguous() for k, t in tensors.items()}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / LORA_FILE, lambda tmp: save_file(lora, tmp, metadata={"format": "pt"}))
    atomic_write(out / OFFICIAL_MOGLE_FILE, lambda tmp: torch.save(official, tmp))
    return OfficialFiles(out / LORA_FILE, out / OFFICIAL_MOGLE_FILE)


def source_record(export: str | Path) -> dict | None:
    """An imported run's official.json (None for a run trained here)."""
    path = Path(export) / SOURCE_RECORD
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
