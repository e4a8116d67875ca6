"""Sampling: text-to-face, mask-to-face and text+mask-to-face with flow-matching Euler steps.

Guidance: a backbone with FLUX's guidance embedding (FLUX.1-dev) takes `guidance` in one forward.
Without one (the tiny backbone, trained here with text and mask dropout) guidance is true
classifier-free guidance composed over the two conditions, with separate scales:
    v = v(-, -) + mask_scale * (v(-, m) - v(-, -)) + text_scale * (v(c, m) - v(-, m))
where "-" is the empty prompt or no mask condition at all.

Modes (`MODES`): "text" samples from the captions alone, "mask" from the label maps alone, "text+mask"
from both; `mode_inputs` picks a mode's inputs, so every evaluation drops the same condition.

Text-to-face (`SampleSettings.text_only_condition`): "background", the default, gives the model the
condition tokens of an all-background label map, as the official Face-MoGLE code does whenever it has
no mask (its sampler always passes condition tokens), so LoRA and MoGLE act and a checkpoint's
text-to-face output is its own; "none" passes no condition tokens, which leaves the bare backbone
wherever LoRA acts on condition tokens only (`lora_on_image: false`). Under true CFG the background map
is in both passes and only the text is guided:
    v = v(-, bg) + text_scale * (v(c, bg) - v(-, bg))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple, get_args

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.flux.pipeline_flux import calculate_shift

from facemogle.backbone import FluxBackbone
from facemogle.denoiser import Denoiser
from facemogle.encode import TextEmbeddings, decode_tokens, encode_masks, encode_prompts
from facemogle.face_parts import PART_INDEX
from facemogle.packing import image_ids

TextOnlyCondition = Literal["none", "background"]
TEXT_ONLY_CONDITIONS: tuple[str, ...] = get_args(TextOnlyCondition)
Mode = Literal["text", "mask", "text+mask"]
MODES: tuple[str, ...] = get_args(Mode)


def check_modes(modes, where: str) -> tuple[str, ...]:
    """The modes as a tuple; an empty list or an unknown mode is a ValueError naming `where` (a key or flag)."""
    modes = tuple(modes)
    if not modes or any(m not in MODES for m in modes):
        raise ValueError(f"{where} {list(modes)}: each must be one of {MODES}")
    return modes


class ModeInputs(NamedTuple):
    prompts: list[str] | None
    masks: torch.Tensor | None


def mode_inputs(mode: str, captions: list[str], labels: torch.Tensor) -> ModeInputs:
    """What `sample` gets in a mode: the captions unless the mode is "mask", the labels unless it is "text"."""
    check_modes([mode], "mode")
    return ModeInputs(captions if "text" in mode else None, labels if "mask" in mode else None)


@dataclass
class SampleSettings:
    steps: int = 28
    guidance: float = 3.5  # FLUX guidance embedding, when the backbone has one
    text_scale: float = 3.5  # true CFG scales otherwise
    mask_scale: float = 1.5
    # Text-to-face: "background" (an all-background label map as the mask condition, as the official code
    # samples; the model's LoRA and MoGLE act) or "none" (no condition tokens: the backbone alone).
    text_only_condition: TextOnlyCondition = "background"

    def __post_init__(self) -> None:
        if self.text_only_condition not in TEXT_ONLY_CONDITIONS:
            raise ValueError(
                f"text_only_condition={self.text_only_condition!r} (train.sample.text_only_condition, "
                f"--text-only-condition): expected one of {TEXT_ONLY_CONDITIONS}"
            )


@dataclass
class SampleOutput:
    images: torch.Tensor  # (b, 3, H, W) in [0, 1]
    gate_weights: list[torch.Tensor]  # per step, MoGLE's weights (b, l, e) for the conditioned pass
    sigmas: torch.Tensor  # (steps,) noise levels visited
    text_only_condition: TextOnlyCondition | None = None  # text-to-face: what stood in for the mask


def initial_noise(n: int, seq_len: int, dim: int, seed: int, device, dtype) -> torch.Tensor:
    """Item i's noise depends only on seed + i, so a sample does not depend on the batch it is in."""
    noise = [torch.randn(seq_len, dim, generator=torch.Generator().manual_seed(seed + i)) for i in range(n)]
    return torch.stack(noise).to(device=device, dtype=dtype)


