"""Mixture of Global and Local Experts (MoGLE) over packed condition-latent tokens.

Shapes (einsum legend):
    b batch, e experts (1 global + 19 local, or the subset in use), l tokens, d token width (64 for
    FLUX: 16 latent channels x 2 x 2 patch), h expert hidden width (32 in the paper).

The gate follows the paper's dynamic gating network: the global-mask tokens, a projection of the
noisy image tokens and a timestep embedding are summed per token and mapped by a small MLP to a
softmax over the experts. Variants are chosen by `MoGLEConfig`, never by swapping modules.

Experts once per image: the experts read only the condition latents, so `expert_outputs` can run once per
image and `mix` (the gate and the weighted sum, which read the noisy tokens and t) at every sampling step;
`forward` is the two in a row, as training calls it.

Timestep convention: `t` is the noise level in [0, 1] (x_t = (1 - t) x_0 + t noise), in training and
in sampling alike; the gate multiplies it by `time_scale` before its sinusoidal embedding.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn

from facemogle.face_parts import CONDITION_MAPS, NUM_CONDITION_MAPS
from facemogle.rules import AT_LEAST_ONE, POSITIVE, Range, check_ranges

GateKind = Literal["dynamic", "scalar", "static", "none"]
ExpertKind = Literal["mlp", "residual", "identity"]
ExpertSet = Literal["all", "global", "local"]


@dataclass
class MoGLEConfig:
    token_dim: int = 64
    expert_hidden: int = 32
    gate: GateKind = "dynamic"
    experts: ExpertKind = "mlp"
    expert_set: ExpertSet = "all"
    # 1000 matches the scale FLUX's own timestep embedding sees, and the official sampler's gate input
    # (facemogle.official explains its two conventions and loads released weights with either).
    time_scale: float = 1000.0

    RULES: ClassVar[dict[str, Range]] = {"expert_hidden": AT_LEAST_ONE, "time_scale": POSITIVE}

    def __post_init__(self) -> None:
        check_ranges(self)
        for key, allowed in (
            ("gate", ("dynamic", "scalar", "static", "none")),
            ("experts", ("mlp", "residual", "identity")),
            ("expert_set", ("all", "global", "local")),
        ):
            if getattr(self, key) not in allowed:
                raise ValueError(f"mogle.{key}={getattr(self, key)!r}: expected one of {allowed}")

    @property
    def expert_indices(self) -> list[int]:
        """Which of the 20 condition maps (0 global, 1..19 parts) the active experts read."""
        return {
            "all": list(range(NUM_CONDITION_MAPS)),
            "global": [0],
            "local": list(range(1, NUM_CONDITION_MAPS)),
        }[self.expert_set]

    @property
    def num_experts(self) -> int:
        return len(self.expert_indices)

    @property
    def routes(self) -> bool:
        """Whether a gate distributes the tokens over more than one expert (what load balancing acts on)."""
        return self.gate != "none" and self.num_experts > 1

    def expert_scale(self, scales: Mapping[str, float] | None) -> torch.Tensor | None:
        """{"hair": 1.5, "global": 0.8} -> an (num_experts,) multiplier of the active experts' gate weights,
        1 for a region not named; None for no scales. Names: facemogle.face_parts.CONDITION_MAPS."""
        if not scales:
            return None
        scale = torch.ones(self.num_experts)
        for name, value in scales.items():
            if name not in CONDITION_MAPS:
                raise ValueError(f"region scale {name!r}: expected one of {list(CONDITION_MAPS)}")
            index = CONDITION_MAPS.index(name)
            if index not in self.expert_indices:
                raise ValueError(
                    f"region scale {name!r}: this model has no {name} expert (expert_set={self.expert_set})"
                )
            if not math.isfinite(float(value)) or float(value) < 0:  # a black image, not an error, otherwise
                raise ValueError(f"region scale {name}={value}: expected a finite number >= 0")
            scale[self.expert_indices.index(index)] = float(value)
        return scale


@dataclass
class ExpertOutputs:
    tokens: torch.Tensor  # (b, e, l, d) each active expert's output
    global_tokens: torch.Tensor  # (b, l, d) the global map's latent: the gate's mask input


@dataclass
class MoGLEOutput:
    tokens: torch.Tensor  # (b, l, d) fused condition tokens
    weights: torch.Tensor  # (b, l, e), (b, 1, e) or (1, 1, e): the mixture weights actually applied


class StackedExperts(nn.Module):
    """E per-token MLPs (d -> h -> d, ReLU) evaluated together as batched matrix products.

    residual: x + MLP(x) with the second layer zero-initialised, so each expert starts as the identity and
    hands the frozen backbone the VAE latent it can already read (see MoGLEConfig.experts)."""

    def __init__(self, num_experts: int, dim: int, hidden: int, residual: bool = False):
        super().__init__()
        self.residual = residual
        self.w1 = nn.Parameter(torch.empty(num_experts, dim, hidden))
        self.b1 = nn.Parameter(torch.empty(num_experts, hidden))
        self.w2 = nn.Parameter(torch.empty(num_experts, hidden, dim))
        self.b2 = nn.Parameter(torch.empty(num_experts, dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.Linear's default initialisation, expert by expert.
        for w, b, fan_in in ((self.w1, self.b1, self.w1.shape[1]), (self.w2, self.b2, self.w2.shape[1])):
            bound = fan_in**-0.5
            nn.init.uniform_(w, -bound, bound)
            nn.init.uniform_(b, -bound, bound)
        if self.residual:
            nn.init.zeros_(self.w2)
            nn.init.zeros_(self.b2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, e, l, d = x.shape
        # (e, b*l, d) @ (e, d, h): one bmm per layer for all experts.
        h = torch.baddbmm(self.b1.unsqueeze(1), x.transpose(0, 1).reshape(e, b * l, d), self.w1)
        y = torch.baddbmm(self.b2.unsqueeze(1), F.relu(h), self.w2)  # (e, b*l, d)
        y = y.view(e, b, l, d).transpose(0, 1)  # (b, e, l, d)
        return x + y if self.residual else y


class DynamicGate(nn.Module):
    """Per-token expert logits from global-mask tokens, noisy image tokens and the timestep."""

    def __init__(self, dim: int, num_experts: int, time_scale: float):
        super().__init__()
        self.time_scale = time_scale
        self.time_proj = Timesteps(dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(dim, dim)
        self.noise_proj = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, num_experts))

    def forward(
        self, global_tokens: torch.Tensor, noisy_tokens: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        # float32: in bf16, t * 1000 would round to a multiple of 4 near 1000, too coarse for the sinusoids
        temb = self.time_embed(self.time_proj(t.float() * self.time_scale).to(global_tokens.dtype))  # (b, d)
        fused = global_tokens + self.noise_proj(noisy_tokens) + temb.unsqueeze(1)  # (b, l, d)
        return self.mlp(fused)  # (b, l, e)


class MoGLE(nn.Module):
    """Fuses the 20 encoded condition maps into one sequence of condition tokens."""

    def __init__(self, config: MoGLEConfig | None = None):
        super().__init__()
        self.config = config = config or MoGLEConfig()
        e, d = config.num_experts, config.token_dim
        self.experts = (
            StackedExperts(e, d, config.expert_hidden, residual=config.experts == "residual")
            if config.experts != "identity"
            else None
        )
        self.gate = DynamicGate(d, e, config.time_scale) if config.gate in ("dynamic", "scalar") else None
        self.static_logits = nn.Parameter(torch.zeros(e)) if config.gate == "static" else None
        self.register_buffer("_expert_index", torch.tensor(config.expert_indices), persistent=False)

    def forward(
        self,
        cond: torch.Tensor,
        noisy: torch.Tensor,
        t: torch.Tensor,
        expert_scale: torch.Tensor | None = None,
    ) -> MoGLEOutput:
        """cond: (b, 20, l, d) packed latents of the 20 maps; noisy: (b, l, d) noisy image tokens;
        t: (b,) noise level in [0, 1]; expert_scale: optional (e,) multiplier of each active expert."""
        return self.mix(self.expert_outputs(cond), noisy, t, expert_scale)

    def expert_outputs(self, cond: torch.Tensor) -> ExpertOutputs:
        """cond (b, 20, l, d) -> the active experts' outputs; independent of the noise and the step."""
        x = cond.index_select(1, self._expert_index)  # (b, e, l, d)
        return ExpertOutputs(self.experts(x) if self.experts is not None else x, cond[:, 0])

    def mix(
        self,
        experts: ExpertOutputs,
        noisy: torch.Tensor,
        t: torch.Tensor,
        expert_scale: torch.Tensor | None = None,
    ) -> MoGLEOutput:
        """The gate's weights at (noisy, t) and the weighted sum of the experts' outputs."""
        weights = self.gate_weights(experts.global_tokens, noisy, t)
        if expert_scale is not None:
            weights = weights * expert_scale.to(weights)
        y = experts.tokens
        return MoGLEOutput(torch.einsum("ble,beld->bld", weights.to(y.dtype), y), weights)

    def gate_weights(self, global_tokens: torch.Tensor, noisy: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        e = self.config.num_experts
        if self.config.gate == "none":
            return global_tokens.new_ones(1, 1, e)  # plain sum
        if self.config.gate == "static":
            return self.static_logits.softmax(-1).view(1, 1, e)
        weights = self.gate(global_tokens, noisy, t).float().softmax(-1)  # (b, l, e)
        if self.config.gate == "scalar":
            weights = weights.mean(dim=1, keepdim=True)  # (b, 1, e)
        return weights


def load_balancing_loss(weights: torch.Tensor) -> torch.Tensor:
    """Switch Transformer's auxiliary load-balancing loss (Fedus et al. 2021, eq. 4; ST-MoE keeps it):
    e * sum_i f_i * P_i over the experts i, with f_i the share of tokens whose largest weight is expert i
    and P_i the mean weight on expert i. It is 1 when the load is even and e when every token picks one
    expert with weight 1; only P_i carries a gradient, as in the paper, since f_i counts an argmax.

    weights: (b, l, e), (b, 1, e) or (1, 1, e) mixture weights that sum to 1 over e."""
    w = weights.float().flatten(0, -2)  # (tokens, e)
    e = w.shape[-1]
    share = F.one_hot(w.argmax(-1), e).float().mean(0)  # (e,) f_i
    mean_weight = w.mean(0)  # (e,) P_i
    return e * (share * mean_weight).sum()
