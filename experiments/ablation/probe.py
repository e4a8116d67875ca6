"""What the evaluation does not read from a run's samples: the gate's expert usage and the attribute accuracy.

`probe_run` samples the test split's first n faces as experiments.evaluation.run does (the same faces, captions
and seeds: item i from seed i, so the images are the evaluation's first n) and returns, as JSON-ready dicts:

    {"n", "sample": {...}, "modes": {mode: {"attributes": {attribute: {accuracy, n, chance}} | null}},
     "gate": {"experts", "parts", "sigmas", "load" (s, e), "entropy" (s,), "region_weights" (s, p, e),
              "region_entropy" (s, p)} | null}

The gate entries come from the first mode with a mask (facemogle.gate_analysis.gate_usage); nan is null.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from experiments.ablation.attributes import AttributeScorer
from experiments.evaluation.run import run_sample_settings, split_faces
from experiments.runs.io import load_run
from facemogle.face_parts import PARTS
from facemogle.gate_analysis import gate_usage, stacked_weights
from facemogle.sampling import mode_inputs, sample

PROBE = "probe.json"  # in the run directory, or a sweep point's
EXPERT_NAMES = ("global", *PARTS)  # condition map i's expert, as facemogle.mogle orders them


@dataclass
class ProbeSettings:
    n: int | None = None  # the test split's first n faces; None: all
    modes: tuple[str, ...] = ("text+mask",)
    sample_steps: int | None = None  # None: the run's train.sample.steps
    text_only_condition: str | None = None  # None: the run's
    overrides: list[str] = field(default_factory=list)  # of the run's config (the guidance sweep's scales)
    batch_size: int = 8


@torch.no_grad()
def probe_run(run_dir: str | Path, settings: ProbeSettings, scorer: AttributeScorer | None) -> dict:
    run = load_run(run_dir, settings.overrides)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    run.backbone.to(device)
    run.denoiser.to(device)
    sampling = run_sample_settings(run, settings.sample_steps, settings.text_only_condition)
    data = run.config.data
    records, faces = split_faces(data, "test", settings.n)
    result = {"n": len(faces), "sample": vars(sampling), "modes": {}, "gate": None}
    for mode in settings.modes:
        images, gates = [], []
        for start in range(0, len(faces), settings.batch_size):
            part = faces[start : start + settings.batch_size]
            out = sample(
                run.backbone,
                run.denoiser,
                *mode_inputs(mode, part.captions, part.labels.to(device)),
                height=data.resolution,
                width=data.resolution,
                settings=sampling,
                seed=start,
            )
            images.append(out.images.cpu())
            if "mask" in mode and out.gate_weights:
                gates.append(stacked_weights(out.gate_weights, len(part), _tokens(run, data)))
                result["sigmas"] = out.sigmas.float().tolist()
        keys = [r.key for r in records]
        attributes = scorer.score(torch.cat(images), keys) if scorer is not None else None
        result["modes"][mode] = {"attributes": attributes}
        if gates and result["gate"] is None:
            result["gate"] = _gate_summary(
                torch.cat(gates), faces.labels, run.config.model.mogle.expert_indices
            )
            result["gate"]["sigmas"] = result.pop("sigmas")
    result.pop("sigmas", None)
    return result


def _tokens(run, data) -> int:
    """Image tokens of a sample: (resolution / VAE factor / 2)^2 (FLUX packs 2 x 2 latents)."""
    side = data.resolution // run.backbone.vae_scale_factor // 2
    return side * side


def _gate_summary(weights: torch.Tensor, labels: torch.Tensor, expert_indices: list[int]) -> dict:
    usage = gate_usage(weights, labels)
    return {
        "experts": [EXPERT_NAMES[i] for i in expert_indices],
        "parts": list(PARTS),
        "load": _json(usage.load),
        "entropy": _json(usage.entropy),
        "region_weights": _json(usage.region_weights),
        "region_entropy": _json(usage.region_entropy),
    }


def _json(t: torch.Tensor):
    """A tensor as nested lists, nan as None (JSON has no nan)."""
    return _nan_to_none(t.tolist())


def _nan_to_none(value):
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return None if math.isnan(value) else value
