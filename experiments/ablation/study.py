"""One ablation run per (variant, seed): an ordinary training run directory, trained and evaluated.

    RUNS/VARIANT/seedS/            experiments.train's run directory (config.yaml, checkpoints/, export/, ...)
    RUNS/VARIANT/seedS/train.json  {"steps", "train_seconds"}: written when training has finished
    RUNS/VARIANT/seedS/eval/test.json, test.md   experiments.evaluation on the test split, text+mask

A run whose evaluation exists (with this study's number of faces) is skipped; one with a checkpoint
resumes from it; a run directory made with another config is an error rather than a silent mix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from lightning.pytorch.callbacks import Timer
from omegaconf import OmegaConf

from experiments.ablation.variants import MOGLE_KEYS, VARIANTS
from experiments.config import Config, load_config, to_yaml
from experiments.evaluation import EvalSettings, evaluate_run
from experiments.training import train

MODE = "text+mask"
SPLIT = "test"
TRAIN_RECORD = "train.json"


@dataclass
class StudySettings:
    config: str  # the training config every variant starts from
    overrides: list[str] = field(default_factory=list)  # key=value for every variant
    variants: list[str] = field(default_factory=lambda: list(VARIANTS))
    seeds: list[int] = field(default_factory=lambda: [0])
    steps: int | None = None  # trainer.max_steps; None: the config's
    n: int | None = None  # test faces evaluated; None: the whole test split
    sample_steps: int | None = None  # sampling steps in evaluation; None: the config's train.sample.steps
    runs: str = "runs/ablate"
    out: str = "results/ablation"
    eval_cache_dir: str = "cache/eval"

    def __post_init__(self) -> None:
        reserved = {*MOGLE_KEYS, "run_dir", "seed", "logger.name", "eval.enabled"}
        if self.steps is not None:
            reserved.add("trainer.max_steps")
        for override in self.overrides:
            key = override.split("=", 1)[0]
            if key in reserved:
                raise ValueError(
                    f"override {override!r}: {key} is set by the study for each variant and seed"
                )
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise ValueError(f"unknown variants {unknown}; expected names from {list(VARIANTS)}")

    def to_argv(self) -> list[str]:
        """The ablate_gating arguments that make this study (quick mode written out in full)."""
        argv = [
            *("--config", str(self.config), "--variants", ",".join(self.variants)),
            *("--seeds", ",".join(map(str, self.seeds)), "--runs", self.runs, "--out", self.out),
            *("--eval-cache-dir", self.eval_cache_dir),
        ]
        for flag, value in (("--steps", self.steps), ("--n", self.n), ("--sample-steps", self.sample_steps)):
            if value is not None:
                argv += [flag, str(value)]
        return argv + self.overrides

    def tasks(self) -> list[tuple[str, int]]:
        """Every (variant, seed), variant-major: the order of runs and of SLURM array indices."""
        return [(v, s) for v in self.variants for s in self.seeds]

    def run_dir(self, variant: str, seed: int) -> Path:
        return Path(self.runs) / variant / f"seed{seed}"

    def run_config(self, variant: str, seed: int) -> Config:
        run_dir = self.run_dir(variant, seed)
        study = [
            f"run_dir={run_dir}",
            f"seed={seed}",
            f"logger.name=ablate-{variant}-seed{seed}",
            "eval.enabled=false",  # evaluated once at the end instead, on the test split
        ]
        if self.steps is not None:
            study.append(f"trainer.max_steps={self.steps}")
        return load_config(self.config, [*self.overrides, *VARIANTS[variant].overrides, *study])


def is_evaluated(run_dir: Path, settings: StudySettings) -> bool:
    """The run's evaluation exists, for this study's number of faces and sampling steps."""
    path = run_dir / "eval" / f"{SPLIT}.json"
    if not path.is_file():
        return False
    report = json.loads(path.read_text())
    meta = report["meta"]
    return (
        MODE in report
        and settings.n in (None, meta["n"])
        and settings.sample_steps in (None, meta["sample"]["steps"])
    )


def run_one(settings: StudySettings, variant: str, seed: int) -> Path:
    """Train (or resume) and evaluate one variant and seed; a finished run is left as it is."""
    config = settings.run_config(variant, seed)
    run_dir = Path(config.run_dir)
    check_same_config(run_dir, config)
    if is_evaluated(run_dir, settings):
        return run_dir
    if not (run_dir / TRAIN_RECORD).is_file():
        timer = Timer()
        trainer = train(config, resume=True, extra_callbacks=[timer])
        record = {"steps": trainer.global_step, "train_seconds": timer.time_elapsed("train")}
        (run_dir / TRAIN_RECORD).write_text(json.dumps(record, indent=2))
    evaluate_run(eval_settings(settings, config))
    return run_dir


def eval_settings(settings: StudySettings, config: Config) -> EvalSettings:
    """The run's evaluation: the study's faces and sampling steps, the config's evaluators, seed 0."""
    return EvalSettings(
        run=config.run_dir,
        split=SPLIT,
        n=settings.n,
        modes=(MODE,),
        steps=settings.sample_steps,
        seed=0,
        evaluators=config.eval.evaluators,
        kid_subset_size=config.eval.metrics.kid_subset_size,
        cache_dir=settings.eval_cache_dir,
    )


def check_same_config(run_dir: Path, config: Config) -> None:
    path = run_dir / "config.yaml"
    if not path.is_file() or path.read_text() == to_yaml(config):
        return
    old, new = (
        _flat(OmegaConf.to_container(OmegaConf.create(text))) for text in (path.read_text(), to_yaml(config))
    )
    differ = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    raise ValueError(
        f"{run_dir} was trained with another config (differs in {', '.join(differ)}); "
        "use another --runs directory or delete it"
    )


def _flat(node, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}"""
    if isinstance(node, dict):
        return {key: v for k, child in node.items() for key, v in _flat(child, f"{prefix}{k}.").items()}
    return {prefix[:-1]: node}
