"""Bad config values stop a run at start-up, naming the key, the value and where it came from; a run
directory in use, or holding another run, is an error; data with nothing to train on is an error."""

from __future__ import annotations

import fcntl

import pytest

from experiments import train as train_cli
from experiments.training.run import train
from tests.run_fixtures import tiny_config


def cli(workspace, run, *extra):
    base = [
        *("--config", "experiments/configs/tiny.yaml"),
        f"run_dir={run}",
        f"backbone.path={workspace / 'flux'}",
        f"data.root={workspace / 'data'}",
        f"data.cache_dir={workspace / 'cache'}",
        "data.resolution=32",
        "logger.kind=none",
        "eval.enabled=false",
    ]
    return [*base, *extra]


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.optim.lr=-1", r"train.optim.lr=-1.0 \(from the command line\) must be > 0"),
        (
            "train.optim.mogle_lr=-0.1",
            r"train.optim.mogle_lr=-0.1 \(from the command line\) must be > 0 or null",
        ),
        ("trainer.max_steps=0", r"trainer.max_steps=0 \(from the command line\) must be >= 1"),
        ("train.sample.steps=0", r"train.sample.steps=0 .* must be >= 1"),
        ("data.resolution=50", r"data.resolution=50 \(from the command line\) must be a multiple of 8"),
    ],
)
def test_a_bad_value_stops_the_run_before_any_data_or_model_is_touched(
    workspace, tmp_path, override, message
):
    caches = sorted((workspace / "cache").glob("*")) if (workspace / "cache").is_dir() else []
    with pytest.raises(ValueError, match=message):
        train_cli.main(cli(workspace, tmp_path / "bad", override))
    assert not (tmp_path / "bad").exists()  # nothing written: no run folder, no new cache
    assert caches == (sorted((workspace / "cache").glob("*")) if (workspace / "cache").is_dir() else [])


def test_a_bad_value_in_the_yaml_names_the_file(workspace, tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("train:\n  optim:\n    lr: -0.001\n")
    with pytest.raises(ValueError, match=r"train.optim.lr=-0.001 \(from .*mine.yaml\) must be > 0"):
        train_cli.main(["--config", str(path), f"backbone.path={workspace / 'flux'}"])


def test_a_run_directory_in_use_is_an_error_and_free_again_after_its_holder_is_gone(workspace, tmp_path):
    run = tmp_path / "locked"
    run.mkdir()
    with open(run / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ValueError, match="is in use by another training process"):
            train(tiny_config(workspace, tmp_path / "locked", 1))
    assert (
        train(tiny_config(workspace, tmp_path / "locked", 1)).global_step == 1
    )  # the holder closed: nothing stuck


def test_a_new_run_does_not_write_into_another_runs_checkpoints(workspace, tmp_path):
    train(tiny_config(workspace, tmp_path / "twice", 1))
    with pytest.raises(
        ValueError, match="holds the checkpoints of an earlier run: continue it with --resume"
    ):
        train(tiny_config(workspace, tmp_path / "twice", 2))
    assert train(tiny_config(workspace, tmp_path / "twice", 2), resume=True).global_step == 2


def test_data_with_every_item_bad_is_an_error_not_an_empty_run(workspace, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(workspace / "data", data)
    for mask in (data / "mask").iterdir():
        mask.write_bytes(b"not a png")
    extra = (f"data.root={data}", f"data.cache_dir={tmp_path / 'cache'}", "data.strict=false")
    cfg = tiny_config(workspace, tmp_path / "nothing", 1, *extra)
    with pytest.raises(ValueError, match=r"no usable faces, 24 items skipped as bad"):
        train(cfg)


def test_a_batch_larger_than_the_training_split_is_an_error(workspace, tmp_path):
    with pytest.raises(
        ValueError, match=r"data.batch_size=64 x 1 processes is more than the \d+ training faces"
    ):
        train(tiny_config(workspace, tmp_path / "big-batch", 1, "data.batch_size=64"))


def test_a_batch_larger_than_the_training_split_is_refused_before_the_cache_is_built(workspace, tmp_path):
    extra = ("data.batch_size=64", f"data.cache_dir={tmp_path / 'cache'}")
    with pytest.raises(
        ValueError, match=r"data.batch_size=64 x 1 processes is more than the \d+ training faces"
    ):
        train(tiny_config(workspace, tmp_path / "big-batch", 1, *extra))
    assert not list((tmp_path / "cache").rglob("*.safetensors"))  # no latent encoded
