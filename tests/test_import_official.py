"""The official Face-MoGLE release in every tool, on the FLUX.1-dev-shaped backbone: files made in the official
key layout (a diffusers FLUX LoRA saved without metadata, as the official training saves it, and the official
MoGLE class's state dict in a torch file), imported, then sampled, evaluated, loaded as a pipeline and in the
demo, and written back in the official format."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import FluxPipeline
from peft import get_peft_model_state_dict, set_peft_model_state_dict
from PIL import Image
from safetensors.torch import load_file, save_file

from data_modules.synthetic import write_synthetic
from experiments import evaluate, export_official, import_official
from experiments import sample as sample_cli
from experiments.app.core import Demo
from experiments.config.load import load_config
from experiments.runs.io import load_run
from experiments.runs.official import PAPER_CONFIG
from facemogle.backbone import save_flux
from facemogle.export import check_manifest, sha256
from facemogle.lora import ADAPTER, PAPER_TARGETS, LoRASettings, add_lora, load_lora, save_lora
from facemogle.pipeline import FaceMoGLEPipeline
from facemogle.tiny_backbone import flux_dev_shaped
from tests.test_cli_errors import run as run_command
from tests.test_official import official_state_dict

pytestmark = pytest.mark.slow

SMALL = ["data.resolution=64", "data.split.protocol=fraction", "data.split.test_fraction=0.5"]


def official_lora(path: Path) -> Path:
    """A LoRA on the paper's targets with non-zero lora_B, saved as the official training saves it."""
    transformer = flux_dev_shaped(seed=0).transformer
    add_lora(transformer, LoRASettings(rank=4, alpha=4))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in transformer.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    FluxPipeline.save_lora_weights(
        path,
        transformer_lora_layers=get_peft_model_state_dict(transformer, adapter_name=ADAPTER),
        safe_serialization=True,
    )
    return path / "pytorch_lora_weights.safetensors"


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("official")
    write_synthetic(root / "data", 8, 64, 0)
    save_flux(flux_dev_shaped(seed=0), root / "FLUX.1-dev")
    torch.save(official_state_dict(), root / "mogle.pt")
    return {"root": root, "lora": official_lora(root / "release"), "mogle": root / "mogle.pt"}


def import_argv(release, out: Path, *extra: str) -> list[str]:
    root = release["root"]
    return [
        *("--lora", str(release["lora"]), "--mogle", str(release["mogle"])),
        *("--backbone", str(root / "FLUX.1-dev"), "--out", str(out), *extra),
    ]


@pytest.fixture(scope="module")
def imported(release):
    out = release["root"] / "runs" / "official"
    import_official.main(import_argv(release, out, f"data.root={release['root'] / 'data'}", *SMALL))
    return out


def test_the_import_records_the_official_sampler_and_the_source_files(release, tmp_path):
    out = tmp_path / "default"
    import_official.main(import_argv(release, out))
    config = load_config(out / "export" / "config.yaml")
    assert config.data.resolution == 512
    assert (config.train.sample.steps, config.train.sample.guidance) == (28, 3.5)
    assert config.train.sample.text_only_condition == "background"
    mogle = config.model.mogle
    assert (mogle.gate, mogle.experts, mogle.expert_set, mogle.time_scale) == (
        "dynamic",
        "mlp",
        "all",
        1000.0,
    )
    lora = config.model.lora
    assert (lora.rank, lora.alpha, lora.target_modules) == (4, 4.0, PAPER_TARGETS)
    record = json.loads((out / "export" / "official.json").read_text())
    assert record["files"]["lora"]["sha256"] == sha256(release["lora"])
    assert record["files"]["mogle"]["sha256"] == sha256(release["mogle"])
    assert record["lora"]["scale"] == 1.0 and record["gate_time_scale"] == 1000.0
    check_manifest(out / "export")  # every file, official.json included, as the manifest records it
    assert sha256(out / "export" / "lora" / "pytorch_lora_weights.safetensors") == sha256(release["lora"])

    import_official.main(import_argv(release, tmp_path / "training", "--convention", "training"))
    assert load_config(tmp_path / "training" / "export" / "config.yaml").model.mogle.time_scale == 1.0


