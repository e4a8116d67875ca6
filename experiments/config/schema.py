"""Typed experiment configuration. YAML files (OmegaConf) mirror these dataclasses, so a key that does
not exist is an error, and `key=value` overrides on the command line use the same dotted paths:

    python -m experiments.train --config experiments/configs/tiny.yaml trainer.max_steps=100 model.mogle.gate=scalar
    python -m experiments.pretrain_backbone --config experiments/configs/backbone_tiny.yaml vae.steps=200
    python -m experiments.train_evaluators --config experiments/configs/evaluators_synthetic.yaml clip.steps=700

`Config` is stage 2's (Face-MoGLE training), `PretrainConfig` stage 1's (the tiny backbone),
`EvaluatorsConfig` the small evaluators' (face parser and CLIP); the three share the run skeleton `RunConfig`
(run_dir, seed, trainer, logger) by inheritance, so their YAML keys stay at the top level. Each dataclass
checks its own fields' ranges (`RULES`, facemogle.rules) once, in `__post_init__`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from callbacks.generation_eval import GenerationEvalConfig
from data_modules.datamodule import DataConfig
from data_modules.evaluator_data import EvaluatorDataConfig
from data_modules.split import SplitConfig
from facemogle.evaluators import EvaluatorConfig, SmallClipConfig, SmallParserConfig
from facemogle.evaluators.lit_modules import ClipTrainConfig, ParserTrainConfig
from facemogle.flux_forward import ConditionSettings
from facemogle.lit_module import TrainConfig
from facemogle.lora import LoRASettings
from facemogle.metrics.suite import MetricsConfig
from facemogle.mogle import MoGLEConfig
from facemogle.pretrain import FluxStageConfig, VAEStageConfig
from facemogle.quantization import QuantizationConfig
from facemogle.rules import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, Range, check_ranges, optional
from facemogle.tiny_backbone import TinyFluxConfig


@dataclass
class BackboneConfig:
    # A diffusers FLUX directory: FLUX.1-dev, or the shipped tiny one (`make backbone` rebuilds it).
    path: str = "checkpoints/tiny-flux"
    dtype: str = "float32"  # float32 | bfloat16 | float16: the frozen backbone's weights
    gradient_checkpointing: bool = False
    max_sequence_length: int | None = (
        None  # T5 tokens; None: the tokenizer's model_max_length (512 for FLUX.1-dev)
    )
    # The frozen transformer's and T5's storage: none | int8 | nf4 | fp8 each (facemogle.quantization,
    # docs/flux-dev.md); LoRA sits on the quantised layers, MoGLE stays in full precision.
    quantization: QuantizationConfig = field(default_factory=QuantizationConfig)
    # True: T5 stays in host memory and encodes there, so its weights (9.5 GB for FLUX.1-dev in bf16) leave
    # the accelerator; with data.cache_text only the cache build (which borrows the accelerator) and the
    # validation prompts use it. Its embeddings are T5's own, computed on the CPU.
    t5_on_cpu: bool = False


@dataclass
class ModelConfig:
    mogle: MoGLEConfig = field(default_factory=MoGLEConfig)
    condition: ConditionSettings = field(default_factory=ConditionSettings)
    lora: LoRASettings = field(default_factory=LoRASettings)
    cond_id_offset: tuple[float, float, float] = (0.0, 0.0, 0.0)
    # A run (or its export/ folder) whose LoRA and MoGLE this run starts from: a run trained here or one
    # `python -m experiments.import_official` wrote. Its model.mogle and model.lora must equal this run's.
    init_from: str | None = None


@dataclass
class StageTrainerConfig:
    """The Lightning Trainer of a multi-stage run on one device (stage 1's VAE and FLUX, the evaluators' parser
    and CLIP: each draws from one random stream). Checkpoints: RUN_DIR/checkpoints/STAGE/last.ckpt."""

    precision: str = "32-true"  # Lightning precision: 32-true | bf16-mixed | bf16-true | 16-mixed
    accelerator: str = "auto"
    log_every_n_steps: int = 50
    checkpoint_every_n_steps: int = 1000
    progress_bar: bool = True

    RULES: ClassVar[dict[str, Range]] = {
        "log_every_n_steps": AT_LEAST_ONE,
        "checkpoint_every_n_steps": AT_LEAST_ONE,
    }

    def __post_init__(self) -> None:
        check_ranges(self)


@dataclass
class TrainerConfig(StageTrainerConfig):
    """Stage 2's Trainer: the stage trainer's keys, plus its length, devices and strategy."""

    log_every_n_steps: int = 10
    checkpoint_every_n_steps: int = 500
    max_steps: int = 2000
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = 1.0
    devices: Any = 1  # an int, a list of device ids, or "auto"
    num_nodes: int = 1
    strategy: str = "auto"  # auto | ddp | fsdp ...
    val_check_interval: int | None = None  # steps between validation runs; None: once per epoch

    RULES: ClassVar[dict[str, Range]] = {
        **StageTrainerConfig.RULES,
        "max_steps": AT_LEAST_ONE,
        "accumulate_grad_batches": AT_LEAST_ONE,
        "gradient_clip_val": optional(POSITIVE),
        "num_nodes": AT_LEAST_ONE,
        "val_check_interval": optional(AT_LEAST_ONE),
    }


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
class RunConfig:
    """The run skeleton of every command's config: where the run writes (config.yaml, checkpoints/, the
    logger's files), the seed its random streams derive from (by SeedSequence), its Trainer and logger."""

    run_dir: str = "runs/tiny"
    seed: int = 0
    trainer: StageTrainerConfig = field(default_factory=StageTrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)

    RULES: ClassVar[dict[str, Range]] = {"seed": NON_NEGATIVE}

    def __post_init__(self) -> None:
        check_ranges(self)


