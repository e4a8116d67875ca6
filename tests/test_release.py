"""The shipped parts of the embedded default (facemogle.release): the repository's sets match their records,
a corrupted or LFS-pointer file is refused where it loads, a rebuilt set is compared, and `make train` uses
the shipped parts instead of training them."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from experiments import release as cli
from facemogle.backbone import load_flux, save_flux
from facemogle.evaluators.parser import build_small_parser, load_face_parser, save_face_parser
from facemogle.release import RELEASE, check_released, compare, read_release, sha256, write_release
from facemogle.tiny_backbone import TinyFluxConfig, tiny_flux

REPO = Path(__file__).resolve().parents[1]
SHIPPED = (REPO / "checkpoints" / "tiny-flux", REPO / "checkpoints" / "evaluators" / "synthetic")


@pytest.mark.parametrize("shipped", SHIPPED, ids=lambda p: p.name)
def test_each_shipped_set_holds_exactly_the_released_files(shipped):
    record = read_release(shipped / RELEASE)
    assert record["files"] and record["commit"] and record["command"] and record["metrics"]
    for name, digest in record["files"].items():
        assert sha256(shipped / name) == digest, name
    assert record["bytes"] == sum((shipped / name).stat().st_size for name in record["files"])


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """A tiny backbone saved and recorded as a released set, with a metrics file."""
    root = tmp_path_factory.mktemp("release") / "tiny-flux"
    save_flux(tiny_flux(TinyFluxConfig(), seed=0, corpus=["a face"]), root)
    (root / "stage1.json").write_text(json.dumps({"vae_mse": 0.01, "flux_loss": 0.5, "vae_seconds": 9.0}))
    write_release(root, ["."], "make backbone", "stage1.json")
    return root


def test_a_released_backbone_loads_and_its_record_skips_timings(released):
    load_flux(released)
    record = read_release(released / RELEASE)
    assert record["metrics"] == {"vae_mse": 0.01, "flux_loss": 0.5}  # seconds are not a metric
    assert "transformer/diffusion_pytorch_model.safetensors" in record["files"]


def _copy(released: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "tiny-flux"
    shutil.copytree(released, copy)
    return copy


def test_a_corrupted_released_file_is_refused_naming_it(released, tmp_path):
    copy = _copy(released, tmp_path)
    weights = copy / "vae" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"vae/diffusion_pytorch_model.safetensors is not the released file"):
        load_flux(copy)


def test_a_git_lfs_pointer_is_refused_naming_it(released, tmp_path):
    copy = _copy(released, tmp_path)
    weights = copy / "transformer" / "diffusion_pytorch_model.safetensors"
    weights.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 9000000\n")
    with pytest.raises(
        ValueError, match=r"transformer/diffusion_pytorch_model.safetensors is a Git LFS pointer"
    ):
        load_flux(copy)


def test_a_released_evaluator_is_checked_where_it_loads(tmp_path):
    root = tmp_path / "evaluators"
    save_face_parser(build_small_parser(seed=0), root / "parser")
    (root / "report.json").write_text(json.dumps({"parser": {"miou": 0.85}, "config": {"steps": 3}}))
    record = json.loads(
        write_release(
            root, ["parser", "report.json"], "make evaluators", "report.json", ["parser"]
        ).read_text()
    )
    assert record["metrics"] == {"parser.miou": 0.85}
    load_face_parser(root / "parser")
    (root / "parser" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"parser/config.json is not the released file"):
        load_face_parser(root / "parser")
    check_released(root / "report.json")  # checks report.json alone, unchanged


def test_a_path_outside_any_released_set_is_not_checked(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"anything")
    check_released(tmp_path / "model.pt")


def test_compare_says_equal_or_names_the_files_and_the_metrics_moved(released, tmp_path, capsys):
    copy = _copy(released, tmp_path)
    (copy / RELEASE).unlink()  # a rebuilt set has no record of its own
    assert compare(released, copy).equal
    cli.main(["compare", str(released), str(copy)])
    assert "equals the released set" in capsys.readouterr().out

    (copy / "stage1.json").write_text(json.dumps({"vae_mse": 0.011, "flux_loss": 0.5}))
    (copy / "scheduler" / "scheduler_config.json").unlink()
    result = compare(released, copy)
    assert not result.equal
    assert result.differ == ["stage1.json"] and result.missing == ["scheduler/scheduler_config.json"]
    assert result.metrics["vae_mse"] == (0.01, 0.011)
    cli.main(["compare", str(released), str(copy)])
    out = capsys.readouterr().out
    assert "differs: stage1.json" in out and "vae_mse: released 0.01, rebuilt 0.011 (+10.00%)" in out


def test_make_train_uses_the_shipped_parts_and_rebuilds_them_only_when_asked(tmp_path):
    def dry_run(*targets: str) -> str:
        # a data folder that does not exist yet: the shipped parts must not depend on its age
        args = [
            "make",
            "-n",
            *targets,
            "PYTHON=python",
            f"DATA={tmp_path / 'data'}",
            f"RUN={tmp_path / 'run'}",
        ]
        return subprocess.run(args, cwd=REPO, capture_output=True, text=True, check=True).stdout

    train = dry_run("train")
    assert "experiments.train " in train and "experiments.evaluate" in train
    assert (
        "pretrain_backbone" not in train
        and "train_evaluators" not in train
        and "paper_evaluators" not in train
    )
    rebuild = dry_run("backbone", "evaluators", "REBUILT=" + str(tmp_path / "rebuilt"))
    for command in (
        "pretrain_backbone",
        "train_evaluators",
        "paper_evaluators",
        "experiments.release compare",
    ):
        assert command in rebuild
    assert "checkpoints/tiny-flux" in rebuild and str(tmp_path / "rebuilt" / "tiny-flux") in rebuild