def make_scheduler(backbone: FluxBackbone, steps: int, seq_len: int) -> FlowMatchEulerDiscreteScheduler:
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(backbone.scheduler.config)
    cfg = scheduler.config
    mu = None
    if cfg.use_dynamic_shifting:
        mu = calculate_shift(
            seq_len, cfg.base_image_seq_len, cfg.max_image_seq_len, cfg.base_shift, cfg.max_shift
        )
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 1.0 / steps, steps), mu=mu)
    return scheduler


@torch.no_grad()
def sample(
    backbone: FluxBackbone,
    denoiser: Denoiser,
    prompts: list[str] | None = None,
    masks: torch.Tensor | None = None,
    *,
    height: int,
    width: int,
    settings: SampleSettings | None = None,
    seed: int = 0,
    expert_scale: torch.Tensor | None = None,
) -> SampleOutput:
    """prompts: b captions, or None for mask-to-face; masks: (b, H, W) labels, or None for text-to-face
    (conditioned as `settings.text_only_condition` says). Masks of another size with the same aspect ratio
    are resized (nearest) to height x width; another aspect ratio is an error."""
    if prompts is None and masks is None:
        raise ValueError("sample() needs prompts, masks, or both")
    settings = settings or SampleSettings()
    n = len(prompts) if prompts is not None else masks.shape[0]
    if masks is not None and masks.shape[0] != n:
        raise ValueError(f"{n} prompts but {masks.shape[0]} masks")
    if masks is not None and masks.shape[-1] * height != masks.shape[-2] * width:
        raise ValueError(  # resizing would stretch the face's layout
            f"masks are {masks.shape[-1]}x{masks.shape[-2]}, not the {width}x{height} images' aspect ratio"
        )
    f = backbone.vae_scale_factor
    if height % (2 * f) or width % (2 * f):
        raise ValueError(
            f"height and width must be multiples of {2 * f} for this backbone, got {height}x{width}"
        )
    device, dtype = backbone.transformer.device, backbone.transformer.dtype

    empty = encode_prompts(backbone, [""] * n)
    text = encode_prompts(backbone, prompts) if prompts is not None else empty
    text_only = None if masks is not None else settings.text_only_condition
    if text_only == "background":
        masks = torch.full((n, height, width), PART_INDEX["background"], dtype=torch.long)
    cond = None
    if masks is not None:
        masks = F.interpolate(masks[:, None].float(), size=(height, width), mode="nearest")[:, 0].long()
        cond = encode_masks(backbone, masks.to(device)).to(dtype)
    ids = image_ids(height // f, width // f, device=device, dtype=dtype)
    latents = initial_noise(n, ids.shape[0], backbone.token_dim, seed, device, dtype)
    scheduler = make_scheduler(backbone, settings.steps, ids.shape[0])
    guidance = settings.guidance if denoiser.has_guidance else None

    gate_weights = []
    for i, timestep in enumerate(scheduler.timesteps):
        t = scheduler.sigmas[i].to(device).expand(n)  # float32: FLUX casts it; the gate needs it exact
        velocity, weights = _guided_velocity(
            denoiser,
            latents,
            t,
            text,
            empty,
            cond,
            ids,
            guidance,
            settings,
            prompts is not None,
            text_only is None,
            expert_scale,
        )
        if weights is not None:
            gate_weights.append(weights.float().cpu())
        latents = scheduler.step(velocity, timestep, latents, return_dict=False)[0]
    images = decode_tokens(backbone, latents, height, width)
    return SampleOutput(images, gate_weights, scheduler.sigmas[:-1].clone(), text_only)


def _guided_velocity(
    denoiser, latents, t, text, empty, cond, ids, guidance, s, has_text, has_mask, expert_scale
):
    def v(txt: TextEmbeddings, c):
        return denoiser(latents, t, txt, ids, c, guidance=guidance, expert_scale=expert_scale)

    full = v(text, cond)
    if guidance is not None:
        return full.velocity, full.gate_weights
    if not has_mask:  # text only: no condition tokens, or the background map's in both passes
        return _cfg(v(empty, cond).velocity, full.velocity, s.text_scale), full.gate_weights
    if not has_text:  # mask only
        return _cfg(v(empty, None).velocity, full.velocity, s.mask_scale), full.gate_weights
    masked = v(empty, cond).velocity
    base = _cfg(v(empty, None).velocity, masked, s.mask_scale)
    return base + s.text_scale * (full.velocity - masked), full.gate_weights


def _cfg(uncond: torch.Tensor, cond: torch.Tensor, scale: float) -> torch.Tensor:
    return uncond + scale * (cond - uncond)
