import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from facemogle.denoiser import Denoiser, flow_matching_loss
from facemogle.encode import decode_tokens, encode_masks, encode_prompts
from facemogle.face_parts import PART_INDEX
from facemogle.mogle import MoGLE
from facemogle.packing import image_ids
from facemogle.sampling import MODES as SAMPLING_MODES
from facemogle.sampling import (
    SampleSettings,
    check_modes,
    make_scheduler,
    mode_inputs,
    sample,
    seed_generators,
)
from facemogle.tiny_backbone import TinyFluxConfig, tiny_flux

PROMPTS = ["She has blond wavy hair and wears eyeglasses.", "He is smiling."]
MODES = {"text": (PROMPTS, False), "mask": (None, True), "text+mask": (PROMPTS, True)}


@pytest.fixture
def denoiser(backbone):
    return Denoiser(backbone.transformer, MoGLE())


@pytest.fixture
def masks():
    return torch.randint(0, 19, (2, 64, 64), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("mode", MODES)
def test_sampling_is_deterministic_for_a_seed_and_returns_the_requested_size(backbone, denoiser, masks, mode):
    prompts, use_mask = MODES[mode]
    m = masks[..., :32] if use_mask else None  # the 64x32 samples' aspect ratio
    settings = SampleSettings(steps=3)
    a = sample(backbone, denoiser, prompts, m, height=64, width=32, settings=settings, seed=7)
    b = sample(backbone, denoiser, prompts, m, height=64, width=32, settings=settings, seed=7)
    c = sample(backbone, denoiser, prompts, m, height=64, width=32, settings=settings, seed=8)
    assert a.images.shape == (2, 3, 64, 32)
    assert 0 <= a.images.min() and a.images.max() <= 1
    torch.testing.assert_close(a.images, b.images, atol=0, rtol=0)
    assert (a.images - c.images).abs().max() > 1e-4


def test_a_sample_does_not_depend_on_its_batch(backbone, denoiser, masks):
    settings = SampleSettings(steps=2)
    both = sample(backbone, denoiser, PROMPTS, masks, height=64, width=64, settings=settings, seed=3)
    first = sample(backbone, denoiser, PROMPTS[:1], masks[:1], height=64, width=64, settings=settings, seed=3)
    torch.testing.assert_close(both.images[:1], first.images, atol=1e-5, rtol=1e-5)


def record_mogle(monkeypatch, mogle):
    """-> calls: ("experts", condition latents) and ("mix", None) for each call of MoGLE's two halves."""
    calls = []
    experts, mix = mogle.expert_outputs, mogle.mix
    monkeypatch.setattr(
        mogle, "expert_outputs", lambda cond: calls.append(("experts", cond)) or experts(cond)
    )
    monkeypatch.setattr(mogle, "mix", lambda *a: calls.append(("mix", None)) or mix(*a))
    return calls


def test_text_only_sampling_without_condition_tokens_never_runs_mogle(backbone, denoiser, monkeypatch):
    calls = record_mogle(monkeypatch, denoiser.mogle)
    settings = SampleSettings(steps=2, text_only_condition="none")
    out = sample(backbone, denoiser, PROMPTS, None, height=64, width=64, settings=settings)
    assert calls == [] and out.gate_weights == [] and out.text_only_condition == "none"


def test_text_only_sampling_with_the_background_condition_passes_an_all_background_mask(
    backbone, denoiser, monkeypatch
):
    calls = record_mogle(monkeypatch, denoiser.mogle)
    settings = SampleSettings(steps=2, text_only_condition="background")
    out = sample(backbone, denoiser, PROMPTS, None, height=64, width=64, settings=settings)
    background = encode_masks(backbone, torch.full((2, 64, 64), PART_INDEX["background"]))
    # the experts once, on the map; the gate once a step for the captioned and the empty-prompt pass
    assert [name for name, _ in calls] == ["experts", "mix", "mix"]
    torch.testing.assert_close(calls[0][1], background, atol=0, rtol=0)
    assert len(out.gate_weights) == 2 and out.gate_weights[0].shape == (2, 64, 20)
    assert out.text_only_condition == "background"
    bare = sample(
        backbone,
        denoiser,
        PROMPTS,
        None,
        height=64,
        width=64,
        settings=SampleSettings(steps=2, text_only_condition="none"),
    )
    assert (out.images - bare.images).abs().max() > 1e-2


def test_masks_given_leave_the_text_only_condition_unused(backbone, denoiser, masks):
    out = sample(backbone, denoiser, PROMPTS, masks, height=64, width=64, settings=SampleSettings(steps=1))
    assert out.text_only_condition is None


def test_an_unknown_text_only_condition_is_an_error_naming_the_setting():
    with pytest.raises(ValueError, match="text_only_condition='mask'.*--text-only-condition"):
        SampleSettings(text_only_condition="mask")


def test_a_bfloat16_backbone_hands_the_gate_the_exact_float32_sigma(masks):
    backbone = tiny_flux(TinyFluxConfig()).to(dtype=torch.bfloat16)
    denoiser = Denoiser(backbone.transformer, MoGLE().to(torch.bfloat16))
    seen = []
    denoiser.mogle.gate.register_forward_hook(lambda module, args, out: seen.append(args[2]))
    out = sample(backbone, denoiser, None, masks, height=64, width=64, settings=SampleSettings(steps=3))
    assert [t.dtype for t in seen] == [torch.float32] * 3
    torch.testing.assert_close(torch.stack([t[0] for t in seen]), out.sigmas, atol=0, rtol=0)


def test_gate_sees_the_same_timestep_in_training_and_sampling(backbone, denoiser, masks):
    seen = []
    denoiser.mogle.gate.register_forward_hook(lambda module, args, out: seen.append(args[2].clone()))
    out = sample(backbone, denoiser, None, masks, height=64, width=64, settings=SampleSettings(steps=4))
    sampling_t = [t for t in seen]
    assert len(sampling_t) == 4
    seen.clear()
    x0 = torch.randn(2, 64, 64)
    text = encode_prompts(backbone, ["", ""])
    cond = encode_masks(backbone, masks)
    for sigma in out.sigmas:  # training at exactly the noise levels sampling visited
        flow_matching_loss(denoiser, x0, torch.randn_like(x0), sigma.expand(2), text, image_ids(16, 16), cond)
    for train_t, sample_t in zip(seen, sampling_t, strict=True):
        torch.testing.assert_close(train_t, sample_t, atol=0, rtol=0)
        assert 0 <= train_t.min() and train_t.max() <= 1


def record_passes(monkeypatch, backbone, denoiser):
    """-> (passes, used): every denoiser pass as (prompt "c" or empty "-", mask "m" or none "-", guidance,
    velocity), and the velocity each scheduler step was given."""
    prompted = encode_prompts(backbone, PROMPTS).sequence
    passes, used = [], []
    predict = denoiser.predict

    def recording_predict(noisy, t, text, img_ids, mixed, guidance=None):
        out = predict(noisy, t, text, img_ids, mixed, guidance)
        key = ("c" if torch.equal(text.sequence, prompted) else "-") + ("m" if mixed is not None else "-")
        passes.append((key, guidance, out.velocity))
        return out

    monkeypatch.setattr(denoiser, "predict", recording_predict)
    step = FlowMatchEulerDiscreteScheduler.step

    def recording_step(self, model_output, *args, **kwargs):
        used.append(model_output.clone())
        return step(self, model_output, *args, **kwargs)

    monkeypatch.setattr(FlowMatchEulerDiscreteScheduler, "step", recording_step)
    return passes, used


TRUE_CFG = {  # mode, text_only_condition -> the velocity from the passes v["prompt mask"]
    ("text+mask", "background"): lambda v, s: (
        v["--"] + s.mask_scale * (v["-m"] - v["--"]) + s.text_scale * (v["cm"] - v["-m"])
    ),
    ("mask", "background"): lambda v, s: v["--"] + s.mask_scale * (v["-m"] - v["--"]),
    ("text", "background"): lambda v, s: v["-m"] + s.text_scale * (v["cm"] - v["-m"]),
    ("text", "none"): lambda v, s: v["--"] + s.text_scale * (v["c-"] - v["--"]),
}


@pytest.mark.parametrize(("mode", "text_only"), TRUE_CFG)
def test_true_cfg_steps_with_the_composition_of_the_denoisers_passes(
    backbone, denoiser, masks, monkeypatch, mode, text_only
):
    prompts, use_mask = MODES[mode]
    settings = SampleSettings(steps=2, text_scale=2.0, mask_scale=3.0, text_only_condition=text_only)
    passes, used = record_passes(monkeypatch, backbone, denoiser)
    sample(backbone, denoiser, prompts, masks if use_mask else None, height=64, width=64, settings=settings)
    per_step = len(passes) // settings.steps
    assert len(used) == settings.steps and len(passes) == per_step * settings.steps
    for i, velocity in enumerate(used):
        v = {key: out for key, _, out in passes[i * per_step : (i + 1) * per_step]}
        assert len(v) == per_step  # each pass once: no pass the formula leaves out
        torch.testing.assert_close(velocity, TRUE_CFG[mode, text_only](v, settings), atol=1e-6, rtol=1e-6)


SCALE_1 = {  # mode, text scale (mask scale 1) -> the passes a step runs and its velocity from them
    ("text+mask", 2.0): ({"cm", "-m"}, lambda v: v["-m"] + 2.0 * (v["cm"] - v["-m"])),
    ("mask", 2.0): ({"-m"}, lambda v: v["-m"]),
    ("text", 1.0): ({"c-"}, lambda v: v["c-"]),
}


@pytest.mark.parametrize(("mode", "text_scale"), SCALE_1)
def test_a_guidance_scale_of_1_runs_no_unconditional_pass(
    backbone, denoiser, masks, monkeypatch, mode, text_scale
):
    prompts, use_mask = MODES[mode]
    keys, formula = SCALE_1[mode, text_scale]
    settings = SampleSettings(steps=2, text_scale=text_scale, mask_scale=1.0, text_only_condition="none")
    passes, used = record_passes(monkeypatch, backbone, denoiser)
    sample(backbone, denoiser, prompts, masks if use_mask else None, height=64, width=64, settings=settings)
    assert len(passes) == len(keys) * settings.steps
    for i, velocity in enumerate(used):
        v = {key: out for key, _, out in passes[i * len(keys) : (i + 1) * len(keys)]}
        assert set(v) == keys
        torch.testing.assert_close(velocity, formula(v), atol=0, rtol=0)


def test_a_guidance_embedding_backbone_steps_with_its_one_guided_pass(masks, monkeypatch):
    backbone = tiny_flux(TinyFluxConfig(guidance_embeds=True))
    denoiser = Denoiser(backbone.transformer, MoGLE())
    settings = SampleSettings(steps=2, guidance=2.5)
    passes, used = record_passes(monkeypatch, backbone, denoiser)
    sample(backbone, denoiser, PROMPTS, masks, height=64, width=64, settings=settings)
    assert [(key, guidance) for key, guidance, _ in passes] == [("cm", 2.5), ("cm", 2.5)]
    for (_, _, velocity), stepped in zip(passes, used, strict=True):
        torch.testing.assert_close(stepped, velocity, atol=0, rtol=0)


@pytest.mark.parametrize("mode", MODES)
def test_the_experts_run_once_a_call_and_the_gate_once_a_step(backbone, denoiser, masks, monkeypatch, mode):
    prompts, use_mask = MODES[mode]
    expert_calls, gate_calls = [], []
    denoiser.mogle.experts.register_forward_hook(lambda *a: expert_calls.append(1))
    denoiser.mogle.gate.register_forward_hook(lambda *a: gate_calls.append(1))
    settings = SampleSettings(steps=3, text_only_condition="background")
    sample(backbone, denoiser, prompts, masks if use_mask else None, height=64, width=64, settings=settings)
    assert len(expert_calls) == 1 and len(gate_calls) == settings.steps


@pytest.mark.parametrize("guidance_embeds", [False, True])
def test_experts_once_gives_the_images_of_experts_in_every_pass(masks, guidance_embeds):
    backbone = tiny_flux(TinyFluxConfig(guidance_embeds=guidance_embeds))
    denoiser = Denoiser(backbone.transformer, MoGLE())
    run = {
        once: sample(
            backbone,
            denoiser,
            PROMPTS,
            masks,
            height=64,
            width=64,
            settings=SampleSettings(steps=3),
            expert_scale=torch.linspace(0.5, 1.5, 20),
            experts_once=once,
        )
        for once in (True, False)
    }
    torch.testing.assert_close(run[True].images, run[False].images, atol=1e-6, rtol=0)
    for a, b in zip(run[True].gate_weights, run[False].gate_weights, strict=True):
        torch.testing.assert_close(a, b, atol=1e-7, rtol=0)


def test_a_step_callback_sees_every_step_and_may_replace_the_latents(backbone, denoiser, masks):
    seen = []

    def on_step(i, timestep, latents):
        seen.append((i, float(timestep)))
        return torch.zeros_like(latents) if i == 1 else None

    settings = SampleSettings(steps=2)
    out = sample(backbone, denoiser, None, masks, height=64, width=64, settings=settings, on_step=on_step)
    scheduler = make_scheduler(backbone, 2, 64)
    assert seen == [(0, float(scheduler.timesteps[0])), (1, float(scheduler.timesteps[1]))]
    zeros = decode_tokens(backbone, torch.zeros(2, 64, 64), 64, 64)
    torch.testing.assert_close(out.images, zeros, atol=0, rtol=0)


def test_one_generator_per_image_is_the_seed_convention(backbone, denoiser, masks):
    settings = SampleSettings(steps=2)
    by_seed = sample(backbone, denoiser, None, masks, height=64, width=64, settings=settings, seed=4)
    generators = seed_generators(4, 2)
    by_generator = sample(
        backbone, denoiser, None, masks, height=64, width=64, settings=settings, generator=generators
    )
    torch.testing.assert_close(by_seed.images, by_generator.images, atol=0, rtol=0)
    with pytest.raises(ValueError, match="3 generators for 2 images"):
        sample(backbone, denoiser, None, masks, height=64, width=64, generator=seed_generators(0, 3))


def test_each_mode_keeps_its_own_conditions(masks):
    assert SAMPLING_MODES == tuple(MODES)
    for mode, (prompts, use_mask) in MODES.items():
        inputs = mode_inputs(mode, PROMPTS, masks)
        assert inputs.prompts == prompts and (inputs.masks is masks) == use_mask
    with pytest.raises(ValueError, match=r"eval.callback.modes \['text', 'sketch'\]"):
        check_modes(["text", "sketch"], "eval.callback.modes")
    with pytest.raises(ValueError, match="--modes"):
        check_modes([], "--modes")


def test_bad_sample_requests_are_errors(backbone, denoiser, masks):
    with pytest.raises(ValueError, match="needs prompts, masks, or both"):
        sample(backbone, denoiser, None, None, height=64, width=64)
    with pytest.raises(ValueError, match="multiples of 8"):
        sample(backbone, denoiser, PROMPTS, None, height=60, width=64)
    with pytest.raises(ValueError, match="2 prompts but 1 masks"):
        sample(backbone, denoiser, PROMPTS, masks[:1], height=64, width=64)
