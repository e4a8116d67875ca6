import pytest
import torch

from facemogle.flux_forward import (
    ConditionSettings,
    double_block,
    flux_forward,
    install_condition_forward,
    self_attention_mask,
)
from facemogle.lora import LoRASettings, add_lora
from facemogle.tiny_backbone import TinyFluxConfig, tiny_flux


def stock(transformer, inputs):
    with torch.no_grad():
        return transformer(**inputs, return_dict=False)[0]


def ours(transformer, inputs, cond=None, settings=None):
    kw = {} if cond is None else {"cond_tokens": cond, "cond_ids": inputs["img_ids"]}
    with torch.no_grad():
        return flux_forward(transformer, **inputs, settings=settings, **kw)


@pytest.mark.parametrize("empty_cond", [False, True])
def test_without_condition_tokens_the_forward_equals_stock_flux(backbone, flux_inputs, empty_cond):
    tr = backbone.transformer
    expected = stock(tr, flux_inputs)
    install_condition_forward(tr)
    cond = torch.zeros(2, 0, 64) if empty_cond else None
    kw = {"cond_tokens": cond, "cond_ids": torch.zeros(0, 3)} if empty_cond else {}
    with torch.no_grad():
        got = flux_forward(tr, **flux_inputs, **kw)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(stock(tr, flux_inputs), expected, atol=1e-5, rtol=1e-5)


def test_with_a_guidance_embedding_the_forward_equals_stock_flux(flux_inputs):
    tr = tiny_flux(TinyFluxConfig(guidance_embeds=True), seed=0).transformer
    inputs = {**flux_inputs, "guidance": torch.tensor([3.5, 1.0])}
    expected = stock(tr, inputs)
    assert (stock(tr, {**inputs, "guidance": torch.tensor([1.0, 1.0])}) - expected).abs().max() > 1e-4
    install_condition_forward(tr)
    torch.testing.assert_close(ours(tr, inputs), expected, atol=1e-5, rtol=1e-5)


def float16(transformer, inputs):
    return transformer.to(torch.float16), {
        k: v if k.endswith("_ids") else v.half() for k, v in inputs.items()
    }


def overflow_first_text_stream(transformer) -> None:
    """The first double block's text tokens embedded at 40000 and its feed-forward adding 30000 (gate 1,
    attention gated off): 70000, past float16's largest value, 65504."""
    block = transformer.transformer_blocks[0]
    chunk = (
        block.norm1_context.linear.out_features // 6
    )  # shift, scale, gate (attention); shift, scale, gate (ff)
    with torch.no_grad():
        transformer.context_embedder.weight.zero_()
        transformer.context_embedder.bias.fill_(40_000)
        block.norm1_context.linear.weight.zero_()
        block.norm1_context.linear.bias.zero_()
        block.norm1_context.linear.bias[5 * chunk :] = 1.0
        block.ff_context.net[-1].weight.zero_()
        block.ff_context.net[-1].bias.fill_(30_000)


@pytest.mark.parametrize("overflow", [False, True])
def test_in_float16_the_forward_equals_stock_flux_and_clips_an_overflow_as_it_does(
    backbone, flux_inputs, overflow
):
    tr, inputs = float16(backbone.transformer, flux_inputs)
    if overflow:
        overflow_first_text_stream(tr)
    text_out = []
    hook = tr.transformer_blocks[0].register_forward_hook(lambda m, args, out: text_out.append(out[0]))
    expected = stock(tr, inputs)
    hook.remove()
    assert expected.dtype == torch.float16 and expected.isfinite().all()
    assert (
        text_out[0].abs().max() == 65504
    ) == overflow  # stock FLUX clipped the overflow to float16's range
    install_condition_forward(tr)
    torch.testing.assert_close(ours(tr, inputs), expected, atol=0, rtol=0)


def test_a_bare_transformer_runs_with_stock_processors_and_keeps_its_weights(backbone, flux_inputs):
    tr = backbone.transformer
    weights = {k: v.clone() for k, v in tr.state_dict().items()}
    expected = stock(tr, flux_inputs)
    torch.testing.assert_close(ours(tr, flux_inputs), expected, atol=1e-5, rtol=1e-5)
    assert tr.state_dict().keys() == weights.keys()
    assert weights and all(torch.equal(v, weights[k]) for k, v in tr.state_dict().items())
    torch.testing.assert_close(stock(tr, flux_inputs), expected, atol=1e-5, rtol=1e-5)


