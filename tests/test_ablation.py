"""The expert and gate ablation: variants, the plain-condition baseline, the table, the whole pipeline in
quick mode on the tiny backbone, and SLURM submission through a fake sbatch."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
import torch
from PIL import Image

from experiments import ablate_gating
from experiments.ablation import slurm, table
from experiments.ablation.study import StudySettings
from experiments.ablation.variants import VARIANTS, parse_variants
from experiments.config import load_config
from experiments.slurm.submit import REPO
from experiments.training import train
from facemogle.denoiser import Denoiser
from facemogle.flux_forward import flux_forward
from facemogle.mogle import MoGLE, MoGLEConfig
from tests.run_fixtures import KillAt


def mogle_config(variant: str) -> MoGLEConfig:
    v = VARIANTS[variant]
    return MoGLEConfig(gate=v.gate, experts=v.experts, expert_set=v.expert_set)


def test_plain_condition_passes_the_colour_map_latent_through_with_nothing_to_train(
    backbone, flux_inputs, text
):
    mogle = MoGLE(mogle_config("plain"))
    assert not list(mogle.parameters())
    cond = torch.randn(2, 20, 64, 64, generator=torch.Generator().manual_seed(1))
    noisy, t, ids = flux_inputs["hidden_states"], flux_inputs["timestep"], flux_inputs["img_ids"]
    assert torch.equal(mogle(cond, noisy, t).tokens, cond[:, 0])
    out = Denoiser(backbone.transformer, mogle)(noisy, t, text, ids, cond)
    expected = flux_forward(
        backbone.transformer,
        noisy,
        text.sequence,
        text.pooled,
        t,
        ids,
        flux_inputs["txt_ids"],
        cond_tokens=cond[:, 0],
        cond_ids=ids,
    )
    torch.testing.assert_close(out.velocity, expected)


def test_every_variant_sets_all_three_mogle_keys_and_builds():
    for name, variant in VARIANTS.items():
        config = load_config("experiments/configs/tiny.yaml", variant.overrides)
        assert config.model.mogle == mogle_config(name)
        MoGLE(config.model.mogle)
    assert len({(v.gate, v.experts, v.expert_set) for v in VARIANTS.values()}) == len(VARIANTS)


def test_unknown_variants_and_overrides_of_variant_keys_are_errors_naming_them():
    with pytest.raises(ValueError, match="'topk'"):
        parse_variants("full,topk")
    with pytest.raises(ValueError, match="model.mogle.gate is set by the study"):
        StudySettings("experiments/configs/tiny.yaml", overrides=["model.mogle.gate=static"])
    with pytest.raises(ValueError, match="trainer.max_steps is set by the study"):
        StudySettings("experiments/configs/tiny.yaml", overrides=["trainer.max_steps=9"], steps=5)
    StudySettings(
        "experiments/configs/tiny.yaml", overrides=["trainer.max_steps=9"]
    )  # the budget without --steps


def fake_run(settings: StudySettings, variant: str, seed: int, fid: float, minutes: float) -> None:
    run = settings.run_dir(variant, seed)
    (run / "eval").mkdir(parents=True)
    metrics = {"fid": fid, "kid": 0.5, "clip_score": 30.0, "mask_miou": float("nan"), "pixel_acc": 0.8}
    meta = {"n": settings.n, "sample": {"steps": 20}}
    (run / "eval" / "test.json").write_text(json.dumps({"text+mask": metrics, "meta": meta}))
    (run / "train.json").write_text(json.dumps({"steps": 10, "train_seconds": minutes * 60}))


def test_the_table_gives_mean_and_std_over_the_finished_seeds(tmp_path):
    settings = StudySettings(
        "experiments/configs/tiny.yaml",
        variants=["full", "scalar_gate", "plain"],
        seeds=[0, 1],
        n=8,
        runs=str(tmp_path / "runs"),
    )
    fake_run(settings, "full", 0, fid=10.0, minutes=1.0)
    fake_run(settings, "full", 1, fid=14.0, minutes=3.0)
    fake_run(settings, "plain", 1, fid=20.0, minutes=0.5)
    results = table.read_results(settings)
    md = table.markdown(results, settings, "python -m experiments.ablate_gating")
    ours, paper = md.split("## For reference")
    rows = {line.split("|")[1].strip(): line for line in ours.splitlines() if line.startswith("| ")}
    assert "| 2/2 | 12.00 ± 2.83 |" in rows["full"] and "| 2.0 ± 1.4 |" in rows["full"]
    assert "| 1/2 | 20.00 |" in rows["plain"]
    assert "| 0/2 | – |" in rows["scalar_gate"]
    assert "| scalar_gate | scalar gate (Table 4) | 43.48 | 30.58 | 4.74 | 26.72 |" in paper
    table.write_csv(results, tmp_path / "ablation.csv")
    csv_rows = {r["variant"]: r for r in csv.DictReader((tmp_path / "ablation.csv").open())}
    assert float(csv_rows["full"]["fid_mean"]) == 12.0 and csv_rows["plain"]["fid_std"] == ""
    assert csv_rows["full"]["mask_miou_mean"] == ""  # no parser: no value rather than nan


def study_args(workspace, evaluators, root, *extra: str) -> list[str]:
    """A quick study on the shared workspace; runs, table and evaluation cache under root."""
    return [
        *("--config", "experiments/configs/tiny.yaml", "--quick"),
        *("--runs", str(root / "runs"), "--out", str(root / "out"), "--eval-cache-dir", str(root / "eval")),
        *extra,
        f"backbone.path={workspace / 'flux'}",
        f"data.root={workspace / 'data'}",
        f"data.cache_dir={workspace / 'cache'}",
        "data.resolution=32",
        "data.batch_size=4",
        "data.split.test_fraction=0.25",
        "trainer.checkpoint_every_n_steps=1",
        "trainer.log_every_n_steps=1",
        "trainer.progress_bar=false",
        "logger.kind=csv",
        f"eval.evaluators.clip_path={evaluators / 'clip'}",
        f"eval.evaluators.parser_path={evaluators / 'parser'}",
        "eval.metrics.kid_subset_size=2",
    ]


@pytest.mark.slow  # two training runs, evaluated, then the study twice more
def test_quick_study_trains_evaluates_and_tabulates_two_variants_resuming_and_skipping(
    workspace, evaluators, tmp_path
):
    args = study_args(workspace, evaluators, tmp_path, "--variants", "full,plain")
    settings = ablate_gating.settings_from(ablate_gating.parse_args(args))
    with pytest.raises(RuntimeError, match="killed"):  # an interrupted run of the full model
        train(settings.run_config("full", 0), extra_callbacks=[KillAt(1)])

    ablate_gating.main(args)

    runs = {v: settings.run_dir(v, 0) for v in ("full", "plain")}
    full_log = (runs["full"] / "logs" / "version_1" / "metrics.csv").read_text()
    assert [r["step"] for r in csv.DictReader(full_log.splitlines()) if r.get("train/loss")] == ["1"]
    plain_ckpt = torch.load(runs["plain"] / "checkpoints" / "last.ckpt", weights_only=False)
    assert plain_ckpt["state_dict"] and all("lora_" in k for k in plain_ckpt["state_dict"])  # LoRA only
    for run in runs.values():
        assert json.loads((run / "train.json").read_text())["steps"] == 2

    out = tmp_path / "out"
    rows = {r["variant"]: r for r in csv.DictReader((out / "ablation.csv").open())}
    assert list(rows) == ["full", "plain"]
    for row in rows.values():
        assert row["seeds"] == "1"
        for key in ("fid_mean", "kid_mean", "clip_score_mean", "pixel_acc_mean", "train_minutes_mean"):
            assert float(row[key]) >= 0, key
        assert 0 <= float(row["mask_miou_mean"]) <= 1
    md = (out / "ablation.md").read_text()
    assert "| full |" in md and "| plain |" in md and "--variants full,plain" in md
    gate = Image.open(out / "gate_weights.png")
    assert gate.width > 2 * 12 and gate.height > 12
    gate_rows = list(csv.DictReader((out / "gate_weights.csv").open()))
    assert {r["step"] for r in gate_rows} == {"0", "1"} and all(
        0 <= float(r["own_expert"]) <= 1 for r in gate_rows
    )

    evaluated = {v: (run / "eval" / "test.json").stat().st_mtime_ns for v, run in runs.items()}
    ablate_gating.main(args)  # everything finished: nothing is trained or evaluated again
    assert {v: (run / "eval" / "test.json").stat().st_mtime_ns for v, run in runs.items()} == evaluated

    with pytest.raises(ValueError, match=r"trained with another config \(differs in trainer.max_steps\)"):
        ablate_gating.main([*args, "--steps", "3"])


def test_the_gather_logs_a_wandb_table(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    settings = StudySettings(
        "experiments/configs/tiny.yaml",
        variants=["full"],
        runs=str(tmp_path / "runs"),
        out=str(tmp_path / "out"),
    )
    fake_run(settings, "full", 0, fid=10.0, minutes=1.0)
    ablate_gating.log_to_wandb(settings, table.read_results(settings), None)
    (run,) = (tmp_path / "runs" / "wandb").glob("offline-run-*")
    (stored,) = (run / "files" / "media" / "table" / "ablation").glob("table_*.table.json")
    logged = json.loads(stored.read_text())
    assert logged["columns"][:3] == ["variant", "seeds", "fid_mean"] and logged["data"][0][:3] == [
        "full",
        1,
        10.0,
    ]


@pytest.mark.slow  # runs the gather job's script in a subprocess
def test_slurm_submits_an_array_task_per_variant_and_seed_then_a_gather_job(tmp_path, monkeypatch):
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    calls.mkdir()
    (bin_dir / "sbatch").write_text(  # records its arguments, one per line, and answers a job id
        f'#!/bin/sh\nn=$(ls {calls} | wc -l)\nprintf "%s\\n" "$@" > {calls}/$n\necho "$((1001 + n));cluster"\n'
    )
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    runs, out = tmp_path / "runs", tmp_path / "out"
    args = [
        *(
            "--variants",
            "full,plain",
            "--seeds",
            "0,1",
            "--steps",
            "5",
            "--runs",
            str(runs),
            "--out",
            str(out),
        ),
        *("--slurm", "--sbatch-arg=--partition=cpu", "logger.kind=none"),
    ]
    ablate_gating.main(args)

    array, gather = ((calls / str(i)).read_text().splitlines() for i in (0, 1))
    script = str(slurm.SCRIPT)
    assert array[:2] == ["--parsable", f"--chdir={REPO}"]
    assert array[2:5] == ["--array=0-3", f"--output={runs}/slurm/%A_%a.log", "--partition=cpu"]
    assert gather[2:4] == ["--dependency=afterok:1001", "--kill-on-invalid-dep=yes"]
    assert (
        gather[-1] == "--gather" and gather[gather.index(script) + 1 : -1] == array[array.index(script) + 1 :]
    )
    # Array task 3 (the script adds --task $SLURM_ARRAY_TASK_ID) runs the last (variant, seed) of the study.
    task = ablate_gating.parse_args([*array[array.index(script) + 1 :], "--task", "3"])
    settings = ablate_gating.settings_from(task)
    assert settings.tasks()[task.task] == ("plain", 1) and settings.steps == 5
    assert settings.overrides == ["logger.kind=none"]
    # The gather job runs the script as submitted and, with no run finished yet, tabulates dashes.
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        ["bash", script, *gather[gather.index(script) + 1 :]], check=True, capture_output=True, env=env
    )
    md = (out / "ablation.md").read_text()
    assert "| full | " in md and "| 0/2 | – |" in md


def test_slurm_checks_the_configs_and_needs_sbatch_before_queueing_anything(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ValueError, match="unknown config key 'trainer.max_stepz'"):
        ablate_gating.main(["--variants", "full", "--slurm", "trainer.max_stepz=3"])
    with pytest.raises(ValueError, match="no sbatch on PATH"):
        ablate_gating.main(["--variants", "full", "--out", str(tmp_path / "out"), "--slurm"])
