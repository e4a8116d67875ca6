"""One ablation run per (variant, seed): an ordinary training run directory, trained, evaluated, probed and,
for the learning-curve variants, evaluated at each step checkpoint; then the full model's guidance sweep.

    RUNS/VARIANT/seedS/                 experiments.train's run directory (config.yaml, checkpoints/, export/, ...)
    RUNS/VARIANT/seedS/train.json       {"steps", "train_seconds"}: written when training has finished
    RUNS/VARIANT/seedS/eval/test.json   experiments.evaluation.run on the test split, text+mask (full: and the text
                                        mode with no condition tokens, the mask-dropped reference row)
    RUNS/VARIANT/seedS/probe.json       gate usage and attribute accuracy (experiments.ablation.probe)
    RUNS/VARIANT/seedS/curve/           its step checkpoints evaluated (experiments.ablation.curves)
    RUNS/VARIANT/seedS/timing.json      the seconds each stage took (the study's compute time adds them up)
    RUNS/full/seedS/sweep/              the first seed's guidance sweep (experiments.ablation.sweep)

Every stage is skipped when its output exists for these settings, and training resumes from the run's newest
checkpoint, so a killed study continues where it stopped; a run directory made with another config is an
error rather than a silent mix.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lightning.pytorch.callbacks import Timer
from omegaconf import OmegaConf

from experiments.ablation import curves
from experiments.ablation.attributes import AttributeScorer
from experiments.ablation.probe import PROBE, ProbeSettings, probe_run
from experiments.ablation.reports import evaluated, probed
from experiments.ablation.sweep import SweepSettings, points, read_sweep, run_sweep, samples_with_true_cfg
from experiments.ablation.variants import REFERENCES, VARIANT_KEYS, VARIANTS
from experiments.config.load import load_config, to_yaml
from experiments.config.schema import Config
from experiments.evaluation.run import EvalSettings, evaluate_run
from experiments.runs.io import EXPORT
from experiments.training.run import train
from facemogle.atomic import atomic_write_json

MODE = "text+mask"
SPLIT = "test"
TRAIN_RECORD = "train.json"
TIMING = "timing.json"
# the text mode of the mask-dropped reference: no condition tokens at all (facemogle.sampling)
MASK_DROPPED_CONDITION = "none"


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
    probe_n: int | None = 40  # test faces for gate usage and attribute accuracy; None: n
    curve_variants: list[str] = field(default_factory=lambda: ["full", "plain", "mlp_experts"])
    curve_n: int | None = 32  # test faces at each step checkpoint; None: n
    text_scales: list[float] = field(
        default_factory=lambda: [1.0, 2.0, 3.5, 5.0]
    )  # the guidance sweep's grid
    mask_scales: list[float] = field(default_factory=lambda: [1.0, 2.0, 4.0, 6.0])
    sweep_n: int | None = 48  # test faces a sweep point; None: n

    def __post_init__(self) -> None:
        reserved = {*VARIANT_KEYS, "run_dir", "seed", "logger.name", "eval.enabled"}
        if self.steps is not None:
            reserved.add("trainer.max_steps")
        for override in self.overrides:
            key = override.split("=", 1)[0]
            if key in reserved:
                raise ValueError(
                    f"override {override!r}: {key} is set by the study for each variant and seed"
                )
        unknown = [v for v in [*self.variants, *self.curve_variants] if v not in VARIANTS]
        if unknown:
            raise ValueError(f"unknown variants {unknown}; expected names from {list(VARIANTS)}")
        SweepSettings("", self.text_scales, self.mask_scales)  # checks the scales

    def to_argv(self) -> list[str]:
        """The ablate_gating arguments that make this study (quick mode written out in full)."""
        scales = lambda values: ",".join(f"{v:g}" for v in values)  # noqa: E731
        argv = [
            *("--config", str(self.config), "--variants", ",".join(self.variants)),
            *("--seeds", ",".join(map(str, self.seeds)), "--runs", self.runs, "--out", self.out),
            *("--eval-cache-dir", self.eval_cache_dir, "--curve-variants", ",".join(self.curve_variants)),
            *("--text-scales", scales(self.text_scales), "--mask-scales", scales(self.mask_scales)),
        ]
        for flag, value in (
            ("--steps", self.steps),
            ("--n", self.n),
            ("--sample-steps", self.sample_steps),
            ("--probe-n", self.probe_n),
            ("--curve-n", self.curve_n),
            ("--sweep-n", self.sweep_n),
        ):
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

    def modes(self, variant: str) -> tuple[str, ...]:
        """The modes a variant's runs are sampled in: text+mask, and those of the reference rows read from them."""
        return (MODE, *(r.mode for r in REFERENCES.values() if r.source == variant))

    def curve_count(self) -> int | None:
        """Test faces evaluated at each step checkpoint."""
        return self.curve_n if self.curve_n is not None else self.n

    def probe_count(self) -> int | None:
        """Test faces probed for gate usage and attributes."""
        return self.probe_n if self.probe_n is not None else self.n

    def sample(self) -> dict:
        """The sampling settings every stored evaluation must have been made with."""
        return {} if self.sample_steps is None else {"steps": self.sample_steps}

    def sweep_settings(self) -> SweepSettings:
        """The guidance sweep of the first seed's full model."""
        return SweepSettings(
            run=str(self.run_dir("full", self.seeds[0])),
            text_scales=self.text_scales,
            mask_scales=self.mask_scales,
            n=self.sweep_n if self.sweep_n is not None else self.n,
            probe_n=self.probe_n,
            sample_steps=self.sample_steps,
            cache_dir=self.eval_cache_dir,
        )