def test_the_imported_run_samples_in_all_three_modes(release, imported):
    masks = release["root"] / "masks"
    masks.mkdir(exist_ok=True)
    Image.open(release["root"] / "data" / "mask" / "0.png").save(masks / "0.png")
    prompt = ["--prompt", "She has blond wavy hair."]
    for mode, inputs in {
        "text": prompt,
        "mask": ["--masks", str(masks)],
        "text+mask": [*prompt, "--mask", str(masks / "0.png")],
    }.items():
        out = release["root"] / "samples" / mode
        sample_cli.main(["--run", str(imported), *inputs, "--steps", "2", "--out", str(out)])
        (file,) = out.glob("*.png")
        assert np.asarray(Image.open(file)).shape == (64, 64, 3)


def test_the_imported_run_evaluates_with_the_paper_protocol(release, imported, evaluators, paper_standins):
    clip = str(evaluators / "clip")
    evaluate.main(
        [
            *("--run", str(imported), "--split", "test", "--n", "2", "--steps", "1", "--modes", "mask"),
            *("--device", "cpu", "--kid-subset-size", "2", "--cache-dir", "", "--clip", clip),
            *("--parser", str(evaluators / "parser")),
            *(
                "--protocol",
                "paper",
                "--inception-torchscript",
                str(paper_standins / "inception-2015-12-05.pt"),
            ),
            *("--cmmd-clip", clip, "--text-clip", clip, "--dino", str(paper_standins / "dino")),
        ]
    )
    saved = json.loads((imported / "eval" / "test.json").read_text())
    assert saved["mask"]["n"] == 2 and np.isfinite(saved["mask"]["paper"]["fid"])
    assert saved["meta"]["official_release"]["files"]["mogle"]["sha256"] == sha256(release["mogle"])
    table = (imported / "eval" / "test.md").read_text()
    assert "| mask: the paper's Face-MoGLE | 19.63 | 8.29 | 0.399 |" in table and "2509.00428v1" in table


def test_the_pipeline_and_the_demo_load_the_imported_run_with_no_other_argument(release, imported):
    pipe = FaceMoGLEPipeline.from_pretrained(imported / "export")
    pipe.set_progress_bar_config(disable=True)
    labels = torch.randint(0, 19, (1, 64, 64), generator=torch.Generator().manual_seed(0))
    out = pipe(
        mask_image=labels, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="pt"
    )
    assert out.images.shape == (1, 3, 64, 64) and out.region_gate.shape[-1] == 20
    converted = load_file(imported / "export" / "mogle.safetensors")
    for key, value in pipe.mogle.mogle.state_dict().items():
        assert torch.equal(value, converted[key]), key
    face = Demo(load_run(imported)).generate(labels, "", "mask", 0, 2, {}, {})
    assert face.image.shape == (64, 64, 3) and face.gate is not None


def test_import_then_export_official_gives_the_release_tensors(release, imported, tmp_path):
    export_official.main(["--run", str(imported), "--out", str(tmp_path / "back")])
    source, back = (
        load_file(release["lora"]),
        load_file(tmp_path / "back" / "pytorch_lora_weights.safetensors"),
    )
    assert source.keys() == back.keys() and len(source) > 0
    for key in source:
        assert torch.equal(source[key], back[key]), key
    official, mogle = official_state_dict(), torch.load(tmp_path / "back" / "mogle.pt", weights_only=True)
    assert official.keys() == mogle.keys() and len(official) == 4 * 20 + 10
    for key in official:
        assert torch.equal(official[key], mogle[key]), key


