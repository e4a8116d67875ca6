"""Training throughput of N processes with cores / N threads each against one process with every core, side by
side in one run: the case for the ablation's `--workers` (experiments/ablation/workers.py).

    python -m experiments.benchmark workers [--workers 2] [--steps 40] [--batch 16]

Each process times `--steps` stage-2 training steps of the tiny config (MoGLE + LoRA on cached latents, float32,
as experiments.benchmark step's "mogle (cached)"); the N processes run at the same time. Throughput: steps a
second over all processes. Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import torch

from experiments.ablation.workers import thread_env, worker_threads
from experiments.benchmarks.step import make_inputs, optimizer_step, variants
from facemogle.denoiser import Denoiser
from facemogle.lora import LoRASettings, add_lora
from facemogle.mogle import MoGLE
from facemogle.packing import image_ids
from facemogle.tiny_backbone import tiny_flux


def time_steps(steps: int, batch: int) -> float:
    """Seconds a step of `steps` stage-2 steps, after two warm-up steps (in this process, its threads)."""
    backbone = tiny_flux().freeze()
    add_lora(backbone.transformer, LoRASettings())
    denoiser = Denoiser(backbone.transformer, MoGLE())
    latent = 64 // backbone.vae_scale_factor
    ids = image_ids(latent, latent, device=torch.device("cpu"), dtype=torch.float32)
    inputs = make_inputs(backbone, batch, 64, torch.device("cpu"))
    optimizer = torch.optim.AdamW([p for p in denoiser.parameters() if p.requires_grad], lr=1e-4)
    step = optimizer_step(variants(backbone, denoiser, inputs, ids)["mogle (cached)"], optimizer)
    for _ in range(2):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def concurrent(processes: int, threads: int, steps: int, batch: int) -> list[float]:
    """Seconds a step in each of `processes` processes of `threads` threads, started together."""
    env = thread_env(threads)
    argv = [
        sys.executable,
        "-m",
        "experiments.benchmark",
        "workers",
        "--one",
        str(steps),
        "--batch",
        str(batch),
    ]
    procs = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    outputs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError(f"a benchmark process failed: {outputs}")
    return [float(out.split()[-1]) for out in outputs]


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m experiments.benchmark workers")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # a child: time that many steps
    args = p.parse_args(argv)
    if args.one is not None:
        print(f"seconds a step {time_steps(args.one, args.batch)!r}")
        return
    cores = os.cpu_count() or 1
    threads = worker_threads(args.workers)
    one = concurrent(1, cores, args.steps, args.batch)
    many = concurrent(args.workers, threads, args.steps, args.batch)
    rate_one, rate_many = 1 / one[0], sum(1 / s for s in many)
    print(f"tiny stage-2 training step, batch {args.batch}, {cores} cores, {args.steps} steps a process\n")
    print("| processes x threads | ms a step (each process) | steps a second (all) | vs one process |")
    print("|---|---|---|---|")
    print(f"| 1 x {cores} | {one[0] * 1e3:.1f} | {rate_one:.2f} | 1.00x |")
    each = ", ".join(f"{s * 1e3:.1f}" for s in many)
    print(f"| {args.workers} x {threads} | {each} | {rate_many:.2f} | {rate_many / rate_one:.2f}x |")
