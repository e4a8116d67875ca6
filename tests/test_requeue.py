"""The requeue signal in one process: checkpoint at the next step, exit 75, resume like an uninterrupted run;
SIGTERM and SIGINT sent to a real training process: the same checkpoint, exit 143 / 130, the same resume;
and the DDP strategy choice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from lightning import Callback
from lightning.pytorch.strategies import DDPStrategy
from safetensors.torch import load_file

from callbacks.requeue import REQUEUE_EXIT_CODE, STOP_SIGNALS
from experiments.config.load import to_yaml
from experiments.config.schema import TrainerConfig
from experiments.training.run import last_checkpoint, train
from experiments.training.strategy import make_strategy, process_count
from tests.run_fixtures import REPO, tiny_config


class SignalAt(Callback):
    """Sends this process SIGUSR1 at the start of step `step`, as `sbatch --signal=USR1@...` would."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, *args):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGUSR1)


@pytest.mark.slow  # three training runs
def test_the_requeue_signal_checkpoints_at_the_next_step_and_the_resumed_run_ends_like_an_uninterrupted_one(
    workspace, tmp_path
):
    full = train(tiny_config(workspace, tmp_path / "uninterrupted", 7))
    with pytest.raises(SystemExit) as stopped:
        train(tiny_config(workspace, tmp_path / "requeued", 7), extra_callbacks=[SignalAt(3)])
    assert stopped.value.code == REQUEUE_EXIT_CODE
    run = tmp_path / "requeued"
    requeue = run / "checkpoints" / "requeue.ckpt"
    ckpt = torch.load(requeue, weights_only=False)
    assert ckpt["global_step"] == 4  # the step running when the signal came, finished
    assert ckpt["state_dict"] and all(
        "lora_" in k or k.startswith("denoiser.mogle.") for k in ckpt["state_dict"]
    )
    assert not (run / "export").exists()  # a stopped run is not a finished one
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # the handler is gone with the run

    cfg = tiny_config(workspace, tmp_path / "requeued", 7)
    assert last_checkpoint(cfg) == requeue  # newer than last.ckpt (step 3)
    resumed = train(cfg, resume=True)
    assert resumed.global_step == full.global_step == 7
    torch.testing.assert_close(resumed.callback_metrics["train/loss"], full.callback_metrics["train/loss"])
    a, b = (load_file(tmp_path / r / "export" / "mogle.safetensors") for r in ("uninterrupted", "requeued"))
    for key in a:
        torch.testing.assert_close(a[key], b[key])


def stop_with_a_signal(cfg, signum: signal.Signals, step: int) -> subprocess.CompletedProcess:
    """Trains cfg in a new process (tests/signal_worker.py) and sends it `signum` once step `step` runs."""
    run = Path(cfg.run_dir)
    run.mkdir(parents=True)
    (run / "start.yaml").write_text(to_yaml(cfg))
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.signal_worker", str(run / "start.yaml"), str(step)],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not (run / "at-step").exists() and worker.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    worker.send_signal(signum)
    out, err = worker.communicate(timeout=300)
    return subprocess.CompletedProcess(worker.args, worker.returncode, out, err)


@pytest.fixture(scope="module")
def uninterrupted(workspace, tmp_path_factory):
    run = tmp_path_factory.mktemp("uninterrupted") / "run"
    return train(tiny_config(workspace, run, 5)), run


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_finish_the_step_checkpoint_exit_non_zero_and_resume_exactly(
    workspace, tmp_path, uninterrupted, signum
):
    cfg = tiny_config(workspace, tmp_path / "run", 5)
    stopped = stop_with_a_signal(cfg, signum, 2)
    assert stopped.returncode == STOP_SIGNALS[signum] == 128 + signum, stopped.stderr[-3000:]
    requeue = tmp_path / "run" / "checkpoints" / "requeue.ckpt"
    assert torch.load(requeue, weights_only=True)["global_step"] == 3  # the step running at the signal, done
    assert not (tmp_path / "run" / "export").exists()  # a stopped run is not a finished one
    assert last_checkpoint(cfg) == requeue
    resumed = train(cfg, resume=True)
    full, full_run = uninterrupted
    assert resumed.global_step == full.global_step == 5
    torch.testing.assert_close(resumed.callback_metrics["train/loss"], full.callback_metrics["train/loss"])
    a, b = (load_file(r / "export" / "mogle.safetensors") for r in (full_run, tmp_path / "run"))
    assert len(a) > 0
    for key in a:
        torch.testing.assert_close(a[key], b[key])


def test_several_processes_train_with_ddp_and_a_static_graph():
    assert isinstance(make_strategy(TrainerConfig(devices=2, strategy="auto")), DDPStrategy)
    assert make_strategy(TrainerConfig(devices=2, strategy="auto"))._ddp_kwargs == {"static_graph": True}
    assert isinstance(make_strategy(TrainerConfig(devices=1, num_nodes=2, strategy="ddp")), DDPStrategy)
    assert make_strategy(TrainerConfig(devices=1, strategy="auto")) == "auto"
    assert make_strategy(TrainerConfig(devices=2, strategy="ddp_spawn")) == "ddp_spawn"
    assert process_count(TrainerConfig(devices=[0, 1], num_nodes=2)) == 4
    assert process_count(TrainerConfig(devices="auto", accelerator="cpu")) == 1
    with pytest.raises(ValueError, match="trainer.devices='many'"):
        process_count(TrainerConfig(devices="many"))