def test_export_official_then_import_samples_bit_identical_images(release, imported, tmp_path):
    export_official.main(["--run", str(imported), "--out", str(tmp_path / "back")])
    again = tmp_path / "again"
    import_official.main(
        [
            *("--lora", str(tmp_path / "back" / "pytorch_lora_weights.safetensors")),
            *(
                "--mogle",
                str(tmp_path / "back" / "mogle.pt"),
                "--backbone",
                str(release["root"] / "FLUX.1-dev"),
            ),
            *("--out", str(again), f"data.root={release['root'] / 'data'}", *SMALL),
        ]
    )
    images = []
    for run in (imported, again):
        out = tmp_path / run.name
        sample_cli.main(["--run", str(run), "--prompt", "She smiles.", "--steps", "2", "--out", str(out)])
        images.append(np.asarray(Image.open(next(out.glob("*.png")))))
    assert np.array_equal(images[0], images[1])


def test_export_official_refuses_a_run_the_official_class_cannot_hold(release, tmp_path):
    run = tmp_path / "training"
    import_official.main(import_argv(release, run, "--convention", "training"))
    with pytest.raises(ValueError, match=r"model.mogle.time_scale=1.0, the official MoGLE class holds"):
        export_official.main(["--run", str(run), "--out", str(tmp_path / "x")])
    config = run / "export" / "config.yaml"
    config.write_text(config.read_text().replace("experts: mlp", "experts: residual"))
    with pytest.raises(ValueError, match=r"model.mogle.experts='residual', the official MoGLE class holds"):
        export_official.main(["--run", str(run), "--out", str(tmp_path / "x"), "--allow-unverified"])


def _renamed(sd, old, new):
    sd[new] = sd.pop(old)
    return sd


