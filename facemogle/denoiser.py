"""The conditioned denoiser: MoGLE fuses the mask latents, FLUX predicts the flow velocity.

Training and sampling both call `Denoiser.forward` with the noise level t in [0, 1], so the gate and
the transformer see the same timestep value for the same noise level in both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import FluxTransformer2DModel
from torch import nn

from facemogle.encode import TextEmbeddings, text_ids
from facemogle.flow import add_noise, velocity_target
from facemogle.flux_forward import ConditionSettings, flux_forward, install_condition_forward
from facemogle.mogle import ExpertOutputs, MoGLE, MoGLEOutput


@dataclass
class DenoiserOutput:
    velocity: torch.Tensor  # (b, l, d)
    gate_weights: torch.Tensor | None  # MoGLE's mixture weights, None without a mask condition


class Denoiser(nn.Module):
    """FLUX transformer + MoGLE. Condition tokens sit at the image tokens' positions plus `cond_id_offset`
    (default (0, 0, 0): spatially aligned with the image, as OminiControl does for spatial conditions)."""

    def __init__(
        self,
        transformer: FluxTransformer2DModel,
        mogle: MoGLE,
        settings: ConditionSettings | None = None,
        cond_id_offset: tuple[float, float, float] = (0.0, 0.0, 0.0),
    ):
        super().__init__()
        self.transformer = transformer
        self.mogle = mogle
        self.settings = settings or ConditionSettings()
        self.register_buffer("cond_id_offset", torch.tensor(cond_id_offset), persistent=False)
        install_condition_forward(transformer)

    @property
    def has_guidance(self) -> bool:
        """FLUX.1-dev is guidance-distilled: its transformer embeds a guidance scale beside the timestep."""
        return bool(self.transformer.config.guidance_embeds)

    def forward(
        self,
        noisy: torch.Tensor,
        t: torch.Tensor,
        text: TextEmbeddings,
        img_ids: torch.Tensor,
        cond_latents: torch.Tensor | None = None,
        guidance: float | None = None,
        expert_scale: torch.Tensor | None = None,
    ) -> DenoiserOutput:
        """noisy (b, l, d) tokens at noise level t (b,) in [0, 1]; cond_latents (b, 20, l, d) or None
        (no mask condition at all); img_ids (l, 3). guidance: the scale a guidance-embedding backbone
        needs (ignored by one without)."""
        mixed = None
        if cond_latents is not None:
            mixed = self.mix(self.expert_outputs(cond_latents), noisy, t, expert_scale)
        return self.predict(noisy, t, text, img_ids, mixed, guidance)

    def in_mogle_dtype(self, x: torch.Tensor) -> torch.Tensor:
        """MoGLE runs in its own dtype: float32 weights (an export, bf16-mixed) beside a bf16 backbone."""
        return x.to(next(self.mogle.parameters(), x).dtype)

    def expert_outputs(self, cond_latents: torch.Tensor) -> ExpertOutputs:
        """The experts on cond_latents (b, 20, l, d): they read nothing else, so sampling runs them once."""
        return self.mogle.expert_outputs(self.in_mogle_dtype(cond_latents))

    def mix(
        self,
        experts: ExpertOutputs,
        noisy: torch.Tensor,
        t: torch.Tensor,
        expert_scale: torch.Tensor | None = None,
    ) -> MoGLEOutput:
        """The gate at (noisy, t) and the weighted sum: the condition tokens of one step."""
        return self.mogle.mix(experts, self.in_mogle_dtype(noisy), t, expert_scale)

    def predict(
        self,
        noisy: torch.Tensor,
        t: torch.Tensor,
        text: TextEmbeddings,
        img_ids: torch.Tensor,
        mixed: MoGLEOutput | None,
        guidance: float | None = None,
    ) -> DenoiserOutput:
        """FLUX's velocity with the condition tokens `mixed` (None: no mask condition)."""
        cond_tokens = cond_ids = weights = None
        if mixed is not None:
            cond_tokens, weights = mixed.tokens.to(noisy.dtype), mixed.weights
            cond_ids = img_ids + self.cond_id_offset.to(img_ids)
        seq = text.sequence.to(noisy.dtype)
        velocity = flux_forward(
            self.transformer,
            hidden_states=noisy,
            encoder_hidden_states=seq,
            pooled_projections=text.pooled.to(noisy.dtype),
            timestep=t,
            img_ids=img_ids,
            txt_ids=text_ids(seq),
            guidance=self.guidance_input(guidance, noisy),
            cond_tokens=cond_tokens,
            cond_ids=cond_ids,
            settings=self.settings,
        )
        return DenoiserOutput(velocity, weights)

    def guidance_input(self, scale: float | None, noisy: torch.Tensor) -> torch.Tensor | None:
        if not self.has_guidance:
            return None
        if scale is None:
            raise ValueError(
                "this backbone has a guidance embedding (FLUX.1-dev) and needs a guidance scale: "
                "train.guidance in training, train.sample.guidance in sampling"
            )
        return torch.full((noisy.shape[0],), float(scale), device=noisy.device)


def flow_matching_loss(
    denoiser: Denoiser,
    x0: torch.Tensor,
    noise: torch.Tensor,
    t: torch.Tensor,
    text: TextEmbeddings,
    img_ids: torch.Tensor,
    cond_latents: torch.Tensor | None,
    guidance: float | None = None,
    mask_guidance: float = 1.0,
) -> tuple[torch.Tensor, DenoiserOutput]:
    """Rectified-flow loss: the denoiser at x_t = (1 - t) x0 + t noise regresses noise - x0.

    mask_guidance S > 1 trains the mask's guidance into the conditional model (model guidance, Tang et
    al. 2025, arXiv 2502.12154): the target moves by (1 - 1/S) sg(v(x_t, m) - v(x_t, no mask)), whose
    fixed point is v(m) = v(no mask) + S (E[noise - x0 | m] - v(no mask)), true CFG at mask scale S
    from one conditional pass, as a guidance-distilled FLUX.1-dev must follow a mask."""
    noisy = add_noise(x0, noise, t)
    guided = mask_guidance != 1.0 and cond_latents is not None
    if guided:  # before the pass with gradients: its activations are not held, so the step's peak stays
        with torch.no_grad():
            unmasked = denoiser(noisy, t, text, img_ids, None, guidance=guidance).velocity
    out = denoiser(noisy, t, text, img_ids, cond_latents, guidance=guidance)
    target = velocity_target(x0, noise).float()
    if guided:
        target = target + (1 - 1 / mask_guidance) * (out.velocity.detach() - unmasked).float()
    loss = torch.nn.functional.mse_loss(out.velocity.float(), target)
    return loss, out
