import pytest
import torch
import torch.nn.functional as F

from facemogle.mogle import MoGLE, MoGLEConfig, load_balancing_loss


def inputs(b=2, l=16, d=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, 20, l, d, generator=g),
        torch.randn(b, l, d, generator=g),
        torch.rand(b, generator=g),
    )


def loop_experts(experts, x):
    """Reference: each expert as its own Linear -> ReLU -> Linear, one after the other."""
    outs = []
    for i in range(x.shape[1]):
        h = F.relu(F.linear(x[:, i], experts.w1[i].T, experts.b1[i]))
        outs.append(F.linear(h, experts.w2[i].T, experts.b2[i]))
    return torch.stack(outs, dim=1)


def test_batched_experts_equal_a_per_expert_loop_in_outputs_and_gradients():
    mogle = MoGLE()
    x, _, _ = inputs()
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    batched = mogle.experts(x1)
    params = list(mogle.experts.parameters())
    g_batched = torch.autograd.grad(batched.square().sum(), [x1, *params])
    looped = loop_experts(mogle.experts, x2)
    g_loop = torch.autograd.grad(looped.square().sum(), [x2, *params])
    torch.testing.assert_close(batched, looped, atol=1e-5, rtol=1e-5)
    for a, b in zip(g_batched, g_loop, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("gate", ["dynamic", "scalar", "static"])
def test_gate_weights_sum_to_one_per_token(gate):
    mogle = MoGLE(MoGLEConfig(gate=gate))
    out = mogle(*inputs())
    torch.testing.assert_close(out.weights.sum(-1), torch.ones_like(out.weights.sum(-1)))
    assert out.tokens.shape == (2, 16, 64)


def test_dynamic_gate_varies_over_tokens_and_timesteps():
    mogle = MoGLE()
    cond, noisy, t = inputs()
    w = mogle(cond, noisy, t).weights
    assert w.shape == (2, 16, 20)
    assert (w[:, 0] - w[:, 1]).abs().max() > 1e-4
    w_other_t = mogle(cond, noisy, t.flip(0) * 0.1).weights
    assert (w - w_other_t).abs().max() > 1e-4


def test_the_gate_scales_a_bfloat16_noise_level_in_float32():
    mogle = MoGLE()
    cond, noisy, _ = inputs()
    t = torch.tensor([0.9873, 0.4312]).bfloat16()
    # in bf16, t * 1000 would land on a multiple of 4 and shift every sinusoid of the embedding
    torch.testing.assert_close(mogle(cond, noisy, t).weights, mogle(cond, noisy, t.float()).weights)


def test_disabled_gate_sums_expert_outputs():
    mogle = MoGLE(MoGLEConfig(gate="none"))
    cond, noisy, t = inputs()
    torch.testing.assert_close(mogle(cond, noisy, t).tokens, mogle.experts(cond).sum(1))


def test_scalar_gate_is_constant_over_tokens_and_the_mean_of_the_dynamic_one():
    torch.manual_seed(0)
    scalar = MoGLE(MoGLEConfig(gate="scalar"))
    dynamic = MoGLE(MoGLEConfig(gate="dynamic"))
    dynamic.load_state_dict(scalar.state_dict())
    cond, noisy, t = inputs()
    w = scalar(cond, noisy, t).weights
    assert w.shape == (2, 1, 20)
    torch.testing.assert_close(w, dynamic(cond, noisy, t).weights.mean(1, keepdim=True))


def test_static_gate_ignores_timestep_and_noisy_tokens():
    mogle = MoGLE(MoGLEConfig(gate="static"))
    with torch.no_grad():
        mogle.static_logits.normal_()
    cond, noisy, t = inputs()
    a = mogle(cond, noisy, t)
    b = mogle(cond, torch.randn_like(noisy), torch.rand_like(t))
    torch.testing.assert_close(a.tokens, b.tokens)
    assert a.weights.shape == (1, 1, 20)


def test_identity_experts_mix_the_condition_latents_themselves():
    mogle = MoGLE(MoGLEConfig(experts="identity", gate="none"))
    cond, noisy, t = inputs()
    torch.testing.assert_close(mogle(cond, noisy, t).tokens, cond.sum(1))
    assert mogle.experts is None


def test_residual_experts_start_as_the_identity_and_learn_a_correction():
    residual = MoGLE(MoGLEConfig(experts="residual"))
    identity = MoGLE(MoGLEConfig(experts="identity"))
    identity.gate.load_state_dict(residual.gate.state_dict())
    cond, noisy, t = inputs()
    out = residual(cond, noisy, t)
    torch.testing.assert_close(out.tokens, identity(cond, noisy, t).tokens)  # x + 0
    out.tokens.square().sum().backward()
    assert residual.experts.w2.grad.abs().sum() > 0  # the zero layer trains
    with torch.no_grad():
        residual.experts.b2.add_(1.0)
    torch.testing.assert_close(residual.experts(cond), cond + 1.0)  # x + MLP(x)


def test_global_only_ignores_the_region_maps():
    mogle = MoGLE(MoGLEConfig(expert_set="global"))
    cond, noisy, t = inputs()
    other = cond.clone()
    other[:, 1:] = torch.randn_like(other[:, 1:])
    torch.testing.assert_close(mogle(cond, noisy, t).tokens, mogle(other, noisy, t).tokens)
    assert mogle.experts.w1.shape[0] == 1


def test_local_only_ignores_the_global_map_in_its_experts():
    mogle = MoGLE(MoGLEConfig(expert_set="local", gate="static"))
    cond, noisy, t = inputs()
    other = cond.clone()
    other[:, 0] = torch.randn_like(other[:, 0])
    torch.testing.assert_close(mogle(cond, noisy, t).tokens, mogle(other, noisy, t).tokens)
    assert mogle.experts.w1.shape[0] == 19


def test_expert_scale_strengthens_one_region_expert():
    mogle = MoGLE(MoGLEConfig(gate="none"))
    cond, noisy, t = inputs()
    scale = torch.ones(20)
    scale[14] = 2.0  # hair is part 13, expert 1 + 13
    out = mogle(cond, noisy, t, expert_scale=scale).tokens
    torch.testing.assert_close(out, mogle(cond, noisy, t).tokens + mogle.experts(cond)[:, 14])


def test_unknown_variant_is_an_error_naming_the_key():
    with pytest.raises(ValueError, match="mogle.gate='topk'"):
        MoGLEConfig(gate="topk")


def test_load_balancing_loss_is_e_times_the_dot_of_top_expert_shares_and_mean_weights():
    # 4 tokens over 2 experts: tokens 0, 1, 3 pick expert 0, token 2 expert 1 -> f = (3/4, 1/4);
    # mean weights P = (0.6, 0.4); loss = 2 * (3/4 * 0.6 + 1/4 * 0.4) = 1.1
    weights = torch.tensor([[[0.9, 0.1], [0.7, 0.3], [0.2, 0.8], [0.6, 0.4]]])
    assert load_balancing_loss(weights).item() == pytest.approx(1.1)
    assert load_balancing_loss(torch.full((2, 8, 20), 1 / 20)).item() == pytest.approx(1.0)  # even load
    collapsed = F.one_hot(torch.zeros(2, 8, dtype=torch.long), 20).float()
    assert load_balancing_loss(collapsed).item() == pytest.approx(20.0)


def test_load_balancing_loss_pushes_weight_off_the_overloaded_expert():
    logits = torch.tensor([[[2.0, 0.0], [1.0, 0.0], [0.5, 0.0]]], requires_grad=True)
    (grad,) = torch.autograd.grad(load_balancing_loss(logits.softmax(-1)), logits)
    assert (grad[..., 0] > 0).all() and (grad[..., 1] < 0).all()  # descent lowers expert 0's share


@pytest.mark.parametrize(
    "gate, expert_set, routes",
    [("dynamic", "all", True), ("scalar", "all", True), ("static", "local", True), ("none", "all", False)]
    + [("dynamic", "global", False)],
)
def test_only_a_gate_over_several_experts_routes(gate, expert_set, routes):
    assert MoGLEConfig(gate=gate, expert_set=expert_set).routes is routes
