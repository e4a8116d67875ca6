"""The paper's configuration (experiments/configs/flux_mmcelebahq.yaml) end to end on a backbone with FLUX.1-dev's
structure (facemogle.backbone.flux_dev_shaped, saved in FLUX.1-dev's directory format): bf16-true, Prodigy,
gradient checkpointing, accumulation 2, the latent cache, the guidance embedding, the 8x VAE with its scaling
and shift, the shifted scheduler and 512-token T5. Only sizes and paths are overridden."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers.models.embeddings import CombinedTimestepGuidanceTextProjEmbeddings
from PIL import Image
from safetensors.torch import load_file

from data_modules.synthetic import write_synthetic
from experiments import ablate_gating, evaluate
from experiments import sample as sample_cli
from experiments.config.load import load_config
from experiments.training.run import train
from facemogle.backbone import save_flux
from facemogle.evaluators import build_small_clip, build_small_parser, save_clip, save_face_parser
from facemogle.tiny_backbone import flux_dev_shaped
from facemogle.tiny_tokenizers import build_clip_tokenizer
from tests.run_fixtures import KillAt, RecordGuidance, launch, records

pytestmark = pytest.mark.slow

PAPER = "experiments/configs/flux_mmcelebahq.yaml"
STEPS, KILL_AT = 4, 3  # 8 faces a step (batch 4 x accumulation 2); a checkpoint every 2 steps


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    root = tmp_path_factory.mktemp("flux-dev-path")
    write_synthetic(root / "data", 24, 64, 0)
    save_flux(flux_dev_shaped(seed=0), root / "FLUX.1-dev")
    save_face_parser(build_small_parser(), root / "evaluators" / "parser")
    save_clip(build_small_clip(build_clip_tokenizer()), root / "evaluators" / "clip")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        mp.delenv("WANDB_API_KEY", raising=False)
        yield root


def sizes(root: Path, run: str) -> list[str]:
    """The overrides of sizes and paths that fit the paper's config to 24 faces at 64^2 on a CPU."""
    return [
        f"run_dir={root / run}",
        f"backbone.path={root / 'FLUX.1-dev'}",
        f"data.root={root / 'data'}",
        f"data.cache_dir={root / 'cache'}",
        "data.resolution=64",
        "data.split.protocol=fraction",
        "data.split.val_fraction=0.2",
        "data.num_workers=0",
        f"trainer.max_steps={STEPS}",
        "trainer.checkpoint_every_n_steps=2",
        "trainer.progress_bar=false",
    ]


def paper(root: Path, run: str, *extra: str):
    return load_config(PAPER, [*sizes(root, run), *extra])


@pytest.fixture(scope="module")
def runs(space):
    """full: 4 uninterrupted steps; killed: stopped at step 3, resumed from step 2's checkpoint."""
    record = RecordGuidance()
    full = train(paper(space, "full"), extra_callbacks=[record])
    with pytest.raises(RuntimeError, match="killed"):
        train(paper(space, "killed"), extra_callbacks=[KillAt(KILL_AT)])
    resumed = train(paper(space, "killed"), resume=True)
    return {"full": full, "resumed": resumed, "guidance": record.seen}


def test_the_paper_config_trains_in_bf16_with_guidance_1_and_resumes_exactly(space, runs):
    full, resumed = runs["full"], runs["resumed"]
    module = full.lightning_module
    assert module.backbone.transformer.config.guidance_embeds and module.backbone.vae_scale_factor == 8
    assert module.backbone.max_sequence_length == 512
    assert (
        module.backbone.transformer.dtype == torch.bfloat16
        and module.backbone.transformer.gradient_checkpointing
    )
    assert type(full.optimizers[0]).__name__ == "Prodigy" and full.accumulate_grad_batches == 2
    # train.guidance (1.0, the official training's) reaches the embedding in training and validation
    assert set(runs["guidance"]["train"]) == {1000.0} and set(runs["guidance"]["validate"]) == {1000.0}
    assert full.global_step == resumed.global_step == STEPS
    torch.testing.assert_close(resumed.callback_metrics["train/loss"], full.callback_metrics["train/loss"])
    for file in ("mogle.safetensors", "lora/pytorch_lora_weights.safetensors"):
        a, b = (load_file(space / run / "export" / file) for run in ("full", "killed"))
        assert a.keys() == b.keys() and a
        for key in a:
            torch.testing.assert_close(a[key], b[key], atol=0, rtol=0)


