"""Checkpoints survive a full disk and a crash; --resume takes the newest one that loads."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch
from lightning import Callback
from safetensors.torch import load_file

from callbacks.checkpoints import AtomicCheckpointIO
from experiments.runs.checkpoints import checkpoint_step, newest_checkpoint
from experiments.training.run import train
from tests.run_fixtures import tiny_config


def test_a_checkpoint_write_that_fills_the_disk_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 1}, path)

    def full_disk(obj, f, *args, **kwargs):
        with open(f, "wb") as out:
            out.write(b"PK\x03\x04 half a zip")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"global_step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=False)["global_step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_resume_skips_a_truncated_checkpoint_and_takes_the_newest_step_that_loads(
    workspace, tmp_path, caplog
):
    full = train(tiny_config(workspace, tmp_path / "crash-full", 7))
    ckpts = tmp_path / "crash" / "checkpoints"
    train(tiny_config(workspace, tmp_path / "crash", 7))
    # a kill -9 between writes left last.ckpt at step 3 beside step 6; a full disk truncated a later one
    shutil.copy(ckpts / "step-000003.ckpt", ckpts / "last.ckpt")
    (ckpts / "step-000009.ckpt").write_bytes((ckpts / "step-000006.ckpt").read_bytes()[:1000])
    with caplog.at_level(logging.WARNING, logger="experiments.runs.checkpoints"):
        assert newest_checkpoint(ckpts) == ckpts / "step-000006.ckpt"
    assert "skipping" in caplog.text and "step-000009.ckpt" in caplog.text
    (ckpts.parent / "export").rename(ckpts.parent / "export-first")
    start = StartStep()
    resumed = train(tiny_config(workspace, tmp_path / "crash", 7), resume=True, extra_callbacks=[start])
    assert start.step == 6 and resumed.global_step == 7  # one step lost, not four
    torch.testing.assert_close(resumed.callback_metrics["train/loss"], full.callback_metrics["train/loss"])
    a = load_file(tmp_path / "crash-full" / "export" / "mogle.safetensors")
    b = load_file(tmp_path / "crash" / "export" / "mogle.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key])


class StartStep(Callback):
    def on_train_start(self, trainer, pl_module):
        self.step = trainer.global_step


def test_no_loadable_checkpoint_means_a_fresh_start(tmp_path):
    assert newest_checkpoint(tmp_path / "none") is None
    (tmp_path / "last.ckpt").write_bytes(b"")
    assert newest_checkpoint(tmp_path) is None


@pytest.mark.slow
def test_a_kill_9_in_the_middle_of_a_checkpoint_write_resumes_from_the_one_before(workspace, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from experiments.config.load import to_yaml

    cfg = tiny_config(workspace, tmp_path / "kill9", 7)
    (tmp_path / "c.yaml").write_text(to_yaml(cfg))
    done = subprocess.run(
        [sys.executable, "-m", "tests.kill_worker", str(tmp_path / "c.yaml"), "4"],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        timeout=600,
    )
    assert done.returncode == -signal.SIGKILL
    ckpts = tmp_path / "kill9" / "checkpoints"
    assert checkpoint_step(newest_checkpoint(ckpts)) == 3  # step 6's write died half-way
    start = StartStep()
    resumed = train(tiny_config(workspace, tmp_path / "kill9", 7), resume=True, extra_callbacks=[start])
    assert start.step == 3 and resumed.global_step == 7
    full = train(tiny_config(workspace, tmp_path / "kill9-full", 7))
    torch.testing.assert_close(resumed.callback_metrics["train/loss"], full.callback_metrics["train/loss"])


def test_metadata_file_name_is_lightnings():
    from lightning.fabric.utilities.load import _METADATA_FILENAME

    from experiments.runs.checkpoints import METADATA_FILENAME

    assert METADATA_FILENAME == _METADATA_FILENAME


def test_installed_lightning_is_the_pinned_minor_version():
    """Private Lightning API stays in use (FinalLastCheckpoint, FSDP2Strategy): the pin must match."""
    import re

    import lightning
    import tomllib

    root = Path(__file__).resolve().parents[1]
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [d for d in deps if d.startswith("lightning")]
    low, high = re.fullmatch(r"lightning>=(\d+\.\d+),<(\d+\.\d+)", pin.split("#")[0].strip()).groups()
    installed = ".".join(lightning.__version__.split(".")[:2])
    assert installed == low and int(high.split(".")[1]) == int(low.split(".")[1]) + 1, (
        pin,
        lightning.__version__,
    )
