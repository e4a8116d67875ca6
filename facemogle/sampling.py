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

Experts once per image: the experts read only the condition latents, so a call runs them once
(`Denoiser.expert_outputs`), and each step runs only the gate and the weighted sum (`Denoiser.mix`), once
for the step's conditioned passes, whose gate inputs (the noisy tokens, t) are the same.
`experts_once=False` recomputes both in every conditioned pass, as the sampler did before: the reference
of `python -m experiments.benchmark sampling` and of the tests.

One sampler: `sample` serves the training callback (LightningModule.generate); facemogle.pipeline's
FaceMoGLEPipeline, through which the sample and evaluate commands and the demo sample, calls it too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal, NamedTuple, get_args

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.flux.pipeline_flux import calculate_shift
from diffusers.utils.torch_utils import randn_tensor

from facemogle.backbone import FluxBackbone
from facemogle.denoiser import Denoiser
from facemogle.encode import TextEmbeddings, decode_tokens, encode_masks, encode_prompts
from facemogle.face_parts import PART_INDEX
from facemogle.mogle import MoGLEOutput
from facemogle.packing import image_ids
from facemogle.rules import AT_LEAST_ONE, FINITE, NON_NEGATIVE, Range, check_ranges

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

    RULES: ClassVar[dict[str, Range]] = {
        "steps": AT_LEAST_ONE,
        "guidance": NON_NEGATIVE,
        "text_scale": FINITE,
        "mask_scale": FINITE,
    }

    def __post_init__(self) -> None:
        check_ranges(self)
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


# Called after each step with (step index, scheduler timestep, latents (b, l, d)); returns the latents to go on
# with, or None to keep them.
StepCallback = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor | None]


@dataclass
class Conditions:
    """A call's prompts and masks, encoded once."""

    text: TextEmbeddings  # the prompts' (the empty prompt's when there are none)
    empty: TextEmbeddings  # the empty prompt's, for guidance
    cond_latents: torch.Tensor | None  # (b, 20, l, d): the masks', the background map's, or None
    has_text: bool
    has_mask: bool  # masks were given (not the text mode's stand-in)


def seed_generators(seed: int, n: int) -> list[torch.Generator]:
    """Item i's generator is seeded seed + i, so a sample does not depend on the batch it is in."""
    return [torch.Generator().manual_seed(seed + i) for i in range(n)]


def initial_noise(
    n: int, seq_len: int, dim: int, generator: torch.Generator | list[torch.Generator], device, dtype
) -> torch.Tensor:
    """(n, seq_len, dim) noise: item i's from generator[i], or the batch's from one generator; drawn on the
    generator's device, so a CPU generator gives the same noise for any device."""
    if not isinstance(generator, torch.Generator) and len(generator) != n:
        raise ValueError(f"{len(generator)} generators for {n} images: give one per image, or one")
    first = generator if isinstance(generator, torch.Generator) else generator[0]
    noise = randn_tensor((n, seq_len, dim), generator=generator, device=first.device, dtype=torch.float32)
    return noise.to(device=device, dtype=dtype)


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


def check_request(
    backbone: FluxBackbone, prompts: list[str] | None, masks: torch.Tensor | None, height: int, width: int
) -> int:
    """The number of images a call makes; a request the sampler cannot serve is a ValueError saying why."""
    if prompts is None and masks is None:
        raise ValueError("sample() needs prompts, masks, or both")
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
    return n


def encode_conditions(
    backbone: FluxBackbone,
    prompts: list[str] | None,
    masks: torch.Tensor | None,
    n: int,
    height: int,
    width: int,
    text_only: TextOnlyCondition | None,
    device,
) -> Conditions:
    """Prompts and masks (resized, nearest, to height x width) as the denoiser reads them; without masks the
    text mode's stand-in (`text_only`: the background map, or none)."""
    empty = _on(encode_prompts(backbone, [""] * n), device)
    text = _on(encode_prompts(backbone, prompts), device) if prompts is not None else empty
    has_mask = masks is not None
    if text_only == "background":
        masks = torch.full((n, height, width), PART_INDEX["background"], dtype=torch.long)
    cond = None
    if masks is not None:
        masks = F.interpolate(masks[:, None].float(), size=(height, width), mode="nearest")[:, 0].long()
        cond = encode_masks(backbone, masks.to(device), device=device).to(backbone.transformer.dtype)
    return Conditions(text, empty, cond, prompts is not None, has_mask)