def test_the_paper_run_samples_in_all_three_modes_with_the_embedded_guidance(space, runs, monkeypatch):
    seen = []
    stock = CombinedTimestepGuidanceTextProjEmbeddings.forward

    def recording(self, timestep, guidance, pooled_projection):
        seen.extend(guidance.float().unique().tolist())
        return stock(self, timestep, guidance, pooled_projection)

    monkeypatch.setattr(CombinedTimestepGuidanceTextProjEmbeddings, "forward", recording)
    masks = space / "masks"
    masks.mkdir(exist_ok=True)
    Image.open(space / "data" / "mask" / "0.png").save(masks / "0.png")
    prompt = ["--prompt", "She has blond wavy hair."]
    outputs = {}
    for mode, inputs in {
        "text": prompt,
        "mask": ["--masks", str(masks)],
        "text+mask": [*prompt, "--mask", str(masks / "0.png")],
    }.items():
        out = space / "samples" / mode
        sample_cli.main(["--run", str(space / "full"), *inputs, "--steps", "2", "--out", str(out)])
        (file,) = out.glob("*.png")
        outputs[mode] = np.asarray(Image.open(file))
        assert outputs[mode].shape == (64, 64, 3)
    # the paper config's sampling guidance, 3.5, x 1000 in the backbone's bf16 as diffusers' FLUX computes it
    assert set(seen) == {(torch.tensor(3.5, dtype=torch.bfloat16) * 1000).item()}
    assert not np.array_equal(outputs["text"], outputs["text+mask"])


def test_the_paper_run_evaluates_in_all_three_modes(space, runs):
    results = evaluate.main(
        [
            *("--run", str(space / "full"), "--split", "test", "--n", "2", "--steps", "2"),
            *("--modes", "text,mask,text+mask", "--device", "cpu", "--kid-subset-size", "2"),
            *("--clip", str(space / "evaluators" / "clip"), "--parser", str(space / "evaluators" / "parser")),
            *("--cache-dir", str(space / "eval-cache")),
        ]
    )
    saved = json.loads((space / "full" / "eval" / "test.json").read_text())
    for mode in ("text", "mask", "text+mask"):
        assert saved[mode]["n"] == 2 and np.isfinite(saved[mode]["fid"]) and mode in results
    assert np.isfinite(saved["mask"]["mask_miou"])
    assert saved["meta"]["sample"]["guidance"] == 3.5


def test_the_quick_ablation_runs_on_the_paper_config(space):
    out = space / "ablation"
    ablate_gating.main(
        [
            *("--config", PAPER, "--quick", "--variants", "full,plain", "--seeds", "0"),
            *(
                "--n",
                "2",
                "--probe-n",
                "2",
                "--curve-n",
                "2",
                "--sweep-n",
                "2",
            ),  # the test split holds 2 faces
            *(
                "--runs",
                str(space / "ablate"),
                "--out",
                str(out),
                "--eval-cache-dir",
                str(space / "eval-cache"),
            ),
            *[s for s in sizes(space, "unused") if not s.startswith(("run_dir", "trainer.max_steps"))],
            f"eval.evaluators.clip_path={space / 'evaluators' / 'clip'}",
            f"eval.evaluators.parser_path={space / 'evaluators' / 'parser'}",
            "eval.metrics.kid_subset_size=2",
        ]
    )
    table = (out / "ablation.md").read_text()
    assert "full" in table and "plain" in table
    for variant in ("full", "plain"):
        assert (space / "ablate" / variant / "seed0" / "export" / "mogle.safetensors").is_file()


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_the_paper_config_trains_on_two_cpu_processes(space, strategy):
    cfg = paper(
        space, strategy, "trainer.accelerator=cpu", "trainer.devices=2", f"trainer.strategy={strategy}"
    )
    out = space / f"{strategy}-out"
    done = launch(cfg, out)
    assert done.returncode == 0, done.stderr[-4000:]
    ranks = records(out)
    assert [r["world_size"] for r in ranks] == [2, 2] and ranks[0]["global_step"] == STEPS
    final = ranks[0]["final"]
    assert any("lora_" in k for k in final) and any(k.startswith("denoiser.mogle.") for k in final)
    for key in final:
        assert torch.equal(final[key], ranks[1]["final"][key]), key
    assert any(not torch.equal(final[k], ranks[0]["initial"][k]) for k in final)  # it trained
    assert (space / strategy / "export" / "mogle.safetensors").is_file()
