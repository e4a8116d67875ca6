"""The gate's behaviour per variant, read from each run's probe (experiments.ablation.probe: text+mask
sampling of the first test faces): how the image tokens spread over the experts, per expert, sampling step
and face region, and the entropy of that spread.

    gate_usage.csv     variant, seed, step, sigma, expert, share (mean over the faces' image tokens)
    gate_entropy.csv   variant, seed, step, sigma, region, entropy (nats; log e for an even spread)
    gate_usage.png     expert share per variant; entropy against the sampling step; entropy per region
    gate_weights.png   the full model: the weight a region's tokens give the region's own expert and the
    gate_weights.csv   global one, per sampling step (two heat maps, each scaled to its own maximum)

A variant without a gate sums its experts: each gets 1 / e, the entropy is log e by construction.
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from callbacks.visuals import heat_colors
from experiments.ablation.plots import Series, heatmap, line_chart, side_by_side, stacked
from experiments.ablation.probe import EXPERT_NAMES, PROBE
from experiments.ablation.stats import mean_interval
from experiments.ablation.study import StudySettings, is_finished
from experiments.ablation.variants import VARIANTS
from facemogle.face_parts import PARTS
from facemogle.gate_analysis import own_and_global

CELL = 12  # pixels per heat-map cell of the full model's plot


@dataclass
class GateRecord:
    variant: str
    seed: int
    experts: list[str]
    sigmas: np.ndarray  # (s,)
    load: np.ndarray  # (s, e)
    entropy: np.ndarray  # (s,)
    region_weights: np.ndarray  # (s, p, e), nan where a region is in no face
    region_entropy: np.ndarray  # (s, p)


def _array(values) -> np.ndarray:
    return np.array(values, dtype=np.float64)  # None (JSON for nan) becomes nan


def read_gates(settings: StudySettings) -> list[GateRecord]:
    records = []
    for variant, seed in settings.tasks():
        run_dir = settings.run_dir(variant, seed)
        if not (is_finished(run_dir, settings, variant) and (run_dir / PROBE).is_file()):
            continue
        gate = json.loads((run_dir / PROBE).read_text()).get("gate")
        if gate is None:
            continue
        records.append(
            GateRecord(
                variant,
                seed,
                gate["experts"],
                _array(gate["sigmas"]),
                _array(gate["load"]),
                _array(gate["entropy"]),
                _array(gate["region_weights"]),
                _array(gate["region_entropy"]),
            )
        )
    return records


def _own_share(r: GateRecord) -> float:
    """Mean over the regions present of the weight a region's tokens give the region's own expert."""
    shares = [
        np.nanmean(r.region_weights[:, p, r.experts.index(part)])
        for p, part in enumerate(PARTS)
        if part in r.experts and not np.isnan(r.region_weights[:, p]).all()
    ]
    return float(np.mean(shares)) if shares else math.nan


def _effective_experts(r: GateRecord) -> float:
    """exp(entropy of the mean share): how many experts carry the load, e when even, 1 when one takes all."""
    load = r.load.mean(0)
    return float(np.exp(-(load * np.log(np.clip(load, 1e-12, None))).sum()))


def summary_table(records: list[GateRecord], variants: list[str]) -> list[str]:
    lines = [
        "| Variant | Gate | Experts | Entropy (nats) | Max (log e) | Effective experts | Most used expert "
        "(share) | Global expert share | Own-expert share |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for name in variants:
        found = [r for r in records if r.variant == name]
        if not found:
            continue
        experts = found[0].experts
        load = np.mean([r.load.mean(0) for r in found], axis=0)
        top = int(load.argmax())
        entropy = mean_interval([float(r.entropy.mean()) for r in found]).format("{:.3f}")
        effective = mean_interval([_effective_experts(r) for r in found]).format("{:.2f}")
        global_share = f"{load[experts.index('global')]:.3f}" if "global" in experts else "–"
        own = mean_interval([_own_share(r) for r in found]).format("{:.3f}")
        lines.append(
            f"| {name} | {VARIANTS[name].gate} | {len(experts)} | {entropy} | {math.log(len(experts)):.3f} | "
            f"{effective} | {experts[top]} ({load[top]:.3f}) | {global_share} | {own} |"
        )
    return lines


def usage_figure(records: list[GateRecord], variants: list[str]) -> Image.Image:
    names = [v for v in variants if any(r.variant == v for r in records)]
    share = np.full((len(names), len(EXPERT_NAMES)), np.nan)
    by_region = np.full((len(names), len(PARTS)), np.nan)
    series = []
    for i, name in enumerate(names):
        found = [r for r in records if r.variant == name]
        for j, expert in enumerate(found[0].experts):
            share[i, EXPERT_NAMES.index(expert)] = np.mean([r.load[:, j].mean() for r in found])
        with warnings.catch_warnings():  # a region in no face is nan, as it should be
            warnings.simplefilter("ignore", RuntimeWarning)
            by_region[i] = np.nanmean([np.nanmean(r.region_entropy, 0) for r in found], 0)
        entropy = np.mean([r.entropy for r in found], 0)
        series.append(Series(name, list(range(len(entropy))), entropy.tolist()))
    return stacked(
        [
            heatmap(share, names, list(EXPERT_NAMES), "expert share (mean over tokens, steps and seeds)"),
            side_by_side(
                [
                    line_chart(series, "gate entropy per sampling step", "step (pure noise = 0)", "nats"),
                    heatmap(
                        by_region,
                        names,
                        list(PARTS),
                        "gate entropy per face region (nats)",
                        higher_is_better=False,
                    ),
                ]
            ),
        ]
    )


def write_csvs(records: list[GateRecord], usage: Path, entropy: Path) -> None:
    with usage.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["variant", "seed", "step", "sigma", "expert", "share"])
        for r in records:
            for s, sigma in enumerate(r.sigmas):
                writer.writerows(
                    [r.variant, r.seed, s, f"{sigma:.4f}", e, r.load[s, j]] for j, e in enumerate(r.experts)
                )
    with entropy.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["variant", "seed", "step", "sigma", "region", "entropy"])
        for r in records:
            for s, sigma in enumerate(r.sigmas):
                for p, part in enumerate(PARTS):
                    if not np.isnan(r.region_entropy[s, p]):
                        writer.writerow([r.variant, r.seed, s, f"{sigma:.4f}", part, r.region_entropy[s, p]])


@dataclass
class GateTrajectory:
    sigmas: np.ndarray  # (s,) noise level of each sampling step
    parts: list[str]  # the regions present in the faces, in PARTS order
    own: np.ndarray  # (s, r) mean weight of a region's tokens on the region's own expert
    global_: np.ndarray  # (s, r) ... on the global expert


def full_trajectory(records: list[GateRecord]) -> GateTrajectory | None:
    """The full model's own-expert and global-expert weights per region and step, averaged over its seeds."""
    found = [r for r in records if r.variant == "full" and len(r.experts) == len(EXPERT_NAMES)]
    if not found:
        return None
    with warnings.catch_warnings():  # a region in no face is nan, as it should be
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean([r.region_weights for r in found], 0)  # (s, p, e)
    weights = own_and_global(torch.from_numpy(mean)[None])
    return GateTrajectory(found[0].sigmas, weights.parts, weights.own.numpy(), weights.global_.numpy())


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


def plot(trajectory: GateTrajectory) -> Image.Image:
    """Both heat maps side by side."""
    t = trajectory
    footer = f"sigma {t.sigmas[0]:.2f} -> {t.sigmas[-1]:.2f}"
    return side_by_side(
        [
            _panel(t.own, f"own expert, max {np.nanmax(t.own):.2f}", footer, t.parts),
            _panel(t.global_, f"global expert, max {np.nanmax(t.global_):.2f}", footer, None),
        ],
        gap=0,
    )


def write_csv(trajectory: GateTrajectory, path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "sigma", "part", "own_expert", "global_expert"])
        for s, sigma in enumerate(trajectory.sigmas):
            for r, part in enumerate(trajectory.parts):
                writer.writerow([s, f"{sigma:.4f}", part, trajectory.own[s, r], trajectory.global_[s, r]])
