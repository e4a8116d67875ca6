"""The expert and gate ablation: variants, the plain-condition baseline, the table with intervals and seed-paired
differences, the guidance sweep's choice, the whole pipeline in quick mode on the tiny backbone (killed,
resumed and one row reproduced), and SLURM submission through a fake sbatch."""

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
from experiments.ablation import slurm, sweep_report, table
from experiments.ablation.study import StudySettings
from experiments.ablation.sweep import Point, PointResult, SweepSettings, samples_with_true_cfg
from experiments.ablation.variants import VARIANTS, parse_variants
from experiments.config.load import load_config
from experiments.slurm.submit import REPO
from experiments.training.run import train
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


def test_every_variant_sets_all_its_keys_and_builds():
    for name, variant in VARIANTS.items():
        config = load_config("experiments/configs/tiny.yaml", variant.overrides)
        assert config.model.mogle == mogle_config(name)
        assert config.train.gate_balance == variant.gate_balance
        MoGLE(config.model.mogle)
    keys = {(v.gate, v.experts, v.expert_set, v.gate_balance) for v in VARIANTS.values()}
    assert len(keys) == len(VARIANTS)
    assert VARIANTS["full"].overrides[:3] == [
        "model.mogle.gate=dynamic",
        "model.mogle.experts=residual",
        "model.mogle.expert_set=all",
    ]
    assert VARIANTS["balanced"].gate_balance > 0 and VARIANTS["mlp_experts"].experts == "mlp"


def test_unknown_variants_and_overrides_of_variant_keys_are_errors_naming_them():
    with pytest.raises(ValueError, match="'topk'"):
        parse_variants("full,topk")
    with pytest.raises(ValueError, match="model.mogle.gate is set by the study"):
        StudySettings("experiments/configs/tiny.yaml", overrides=["model.mogle.gate=static"])
    with pytest.raises(ValueError, match="train.gate_balance is set by the study"):
        StudySettings("experiments/configs/tiny.yaml", overrides=["train.gate_balance=0.1"])
    with pytest.raises(ValueError, match="trainer.max_steps is set by the study"):
        StudySettings("experiments/configs/tiny.yaml", overrides=["trainer.max_steps=9"], steps=5)
    StudySettings(
        "experiments/configs/tiny.yaml", overrides=["trainer.max_steps=9"]
    )  # the budget without --steps


def fake_run(
    settings: StudySettings, variant: str, seed: int, miou: float, fid: float, hair: float = 0.5
) -> None:
    """A finished run: its evaluation (text+mask; full's also text, 0.2 lower mIoU), probe and training record."""
    run = settings.run_dir(variant, seed)
    (run / "eval").mkdir(parents=True)
    metrics = {"fid": fid, "kid": 0.5, "clip_score": 30.0, "mask_miou": miou, "pixel_acc": 0.8}
    report = {"text+mask": metrics, "meta": {"n": settings.n, "sample": {"steps": 20}}}
    attributes = {"hair_color": {"accuracy": hair, "n": 8, "chance": 0.25}, "lipstick": None}
    probe = {
        "n": settings.probe_n,
        "sample": {"steps": 20},
        "modes": {"text+mask": {"attributes": attributes}},
    }
    if variant == "full":
        report["text"] = {**metrics, "mask_miou": miou - 0.2}
        probe["modes"]["text"] = {"attributes": None}
    (run / "eval" / "test.json").write_text(json.dumps(report))
    (run / "probe.json").write_text(json.dumps(probe))
    (run / "train.json").write_text(json.dumps({"steps": 10, "train_seconds": 60.0 * (seed + 1)}))


