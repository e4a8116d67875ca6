"""Start-up checks of a training config, before any data, cache or model is touched.

Each failure is a ValueError naming the key, its value and where the value came from (the command line,
the YAML file, or the default), so a bad value stops the run in a second instead of after the latent
cache is built.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from functools import reduce
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import OmegaConf

if TYPE_CHECKING:
    from experiments.config import Config

Rule = tuple[str, Callable[[object], bool], str]

POSITIVE = (lambda v: v > 0, "must be > 0")
NON_NEGATIVE = (lambda v: v >= 0, "must be >= 0")
AT_LEAST_ONE = (lambda v: v >= 1, "must be >= 1")
PROBABILITY = (lambda v: 0 <= v <= 1, "must be in [0, 1]")
FINITE = (lambda v: math.isfinite(v), "must be a finite number")


def _optional(rule):
    check, says = rule
    return (lambda v: v is None or check(v), f"{says} or null")


RULES: list[Rule] = [
    ("seed", *NON_NEGATIVE),
    ("train.optim.lr", *POSITIVE),
    ("train.optim.mogle_lr", *_optional(POSITIVE)),
    ("train.optim.weight_decay", *NON_NEGATIVE),
    ("train.optim.warmup_steps", *NON_NEGATIVE),
    ("train.optim.decay_steps", *NON_NEGATIVE),
    ("train.guidance", *POSITIVE),
    ("train.gate_balance", *NON_NEGATIVE),
    ("train.sample.steps", *AT_LEAST_ONE),
    ("train.sample.guidance", *NON_NEGATIVE),
    ("train.sample.text_scale", *FINITE),
    ("train.sample.mask_scale", *FINITE),
    ("trainer.max_steps", *AT_LEAST_ONE),
    ("trainer.accumulate_grad_batches", *AT_LEAST_ONE),
    ("trainer.gradient_clip_val", *_optional(POSITIVE)),
    ("trainer.num_nodes", *AT_LEAST_ONE),
    ("trainer.log_every_n_steps", *AT_LEAST_ONE),
    ("trainer.checkpoint_every_n_steps", *AT_LEAST_ONE),
    ("trainer.val_check_interval", *_optional(AT_LEAST_ONE)),
    ("data.batch_size", *AT_LEAST_ONE),
    ("data.cache_batch_size", *AT_LEAST_ONE),
    ("data.num_workers", *NON_NEGATIVE),
    ("data.eval_subset_size", *NON_NEGATIVE),
    ("data.text_dropout", *PROBABILITY),
    ("data.region_dropout", *PROBABILITY),
    ("model.lora.rank", *AT_LEAST_ONE),
    ("model.lora.alpha", *POSITIVE),
    ("model.mogle.expert_hidden", *AT_LEAST_ONE),
    ("model.mogle.time_scale", *POSITIVE),
]


def check_rules(
    obj, rules: list[Rule], prefix: str = "", where: Callable[[str], str] = lambda key: ""
) -> None:
    """Raises ValueError for the first value of `obj` (dotted attribute paths) that breaks its rule, naming
    `prefix` + the key, the value and `where(key)`."""
    for key, check, says in rules:
        value = reduce(getattr, key.split("."), obj)
        if not check(value):
            raise ValueError(f"{prefix}{key}={value!r}{where(key)} {says}")


class Sources:
    """Where each key's value came from: the command line, the YAML file, or the default."""

    def __init__(self, path: str | Path | None, overrides: list[str]):
        self.path = path
        self.cli = OmegaConf.from_dotlist(list(overrides))
        self.yaml = OmegaConf.load(path) if path is not None else OmegaConf.create()

    def of(self, key: str) -> str:
        if OmegaConf.select(self.cli, key, default=None) is not None:
            return "the command line"
        if OmegaConf.select(self.yaml, key, default=None) is not None:
            return str(self.path)
        return "the default"


def check_config(config: Config, sources: Sources | None = None) -> None:
    """Raises ValueError for the first bad value, naming the key, the value and (given `sources`) where it
    came from."""

    def where(key: str) -> str:
        return f" (from {sources.of(key)})" if sources is not None else ""

    check_rules(config, RULES, where=where)
    factor = _patch_multiple(Path(config.backbone.path))
    if factor is not None and config.data.resolution % factor:
        key = "data.resolution"
        raise ValueError(
            f"{key}={config.data.resolution}{where(key)} must be a multiple of {factor} for the "
            f"backbone at {config.backbone.path} (its VAE scale factor x the 2x2 latent patches)"
        )


def _patch_multiple(backbone: Path) -> int | None:
    """Pixels per packed token side of a saved backbone (2 x its VAE scale factor); None without one, whose
    absence load_flux reports with what to download."""
    vae = backbone / "vae" / "config.json"
    if not vae.is_file():
        return None
    levels = len(json.loads(vae.read_text(encoding="utf-8"))["block_out_channels"])
    return 2 * 2 ** (levels - 1)
