import pytest
import torch
from safetensors.torch import save_file

from facemogle.official import load_official_mogle


def official_state_dict(d=64, h=32, seed=0):
    """A state dict in the official release's key layout and shapes."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name in ["global_expert"] + [f"local_experts.{i}" for i in range(19)]:
        sd[f"{name}.net.0.weight"] = torch.randn(h, d, generator=g)
        sd[f"{name}.net.0.bias"] = torch.randn(h, generator=g)
        sd[f"{name}.net.2.weight"] = torch.randn(d, h, generator=g)
        sd[f"{name}.net.2.bias"] = torch.randn(d, generator=g)
    for name, shape in {
        "gating.timestep_embedding.linear_1": (d, d),
        "gating.timestep_embedding.linear_2": (d, d),
        "gating.noise_proj": (d, d),
        "gating.gate.0": (d, d),
        "gating.gate.2": (20, d),
    }.items():
        sd[f"{name}.weight"] = torch.randn(*shape, generator=g)
        sd[f"{name}.bias"] = torch.randn(shape[0], generator=g)
    return sd


def official_forward(sd, cond, noisy, t):
    """The official MoGLE computation written out from its published description."""
    lin = torch.nn.functional.linear
    from diffusers.models.embeddings import get_timestep_embedding

    temb = get_timestep_embedding(t, 64, flip_sin_to_cos=True, downscale_freq_shift=0)
    temb = lin(
        torch.nn.functional.silu(lin(temb, *_wb(sd, "gating.timestep_embedding.linear_1"))),
        *_wb(sd, "gating.timestep_embedding.linear_2"),
    )
    fused = cond[:, 0] + lin(noisy, *_wb(sd, "gating.noise_proj")) + temb[:, None]
    weights = lin(torch.relu(lin(fused, *_wb(sd, "gating.gate.0"))), *_wb(sd, "gating.gate.2")).softmax(-1)
    names = ["global_expert"] + [f"local_experts.{i}" for i in range(19)]
    outs = torch.stack(
        [
            lin(torch.relu(lin(cond[:, i], *_wb(sd, f"{n}.net.0"))), *_wb(sd, f"{n}.net.2"))
            for i, n in enumerate(names)
        ],
        2,
    )
    return (outs * weights[..., None]).sum(2)


def _wb(sd, name):
    return sd[f"{name}.weight"], sd[f"{name}.bias"]


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_official_layout_loads_and_computes_the_official_mixture(tmp_path, suffix):
    sd = official_state_dict()
    path = tmp_path / f"mogle{suffix}"
    save_file(sd, path) if suffix == ".safetensors" else torch.save(sd, path)
    mogle = load_official_mogle(path)
    cond, noisy, t = torch.randn(2, 20, 16, 64), torch.randn(2, 16, 64), torch.rand(2)
    torch.testing.assert_close(
        mogle(cond, noisy, t).tokens, official_forward(sd, cond, noisy, t), atol=1e-4, rtol=1e-4
    )


def test_a_wrong_shape_is_an_error_naming_the_key(tmp_path):
    sd = official_state_dict()
    sd["gating.noise_proj.weight"] = torch.randn(64, 32)
    save_file(sd, tmp_path / "m.safetensors")
    with pytest.raises(ValueError, match="gate.noise_proj.weight has shape"):
        load_official_mogle(tmp_path / "m.safetensors")


def test_a_missing_key_is_an_error_naming_it(tmp_path):
    sd = official_state_dict()
    del sd["local_experts.18.net.2.bias"]
    save_file(sd, tmp_path / "m.safetensors")
    with pytest.raises(ValueError, match="local_experts.18.net.2.bias"):
        load_official_mogle(tmp_path / "m.safetensors")