def _on(text: TextEmbeddings, device) -> TextEmbeddings:
    return TextEmbeddings(text.sequence.to(device), text.pooled.to(device))


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
    generator: torch.Generator | list[torch.Generator] | None = None,
    expert_scale: torch.Tensor | None = None,
    device: torch.device | str | None = None,
    on_step: StepCallback | None = None,
    experts_once: bool = True,
) -> SampleOutput:
    """prompts: b captions, or None for mask-to-face; masks: (b, H, W) labels, or None for text-to-face
    (conditioned as `settings.text_only_condition` says). Masks of another size with the same aspect ratio
    are resized (nearest) to height x width; another aspect ratio is an error.

    generator: one per image or one for the batch; by default image i's is seeded `seed + i`. device: where
    the sampling runs (the transformer's by default; the pipeline's execution device under CPU offload)."""
    settings = settings or SampleSettings()
    n = check_request(backbone, prompts, masks, height, width)
    device = torch.device(device) if device is not None else backbone.transformer.device
    dtype = backbone.transformer.dtype
    text_only = None if masks is not None else settings.text_only_condition
    c = encode_conditions(backbone, prompts, masks, n, height, width, text_only, device)
    f = backbone.vae_scale_factor
    ids = image_ids(height // f, width // f, device=device, dtype=dtype)
    generator = seed_generators(seed, n) if generator is None else generator
    latents = initial_noise(n, ids.shape[0], backbone.token_dim, generator, device, dtype)
    scheduler = make_scheduler(backbone, settings.steps, ids.shape[0])
    guidance = settings.guidance if denoiser.has_guidance else None
    experts = denoiser.expert_outputs(c.cond_latents) if experts_once and c.cond_latents is not None else None

    gate_weights = []
    for i, timestep in enumerate(scheduler.timesteps):
        t = scheduler.sigmas[i].to(device).expand(n)  # float32: FLUX casts it; the gate needs it exact
        condition = _step_condition(denoiser, c.cond_latents, experts, latents, t, expert_scale)
        velocity, weights = _guided_velocity(denoiser, c, condition, latents, t, ids, guidance, settings)
        if weights is not None:
            gate_weights.append(weights.float().cpu())
        latents = scheduler.step(velocity, timestep, latents, return_dict=False)[0]
        if on_step is not None:
            latents = _or(on_step(i, timestep, latents), latents)
    images = decode_tokens(backbone, latents, height, width)
    return SampleOutput(images, gate_weights, scheduler.sigmas[:-1].clone(), text_only)


def _or(value, default):
    return default if value is None else value


def _step_condition(
    denoiser: Denoiser, cond_latents, experts, latents, t, expert_scale
) -> Callable[[], MoGLEOutput] | None:
    """The condition tokens of a step's conditioned passes: the gate's one mix of the precomputed experts,
    or (experts None) the experts and the gate again in each pass; None without condition latents."""
    if cond_latents is None:
        return None
    if experts is None:
        return lambda: denoiser.mix(denoiser.expert_outputs(cond_latents), latents, t, expert_scale)
    mixed = denoiser.mix(experts, latents, t, expert_scale)
    return lambda: mixed


def _guided_velocity(denoiser, c: Conditions, condition, latents, t, ids, guidance, s: SampleSettings):
    def v(text: TextEmbeddings, with_mask: bool):
        return denoiser.predict(latents, t, text, ids, condition() if with_mask else None, guidance)

    has_cond = condition is not None
    full = v(c.text, has_cond)
    if guidance is not None:
        return full.velocity, full.gate_weights
    if not c.has_mask:  # text only: no condition tokens, or the background map's in both passes
        return _cfg(lambda: v(c.empty, has_cond).velocity, full.velocity, s.text_scale), full.gate_weights
    if not c.has_text:  # mask only
        return _cfg(lambda: v(c.empty, False).velocity, full.velocity, s.mask_scale), full.gate_weights
    masked = v(c.empty, True).velocity
    base = _cfg(lambda: v(c.empty, False).velocity, masked, s.mask_scale)
    return base + s.text_scale * (full.velocity - masked), full.gate_weights


def _cfg(uncond: Callable[[], torch.Tensor], cond: torch.Tensor, scale: float) -> torch.Tensor:
    """uncond: the unconditional pass, run only when scale is not 1; at 1 it would cancel (the conditional
    model alone, FLUX.1-dev's regime for the mask)."""
    if scale == 1:
        return cond
    u = uncond()
    return u + scale * (cond - u)
