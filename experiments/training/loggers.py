"""The Lightning logger a config asks for (`logger.kind`: wandb, csv or none), shared by every stage's trainer."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, WandbLogger

from experiments.config.schema import Config, EvaluatorsConfig, PretrainConfig


def make_logger(config: Config | PretrainConfig | EvaluatorsConfig, csv_name: str = "logs"):
    """`config.logger`'s Lightning logger writing under `config.run_dir` (False for kind none)."""
    run_dir, cfg = Path(config.run_dir), config.logger
    if cfg.kind == "none":
        return False
    if cfg.kind == "csv":
        return CSVLogger(run_dir, name=csv_name)  # CSV_NAME/version_N: a resumed run does not overwrite
    offline = "WANDB_API_KEY" not in os.environ or os.environ.get("WANDB_MODE") == "offline"
    return WandbLogger(
        project=cfg.project,
        name=cfg.name or run_dir.name,
        save_dir=run_dir,
        offline=offline,
        config=asdict(config),
    )