def is_evaluated(run_dir: Path, settings: StudySettings, variant: str) -> bool:
    """The run's evaluation exists in its modes, for this study's number of faces and sampling steps."""
    return evaluated(
        run_dir / "eval" / f"{SPLIT}.json", settings.modes(variant), settings.n, settings.sample()
    )


def is_finished(run_dir: Path, settings: StudySettings, variant: str) -> bool:
    return (run_dir / TRAIN_RECORD).is_file() and is_evaluated(run_dir, settings, variant)


def is_complete(settings: StudySettings, variant: str, seed: int) -> bool:
    """Every stage of run_one done: trained, evaluated, probed and (curve variants) each step evaluated."""
    run_dir = settings.run_dir(variant, seed)
    if not is_finished(run_dir, settings, variant):
        return False
    if not probed(run_dir / PROBE, settings.modes(variant), settings.probe_count(), settings.sample()):
        return False
    return variant not in settings.curve_variants or all(done for *_, done in curve_points(settings, run_dir))


def sweep_done(settings: StudySettings) -> bool:
    sweep = settings.sweep_settings()
    return len(read_sweep(sweep)) == len(points(sweep))


class Timing:
    """RUN/timing.json: seconds per stage, kept across the processes that worked on the run."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / TIMING
        self.seconds = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def record(self, stage: str, seconds: float) -> None:
        if self.path.is_file():  # another process (the sweep) may have recorded a stage since
            self.seconds = json.loads(self.path.read_text())
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds
        atomic_write_json(self.path, self.seconds)

    def run(self, stage: str, work: Callable[[], object]) -> None:
        start = time.perf_counter()
        work()
        self.record(stage, time.perf_counter() - start)


def run_one(
    settings: StudySettings, variant: str, seed: int, scorer: Callable[[], AttributeScorer | None]
) -> Path:
    """Train (or resume), evaluate, probe and (curve variants) evaluate the step checkpoints of one variant and
    seed; what is done already is left as it is. `scorer` gives the attribute scorer (built once, lazily)."""
    config = settings.run_config(variant, seed)
    run_dir = Path(config.run_dir)
    check_same_config(run_dir, config)
    timing = Timing(run_dir)
    if not (run_dir / TRAIN_RECORD).is_file():
        start, timer = time.perf_counter(), Timer()
        trainer = train(config, resume=True, extra_callbacks=[timer])
        record = {"steps": trainer.global_step, "train_seconds": timer.time_elapsed("train")}
        (run_dir / TRAIN_RECORD).write_text(json.dumps(record, indent=2))
        timing.record("train", time.perf_counter() - start)  # with start-up: the wall time
    modes = settings.modes(variant)
    if not is_evaluated(run_dir, settings, variant):
        timing.run(
            "evaluate", lambda: evaluate_run(eval_settings(settings, config, run_dir, settings.n, modes))
        )
    probe_n = settings.probe_count()
    if not probed(run_dir / PROBE, modes, probe_n, settings.sample()):
        probe = ProbeSettings(probe_n, modes, settings.sample_steps, MASK_DROPPED_CONDITION)
        timing.run("probe", lambda: atomic_write_json(run_dir / PROBE, probe_run(run_dir, probe, scorer())))
    if variant in settings.curve_variants:
        timing.run("curve", lambda: evaluate_curve(settings, config, run_dir))
    return run_dir


def eval_settings(
    settings: StudySettings, config: Config, run_dir: Path, n: int | None, modes: tuple[str, ...]
) -> EvalSettings:
    """An evaluation of `run_dir` (the run, or one of its curve points): the study's sampling steps, the config's
    evaluators, seed 0; the text mode with no condition tokens (the mask-dropped reference)."""
    return EvalSettings(
        run=str(run_dir),
        split=SPLIT,
        n=n,
        modes=modes,
        steps=settings.sample_steps,
        seed=0,
        text_only_condition=MASK_DROPPED_CONDITION if "text" in modes else None,
        evaluators=config.eval.evaluators,
        kid_subset_size=config.eval.metrics.kid_subset_size,
        cache_dir=settings.eval_cache_dir,
    )


def curve_points(settings: StudySettings, run_dir: Path) -> list[tuple[Path | None, Path, bool]]:
    """(step checkpoint, its curve point folder, evaluated yet) of a trained run; the last step has no
    checkpoint: it is the run's own export."""
    n = settings.curve_count()
    final = json.loads((run_dir / TRAIN_RECORD).read_text())["steps"]
    earlier = [(step, checkpoint) for step, checkpoint in curves.checkpoint_steps(run_dir) if step < final]
    found = []
    for step, checkpoint in [*earlier, (final, None)]:
        point = curves.point_dir(run_dir, step)
        found.append(
            (checkpoint, point, evaluated(point / "eval" / f"{SPLIT}.json", (MODE,), n, settings.sample()))
        )
    return found