def test_the_table_gives_intervals_over_seeds_and_seed_paired_differences_from_full(tmp_path):
    settings = StudySettings(
        "experiments/configs/tiny.yaml",
        variants=["full", "scalar_gate", "plain", "mlp_experts"],
        seeds=[0, 1, 2],
        n=8,
        runs=str(tmp_path / "runs"),
    )
    for seed, shift in enumerate((0.0, 0.1, 0.2)):
        fake_run(settings, "full", seed, miou=0.5 + shift, fid=10.0)
        fake_run(
            settings, "plain", seed, miou=0.4 + shift + 0.001 * seed, fid=10.0 + seed
        )  # below full every seed
    fake_run(settings, "mlp_experts", 0, miou=0.3, fid=12.0)
    rows = {r.name: r for r in table.read_rows(settings)}
    assert list(rows) == ["full", "scalar_gate", "plain", "mlp_experts", "mask_dropped"]
    full_miou = rows["full"].interval("mask_miou")
    assert full_miou.mean == pytest.approx(0.6) and full_miou.n == 3
    assert full_miou.high - full_miou.mean == pytest.approx(4.302653 * 0.1 / 3**0.5, rel=1e-5)
    main = "\n".join(table.main_table(list(rows.values()), 3))
    assert "| full | " in main and "| 3/3 | 0.600 [0.352, 0.848] |" in main
    assert "| scalar_gate | " in main and "| 0/3 | – |" in main and "| 1/3 | 0.300 |" in main
    assert (
        "| 0.50 [0.50, 0.50] | – | 2.0 [-0.5, 4.5] |" in main
    )  # hair, no lipstick, training minutes 1, 2, 3
    differences = {
        line.split("|")[1].strip(): line for line in table.difference_table(list(rows.values()))[2:]
    }
    # seed-paired, plain is 0.1 - 0.001 s below full: significant although the seed spread is 0.1
    assert "-0.099 [-0.101, -0.097] *" in differences["plain"]
    assert "+1.00 [-1.48, +3.48] |" in differences["plain"]  # FID: not significant, no mark
    assert "-0.200 [-0.200, -0.200] *" in differences["mask_dropped"]  # the text mode of full's own runs
    assert "| –" in differences["scalar_gate"] and "| -0.200 | +2.00 |" in differences["mlp_experts"]
    findings = "\n".join(table.findings(list(rows.values())))
    assert "mask_miou full − plain = +0.099 [+0.097, +0.101] (full better, 3 seeds)" in findings
    assert "fid full − plain = -1.00 [-3.48, +1.48] (no significant difference, 3 seeds)" in findings
    table.write_csv(list(rows.values()), tmp_path / "ablation.csv")
    summary = {r["variant"]: r for r in csv.DictReader((tmp_path / "ablation.csv").open())}
    assert (
        summary["plain"]["mask_miou_diff_significant"] == "True"
        and summary["full"]["mask_miou_diff_mean"] == ""
    )
    assert summary["full"]["lipstick_acc_mean"] == ""  # not measured: no value rather than nan
    table.write_runs_csv(list(rows.values()), tmp_path / "runs.csv")
    recorded = table.read_runs_csv(tmp_path / "runs.csv")
    assert recorded[("plain", 2)]["mask_miou"] == rows["plain"].values["mask_miou"][2]  # exact round trip
    assert ("scalar_gate", 0) not in recorded and ("mask_dropped", 1) in recorded


def sweep_result(text: float, mask: float | None, miou: float, clip: float, fid: float) -> PointResult:
    return PointResult(Point(text, mask), {"mask_miou": miou, "clip_score": clip, "fid": fid}, None)


def test_the_sweep_chooses_the_lowest_fid_among_points_that_keep_the_mask_and_the_text():
    settings = SweepSettings("run", text_scales=[1.0, 2.0], mask_scales=[2.0, 4.0])
    results = [
        sweep_result(1.0, None, 0.2, 40.0, 4.0),
        sweep_result(2.0, None, 0.2, 42.0, 4.5),
        sweep_result(1.0, 2.0, 0.55, 39.0, 6.0),  # mIoU too low
        sweep_result(1.0, 4.0, 0.65, 38.5, 9.0),  # 0.9625 of 40: feasible
        sweep_result(2.0, 2.0, 0.61, 40.0, 7.0),  # 0.952 of 42: feasible, lower FID
        sweep_result(2.0, 4.0, 0.70, 38.0, 8.0),  # 0.905 of 42: text lost
    ]
    choice = sweep_report.choose(results, settings)
    assert choice.chosen.point == Point(2.0, 2.0) and len(choice.feasible) == 2
    assert "2 of the grid's points meet" in sweep_report.choice_text(results, settings)
    strict = SweepSettings("run", [1.0, 2.0], [2.0, 4.0], min_miou=0.68)
    choice = sweep_report.choose(results, strict)
    assert choice.chosen is None and choice.closest.point == Point(
        1.0, 4.0
    )  # min(0.956, 1.013) is the largest
    assert choice.mask_kept.point == Point(2.0, 4.0)  # the only point at mIoU 0.68 or more
    text = sweep_report.choice_text(results, strict)
    assert "No point of the grid meets" in text and "the lowest FID: text scale 2, mask scale 4" in text
    figure = sweep_report.figure(results, settings)
    assert figure.width > 200 and figure.height > 60


def test_the_sweep_is_for_backbones_that_sample_with_true_cfg(tmp_path):
    (tmp_path / "transformer").mkdir()
    (tmp_path / "transformer" / "config.json").write_text(json.dumps({"guidance_embeds": True}))
    assert not samples_with_true_cfg(str(tmp_path))  # FLUX.1-dev: its guidance embedding, no scales
    (tmp_path / "transformer" / "config.json").write_text(json.dumps({"guidance_embeds": False}))
    assert samples_with_true_cfg(str(tmp_path))


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


def mtimes(root) -> dict:
    """Every evaluation, probe and training record under root, with its modification time."""
    files = [*root.rglob("test.json"), *root.rglob("probe.json"), *root.rglob("train.json")]
    return {str(f): f.stat().st_mtime_ns for f in files}


