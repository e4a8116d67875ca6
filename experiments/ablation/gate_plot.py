"""The full model's gate across sampling: per face region, the weight its tokens give to the region's own
local expert and to the global expert, at every sampling step, averaged over test faces.

Two heat maps side by side (rows: regions present in the faces, columns: steps from pure noise to the
last step), each scaled to its own maximum, and the numbers as CSV.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from callbacks.visuals import heat_colors
from data_modules.dataset import load_faces
from data_modules.layouts import scan
from data_modules.split import split_records
from experiments.run_io import load_run
from facemogle.gate_analysis import own_and_global, region_gate_weights
from facemogle.sampling import SampleSettings, sample

CELL = 12  # pixels per heat-map cell


@dataclass
class GateTrajectory:
    sigmas: np.ndarray  # (s,) noise level of each sampling step
    parts: list[str]  # the regions present in the faces, in PARTS order
    own: np.ndarray  # (s, r) mean weight of a region's tokens on the region's own expert
    global_: np.ndarray  # (s, r) ... on the global expert


@torch.no_grad()
def gate_trajectory(run_dir: Path, n: int, sample_steps: int | None, batch: int = 8) -> GateTrajectory:
    """Sample the first n test faces (text+mask, seed 0 as in evaluation) and average the gate."""
    run = load_run(run_dir)
    mogle = run.config.model.mogle
    if mogle.expert_set != "all" or mogle.gate != "dynamic":
        raise ValueError(f"{run_dir}: the gate plot needs a dynamic gate over all 20 experts")
    settings = SampleSettings(**vars(run.config.train.sample))
    if sample_steps is not None:
        settings.steps = sample_steps
    data = run.config.data
    faces = load_faces(
        split_records(scan(data.root, data.layout, data.captions).records, data.split, "test", n),
        data.resolution,
    )
    device = run.backbone.transformer.device
    regions, sigmas = [], None
    for start in range(0, len(faces), batch):
        part = faces[start : start + batch]
        out = sample(
            run.backbone,
            run.denoiser,
            part.captions,
            part.labels.to(device),
            height=data.resolution,
            width=data.resolution,
            settings=settings,
            seed=start,
        )
        regions.append(region_gate_weights(out.gate_weights, part.labels))  # (b, s, 19, 20)
        sigmas = out.sigmas.float().numpy()
    weights = own_and_global(torch.cat(regions))
    return GateTrajectory(sigmas, weights.parts, weights.own.numpy(), weights.global_.numpy())


def _panel(values: np.ndarray, title: str, footer: str, labels: list[str] | None) -> Image.Image:
    """values (s, r) -> regions down, steps across, under a title, with optional row labels."""
    font = ImageFont.load_default()
    heat = heat_colors(values.T / max(float(np.nanmax(values)), 1e-8)).repeat(CELL, 0).repeat(CELL, 1)
    left, top = (64 if labels else 6), 16
    text_width = max(font.getlength(title), font.getlength(footer))
    width = left + max(heat.shape[1], int(text_width)) + 6
    panel = Image.new("RGB", (width, top + heat.shape[0] + 14), (255, 255, 255))
    panel.paste(Image.fromarray(heat), (left, top))
    draw = ImageDraw.Draw(panel)
    draw.text((left, 2), title, fill=(0, 0, 0), font=font)
    draw.text((left, top + heat.shape[0] + 2), footer, fill=(0, 0, 0), font=font)
    for r, label in enumerate(labels or []):
        draw.text((2, top + r * CELL), label[:10], fill=(0, 0, 0), font=font)
    return panel


def plot(trajectory: GateTrajectory) -> np.ndarray:
    """Both heat maps side by side, as an (H, W, 3) uint8 image."""
    t = trajectory
    footer = f"sigma {t.sigmas[0]:.2f} -> {t.sigmas[-1]:.2f}"
    panels = [
        _panel(t.own, f"own expert, max {np.nanmax(t.own):.2f}", footer, t.parts),
        _panel(t.global_, f"global expert, max {np.nanmax(t.global_):.2f}", footer, None),
    ]
    canvas = Image.new("RGB", (sum(p.width for p in panels), max(p.height for p in panels)), (255, 255, 255))
    x = 0
    for p in panels:
        canvas.paste(p, (x, 0))
        x += p.width
    return np.asarray(canvas)


def write_csv(trajectory: GateTrajectory, path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "sigma", "part", "own_expert", "global_expert"])
        for s, sigma in enumerate(trajectory.sigmas):
            for r, part in enumerate(trajectory.parts):
                writer.writerow([s, f"{sigma:.4f}", part, trajectory.own[s, r], trajectory.global_[s, r]])
