"""A checkpoint, cache, export or pipeline file carrying a pickled payload never runs it, whatever its name, in
any entry point: --resume, the ablation's curves, experiments.evaluate, experiments.sample, the pipeline."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from experiments import evaluate
from experiments import sample as sample_cli
from experiments.ablation.curves import checkpoint_steps, export_checkpoint
from experiments.config.load import load_config
from experiments.runs.checkpoints import newest_checkpoint
from experiments.runs.io import export_run
from experiments.training.build import build_module
from experiments.training.run import train
from facemogle.backbone import save_flux
from facemogle.data_only import NotDataOnly, load_data
from facemogle.export import manifest
from facemogle.official import read_state_dict
from facemogle.pipeline import FaceMoGLEPipeline
from tests.golden_samples import export_tiny_run
from tests.payloads import write_payload
from tests.run_fixtures import tiny_config


@pytest.fixture
def marker(tmp_path):
    return tmp_path / "MARKER"


def test_the_payload_runs_when_unpickled_the_old_way(tmp_path, marker):
    path = write_payload(tmp_path / "x.ckpt", marker)
    torch.load(path, weights_only=False)
    assert marker.is_file()  # so that the tests below, where it never appears, mean something


def test_loading_as_data_refuses_the_payload_naming_the_file(tmp_path, marker):
    path = write_payload(tmp_path / "x.pt", marker)
    with pytest.raises(NotDataOnly, match=r"x.pt is refused: .*GLOBAL posix.system"):
        load_data(path)
    with pytest.raises(NotDataOnly, match=r"weights.pt is refused"):
        read_state_dict(write_payload(tmp_path / "weights.pt", marker))  # an official MoGLE file
    assert not marker.exists()


@pytest.fixture(scope="module")
def trained_run(workspace, tmp_path_factory):
    """A tiny run trained 4 steps (checkpoints at step 3 and last)."""
    run = tmp_path_factory.mktemp("trained") / "run"
    train(tiny_config(workspace, run, 4))
    return run


@pytest.mark.parametrize("name", ["step-000099.ckpt", "holiday-photos.ckpt", "last.ckpt"])
def test_resume_refuses_a_checkpoint_carrying_code_whatever_its_name(
    workspace, trained_run, tmp_path, marker, name
):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    for ckpt in (trained_run / "checkpoints").iterdir():
        (run / "checkpoints" / ckpt.name).write_bytes(ckpt.read_bytes())
    write_payload(run / "checkpoints" / name, marker)
    with pytest.raises(NotDataOnly, match=name):
        newest_checkpoint(run / "checkpoints")
    with pytest.raises(NotDataOnly, match=name):
        train(tiny_config(workspace, run, 6), resume=True)
    assert not marker.exists()


def test_learning_curves_never_run_a_step_checkpoint_carrying_code(workspace, tmp_path, marker):
    write_payload(tmp_path / "run" / "checkpoints" / "step-000009.ckpt", marker)
    config = tiny_config(workspace, tmp_path / "run", 4)
    [(step, ckpt)] = checkpoint_steps(tmp_path / "run")
    with pytest.raises(NotDataOnly, match="step-000009.ckpt"):
        export_checkpoint(config, ckpt, tmp_path / "run" / "curve" / "step-000009")
    assert not marker.exists()


def _rewrite_manifest(export):
    """As someone who swapped a file would: the manifest made to match."""
    listed = {k: v for k, v in manifest(export).items() if k != "manifest.json"}
    (export / "manifest.json").write_text(json.dumps(listed))


@pytest.mark.parametrize("name", ["mogle.safetensors", "lora/pytorch_lora_weights.safetensors"])
def test_sampling_never_runs_an_export_file_carrying_code(tmp_path, marker, name):
    run = export_tiny_run(tmp_path)
    write_payload(run / "export" / name, marker)
    _rewrite_manifest(run / "export")
    argv = ["--run", str(run), "--prompt", "a face", "--out", str(tmp_path / "out"), "--steps", "1"]
    with pytest.raises(ValueError, match=f"{name} is not a complete safetensors file"):
        sample_cli.main(argv)
    assert not marker.exists()


def test_a_saved_pipeline_never_runs_a_file_carrying_code(tmp_path, marker):
    run = export_tiny_run(tmp_path)
    pipe = FaceMoGLEPipeline.from_pretrained(run / "export")
    pipe.save_pretrained(tmp_path / "pipe")
    mogle = tmp_path / "pipe" / "mogle"
    for weights in mogle.glob("*.safetensors"):
        weights.unlink()
    write_payload(mogle / "diffusion_pytorch_model.bin", marker)  # diffusers' pickle fallback
    with pytest.raises(ValueError, match="diffusion_pytorch_model.safetensors is missing from"):
        FaceMoGLEPipeline.from_pretrained(tmp_path / "pipe")  # the manifest first
    with pytest.raises((ValueError, OSError, pickle.UnpicklingError)):  # diffusers loads it as data only
        FaceMoGLEPipeline.from_pretrained(tmp_path / "pipe", allow_unverified=True)
    assert not marker.exists()


def test_evaluate_never_runs_a_real_feature_cache_carrying_code(backbone, evaluators, tmp_path, marker):
    from data_modules.synthetic import write_synthetic

    data = write_synthetic(tmp_path / "faces", n=4, size=64, seed=0)
    flux = save_flux(backbone, tmp_path / "flux")
    overrides = [f"backbone.path={flux}", f"run_dir={tmp_path / 'run'}", f"data.root={data}"]
    overrides += ["data.split.protocol=fraction", "data.split.test_fraction=0.5"]
    config = load_config(overrides=overrides)
    export_run(config.run_dir, config, build_module(config).denoiser)
    argv = [
        *("--run", config.run_dir, "--split", "test", "--n", "2", "--modes", "mask"),
        *("--steps", "1", "--batch-size", "2", "--clip", str(evaluators / "clip")),
        *("--cache-dir", str(tmp_path / "cache"), "--device", "cpu"),
    ]
    evaluate.main(argv)
    [cache] = (tmp_path / "cache").glob("real_*.pt")
    write_payload(cache, marker)
    with pytest.raises(NotDataOnly, match=cache.name):
        evaluate.main(argv)
    assert not marker.exists()