def test_condition_tokens_change_the_prediction(backbone, flux_inputs):
    install_condition_forward(backbone.transformer)
    base = ours(backbone.transformer, flux_inputs)
    conditioned = ours(backbone.transformer, flux_inputs, torch.randn(2, 64, 64))
    assert (base - conditioned).abs().max() > 1e-3


def test_condition_only_lora_leaves_the_image_path_stock(backbone, flux_inputs):
    tr = backbone.transformer
    expected = stock(tr, flux_inputs)
    add_lora(tr, LoRASettings())
    for name, p in tr.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)
    install_condition_forward(tr)
    torch.testing.assert_close(ours(tr, flux_inputs), expected, atol=1e-5, rtol=1e-5)
    on_image = ours(tr, flux_inputs, settings=ConditionSettings(lora_on_image=True))
    assert (on_image - expected).abs().max() > 1e-3


def double_block_cond(tr, inputs, settings, img_scale=1.0, t=None):
    """Condition stream after the first double block, given perturbed image tokens / timestep."""
    install_condition_forward(tr)
    block = tr.transformer_blocks[0]
    img = tr.x_embedder(inputs["hidden_states"] * img_scale)
    txt = tr.context_embedder(inputs["encoder_hidden_states"])
    cond = tr.x_embedder(torch.ones(2, 64, 64))
    t = inputs["timestep"] if t is None else t
    temb = tr.time_text_embed(t * 1000, inputs["pooled_projections"])
    zero = tr.time_text_embed(torch.zeros_like(t), inputs["pooled_projections"])
    cond_temb = temb if settings.cond_timestep == "shared" else zero
    ids = torch.cat([inputs["txt_ids"], inputs["img_ids"], inputs["img_ids"]])
    mask = self_attention_mask(96, 64, img.device) if settings.cond_attention == "self" else None
    with torch.no_grad():
        return double_block(block, img, txt, cond, temb, cond_temb, tr.pos_embed(ids), mask, False)[2]


def test_self_attending_zero_timestep_condition_tokens_ignore_image_and_timestep(backbone, flux_inputs):
    tr = backbone.transformer
    cached = ConditionSettings(cond_attention="self", cond_timestep="zero")
    a = double_block_cond(tr, flux_inputs, cached)
    b = double_block_cond(tr, flux_inputs, cached, img_scale=3.0, t=torch.tensor([0.9, 0.1]))
    torch.testing.assert_close(a, b)


def test_joint_attention_and_shared_timestep_make_condition_tokens_depend_on_them(backbone, flux_inputs):
    tr = backbone.transformer
    joint = ConditionSettings(cond_attention="joint")
    assert (
        double_block_cond(tr, flux_inputs, joint) - double_block_cond(tr, flux_inputs, joint, 3.0)
    ).abs().max() > 1e-4
    shared = ConditionSettings(cond_attention="self", cond_timestep="shared")
    other_t = torch.tensor([0.9, 0.1])
    diff = double_block_cond(tr, flux_inputs, shared) - double_block_cond(tr, flux_inputs, shared, t=other_t)
    assert diff.abs().max() > 1e-4


def test_gradient_checkpointing_gives_the_same_gradients(backbone, flux_inputs):
    tr = backbone.transformer
    install_condition_forward(tr)
    cond = torch.randn(2, 64, 64)

    def grads():
        tr.zero_grad()
        flux_forward(
            tr, **flux_inputs, cond_tokens=cond, cond_ids=flux_inputs["img_ids"]
        ).square().mean().backward()
        return [p.grad.clone() for p in tr.parameters()]

    plain = grads()
    tr.enable_gradient_checkpointing()
    for a, b in zip(plain, grads(), strict=True):
        torch.testing.assert_close(a, b)


def test_condition_ids_must_match_the_condition_tokens(backbone, flux_inputs):
    install_condition_forward(backbone.transformer)
    with pytest.raises(ValueError, match="cond_ids"):
        flux_forward(
            backbone.transformer,
            **flux_inputs,
            cond_tokens=torch.randn(2, 64, 64),
            cond_ids=torch.zeros(3, 3),
        )
