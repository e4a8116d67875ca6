"""Released Face-MoGLE weights: key conversion, and the two timestep conventions of the official code.

The official sampler (src/flux/generate.py) calls its MoGLE once per step with the scheduler's timestep
(sigma x 1000); its training (src/train/model.py) passes t in [0, 1]. `official_forward` is the official
computation; the tests drive it as each of those drives it and compare our loaded MoGLE.
"""

from typing import NamedTuple

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.models.embeddings import get_timestep_embedding
from diffusers.pipelines.flux.pipeline_flux import calculate_shift, retrieve_timesteps
from safetensors.torch import save_file

from facemogle.denoiser import Denoiser
from facemogle.flow import TimestepSampling
from facemogle.official import load_official_mogle
from facemogle.sampling import SampleSettings, make_scheduler, sample

FLUX_DEV_STEPS = 28  # FluxPipeline's default, which the official generate() keeps
PAPER_TOKENS = 1024  # 512^2 images: 64^2 latents packed 2x2


def official_state_dict(d=64, h=32, seed=0):
    """A state dict in the official release's key layout and shapes, at nn.Linear's weight scale."""
    g = torch.Generator().manual_seed(seed)

    def linear(name, out_dim, in_dim):
        sd[f"{name}.weight"] = torch.randn(out_dim, in_dim, generator=g) * in_dim**-0.5
        sd[f"{name}.bias"] = torch.randn(out_dim, generator=g) * in_dim**-0.5

    sd = {}
    for name in ["global_expert"] + [f"local_experts.{i}" for i in range(19)]:
        linear(f"{name}.net.0", h, d)
        linear(f"{name}.net.2", d, h)
    for name in ("gating.timestep_embedding.linear_1", "gating.timestep_embedding.linear_2"):
        linear(name, d, d)
    linear("gating.noise_proj", d, d)
    linear("gating.gate.0", d, d)
    linear("gating.gate.2", 20, d)
    return sd


class OfficialOutput(NamedTuple):
    tokens: torch.Tensor  # (b, l, d)
    weights: torch.Tensor  # (b, l, 20)


def official_forward(sd, cond, noisy, t) -> OfficialOutput:
    """The official MoGLE computation written out from its published description; t is what the caller
    hands the module, embedded as it is."""
    lin = torch.nn.functional.linear
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
    return OfficialOutput((outs * weights[..., None]).sum(2), weights)


def _wb(sd, name):
    return sd[f"{name}.weight"], sd[f"{name}.bias"]


def official_sampler_timesteps(scheduler_config, steps: int, seq_len: int) -> torch.Tensor:
    """The per-step values the official generate() hands its MoGLE: FluxPipeline's sigmas and shift,
    through retrieve_timesteps, as the scheduler's `timesteps`."""
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(scheduler_config)
    cfg = scheduler.config
    mu = calculate_shift(
        seq_len, cfg.base_image_seq_len, cfg.max_image_seq_len, cfg.base_shift, cfg.max_shift
    )
    sigmas = np.linspace(1.0, 1 / steps, steps)
    timesteps, _ = retrieve_timesteps(scheduler, steps, "cpu", None, sigmas, mu=mu)
    return timesteps


@pytest.fixture
def official_file(tmp_path):
    sd = official_state_dict()
    save_file(sd, tmp_path / "mogle.safetensors")
    return sd, tmp_path / "mogle.safetensors"


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_official_layout_loads_and_computes_the_official_mixture(tmp_path, suffix):
    sd = official_state_dict()
    path = tmp_path / f"mogle{suffix}"
    save_file(sd, path) if suffix == ".safetensors" else torch.save(sd, path)
    mogle = load_official_mogle(path, convention="training")
    cond, noisy, t = torch.randn(2, 20, 16, 64), torch.randn(2, 16, 64), torch.rand(2)
    torch.testing.assert_close(
        mogle(cond, noisy, t).tokens, official_forward(sd, cond, noisy, t).tokens, atol=1e-5, rtol=1e-5
    )


def test_over_flux_devs_28_steps_the_default_reproduces_the_official_sampler_and_training_its_training(
    backbone, official_file
):
    """Paper shapes, FLUX.1-dev's scheduler, latents moving along a flow trajectory as in sampling. The
    official sampler's MoGLE gets timestep = sigma x 1000, its training t in [0, 1]; ours gets sigma."""
    sd, path = official_file
    default, training = load_official_mogle(path), load_official_mogle(path, convention="training")
    assert (default.config.time_scale, training.config.time_scale) == (1000.0, 1.0)
    ours = make_scheduler(backbone, FLUX_DEV_STEPS, PAPER_TOKENS)
    official_t = official_sampler_timesteps(backbone.scheduler.config, FLUX_DEV_STEPS, PAPER_TOKENS)
    torch.testing.assert_close(ours.sigmas[:-1] * default.config.time_scale, official_t, atol=0, rtol=0)

    g = torch.Generator().manual_seed(0)
    cond = torch.randn(1, 20, PAPER_TOKENS, 64, generator=g)
    x0, noise = torch.randn(2, 1, PAPER_TOKENS, 64, generator=g)
    latents, worst_training_as_sampler = noise, 0.0
    with torch.no_grad():
        for i, timestep in enumerate(ours.timesteps):
            sigma = ours.sigmas[i].expand(1)  # what our sampler passes (facemogle.sampling.sample)
            as_sampler = official_forward(sd, cond, latents, official_t[i].expand(1))
            as_training = official_forward(sd, cond, latents, sigma)
            for mine, theirs in (
                (default(cond, latents, sigma), as_sampler),
                (training(cond, latents, sigma), as_training),
            ):
                torch.testing.assert_close(mine.tokens, theirs.tokens, atol=1e-5, rtol=1e-5)
                torch.testing.assert_close(mine.weights, theirs.weights, atol=1e-5, rtol=1e-5)
            gap = (training(cond, latents, sigma).weights - as_sampler.weights).abs().max()
            worst_training_as_sampler = max(worst_training_as_sampler, float(gap))
            latents = ours.step(noise - x0, timestep, latents, return_dict=False)[0]
    # the training convention does not reproduce the released images: the gate mixes the experts otherwise
    assert worst_training_as_sampler > 0.1


