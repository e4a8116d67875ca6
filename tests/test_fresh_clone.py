"""On a fresh clone, an entry point that needs the embedded default's data, backbone, evaluators or trained run
stops with one line naming the make target that builds what is missing (the backbone and evaluators ship with
the clone; git restores them): never a traceback, never how to download FLUX.1-dev for the tiny backbone
(experiments/runs/prerequisites.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import guidance_sweep
from experiments.config.load import load_config, to_yaml
from experiments.runs.prerequisites import require_config, require_run

REPO = Path(__file__).resolve().parents[1]
MISSING_DEFAULT = (
    "data/synthetic is missing: `make data` builds it"  # the clone ships the backbone and evaluators
)
MISSING_RUN = "runs/tiny/export is missing: `make train` builds it"
COMMANDS = {  # entry point arguments -> what the one line must say
    ("experiments.ablate_gating", "--quick"): MISSING_DEFAULT,
    ("experiments.train", "--config", "experiments/configs/tiny.yaml"): MISSING_DEFAULT,
    (
        "experiments.evaluate",
        "--run",
        "runs/tiny",
        "--clip",
        "checkpoints/evaluators/synthetic/clip",
    ): MISSING_RUN,
    (
        "experiments.sample",
        "--run",
        "runs/tiny",
        "--prompt",
        "She has blond wavy hair.",
        "--out",
        "x",
    ): MISSING_RUN,
}


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """The repository's files as a clone has them: tracked and not ignored (the shipped checkpoints/), no data/
    or runs/."""
    root = tmp_path_factory.mktemp("clone")
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    for name in listed:
        if (REPO / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    return root


def run_in(clone: Path, args: tuple[str, ...]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(clone)}
    env.pop("FACEMOGLE_TRACEBACK", None)
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=clone, env=env, capture_output=True, text=True, timeout=300
    )


# each start imports torch, Lightning and diffusers: one training and one sampling entry point in the fast suite
SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    "args",
    [pytest.param(args, marks=[] if i in (0, 3) else [SLOW], id=args[0]) for i, args in enumerate(COMMANDS)],
)
def test_an_entry_point_on_a_fresh_clone_names_the_make_target_in_one_line(clone, args):
    done = run_in(clone, args)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [done.stderr.strip().splitlines()[-1]] and COMMANDS[args] in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    assert "FLUX.1-dev" not in done.stderr and "huggingface" not in done.stderr


def test_the_guidance_sweep_names_make_train_for_the_missing_run(clone, monkeypatch):
    monkeypatch.chdir(clone)
    with pytest.raises(ValueError, match=MISSING_RUN):
        guidance_sweep.main(["--run", "runs/tiny", "--text-scales", "2", "--mask-scales", "4"])


def test_a_run_whose_shipped_backbone_is_missing_names_git_checkout_not_flux_dev(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a copied run, in a folder without the shipped checkpoints/
    export = Path("runs/copied/export")
    export.mkdir(parents=True)
    (export / "config.yaml").write_text(to_yaml(load_config(REPO / "experiments/configs/tiny.yaml")))
    restore = "`git checkout -- checkpoints/tiny-flux` restores the shipped files"
    with pytest.raises(ValueError, match=rf"^checkpoints/tiny-flux is missing: {restore}"):
        require_run("runs/copied")
    with pytest.raises(
        ValueError,
        match=rf"^data/synthetic, checkpoints/tiny-flux are missing: `make data` builds it; {restore}",
    ):
        require_run("runs/copied", data=True)


def test_paths_the_makefile_builds_elsewhere_name_its_variables_and_others_are_left_to_their_loaders(
    clone, monkeypatch
):
    monkeypatch.chdir(clone)
    config = load_config(
        "experiments/configs/tiny.yaml",
        [
            "backbone.path=checkpoints/tiny-2",
            "data.root=data/synthetic-small",
            "eval.evaluators.parser_path=checkpoints/evaluators/other/parser",
        ],
    )
    with pytest.raises(
        ValueError,
        match=r"`make data checkpoints/tiny-2/model_index.json checkpoints/evaluators/other/report.json "
        r"DATA=data/synthetic-small BACKBONE=checkpoints/tiny-2 EVALUATORS=checkpoints/evaluators/other`",
    ):
        require_config(config)
    require_config(load_config("experiments/configs/flux_mmcelebahq.yaml"), evaluators=False)  # load_flux's
