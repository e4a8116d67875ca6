"""Bad config values stop a run at start-up, naming the key, the value and where it came from; a run
directory in use, or holding another run, is an error; data with nothing to train on is an error."""

from __future__ import annotations

import fcntl

import pytest

from experiments import train as train_cli
from experiments.train import train
from tests.test_train import config, setup  # noqa: F401 - the module's data and FLUX


def cli(setup, run, *extra):  # noqa: F811
    base = [
        *("--config", "experiments/configs/tiny.yaml"),
        f"run_dir={setup / run}",
        f"backbone.path={setup / 'flux'}",
        f"data.root={setup / 'data'}",
        f"data.cache_dir={setup / 'cache'}",
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
def test_a_bad_value_stops_the_run_before_any_data_or_model_is_touched(setup, override, message):  # noqa: F811
    with pytest.raises(ValueError, match=message):
        train_cli.main(cli(setup, "bad", override))
    assert not (setup / "bad").exists()  # nothing written: no run folder, no cache
    assert not (setup / "cache").exists() or not any((setup / "cache").iterdir())


def test_a_bad_value_in_the_yaml_names_the_file(setup, tmp_path):  # noqa: F811
    path = tmp_path / "mine.yaml"
    path.write_text("train:\n  optim:\n    lr: -0.001\n")
    with pytest.raises(ValueError, match=r"train.optim.lr=-0.001 \(from .*mine.yaml\) must be > 0"):
        train_cli.main(["--config", str(path), f"backbone.path={setup / 'flux'}"])


def test_a_run_directory_in_use_is_an_error_and_free_again_after_its_holder_is_gone(setup):  # noqa: F811
    run = setup / "locked"
    run.mkdir()
    with open(run / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ValueError, match="is in use by another training process"):
            train(config(setup, "locked", 1))
    assert train(config(setup, "locked", 1)).global_step == 1  # the holder closed: nothing stuck


def test_a_new_run_does_not_write_into_another_runs_checkpoints(setup):  # noqa: F811
    train(config(setup, "twice", 1))
    with pytest.raises(
        ValueError, match="holds the checkpoints of an earlier run: continue it with --resume"
    ):
        train(config(setup, "twice", 2))
    assert train(config(setup, "twice", 2), resume=True).global_step == 2


def test_data_with_every_item_bad_is_an_error_not_an_empty_run(setup, tmp_path):  # noqa: F811
    import shutil

    data = tmp_path / "data"
    shutil.copytree(setup / "data", data)
    for mask in (data / "mask").iterdir():
        mask.write_bytes(b"not a png")
    cfg = config(
        setup, "nothing", 1, f"data.root={data}", f"data.cache_dir={tmp_path / 'cache'}", "data.strict=false"
    )
    with pytest.raises(ValueError, match=r"no usable faces, 24 items skipped as bad"):
        train(cfg)


def test_a_batch_larger_than_the_training_split_is_an_error(setup):  # noqa: F811
    with pytest.raises(
        ValueError, match=r"data.batch_size=64 x 1 processes is more than the \d+ training faces"
    ):
        train(config(setup, "big-batch", 1, "data.batch_size=64"))
