"""Start-up checks of a training config across keys and files, before any data, cache or model is touched.

Each key's own range is checked once, by its dataclass, when the config is loaded (experiments.config.load);
here are the checks that need two keys or a file: the quantisation against the strategy, the resolution
against the backbone's VAE. Each failure is a ValueError naming the key, its value and where the value came
from (the command line, the YAML file, or the default), so a bad value stops the run in a second instead of
after the latent cache is built.
"""

from __future__ import annotations

import json
from pathlib import Path

from experiments.config.load import Sources
from experiments.config.schema import Config
from facemogle.quantization import check_strategy


def check_config(config: Config, sources: Sources | None = None) -> None:
    """Raises ValueError for the first bad value, naming the key, the value and (given `sources`) where it
    came from."""

    def where(key: str) -> str:
        return sources.where(key) if sources is not None else ""

    check_strategy(config.backbone.quantization, config.trainer.strategy)
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