@dataclass
class Config(RunConfig):
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


@dataclass
class PretrainConfig(RunConfig):
    run_dir: str = "runs/backbone"
    data: str = "data/synthetic"  # a data set in the MM-CelebA-HQ layout; stage 1 trains on its train split
    out: str = "checkpoints/tiny-flux"  # the diffusers FLUX directory written, atomically, at the end
    resolution: int = 64
    # stage 2's split (experiments/configs/tiny.yaml data.split), so stage 1 never sees its val / test faces
    split: SplitConfig = field(default_factory=lambda: SplitConfig(protocol="fraction"))
    backbone: TinyFluxConfig = field(default_factory=TinyFluxConfig)
    vae: VAEStageConfig = field(default_factory=VAEStageConfig)
    flux: FluxStageConfig = field(default_factory=FluxStageConfig)
    trainer: StageTrainerConfig = field(
        default_factory=lambda: StageTrainerConfig(
            "bf16-mixed", log_every_n_steps=25, checkpoint_every_n_steps=500
        )
    )

    RULES: ClassVar[dict[str, Range]] = {**RunConfig.RULES, "resolution": POSITIVE}


@dataclass
class EvaluatorStageConfig:
    """What the parser's and the CLIP's training stages share: their length, batch and blur augmentation."""

    steps: int = 400
    batch_size: int = 8
    max_blur: float = 0.0  # largest blur sigma in pixels (augmentation); 0: colour jitter only

    RULES: ClassVar[dict[str, Range]] = {
        "steps": AT_LEAST_ONE,
        "batch_size": AT_LEAST_ONE,
        "max_blur": NON_NEGATIVE,
    }

    def __post_init__(self) -> None:
        check_ranges(self)


@dataclass
class ParserStageConfig(EvaluatorStageConfig):
    steps: int = 4000
    max_blur: float = 1.2
    train: ParserTrainConfig = field(default_factory=ParserTrainConfig)
    model: SmallParserConfig = field(default_factory=SmallParserConfig)


@dataclass
class ClipStageConfig(EvaluatorStageConfig):
    batch_size: int = 128
    train: ClipTrainConfig = field(default_factory=ClipTrainConfig)
    model: SmallClipConfig = field(default_factory=SmallClipConfig)


@dataclass
class EvaluatorsConfig(RunConfig):
    """`python -m experiments.train_evaluators`: the small face parser, then the small CLIP, on one face set."""

    run_dir: str = "checkpoints/evaluators/synthetic"
    data: EvaluatorDataConfig = field(default_factory=EvaluatorDataConfig)
    parser: ParserStageConfig = field(default_factory=ParserStageConfig)
    clip: ClipStageConfig = field(default_factory=ClipStageConfig)
