import shutil

import pytest
import torch

from facemogle.backbone import load_flux, save_flux
from facemogle.encode import decode_tokens, encode_images, encode_prompts
from facemogle.tiny_backbone import tiny_flux


def test_tiny_flux_saves_and_loads_back_with_identical_outputs(backbone, flux_inputs, tmp_path):
    save_flux(backbone, tmp_path / "flux")
    loaded = load_flux(tmp_path / "flux", dtype=torch.float32)
    prompts = ["She has blond wavy hair and wears eyeglasses.", "He is smiling."]
    a, b = encode_prompts(backbone, prompts), encode_prompts(loaded, prompts)
    torch.testing.assert_close(a.sequence, b.sequence, atol=0, rtol=0)
    torch.testing.assert_close(a.pooled, b.pooled, atol=0, rtol=0)
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    tokens = encode_images(backbone, images)
    torch.testing.assert_close(tokens, encode_images(loaded, images), atol=0, rtol=0)
    torch.testing.assert_close(decode_tokens(backbone, tokens, 64, 64), decode_tokens(loaded, tokens, 64, 64))
    with torch.no_grad():
        torch.testing.assert_close(
            backbone.transformer(**flux_inputs).sample,
            loaded.transformer(**flux_inputs).sample,
            atol=0,
            rtol=0,
        )
    assert loaded.max_sequence_length == backbone.max_sequence_length == 32


def test_tiny_shapes_follow_the_flux_conventions(backbone):
    assert backbone.vae_scale_factor == 4 and backbone.token_dim == 64
    assert encode_images(backbone, torch.zeros(1, 3, 64, 64)).shape == (1, 64, 64)


def test_a_missing_directory_says_where_to_get_flux(tmp_path):
    with pytest.raises(
        ValueError, match="does not exist.*huggingface-cli download black-forest-labs/FLUX.1-dev"
    ):
        load_flux(tmp_path / "nowhere")


def test_an_incomplete_directory_names_what_is_missing(tmp_path):
    save_flux(tiny_flux(), tmp_path / "flux")
    shutil.rmtree(tmp_path / "flux" / "text_encoder_2")
    (tmp_path / "flux" / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ValueError, match=r"missing: vae/\*\.safetensors, text_encoder_2/config.json"):
        load_flux(tmp_path / "flux")


def test_tiny_tokenizers_are_identical_in_a_fresh_process():
    import json
    import subprocess
    import sys

    code = (
        "import json; from facemogle.tiny_tokenizers import build_clip_tokenizer as c, build_t5_tokenizer as t;"
        "print(json.dumps([c(corpus=['She is smiling.']).get_vocab(), t(corpus=['She is smiling.']).get_vocab()]))"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    from facemogle.tiny_tokenizers import build_clip_tokenizer, build_t5_tokenizer

    here = [
        build_clip_tokenizer(corpus=["She is smiling."]).get_vocab(),
        build_t5_tokenizer(corpus=["She is smiling."]).get_vocab(),
    ]
    assert json.loads(other.strip().splitlines()[-1]) == here


# The structural settings of black-forest-labs/FLUX.1-dev's published config.json files. The values cut
# for size (depth, transformer heads, VAE widths, text-encoder depth and feed-forward widths, vocabularies)
# are left out; everything here must hold for the test backbone as saved and loaded.
FLUX_DEV_CONFIGS = {
    "transformer": {
        "_class_name": "FluxTransformer2DModel",
        "attention_head_dim": 128,
        "axes_dims_rope": [16, 56, 56],
        "guidance_embeds": True,
        "in_channels": 64,
        "joint_attention_dim": 4096,
        "patch_size": 1,
        "pooled_projection_dim": 768,
    },
    "vae": {
        "_class_name": "AutoencoderKL",
        "act_fn": "silu",
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "in_channels": 3,
        "out_channels": 3,
        "latent_channels": 16,
        "mid_block_add_attention": True,
        "norm_num_groups": 32,
        "scaling_factor": 0.3611,
        "shift_factor": 0.1159,
        "use_quant_conv": False,
        "use_post_quant_conv": False,
        "force_upcast": True,
    },
    "scheduler": {
        "_class_name": "FlowMatchEulerDiscreteScheduler",
        "num_train_timesteps": 1000,
        "shift": 3.0,
        "use_dynamic_shifting": True,
        "base_image_seq_len": 256,
        "max_image_seq_len": 4096,
        "base_shift": 0.5,
        "max_shift": 1.15,
    },
    "text_encoder": {
        "architectures": ["CLIPTextModel"],
        "hidden_size": 768,
        "hidden_act": "quick_gelu",
        "max_position_embeddings": 77,
    },
    "text_encoder_2": {
        "architectures": ["T5EncoderModel"],
        "d_model": 4096,
        "d_kv": 64,
        "feed_forward_proj": "gated-gelu",
        "dense_act_fn": "gelu_new",
        "is_gated_act": True,
        "relative_attention_num_buckets": 32,
        "relative_attention_max_distance": 128,
        "layer_norm_epsilon": 1e-6,
    },
}


@pytest.fixture(scope="module")
def flux_dev_dir(tmp_path_factory):
    from facemogle.tiny_backbone import flux_dev_shaped

    return save_flux(flux_dev_shaped(), tmp_path_factory.mktemp("flux-dev") / "FLUX.1-dev")


def test_the_flux_dev_shaped_directory_has_every_structural_setting_of_flux_dev(flux_dev_dir):
    import json

    for folder, expected in FLUX_DEV_CONFIGS.items():
        name = "scheduler_config.json" if folder == "scheduler" else "config.json"
        saved = json.loads((flux_dev_dir / folder / name).read_text())
        assert {k: saved.get(k) for k in expected} == expected, folder
    assert json.loads((flux_dev_dir / "model_index.json").read_text())["_class_name"] == "FluxPipeline"


def test_the_flux_dev_shaped_backbone_loads_as_flux_dev_does(flux_dev_dir):
    flux = load_flux(flux_dev_dir)  # as FLUX.1-dev: bfloat16, the T5 tokenizer's own length
    assert flux.transformer.dtype == torch.bfloat16
    assert flux.max_sequence_length == flux.tokenizer_2.model_max_length == 512
    assert flux.vae_scale_factor == 8 and flux.token_dim == 64
    # 64^2 pixels -> 8^2 latents -> 4^2 packed tokens; scaled and shifted by FLUX.1-dev's factors
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    tokens = encode_images(flux, images)
    assert tokens.shape == (2, 16, 64)
    raw = flux.vae.encode(images.to(torch.bfloat16)).latent_dist.mean
    torch.testing.assert_close(
        tokens.float().mean(), ((raw.float() - 0.1159) * 0.3611).mean(), atol=2e-2, rtol=0
    )
    text = encode_prompts(flux, ["She has blond wavy hair.", ""])
    assert text.sequence.shape == (2, 512, 4096) and text.pooled.shape == (2, 768)
