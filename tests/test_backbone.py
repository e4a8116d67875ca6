import shutil

import pytest
import torch

from facemogle.backbone import load_flux, save_flux, tiny_flux
from facemogle.encode import decode_tokens, encode_images, encode_prompts


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