@pytest.mark.parametrize(
    "which, edit, error",
    [
        (
            "mogle",
            lambda sd: _renamed(sd, "gating.gate.2.bias", "gating.gate.3.bias"),
            r"mogle.pt: .*gating.gate.2.bias",
        ),
        (
            "mogle",
            lambda sd: {**sd, "gating.noise_proj.weight": torch.zeros(64, 32)},
            r"mogle.pt: key gating.noise_proj.weight has shape",
        ),
        (
            "mogle",
            lambda sd: official_state_dict(h=16),
            r"mogle.pt: key global_expert.net.0.weight has shape \(16, 64\), .* expects \(32, 64\)",
        ),
        (
            "lora",
            lambda sd: _renamed(
                sd, "transformer.x_embedder.lora_A.weight", "transformer.x_embeder.lora_A.weight"
            ),
            r"pytorch_lora_weights.safetensors: key 'transformer.x_embeder.lora_A.weight' names 'x_embeder'",
        ),
        (
            "lora",
            lambda sd: {**sd, "transformer.x_embedder.lora_B.weight": torch.zeros(128, 4)},
            r"pytorch_lora_weights.safetensors: key 'transformer.x_embedder.lora_B.weight' has shape \(128, 4\), the backbone.s x_embedder expects \(256, 4\)",
        ),
    ],
)
def test_a_misnamed_or_misshaped_release_file_is_an_error_naming_the_file_and_key(
    release, tmp_path, which, edit, error
):
    files = {"lora": release["lora"], "mogle": release["mogle"]}
    if which == "mogle":
        files["mogle"] = tmp_path / "mogle.pt"
        torch.save(edit(official_state_dict()), files["mogle"])
    else:
        (tmp_path / "lora").mkdir()
        files["lora"] = tmp_path / "lora" / "pytorch_lora_weights.safetensors"
        save_file(edit(load_file(release["lora"])), files["lora"])
    with pytest.raises(ValueError, match=error):
        import_official.main(import_argv({**release, **files}, tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_the_paper_config_is_the_imports_base(release, imported):
    assert (
        load_config(imported / "export" / "config.yaml").train.optim.name
        == load_config(PAPER_CONFIG).train.optim.name
    )


def test_a_lora_on_other_modules_than_the_papers_is_recorded_by_their_names(release, tmp_path):
    source = load_file(release["lora"])
    kept = {k: v for k, v in source.items() if not k.startswith("transformer.x_embedder.")}
    (tmp_path / "lora").mkdir()
    save_file(kept, tmp_path / "lora" / "pytorch_lora_weights.safetensors")
    files = {"lora": tmp_path / "lora" / "pytorch_lora_weights.safetensors"}
    import_official.main(import_argv({**release, **files}, tmp_path / "run"))
    targets = load_config(tmp_path / "run" / "export" / "config.yaml").model.lora.target_modules
    assert targets == sorted({k.removeprefix("transformer.").rsplit(".lora_", 1)[0] for k in kept})
    assert "x_embedder" not in targets and len(targets) == len(kept) // 2


def test_export_official_folds_a_lora_scale_other_than_1_into_lora_b(release, imported, tmp_path):
    """The official code loads its LoRA without metadata (alpha = rank): a run's alpha / rank goes into lora_B,
    so the adapted layers compute what the run's do."""
    run = tmp_path / "run"
    shutil.copytree(imported, run)
    transformer = flux_dev_shaped(seed=0).transformer
    add_lora(transformer, LoRASettings(rank=4, alpha=8))
    source = load_file(release["lora"])
    lora = {k.removeprefix("transformer."): v for k, v in source.items()}
    set_peft_model_state_dict(transformer, lora, adapter_name=ADAPTER)
    save_lora(transformer, run / "export" / "lora")
    export_official.main(["--run", str(run), "--out", str(tmp_path / "back"), "--allow-unverified"])
    back = load_file(tmp_path / "back" / "pytorch_lora_weights.safetensors")
    assert back.keys() == source.keys()
    for key, value in source.items():
        assert torch.equal(back[key], value * 2 if ".lora_B." in key else value), key
    ours, official = flux_dev_shaped(seed=0).transformer, flux_dev_shaped(seed=0).transformer
    load_lora(ours, run / "export" / "lora" / "pytorch_lora_weights.safetensors")
    load_lora(official, tmp_path / "back" / "pytorch_lora_weights.safetensors")
    x = torch.randn(2, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours.x_embedder(x), official.x_embedder(x))
        assert not torch.equal(ours.x_embedder(x), flux_dev_shaped(seed=0).transformer.x_embedder(x))


def test_files_of_the_wrong_kind_are_errors_naming_the_file(release, tmp_path):
    swapped = {"lora": release["mogle"], "mogle": release["lora"]}
    with pytest.raises(ValueError, match=r"mogle.pt is not a complete safetensors file"):
        import_official.main(import_argv({**release, "lora": swapped["lora"]}, tmp_path / "run"))
    with pytest.raises(
        ValueError, match=r"pytorch_lora_weights.safetensors: official MoGLE state dict lacks key"
    ):
        import_official.main(import_argv({**release, "mogle": swapped["mogle"]}, tmp_path / "run"))
    torch.save({"net": torch.nn.Linear(2, 2)}, tmp_path / "module.pt")  # a pickled module, not data
    with pytest.raises(ValueError, match=r"module.pt is refused"):
        import_official.main(import_argv({**release, "mogle": tmp_path / "module.pt"}, tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_at_the_command_line_a_bad_release_file_is_one_line_and_exit_status_2(release, tmp_path):
    sd = official_state_dict()
    sd["gating.gate.2.weight"] = torch.zeros(19, 64)
    torch.save(sd, tmp_path / "mogle.pt")
    argv = import_argv({**release, "mogle": tmp_path / "mogle.pt"}, tmp_path / "run")
    done = run_command("experiments.import_official", *argv)
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert last.startswith("error: ") and "mogle.pt: key gating.gate.2.weight has shape (19, 64)" in last
