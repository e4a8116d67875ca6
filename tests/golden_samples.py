"""Sampler outputs recorded before the pipeline and the experts-once sampler, so a change to the sampler that
alters the images fails (tests/test_golden_samples.py). `python -m tests.golden_samples` wrote
tests/data/golden_samples.safetensors at 8699f7c; run it again only when a change of the images is meant."""

from __future__ import annotations

from pathlib import Path

import torch

from facemogle.denoiser import Denoiser
from facemogle.mogle import MoGLE, MoGLEConfig
from facemogle.sampling import SampleSettings, sample
from facemogle.tiny_backbone import TinyFluxConfig, tiny_flux

GOLDEN = Path(__file__).parent / "data" / "golden_samples.safetensors"
PROMPTS = ["She has blond wavy hair and wears eyeglasses.", "He is smiling."]
SIZE, SEED, STEPS = 32, 7, 3
# name: (guidance embedding, prompts, with masks, settings, expert scale)
CASES = {
    "text+mask": (False, PROMPTS, True, {"text_scale": 2.0, "mask_scale": 3.0}, True),
    "mask": (False, PROMPTS[:1], True, {"mask_scale": 3.0}, False),
    "text_background": (False, PROMPTS[1:], False, {"text_only_condition": "background"}, False),
    "text_none": (False, PROMPTS[1:], False, {"text_only_condition": "none"}, False),
    "guidance": (True, PROMPTS[:1], True, {"guidance": 2.5}, False),
}


def models(guidance: bool):
    """The tiny FLUX (seed 0) and a randomly initialised MLP-expert MoGLE (seed 1): no expert is the identity."""
    backbone = tiny_flux(TinyFluxConfig(guidance_embeds=guidance), seed=0)
    torch.manual_seed(1)
    return backbone, Denoiser(backbone.transformer, MoGLE(MoGLEConfig(experts="mlp")))


def case_inputs(name: str):
    guidance, prompts, with_masks, settings, scaled = CASES[name]
    n = len(prompts)
    masks = torch.randint(0, 19, (n, SIZE, SIZE), generator=torch.Generator().manual_seed(3))
    scale = torch.linspace(0.5, 1.5, 20) if scaled else None
    masks = masks if with_masks else None
    prompts = None if name == "mask" else prompts
    return guidance, prompts, masks, SampleSettings(steps=STEPS, **settings), scale


def run_case(name: str):
    guidance, prompts, masks, settings, scale = case_inputs(name)
    backbone, denoiser = models(guidance)
    return sample(
        backbone,
        denoiser,
        prompts,
        masks,
        height=SIZE,
        width=SIZE,
        settings=settings,
        seed=SEED,
        expert_scale=scale,
    )


def export_tiny_run(root: Path) -> Path:
    """A run exported from the default config on the tiny FLUX, its LoRA and MoGLE weights perturbed (seed 2)
    as if trained; root/masks holds two palette masks. -> the run directory."""
    import numpy as np
    from PIL import Image

    from experiments.config.load import load_config
    from experiments.runs.io import export_run
    from experiments.training.build import build_module
    from facemogle.backbone import save_flux
    from facemogle.face_parts import colorize

    flux = save_flux(tiny_flux(seed=0), root / "flux")
    config = load_config(overrides=[f"backbone.path={flux}", f"run_dir={root / 'run'}"])
    module = build_module(config)
    torch.manual_seed(2)
    with torch.no_grad():
        for p in module.trainable_parameters():
            p.add_(torch.randn_like(p) * 0.05)
    export_run(config.run_dir, config, module.denoiser)
    (root / "masks").mkdir()
    labels = torch.randint(0, 19, (2, 16, 16), generator=torch.Generator().manual_seed(4))
    for i, m in enumerate(labels.repeat_interleave(4, 1).repeat_interleave(4, 2).numpy()):
        Image.fromarray(colorize(m.astype(np.uint8))).save(root / "masks" / f"m{i}.png")
    return Path(config.run_dir)


CLI_CASES = {  # experiments.sample's arguments after --run and --out
    "text": ["--prompt", "a smiling face", "--n", "2", "--steps", "2"],
    "masks": ["--masks", "{masks}", "--steps", "2", "--seed", "5"],
    "text+mask": [
        "--prompt",
        "a smiling face",
        "--mask",
        "{masks}/m1.png",
        "--steps",
        "2",
        "--region-scale",
        "hair=1.5",
    ],
}


def run_cli_case(name: str, root: Path, out: Path) -> dict[str, torch.Tensor]:
    """experiments.sample on export_tiny_run(root)'s run -> {file stem: (H, W, 3) uint8}."""
    import numpy as np
    from PIL import Image

    from experiments import sample as sample_cli

    args = [a.format(masks=root / "masks") for a in CLI_CASES[name]]
    sample_cli.main(["--run", str(root / "run"), "--out", str(out), *args])
    return {p.stem: torch.from_numpy(np.array(Image.open(p))) for p in sorted(out.glob("*.png"))}


def main() -> None:
    import tempfile

    from safetensors.torch import save_file

    tensors = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        export_tiny_run(root)
        for name in CLI_CASES:
            for stem, image in run_cli_case(name, root, root / "out" / name).items():
                tensors[f"cli/{name}/{stem}"] = image.contiguous()
    for name in CASES:
        out = run_case(name)
        tensors[f"{name}/images"] = out.images.contiguous()
        if out.gate_weights:
            tensors[f"{name}/gate_last"] = out.gate_weights[-1].contiguous()
    GOLDEN.parent.mkdir(exist_ok=True)
    save_file(tensors, GOLDEN)


if __name__ == "__main__":
    main()