def test_the_training_convention_gives_the_gate_the_official_trainings_inputs(official_file):
    """src/train/model.py: t = sigmoid(randn), x_t = (1 - t) x0 + t noise, the same t to MoGLE and FLUX."""
    sd, path = official_file
    mogle = load_official_mogle(path, convention="training")
    g = torch.Generator().manual_seed(1)
    t = TimestepSampling().sample(4, generator=g)  # logit-normal (0, 1): the official sigmoid(randn)
    cond = torch.randn(4, 20, 64, 64, generator=g)
    x0, noise = torch.randn(2, 4, 64, 64, generator=g)
    x_t = (1 - t[:, None, None]) * x0 + t[:, None, None] * noise
    ours, theirs = mogle(cond, x_t, t), official_forward(sd, cond, x_t, t)
    torch.testing.assert_close(ours.tokens, theirs.tokens, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.weights, theirs.weights, atol=1e-5, rtol=1e-5)


def test_our_sampler_drives_released_weights_as_the_official_sampler_does(backbone, official_file):
    """The real sample() on the tiny backbone (64 tokens of width 64): at every step the loaded MoGLE's
    output equals the official module's given the official timestep for that step."""
    sd, path = official_file
    denoiser = Denoiser(backbone.transformer, load_official_mogle(path))
    mogle, conds, calls = denoiser.mogle, [], []
    experts, mix = mogle.expert_outputs, mogle.mix

    def recording_mix(experts_out, noisy, t, scale=None):
        calls.append((noisy, t, mix(experts_out, noisy, t, scale)))
        return calls[-1][2]

    mogle.expert_outputs = lambda cond: conds.append(cond) or experts(cond)
    mogle.mix = recording_mix
    masks = torch.randint(0, 19, (1, 64, 64), generator=torch.Generator().manual_seed(2))
    out = sample(
        backbone, denoiser, None, masks, height=64, width=64, settings=SampleSettings(steps=FLUX_DEV_STEPS)
    )
    official_t = official_sampler_timesteps(backbone.scheduler.config, FLUX_DEV_STEPS, 64)
    assert len(conds) == 1  # the experts once; the gate at every step
    assert len(calls) == FLUX_DEV_STEPS == len(out.gate_weights)  # mask only: one conditioned pass a step
    (cond,) = conds
    for (noisy, t, mine), step_t in zip(calls, official_t, strict=True):
        torch.testing.assert_close(t * denoiser.mogle.config.time_scale, step_t.expand(1), atol=0, rtol=0)
        theirs = official_forward(sd, cond, noisy, step_t.expand(1))
        torch.testing.assert_close(mine.tokens, theirs.tokens, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(mine.weights, theirs.weights, atol=1e-5, rtol=1e-5)


def test_an_unknown_convention_is_an_error_naming_it(official_file):
    _, path = official_file
    with pytest.raises(ValueError, match="convention='inference'"):
        load_official_mogle(path, convention="inference")


def test_a_wrong_shape_is_an_error_naming_the_key(tmp_path):
    sd = official_state_dict()
    sd["gating.noise_proj.weight"] = torch.randn(64, 32)
    save_file(sd, tmp_path / "m.safetensors")
    with pytest.raises(
        ValueError,
        match=r"key gating.noise_proj.weight has shape \(64, 32\), .* expects \(64, 64\) \(its gate.noise_proj.weight\)",
    ):
        load_official_mogle(tmp_path / "m.safetensors")


def test_a_missing_key_is_an_error_naming_it(tmp_path):
    sd = official_state_dict()
    del sd["local_experts.18.net.2.bias"]
    save_file(sd, tmp_path / "m.safetensors")
    with pytest.raises(ValueError, match="local_experts.18.net.2.bias"):
        load_official_mogle(tmp_path / "m.safetensors")


def test_one_experts_wrong_shape_names_the_file_the_key_and_both_shapes(tmp_path):
    sd = official_state_dict()
    sd["local_experts.3.net.0.weight"] = torch.randn(16, 64)
    save_file(sd, tmp_path / "m.safetensors")
    with pytest.raises(
        ValueError,
        match=r"m.safetensors: official MoGLE key local_experts.3.net.0.weight has shape "
        r"\(16, 64\), global_expert.net.0.weight has \(\d+, \d+\)",
    ):
        load_official_mogle(tmp_path / "m.safetensors")


def test_a_truncated_official_file_names_the_file(tmp_path):
    save_file(official_state_dict(), tmp_path / "m.safetensors")
    data = (tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "m.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"m.safetensors is not a complete safetensors file"):
        load_official_mogle(tmp_path / "m.safetensors")
