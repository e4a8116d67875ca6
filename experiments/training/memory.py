"""A training config -> facemogle.memory_plan's settings and architecture, and the start-up memory check.

`python -m experiments.plan_memory` prints the plan; `experiments.training.run.train` calls `check_memory`
before it loads the backbone.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from experiments.config.schema import Config
from facemogle.memory_plan import fitting, plan_memory
from facemogle.memory_sizes import (
    FLUX_DEV_CLIP,
    FLUX_DEV_T5,
    FLUX_DEV_TRANSFORMER,
    FLUX_DEV_VAE,
    Architecture,
    GiB,
    MemoryPlan,
    MemorySettings,
)

FOLDERS = {
    "transformer": FLUX_DEV_TRANSFORMER,
    "text_encoder_2": FLUX_DEV_T5,
    "text_encoder": FLUX_DEV_CLIP,
    "vae": FLUX_DEV_VAE,
}
# each setting that memory_plan.candidates changes -> the config key that sets it
KEYS = {
    "batch": "data.batch_size",
    "gradient_checkpointing": "backbone.gradient_checkpointing",
    "transformer_quantization": "backbone.quantization.transformer",
    "text_encoder_2_quantization": "backbone.quantization.text_encoder_2",
    "optimizer": "train.optim.name",
}
# each text path (facemogle.memory_sizes.TEXT_PATHS) -> the keys that choose it
TEXT_KEYS = {
    "encoded": "data.cache_text=false backbone.t5_on_cpu=false",
    "cached": "data.cache_text=true backbone.t5_on_cpu=false",
    "cpu": "data.cache_text=true backbone.t5_on_cpu=true",
}


def memory_settings(config: Config) -> MemorySettings:
    """What the plan needs of a config. T5 in host memory (backbone.t5_on_cpu) is the "cpu" text path, whether
    or not the captions are cached (without the cache it encodes each step on the CPU)."""
    quantization = config.backbone.quantization
    text_path = "cached" if config.data.cache_text else "encoded"
    return MemorySettings(
        batch=config.data.batch_size,
        resolution=config.data.resolution,
        precision=config.trainer.precision,
        dtype=config.backbone.dtype,
        gradient_checkpointing=config.backbone.gradient_checkpointing,
        transformer_quantization=quantization.transformer,
        text_encoder_2_quantization=quantization.text_encoder_2,
        optimizer=config.train.optim.name,
        text_path="cpu" if config.backbone.t5_on_cpu else text_path,
        max_sequence_length=config.backbone.max_sequence_length or 512,
        lora=config.model.lora,
        mogle=config.model.mogle,
        condition=config.model.condition,
    )


def architecture(path: str | Path) -> tuple[Architecture, str]:
    """The sizes in the backbone directory's config.json files, or FLUX.1-dev's where the directory has none
    (planning on a machine without the weights); and which of the two it was."""
    root = Path(path)
    found = {}
    for folder, default in FOLDERS.items():
        file = root / folder / "config.json"
        found[folder] = json.loads(file.read_text()) if file.is_file() else dict(default)
    read = [f for f in FOLDERS if (root / f / "config.json").is_file()]
    if len(read) == len(FOLDERS):
        source = f"the sizes in {root}"
    elif read:
        source = f"the sizes in {root} ({', '.join(read)}), FLUX.1-dev's for the rest"
    else:
        source = f"FLUX.1-dev's sizes ({root} holds no config.json)"
    return Architecture(**{f: _sizes(found[f]) for f in FOLDERS}), source


def _sizes(config: dict) -> dict:
    # diffusers' and transformers' bookkeeping keys (_class_name, architectures, ...) are no sizes
    return {k: v for k, v in config.items() if not k.startswith("_") and k not in ("architectures",)}


def plan_for(config: Config) -> MemoryPlan:
    arch, _ = architecture(config.backbone.path)
    return plan_memory(arch, memory_settings(config))


def overrides(settings: MemorySettings, base: MemorySettings) -> str:
    """The config keys that turn base into settings, as key=value overrides."""
    found = []
    for name, key in KEYS.items():
        value = getattr(settings, name)
        if value != getattr(base, name):
            found.append(f"{key}={str(value).lower() if isinstance(value, bool) else value}")
    if settings.text_path != base.text_path:
        found.append(TEXT_KEYS[settings.text_path])
    return " ".join(found)


def check_memory(config: Config, free: int | None = None) -> MemoryPlan | None:
    """Before the backbone loads on a CUDA device: a training step predicted above the device's free memory is
    a ValueError naming the prediction, the free memory and settings that fit. None where there is nothing to
    check (no CUDA device, or FSDP, which shards the weights the plan counts whole)."""
    if free is None:
        if config.trainer.accelerator not in ("auto", "gpu", "cuda") or not torch.cuda.is_available():
            return None
        free, _ = torch.cuda.mem_get_info()
    if config.trainer.strategy == "fsdp":
        return None
    arch, _ = architecture(config.backbone.path)
    settings = memory_settings(config)
    plan = plan_memory(arch, settings)
    if plan.training.total <= free:
        return plan
    fits = fitting(arch, settings, free)
    advice = (
        "; ".join(f"{overrides(p.settings, settings)} ({p.training.total / GiB:.1f} GiB)" for p in fits)
        or "none of batch 1, gradient checkpointing, an int8 or nf4 base, cached text, T5 on the CPU and AdamW8bit"
    )
    raise ValueError(
        f"a training step is predicted to need {plan.training.total / GiB:.1f} GiB ({settings.describe()}) "
        f"but the device has {free / GiB:.1f} GiB free; settings predicted to fit: {advice} "
        "(python -m experiments.plan_memory prints the plan)"
    )
