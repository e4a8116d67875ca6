"""What a command needs of the embedded default before it runs, and how to get what is missing.

A fresh clone ships the embedded default's fixed parts (the tiny FLUX in checkpoints/tiny-flux, the small
evaluators in checkpoints/evaluators/synthetic; facemogle.release) and lacks the rest: data/synthetic
(`make data`) and the trained run runs/tiny (`make train`). The entry points check what they need first and
stop with one line naming the make command that builds it, or for a shipped part the `git checkout` that
restores it, instead of failing deep inside a loader, whose message for a missing backbone is how to download
FLUX.1-dev. A path is taken for one the Makefile builds when it is the default or looks like one (a backbone
directory named tiny*, a data folder named *synthetic*, an evaluator folder named clip or parser): the target
then carries the Makefile variable (`make DIR/model_index.json BACKBONE=DIR`). Any other path is left to its
loader's own message (FLUX.1-dev, a real data set, a downloaded CLIP).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from experiments.config.load import load_config
from experiments.config.schema import Config
from experiments.runs.io import EXPORT

# the Makefile's variables and their defaults
DATA, BACKBONE, EVALUATORS, RUN = (
    "data/synthetic",
    "checkpoints/tiny-flux",
    "checkpoints/evaluators/synthetic",
    "runs/tiny",
)


@dataclass(frozen=True)
class Missing:
    path: str
    target: str | None  # the make target building it; None: shipped with the repository, git restores it
    variable: str | None = None  # VARIABLE=value, when the path is not the Makefile's default


def _missing(path: str, target: str, name: str, default: str, build_path: str | None = None) -> Missing:
    build_path = build_path or path
    same = Path(build_path) == Path(default)
    return Missing(path, target, None if same else f"{name}={build_path}")


def missing_data(root: str) -> Missing | None:
    if Path(root).exists() or not (Path(root) == Path(DATA) or "synthetic" in Path(root).name):
        return None  # what is there, data_modules.validate checks; a real set is not made by make
    return _missing(root, "data", "DATA", DATA)


def missing_backbone(path: str) -> Missing | None:
    if (Path(path) / "model_index.json").is_file():
        return None
    if Path(path) == Path(BACKBONE):
        return Missing(path, None)
    if not Path(path).name.startswith("tiny"):
        return None  # FLUX.1-dev or another download: load_flux says where to get it
    return Missing(path, f"{path}/model_index.json", f"BACKBONE={path}")


def missing_evaluator(path: str | None) -> Missing | None:
    if path is None or (Path(path) / "config.json").is_file() or Path(path).name not in ("clip", "parser"):
        return None  # no path is the loader's error; a downloaded model its own
    folder = str(Path(path).parent)
    if Path(folder) == Path(EVALUATORS):
        return Missing(path, None)
    return Missing(path, f"{folder}/report.json", f"EVALUATORS={folder}")


def missing_run(run: str) -> Missing | None:
    if (Path(run) / EXPORT / "config.yaml").is_file():
        return None
    return _missing(str(Path(run) / EXPORT), "train", "RUN", RUN, run)


def require(*found: Missing | None) -> None:
    """A ValueError, one line, naming every missing piece, the one make command that builds them and the git
    command that restores the shipped ones."""
    missing = [m for m in found if m is not None]
    if not missing:
        return
    built = [m for m in missing if m.target is not None]
    shipped = list(dict.fromkeys(m.path for m in missing if m.target is None))
    how = []
    if built:
        targets = list(dict.fromkeys(m.target for m in built))
        variables = list(dict.fromkeys(m.variable for m in built if m.variable))
        how.append(
            f"`{' '.join(['make', *targets, *variables])}` builds {'it' if len(built) == 1 else 'them'}"
        )
    if shipped:
        how.append(f"`git checkout -- {' '.join(shipped)}` restores the shipped files")
    verb = "is" if len(missing) == 1 else "are"
    raise ValueError(
        f"{', '.join(m.path for m in missing)} {verb} missing: {'; '.join(how)} (docs/training.md)"
    )


def require_config(config: Config, evaluators: bool | None = None) -> None:
    """A training config's backbone and data, and its evaluators when it evaluates (default: eval.enabled)."""
    needed = [missing_data(config.data.root), missing_backbone(config.backbone.path)]
    if config.eval.enabled if evaluators is None else evaluators:
        paths = config.eval.evaluators
        needed += [missing_evaluator(paths.clip_path), missing_evaluator(paths.parser_path)]
    require(*needed)


def require_run(run: str, clip: str | None = None, parser: str | None = None, data: bool = False) -> None:
    """A trained run (its export) and what sampling it needs: its backbone, and with `data` its data set; the
    evaluator paths given. `make train` builds a missing run with everything it needs, so it is named alone."""
    require(missing_run(run))
    config = load_config(Path(run) / EXPORT / "config.yaml")
    require(
        missing_data(config.data.root) if data else None,
        missing_backbone(config.backbone.path),
        missing_evaluator(clip),
        missing_evaluator(parser),
    )
