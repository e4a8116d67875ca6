"""Training-step cost, side by side: forward + backward + optimizer step of

    mogle (cached)     our step: cached image / condition latents, MoGLE + LoRA
    mogle (re-encode)  the same, re-encoding the image, the 20 condition maps and the captions every
                       step (the published code's way)
    plain condition    the colour mask alone as condition tokens: no experts, no gate (OminiControl)
    no condition       the backbone with LoRA on the image tokens and no condition tokens

    python -m experiments.benchmark step [--batch 16] [--steps 10] [--flux-dev-on-cpu]

On the tiny config on the CPU; with a GPU, also on FLUX.1-dev at full size (random weights, 512^2, batch 4,
bf16, gradient checkpointing, as the paper's config trains), with peak memory, MFU from the FLOPs torch's
FlopCounterMode counts in one step, and a 28-step sample. `--flux-dev-on-cpu` runs that part on the CPU
with FLUX.1-dev's structure at a tiny size (facemogle.backbone.FLUX_DEV_SHAPED), so CI executes it.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from facemogle.backbone import FluxBackbone
from facemogle.denoiser import Denoiser
from facemogle.encode import TextEmbeddings, encode_images, encode_prompts, text_ids
from facemogle.face_parts import split_mask
from facemogle.flow import add_noise, velocity_target
from facemogle.flux_forward import ConditionSettings, flux_forward
from facemogle.lit_module import TrainConfig
from facemogle.lora import LoRASettings, add_lora
from facemogle.mogle import MoGLE
from facemogle.packing import image_ids
from facemogle.sampling import SampleSettings, sample
from facemogle.tiny_backbone import FLUX_DEV, FLUX_DEV_SHAPED, tiny_flux


def make_inputs(backbone: FluxBackbone, batch: int, resolution: int, device) -> dict:
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 19, (batch, resolution, resolution), generator=g)
    images = torch.rand(batch, 3, resolution, resolution, generator=g) * 2 - 1
    return {
        "labels": labels.to(device),
        "images": images.to(device),
        "captions": ["She has wavy hair."] * batch,
    }


def encoded(backbone: FluxBackbone, inputs: dict) -> tuple[torch.Tensor, torch.Tensor, TextEmbeddings]:
    x0 = encode_images(backbone, inputs["images"])
    cond = encode_images(backbone, split_mask(inputs["labels"]))
    return x0, cond, encode_prompts(backbone, inputs["captions"])


def variants(backbone: FluxBackbone, denoiser: Denoiser, inputs: dict, ids: torch.Tensor):
    dtype = backbone.transformer.dtype
    x0, cond, text = encoded(backbone, inputs)
    x0, cond, text = (
        x0.to(dtype),
        cond.to(dtype),
        TextEmbeddings(text.sequence.to(dtype), text.pooled.to(dtype)),
    )
    guidance = denoiser.guidance_input(
        TrainConfig.guidance, x0
    )  # the training scale, where the backbone has one

    def loss_of(velocity, noise, x):
        return torch.nn.functional.mse_loss(velocity.float(), velocity_target(x, noise).float())

    def mogle_step(x, c, txt):
        noise, t = torch.randn_like(x), torch.rand(x.shape[0], device=x.device, dtype=x.dtype)
        out = denoiser(add_noise(x, noise, t), t, txt, ids, c, guidance=TrainConfig.guidance)
        return loss_of(out.velocity, noise, x)

    def reencode_step():
        x, c, txt = encoded(backbone, inputs)
        txt = TextEmbeddings(txt.sequence.to(dtype), txt.pooled.to(dtype))
        return mogle_step(x.to(dtype), c.to(dtype), txt)

    def plain_step(lora_on_image: bool, condition: bool):
        noise, t = torch.randn_like(x0), torch.rand(x0.shape[0], device=x0.device, dtype=x0.dtype)
        velocity = flux_forward(
            backbone.transformer,
            add_noise(x0, noise, t),
            text.sequence,
            text.pooled,
            t,
            ids,
            text_ids(text.sequence),
            guidance=guidance,
            cond_tokens=cond[:, 0] if condition else None,
            cond_ids=ids if condition else None,
            settings=ConditionSettings(lora_on_image=lora_on_image),
        )
        return loss_of(velocity, noise, x0)

    return {
        "mogle (cached)": lambda: mogle_step(x0, cond, text),
        "mogle (re-encode)": reencode_step,
        "plain condition": lambda: plain_step(False, True),
        "no condition": lambda: plain_step(True, False),
    }


def timed(fn, steps: int, device) -> tuple[float, float | None]:
    """Seconds per call of `fn` after two warm-up calls, and the peak GPU memory (GiB) it reached."""
    for _ in range(2):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    return seconds, torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None


def optimizer_step(fn, optimizer):
    def step():
        optimizer.zero_grad(set_to_none=True)
        fn().backward()
        optimizer.step()

    return step


def flops_of(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn().backward()
    return counter.get_total_flops()


def run(
    name: str,
    backbone: FluxBackbone,
    batch: int,
    resolution: int,
    steps: int,
    device,
    peak: float | None,
    sample_steps: int = 0,
    gradient_checkpointing: bool = False,
):
    """Prints the four variants' step time, peak memory, FLOPs and MFU; then, with `sample_steps`, the time
    of one sampling call of that many steps (mask and text, the embedded guidance or true CFG)."""
    backbone.freeze().to(device)
    add_lora(backbone.transformer, LoRASettings())
    # bf16-true, as the paper's config trains: LoRA and MoGLE in the backbone's dtype
    denoiser = Denoiser(backbone.transformer, MoGLE()).to(device, backbone.transformer.dtype)
    if gradient_checkpointing:
        backbone.transformer.enable_gradient_checkpointing()
    f = backbone.vae_scale_factor
    ids = image_ids(resolution // f, resolution // f, device=device, dtype=backbone.transformer.dtype)
    inputs = make_inputs(backbone, batch, resolution, device)
    optimizer = torch.optim.AdamW([p for p in denoiser.parameters() if p.requires_grad], lr=1e-4)
    fns = variants(backbone, denoiser, inputs, ids)
    rows = {label: timed(optimizer_step(fn, optimizer), steps, device) for label, fn in fns.items()}
    base = rows["mogle (cached)"][0]
    print(f"\n{name}: batch {batch}, {resolution}^2, {(resolution // f // 2) ** 2} image tokens")
    print(
        "| variant | ms/step | vs mogle (cached) | peak GiB | TFLOP/step | MFU |\n|---|---|---|---|---|---|"
    )
    for label, (seconds, memory) in rows.items():
        flops = flops_of(fns[label])
        mfu = f"{flops / seconds / (peak * 1e12):.1%}" if peak else "-"
        gib = f"{memory:.1f}" if memory is not None else "-"
        print(
            f"| {label} | {seconds * 1e3:.1f} | {seconds / base:.2f}x | {gib} | {flops / 1e12:.3g} | {mfu} |"
        )
    if sample_steps:
        settings = SampleSettings(steps=sample_steps)
        prompts = inputs["captions"]

        def call():
            sample(
                backbone,
                denoiser,
                prompts,
                inputs["labels"],
                height=resolution,
                width=resolution,
                settings=settings,
            )

        seconds, memory = timed(call, 1, device)
        gib = f", peak {memory:.1f} GiB" if memory is not None else ""
        print(f"\nsampling, {sample_steps} steps, batch {batch}: {seconds:.2f} s{gib}")


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m experiments.benchmark step")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--peak-tflops", type=float, default=989.0, help="GPU dense bf16 peak for MFU (H100/H200)")
    p.add_argument(
        "--flux-dev-on-cpu",
        action="store_true",
        help="run the FLUX.1-dev part on the CPU at a tiny size (FLUX_DEV_SHAPED, 64^2, batch 1), "
        "so that the GPU path runs in CI",
    )
    args = p.parse_args(argv)
    run(
        "tiny FLUX, CPU, float32",
        tiny_flux(),
        args.batch,
        args.resolution,
        args.steps,
        torch.device("cpu"),
        None,
    )
    if args.flux_dev_on_cpu:
        flux = tiny_flux(FLUX_DEV_SHAPED).to(dtype=torch.bfloat16)
        run("FLUX.1-dev structure at CPU size, CPU, bf16", flux, 1, 64, 1, torch.device("cpu"), None, 2, True)
    elif torch.cuda.is_available():
        flux = tiny_flux(FLUX_DEV).to(dtype=torch.bfloat16)
        cuda = torch.device("cuda")
        run("FLUX.1-dev shapes, GPU, bf16", flux, 4, 512, args.steps, cuda, args.peak_tflops, 28, True)
