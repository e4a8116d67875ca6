"""Experts once per image against experts in every pass: the time a sample takes, side by side.

    python -m experiments.benchmark sampling [--repeats 5] [--tiny-steps 20] [--dev-steps 28] [--dev-resolution 512]

Both rows sample a text+mask face through facemogle.sampling.sample with a MoGLE of the paper's MLP experts:
`experts_once=True` (the sampler: the experts once a call, the gate and the weighted sum once a step) and
`experts_once=False` (the sampler before: experts and gate in every conditioned pass). On the tiny backbone at
64^2 with true classifier-free guidance (two of the three passes a step see the mask) and on the
FLUX.1-dev-shaped one (guidance embedding: one pass a step) at 512^2. Times are the process's CPU time per
sample, medians over `--repeats` interleaved pairs of calls after a warm-up (the saving: the median of the
pairs' differences); the last column is the largest difference between the two images.
The FLUX.1-dev-shaped transformer is 3 blocks of 2 heads: on FLUX.1-dev's 57 blocks of 24 the same saving in
milliseconds is a far smaller share.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import torch

from facemogle.denoiser import Denoiser
from facemogle.encode import encode_masks
from facemogle.mogle import MoGLE, MoGLEConfig
from facemogle.sampling import SampleSettings, sample
from facemogle.tiny_backbone import FLUX_DEV_SHAPED, TinyFluxConfig, tiny_flux


@dataclass
class Case:
    name: str
    config: TinyFluxConfig
    resolution: int
    steps: int


def cpu_ms(fn) -> float:
    """The process's CPU time for one call: steadier than wall time on a machine other jobs share."""
    start = time.process_time()
    fn()
    return (time.process_time() - start) * 1e3


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def measure(case: Case, repeats: int) -> dict:
    backbone = tiny_flux(case.config, seed=0)
    torch.manual_seed(1)
    denoiser = Denoiser(backbone.transformer, MoGLE(MoGLEConfig(token_dim=backbone.token_dim, experts="mlp")))
    res = case.resolution
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 19, (1, res // 16, res // 16), generator=g)
    labels = labels.repeat_interleave(16, 1).repeat_interleave(16, 2)
    settings = SampleSettings(steps=case.steps)

    def run(once: bool):
        return sample(
            backbone,
            denoiser,
            ["She has wavy hair."],
            labels,
            height=res,
            width=res,
            settings=settings,
            experts_once=once,
        )

    cond = encode_masks(backbone, labels)
    images = {once: run(once).images for once in (False, True)}  # also the warm-up
    pairs = [(cpu_ms(lambda: run(False)), cpu_ms(lambda: run(True))) for _ in range(repeats)]  # interleaved
    return {
        "tokens": cond.shape[2],
        "passes": 1 if denoiser.has_guidance else 3,
        "before": median([b for b, _ in pairs]),
        "after": median([a for _, a in pairs]),
        "saved": median([b - a for b, a in pairs]),
        "experts": median([cpu_ms(lambda: denoiser.expert_outputs(cond)) for _ in range(repeats)]),
        "diff": float((images[True] - images[False]).abs().max()),
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.benchmark sampling")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tiny-steps", type=int, default=20, help="tiny.yaml's train.sample.steps")
    parser.add_argument("--dev-steps", type=int, default=28, help="the paper config's sampling steps")
    parser.add_argument("--dev-resolution", type=int, default=512)
    args = parser.parse_args(argv)
    cases = [
        Case("tiny", TinyFluxConfig(), 64, args.tiny_steps),
        Case("FLUX.1-dev-shaped", FLUX_DEV_SHAPED, args.dev_resolution, args.dev_steps),
    ]
    print(f"text+mask, batch 1, MLP experts, float32, {torch.get_num_threads()} CPU threads")
    print(
        "| backbone | resolution | image tokens | steps x passes | experts every pass (ms/sample) "
        "| experts once (ms/sample) | saved (ms/sample) | saved | one experts call (ms) | max image diff |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for case in cases:
        m = measure(case, args.repeats)
        saved = m["saved"]
        print(
            f"| {case.name} | {case.resolution}^2 | {m['tokens']} | {case.steps} x {m['passes']} "
            f"| {m['before']:.1f} | {m['after']:.1f} | {saved:.1f} | {saved / m['before']:.1%} "
            f"| {m['experts']:.2f} | {m['diff']:.1e} |"
        )
