"""--resume continues the run it claims to: a changed model key is refused in one line listing each key old ->
new, a changed training key is allowed and recorded in the run, a resume with no checkpoint says so."""

from __future__ import annotations

import json
import logging
import shutil

import pytest

from experiments import train as train_cli
from experiments.runs.resume import RESUME_LOG
from experiments.training.run import train
from tests.run_fixtures import tiny_config


@pytest.fixture(scope="module")
def trained_run(workspace, tmp_path_factory):
    run = tmp_path_factory.mktemp("resume-config") / "run"
    train(tiny_config(workspace, run, 3))
    return run


@pytest.fixture
def run(trained_run, tmp_path):
    return shutil.copytree(trained_run, tmp_path / "run")


def test_resume_refuses_a_changed_model_key_listing_each_key_old_and_new(workspace, run):
    recorded = (run / "config.yaml").read_text()
    changed = ("model.mogle.experts=mlp", "model.lora.rank=8", "model.lora.alpha=2")
    with pytest.raises(ValueError) as refused:
        train(tiny_config(workspace, run, 5, *changed), resume=True)
    message = str(refused.value)
    assert "\n" not in message and "was trained as another model" in message
    for expected in ("model.mogle.experts 'residual' -> 'mlp'", "model.lora.rank 4 -> 8", "alpha 4.0 -> 2.0"):
        assert expected in message
    assert (run / "config.yaml").read_text() == recorded  # refused before anything was written
    assert not (run / RESUME_LOG).exists()


def test_the_train_command_names_the_changed_key_in_one_line(workspace, run, tmp_path, capsys):
    (tmp_path / "c.yaml").write_text((run / "config.yaml").read_text())
    with pytest.raises(SystemExit) as stopped:
        train_cli.run_cli(
            lambda: train_cli.main(["--config", str(tmp_path / "c.yaml"), "--resume", "model.lora.rank=2"])
        )
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "model.lora.rank 4 -> 2" in err


def test_resume_with_a_changed_training_key_continues_and_records_the_change(workspace, run, trained_run):
    resumed = train(tiny_config(workspace, run, 5, "train.optim.lr=0.002"), resume=True)
    assert resumed.global_step == 5
    [entry] = [json.loads(line) for line in (run / RESUME_LOG).read_text().splitlines()]
    assert entry["checkpoint"].endswith("last.ckpt")
    moved = {"run_dir": [str(trained_run), str(run)]}  # the run was copied: that is recorded too
    assert entry["changed"] == {"trainer.max_steps": [3, 5], "train.optim.lr": [0.001, 0.002], **moved}


def test_resume_without_a_checkpoint_says_it_starts_at_step_0(workspace, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="experiments.training.run"):
        train(tiny_config(workspace, tmp_path / "new", 1), resume=True)
    assert "no checkpoint" in caplog.text and "step 0" in caplog.text


def test_resume_refuses_a_run_config_reading_the_environment_naming_the_key(workspace, run):
    recorded = run / "config.yaml"
    recorded.write_text(recorded.read_text().replace("project: facemogle", "project: ${oc.env:HOME}"))
    with pytest.raises(
        ValueError, match=r"config.yaml: logger.project='\$\{oc.env:HOME\}' calls the resolver"
    ):
        train(tiny_config(workspace, run, 5), resume=True)