def evaluate_curve(settings: StudySettings, config: Config, run_dir: Path) -> None:
    """Each step checkpoint exported and evaluated on curve_n faces; the last step is the run's own export."""
    n = settings.curve_count()
    for checkpoint, point, done in curve_points(settings, run_dir):
        if done:
            continue
        if checkpoint is None:
            link = point / EXPORT
            if not link.is_symlink():
                point.mkdir(parents=True, exist_ok=True)
                link.symlink_to(Path("..") / ".." / EXPORT, target_is_directory=True)
        else:
            curves.export_checkpoint(config, checkpoint, point)
        evaluate_run(eval_settings(settings, config, point, n, (MODE,)))


def run_sweep_of_full(settings: StudySettings, scorer: Callable[[], AttributeScorer | None]) -> bool:
    """The guidance sweep of the first seed's full model, once that run is finished and where its backbone
    samples with true CFG; -> whether it ran."""
    full = settings.run_dir("full", settings.seeds[0])
    if "full" not in settings.variants or not is_finished(full, settings, "full"):
        return False
    if not samples_with_true_cfg(settings.run_config("full", settings.seeds[0]).backbone.path):
        return False
    timing = Timing(full)
    timing.run("sweep", lambda: run_sweep(settings.sweep_settings(), scorer()))
    return True


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
