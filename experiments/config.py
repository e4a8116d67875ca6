"""Typed experiment configuration. YAML files (OmegaConf) mirror these dataclasses, so a key that does
not exist is an error, and `key=value` overrides on the command line use the same dotted paths:

    python -m experiments.train --config experiments/configs/tiny.yaml trainer.max_steps=100 model.mogle.gate=scalar
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from callbacks.generation_eval import GenerationEvalConfig
from data_modules.datamodule import DataConfig
from facemogle.evaluators import EvaluatorConfig
from facemogle.flux_forward import ConditionSettings
from facemogle.lit_module import TrainConfig
from facemogle.lora import LoRASettings
from facemogle.metrics.suite import MetricsConfig
from facemogle.mogle import MoGLEConfig


@dataclass
class BackboneConfig:
    # A diffusers FLUX directory: FLUX.1-dev, or the tiny one `make backbone` pretrains.
    path: str = "checkpoints/tiny-flux"
    dtype: str = "float32"  # float32 | bfloat16 | float16: the frozen backbone's weights
    gradient_checkpointing: bool = False
    max_sequence_length: int | None = (
        None  # T5 tokens; None: the tokenizer's model_max_length (512 for FLUX.1-dev)
    )


@dataclass
class ModelConfig:
    mogle: MoGLEConfig = field(default_factory=MoGLEConfig)
    condition: ConditionSettings = field(default_factory=ConditionSettings)
    lora: LoRASettings = field(default_factory=LoRASettings)
    cond_id_offset: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass
class TrainerConfig:
    max_steps: int = 2000
    precision: str = "32-true"  # Lightning precision: 32-true | bf16-mixed | bf16-true | 16-mixed
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = 1.0
    accelerator: str = "auto"
    devices: Any = 1  # an int, a list of device ids, or "auto"
    num_nodes: int = 1
    strategy: str = "auto"  # auto | ddp | fsdp ...
    log_every_n_steps: int = 10
    checkpoint_every_n_steps: int = 500
    val_check_interval: int | None = None  # steps between validation runs; None: once per epoch
    progress_bar: bool = True


@dataclass
class LoggerConfig:
    kind: str = "wandb"  # wandb (online with WANDB_API_KEY, offline otherwise) | csv | none
    project: str = "facemogle"
    name: str | None = None  # defaults to the run directory's name

    def __post_init__(self) -> None:
        if self.kind not in ("wandb", "csv", "none"):
            raise ValueError(f"logger.kind={self.kind!r}: expected 'wandb', 'csv' or 'none'")


@dataclass
class EvalConfig:
    """Generation metrics during training (callbacks.GenerationEvaluator) on data.eval_subset_size
    validation faces; needs the evaluator models (`make evaluators` for the synthetic set)."""

    enabled: bool = False
    callback: GenerationEvalConfig = field(default_factory=GenerationEvalConfig)
    evaluators: EvaluatorConfig = field(default_factory=EvaluatorConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)


@dataclass
class Config:
    run_dir: str = "runs/tiny"
    seed: int = 0
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise ValueError(
                f"seed={self.seed}: must be >= 0 (noise and data seeds derive from it by SeedSequence)"
            )


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults <- YAML file <- `key=value` overrides, checked against the dataclasses."""
    schema = OmegaConf.structured(Config)
    layers = [schema]
    if path is not None:
        if not Path(path).is_file():
            raise ValueError(f"config file {path} does not exist")
        layers.append(OmegaConf.load(path))
    layers.append(OmegaConf.from_dotlist(list(overrides or [])))
    try:
        merged = OmegaConf.merge(*layers)
        return OmegaConf.to_object(merged)
    except ConfigKeyError as err:
        raise ValueError(
            f"{_where(path)}unknown config key {err.full_key!r}; valid keys: {_siblings(err)}"
        ) from err
    except ValidationError as err:
        raise ValueError(
            f"{_where(path)}bad value for {err.full_key!r}: {str(err.msg).splitlines()[0]}"
        ) from err


def _where(path) -> str:
    return f"{path}: " if path is not None else ""


def _siblings(err: ConfigKeyError) -> str:
    parent = err.full_key.rsplit(".", 1)[0] if "." in err.full_key else ""
    node = OmegaConf.structured(Config)
    for part in filter(None, parent.split(".")):
        node = node[part]
    return ", ".join(sorted(node.keys()))


def to_yaml(config: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(config))
