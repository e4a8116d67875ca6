"""A quantised frozen base (backbone.quantization, facemogle.quantization): the settings and their refusals, LoRA
that changes the output and gets a gradient on each quantised base, AdamW8bit, and (slow) the paper's config on
the FLUX.1-dev-shaped backbone with each setting: trains, resumes exactly, exports, samples, evaluates, and its
export loads on the other bases."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from experiments import evaluate
from experiments import sample as sample_cli
from experiments.config.checks import check_config
from experiments.config.load import load_config
from experiments.training.run import train
from facemogle.lora import LoRASettings, add_lora, lora_layer_names
from facemogle.pipeline import FaceMoGLEPipeline
from facemogle.quantization import QuantizationConfig, load_transformer, optimizer_8bit, quantised_linears
from facemogle.tiny_backbone import flux_dev_shaped
from tests.run_fixtures import KillAt
from tests.test_flux_dev_path import PAPER, sizes, space  # noqa: F401 (space: the module's fixture)

SETTINGS = ("int8", "nf4", "fp8")
EIGHT_BIT_ADAM = (
    "int8"  # the setting trained with train.optim.name=adamw8bit (the others: the paper's Prodigy)
)
TINY = "experiments/configs/tiny.yaml"


@pytest.mark.parametrize(
    ("value", "says"),
    [("int4", "expected one of none, int8, nf4, fp8"), ("quanto", "optimum-quanto"), ("qfloat8", "flux#157")],
)
@pytest.mark.parametrize("part", ["transformer", "text_encoder_2"])
def test_an_unknown_or_refused_quantisation_is_an_error_naming_the_key(part, value, says):
    with pytest.raises(ValueError, match=f"backbone.quantization.{part}='{value}'") as err:
        load_config(TINY, [f"backbone.quantization.{part}={value}"])
    assert says in str(err.value)


@pytest.mark.parametrize("setting", SETTINGS)
def test_fsdp_with_a_quantised_transformer_is_a_start_up_error(setting):
    config = load_config(TINY, [f"backbone.quantization.transformer={setting}", "trainer.strategy=fsdp"])
    with pytest.raises(
        ValueError, match=f"transformer='{setting}' with trainer.strategy='fsdp': FSDP cannot"
    ):
        check_config(config)
    check_config(
        load_config(TINY, [f"backbone.quantization.text_encoder_2={setting}", "trainer.strategy=fsdp"])
    )


@pytest.fixture(scope="module")
def transformer_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("quantised")
    flux_dev_shaped(seed=0).transformer.save_pretrained(root / "transformer")
    return root


def _inputs(tr, n=6, s=5):
    g = torch.Generator().manual_seed(0)
    c = tr.config
    return dict(
        hidden_states=torch.randn(1, n, c.in_channels, generator=g).bfloat16(),
        encoder_hidden_states=torch.randn(1, s, c.joint_attention_dim, generator=g).bfloat16(),
        pooled_projections=torch.randn(1, c.pooled_projection_dim, generator=g).bfloat16(),
        timestep=torch.tensor([0.5]),
        guidance=torch.tensor([1.0]),
        img_ids=torch.zeros(n, 3),
        txt_ids=torch.zeros(s, 3),
    )


@pytest.mark.parametrize("setting", SETTINGS)
def test_lora_on_a_quantised_base_changes_the_output_and_gets_a_gradient(transformer_dir, setting):
    tr = load_transformer(transformer_dir, setting, torch.bfloat16).requires_grad_(False).eval()
    assert quantised_linears(tr) >= 30  # every block's linear layers
    names = add_lora(tr, LoRASettings(rank=4, alpha=4.0))
    assert len(names) >= 10
    for name in names:  # peft's own wrapper for the quantised layer, around the quantised weights
        layer = tr.get_submodule(name)
        assert quantised_linears(layer.base_layer) == 1, name
        torch.nn.init.normal_(layer.lora_B["mogle"].weight, std=0.05)
    out = tr(**_inputs(tr)).sample
    with torch.no_grad():
        tr.disable_adapters()
        plain = tr(**_inputs(tr)).sample
        tr.enable_adapters()
    assert (out.float() - plain.float()).abs().max() > 1e-2
    out.float().square().mean().backward()
    # the first LoRA (x_embedder's) gets its gradient through every quantised block above it
    first = tr.x_embedder.lora_A["mogle"].weight.grad
    assert first is not None and first.abs().sum() > 0


def test_adamw8bit_keeps_8_bit_moments_and_steps():
    weight = torch.nn.Parameter(torch.randn(64, 128))  # >= 4096 elements: 8-bit state
    before = weight.detach().clone()
    optimizer = optimizer_8bit([weight], lr=1e-2, betas=(0.9, 0.999), weight_decay=0.0)
    weight.square().sum().backward()
    optimizer.step()
    assert type(optimizer).__name__ == "AdamW8bit"
    assert optimizer.state[weight]["state1"].dtype == torch.uint8
    assert not torch.equal(weight.detach(), before)


# --- the paper's config on the FLUX.1-dev-shaped backbone, slow --------------------------------------------

# batch 2 x accumulation 2; a checkpoint every step: killed in step 2, resumed from step 1
STEPS, KILL_AT = 2, 1


def quantised(root, run, setting, *extra):
    return load_config(
        PAPER,
        [
            *sizes(root, run),
            f"trainer.max_steps={STEPS}",
            "trainer.checkpoint_every_n_steps=1",
            "data.batch_size=2",
            f"backbone.quantization.transformer={setting}",
            f"backbone.quantization.text_encoder_2={setting}",
            *(["train.optim.name=adamw8bit", "train.optim.lr=1e-4"] if setting == EIGHT_BIT_ADAM else []),
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def quantised_runs(space):  # noqa: F811
    runs = {}
    for setting in SETTINGS:
        full = train(quantised(space, f"q-{setting}", setting))
        with pytest.raises(RuntimeError, match="killed"):
            train(quantised(space, f"q-{setting}-killed", setting), extra_callbacks=[KillAt(KILL_AT)])
        runs[setting] = (full, train(quantised(space, f"q-{setting}-killed", setting), resume=True))
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("setting", SETTINGS)
def test_the_paper_config_trains_on_a_quantised_base_and_resumes_exactly(space, quantised_runs, setting):  # noqa: F811
    full, resumed = quantised_runs[setting]
    module = full.lightning_module
    backbone = module.backbone
    assert quantised_linears(backbone.transformer) >= 30 and quantised_linears(backbone.text_encoder_2) >= 6
    assert backbone.transformer.gradient_checkpointing
    assert all(p.dtype.is_floating_point and p.requires_grad for p in module.denoiser.mogle.parameters())
    assert quantised_linears(module.denoiser.mogle) == 0  # MoGLE stays in full precision
    assert type(full.optimizers[0]).__name__ == ("AdamW8bit" if setting == EIGHT_BIT_ADAM else "Prodigy")
    assert full.global_step == resumed.global_step == STEPS
    torch.testing.assert_close(resumed.callback_metrics["train/loss"], full.callback_metrics["train/loss"])
    for file in ("mogle.safetensors", "lora/pytorch_lora_weights.safetensors"):
        a, b = (load_file(space / run / "export" / file) for run in (f"q-{setting}", f"q-{setting}-killed"))
        assert a.keys() == b.keys() and a
        for key in a:
            assert torch.equal(a[key], b[key]), key
    checkpoint = torch.load(space / f"q-{setting}" / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["state_dict"] and all(  # only LoRA and MoGLE: no quantised base weight
        "lora_" in k or k.startswith("denoiser.mogle.") for k in checkpoint["state_dict"]
    )


@pytest.mark.slow
@pytest.mark.parametrize("setting", SETTINGS)
def test_a_run_on_a_quantised_base_samples_and_evaluates(space, quantised_runs, setting):  # noqa: F811
    run = space / f"q-{setting}"
    out = space / "q-samples" / setting
    mask = space / "data" / "mask" / "0.png"
    sample_cli.main(["--run", str(run), "--prompt", "She has blond wavy hair.", "--mask", str(mask)]
                    + ["--steps", "2", "--out", str(out)])  # fmt: skip
    (file,) = out.glob("*.png")
    assert np.asarray(Image.open(file)).shape == (64, 64, 3)
    evaluate.main(
        [
            *("--run", str(run), "--split", "test", "--n", "2", "--steps", "2"),
            *("--modes", "text+mask", "--device", "cpu", "--kid-subset-size", "2"),
            *("--clip", str(space / "evaluators" / "clip"), "--parser", str(space / "evaluators" / "parser")),
            *("--cache-dir", str(space / "eval-cache")),
        ]
    )
    saved = json.loads((run / "eval" / "test.json").read_text())
    assert saved["text+mask"]["n"] == 2 and np.isfinite(saved["text+mask"]["fid"])


def _pipeline_sample(pipe: FaceMoGLEPipeline, mask) -> np.ndarray:
    generator = torch.Generator().manual_seed(0)
    image = pipe("She has blond wavy hair.", Image.open(mask), num_inference_steps=2, generator=generator)
    return np.asarray(image.images[0])


@pytest.mark.slow
def test_an_export_trained_on_a_quantised_base_loads_on_the_unquantised_one_and_the_reverse(
    space,  # noqa: F811
    quantised_runs,
):
    mask = space / "data" / "mask" / "0.png"
    train(quantised(space, "q-none", "none"))
    trained = {"nf4": space / "q-nf4", "none": space / "q-none"}
    for setting, run in trained.items():
        other = "none" if setting == "nf4" else "nf4"
        pipe = FaceMoGLEPipeline.from_pretrained(run, quantization=QuantizationConfig(other, other))
        assert bool(quantised_linears(pipe.transformer)) == (other != "none")
        lora = load_file(run / "export" / "lora" / "pytorch_lora_weights.safetensors")
        assert len(lora_layer_names(pipe.transformer)) * 2 == len(lora)  # every A and B loaded
        assert any("lora_B" in k and lora[k].abs().sum() > 0 for k in lora)  # it trained
        image = _pipeline_sample(pipe, mask)
        assert image.shape == (64, 64, 3)
        same = FaceMoGLEPipeline.from_pretrained(run)
        assert bool(quantised_linears(same.transformer)) == (setting != "none")