@pytest.mark.slow  # six quick runs with evaluations, probes, curves and the sweep; then resumes and a rerun
def test_the_quick_study_makes_every_result_continues_where_it_stopped_and_reproduces_a_row(
    workspace, evaluators, tmp_path, capsys
):
    args = study_args(workspace, evaluators, tmp_path, "--variants", "full,plain,balanced", "--seeds", "0,1")
    settings = ablate_gating.settings_from(ablate_gating.parse_args(args))
    with pytest.raises(RuntimeError, match="killed"):  # an interrupted run of the full model
        train(settings.run_config("full", 0), extra_callbacks=[KillAt(1)])

    ablate_gating.main(args)

    runs = tmp_path / "runs"
    full_log = (runs / "full" / "seed0" / "logs" / "version_1" / "metrics.csv").read_text()
    assert [r["step"] for r in csv.DictReader(full_log.splitlines()) if r.get("train/loss")] == ["1"]
    assert "train/gate_balance_loss" in full_log.splitlines()[0]
    plain_ckpt = torch.load(runs / "plain" / "seed0" / "checkpoints" / "last.ckpt", weights_only=False)
    assert plain_ckpt["state_dict"] and all("lora_" in k for k in plain_ckpt["state_dict"])  # LoRA only
    balanced = load_config(runs / "balanced" / "seed1" / "config.yaml")
    assert balanced.train.gate_balance == VARIANTS["balanced"].gate_balance > 0

    out = tmp_path / "out"
    rows = {r["variant"]: r for r in csv.DictReader((out / "ablation.csv").open())}
    assert list(rows) == ["full", "plain", "balanced", "mask_dropped"]
    for name, row in rows.items():
        assert row["seeds"] == "2"
        low, mean, high = (float(row[f"mask_miou_{s}"]) for s in ("low", "mean", "high"))
        assert 0 <= mean <= 1 and low <= mean <= high
        assert 0 <= float(row["hair_color_acc_mean"]) <= 1 and float(row["fid_mean"]) >= 0
        assert (row["mask_miou_diff_mean"] == "") == (name == "full")
    md = (out / "ablation.md").read_text()
    for part in (
        "## Differences from full",
        "## Full against each variant",
        "## Gate usage",
        "## Learning curves",
    ):
        assert part in md
    assert (
        "## Guidance sweep: full, seed 0" in md
        and "sha256 `" in md
        and "--variants full,plain,balanced" in md
    )
    origin = json.loads((out / "provenance.json").read_text())
    assert len(origin["backbone_sha256"]) == 64 and origin["seconds"]["train"] > 0
    assert {"evaluate", "probe", "curve", "sweep"} <= set(origin["seconds"])

    curves = list(csv.DictReader((out / "learning_curves.csv").open()))
    assert {(r["variant"], r["seed"], r["step"]) for r in curves} == {
        (v, s, step) for v in ("full", "plain") for s in ("0", "1") for step in ("1", "2")
    }
    usage = list(csv.DictReader((out / "gate_usage.csv").open()))
    assert {r["variant"] for r in usage} == {"full", "plain", "balanced"}
    totals = {}
    for r in usage:
        key = (r["variant"], r["seed"], r["step"])
        totals[key] = totals.get(key, 0.0) + float(r["share"])
    assert all(t == pytest.approx(1.0) for t in totals.values())
    assert {r["step"] for r in csv.DictReader((out / "gate_weights.csv").open())} == {"0", "1"}
    sweep = list(csv.DictReader((out / "guidance_sweep.csv").open()))
    assert [(r["text_scale"], r["mask_scale"]) for r in sweep] == [
        ("1.0", ""),
        ("2.0", ""),
        ("1.0", "1.0"),
        ("1.0", "4.0"),
        ("2.0", "1.0"),
        ("2.0", "4.0"),
    ]
    for name in ("learning_curves", "gate_usage", "gate_weights", "guidance_sweep"):
        picture = Image.open(out / f"{name}.png")
        assert picture.width > 100 and picture.height > 50, name

    done = mtimes(runs)
    ablate_gating.main(args)  # everything finished: nothing is trained, evaluated or probed again
    assert mtimes(runs) == done

    # a study stopped after a curve point, a probe and a sweep point continues with exactly those
    redo = [
        runs / "full" / "seed1" / "curve" / "step-000001" / "eval" / "test.json",
        runs / "plain" / "seed1" / "probe.json",
        runs / "full" / "seed0" / "sweep" / "text2-mask4" / "eval" / "test.json",
    ]
    for path in redo:
        path.unlink()
    ablate_gating.main(args)
    again = mtimes(runs)
    assert {p for p in again if again[p] != done.get(p)} == {str(p) for p in redo}

    capsys.readouterr()
    ablate_gating.main([*args, "--verify", "full:0"])  # the killed and resumed run, retrained in one go
    assert "reproduced full:0" in capsys.readouterr().out

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
    fake_run(settings, "full", 0, miou=0.5, fid=10.0)
    ablate_gating.log_to_wandb(settings)
    (run,) = (tmp_path / "runs" / "wandb").glob("offline-run-*")
    (stored,) = (run / "files" / "media" / "table" / "ablation").glob("table_*.table.json")
    logged = json.loads(stored.read_text())
    assert logged["columns"][:3] == ["variant", "seeds", "mask_miou_mean"]
    assert logged["data"][0][:3] == ["full", 1, 0.5]


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
