"""train.mask_guidance: the mask's guidance trained into the conditional model (model guidance), so one
conditional pass follows the mask as true CFG at that scale would."""

from __future__ import annotations

import pytest
import torch

from facemogle.denoiser import Denoiser, flow_matching_loss
from facemogle.encode import TextEmbeddings
from facemogle.flow import add_noise, velocity_target
from facemogle.lit_module import TrainConfig
from facemogle.lora import LoRASettings, add_lora
from facemogle.mogle import MoGLE
from facemogle.packing import image_ids
from facemogle.rules import RuleError
from facemogle.tiny_backbone import flux_dev_shaped


def denoiser_with_lora(transformer) -> Denoiser:
    add_lora(transformer, LoRASettings())
    denoiser = Denoiser(transformer, MoGLE())
    for name, p in denoiser.named_parameters():
        if "lora_B" in name:  # LoRA's B starts at zero: nudge it so the condition moves the velocity
            torch.nn.init.normal_(p, std=0.05, generator=torch.Generator().manual_seed(1))
    return denoiser


def grads(denoiser: Denoiser, loss: torch.Tensor) -> list[torch.Tensor]:
    params = [p for p in denoiser.parameters() if p.requires_grad]
    got = torch.autograd.grad(loss, params, allow_unused=True)  # the gate's unused routes have none
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, got, strict=True)]


def inputs(l: int, d: int):
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, l, d, generator=g), torch.randn(2, l, d, generator=g)
    return x0, noise, torch.tensor([0.3, 0.8]), torch.randn(2, 20, l, d, generator=g)


@pytest.mark.parametrize("scale", [2.0, 4.0])
def test_the_gradient_regresses_the_true_cfg_target_at_the_trained_scale(backbone, flux_inputs, text, scale):
    denoiser = denoiser_with_lora(backbone.transformer)
    x0, noise, t, cond = inputs(64, 64)
    ids = flux_inputs["img_ids"]
    loss, _ = flow_matching_loss(denoiser, x0, noise, t, text, ids, cond, mask_guidance=scale)

    # d/dv |v - u - w (sg(v) - v0)|^2 = (1 - w) d/dv |v - (v0 + S (u - v0))|^2 with w = 1 - 1/S: the
    # conditional model is pulled towards true CFG at mask scale S, uncond v0 the pass without the mask
    noisy = add_noise(x0, noise, t)
    with torch.no_grad():
        v0 = denoiser(noisy, t, text, ids, None).velocity
    cfg_target = v0 + scale * (velocity_target(x0, noise) - v0)
    v = denoiser(noisy, t, text, ids, cond).velocity
    reference = torch.nn.functional.mse_loss(v, cfg_target) / scale
    wanted = grads(denoiser, reference)
    for got, want in zip(grads(denoiser, loss), wanted, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)
    assert any(g.abs().sum() > 0 for g in wanted)


def test_scale_1_is_the_papers_loss_and_no_mask_ignores_the_scale(backbone, flux_inputs, text):
    denoiser = denoiser_with_lora(backbone.transformer)
    x0, noise, t, cond = inputs(64, 64)
    ids = flux_inputs["img_ids"]
    plain, _ = flow_matching_loss(denoiser, x0, noise, t, text, ids, cond)
    one, _ = flow_matching_loss(denoiser, x0, noise, t, text, ids, cond, mask_guidance=1.0)
    guided, _ = flow_matching_loss(denoiser, x0, noise, t, text, ids, cond, mask_guidance=4.0)
    assert torch.equal(plain, one) and not torch.equal(plain, guided)
    no_mask, _ = flow_matching_loss(denoiser, x0, noise, t, text, ids, None)
    no_mask_guided, _ = flow_matching_loss(denoiser, x0, noise, t, text, ids, None, mask_guidance=4.0)
    assert torch.equal(no_mask, no_mask_guided)


def test_on_the_flux_dev_shaped_backbone_the_pass_without_the_mask_takes_the_guidance_embedding():
    flux = flux_dev_shaped(seed=0)
    tr = flux.transformer
    denoiser = denoiser_with_lora(tr)
    l, d = 64, tr.config.in_channels
    x0, noise, t, cond = inputs(l, d)
    g = torch.Generator().manual_seed(2)
    text = TextEmbeddings(
        torch.randn(2, 512, tr.config.joint_attention_dim, generator=g),
        torch.randn(2, tr.config.pooled_projection_dim, generator=g),
    )
    seen = []
    embed = tr.time_text_embed.forward
    tr.time_text_embed.forward = lambda timestep, guidance, pooled: (
        seen.append(guidance) or embed(timestep, guidance, pooled)
    )
    counts = []
    for scale in (1.0, 3.0):
        loss, _ = flow_matching_loss(denoiser, x0, noise, t, text, image_ids(16, 16), cond, 2.0, scale)
        assert torch.isfinite(loss)
        counts.append(len(seen))
    assert counts[1] - 2 * counts[0] == 1  # one more pass, and it embeds the guidance as the others
    assert all(torch.equal(s, torch.full((2,), 2000.0)) for s in seen)  # diffusers embeds guidance x 1000


def test_a_scale_below_1_is_refused():
    with pytest.raises(RuleError, match="mask_guidance=0.5 must be >= 1"):
        TrainConfig(mask_guidance=0.5)
