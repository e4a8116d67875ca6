"""Batched experts vs a per-expert loop, forward + backward, at the paper's shapes.

    python -m experiments.benchmark experts [--batch 4] [--tokens 1024] [--dim 64] [--hidden 32]

float32 on the CPU; bf16 on the GPU as well when one is present. The loop is what the published code
does (an nn.ModuleList of 20 Linear-ReLU-Linear experts called one after the other).
"""

from __future__ import annotations

import argparse

import torch
from torch import nn
from torch.utils.benchmark import Timer

from facemogle.face_parts import NUM_CONDITION_MAPS
from facemogle.mogle import StackedExperts


def looped_copy(experts: StackedExperts) -> nn.ModuleList:
    """The same weights as separate per-expert modules."""
    e, d, h = experts.w1.shape
    modules = nn.ModuleList()
    for i in range(e):
        mlp = nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, d))
        with torch.no_grad():
            mlp[0].weight.copy_(experts.w1[i].T)
            mlp[0].bias.copy_(experts.b1[i])
            mlp[2].weight.copy_(experts.w2[i].T)
            mlp[2].bias.copy_(experts.b2[i])
        modules.append(mlp)
    return modules.to(experts.w1)


def run_loop(modules: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
    return torch.stack([m(x[:, i]) for i, m in enumerate(modules)], dim=1)


def step(fn, x):
    y = fn(x)
    y.float().square().mean().backward()


def measure(device: str, dtype: torch.dtype, args) -> list[tuple[str, float]]:
    experts = StackedExperts(NUM_CONDITION_MAPS, args.dim, args.hidden).to(device=device, dtype=dtype)
    loop = looped_copy(experts)
    x = torch.randn(args.batch, NUM_CONDITION_MAPS, args.tokens, args.dim, device=device, dtype=dtype)
    x.requires_grad_()
    rows = []
    for name, fn in (("per-expert loop", lambda v: run_loop(loop, v)), ("batched (bmm)", experts)):
        timer = Timer("step(fn, x)", globals={"step": step, "fn": fn, "x": x})
        rows.append((name, timer.blocked_autorange(min_run_time=args.min_time).median * 1e3))
    return rows


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.benchmark experts")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--min-time", type=float, default=2.0, help="seconds of timing per row")
    args = parser.parse_args(argv)
    settings = [("cpu", torch.float32)]
    if torch.cuda.is_available():
        settings.append(("cuda", torch.bfloat16))
    print(
        f"experts forward+backward: batch {args.batch}, {NUM_CONDITION_MAPS} experts, "
        f"{args.tokens} tokens, {args.dim}->{args.hidden}->{args.dim}, {torch.get_num_threads()} CPU threads"
    )
    print("| device | dtype | variant | ms/step | speed-up vs loop |\n|---|---|---|---|---|")
    for device, dtype in settings:
        rows = measure(device, dtype, args)
        base = rows[0][1]
        for name, ms in rows:
            print(
                f"| {device} | {str(dtype).removeprefix('torch.')} | {name} | {ms:.3f} | {base / ms:.2f}x |"
            )
