"""Weights of the official Face-MoGLE release, converted to our modules.

Key layout of the official MoGLE state dict (github.com/XavierJiezou/Face-MoGLE, src/moe/mogle.py):
    global_expert.net.{0,2}.{weight,bias}          Linear(64, 32), Linear(32, 64)
    local_experts.{i}.net.{0,2}.{weight,bias}      i = 0..18, same shapes
    gating.timestep_embedding.linear_{1,2}.{weight,bias}   Linear(64, 64) x 2
    gating.noise_proj.{weight,bias}                Linear(64, 64)
    gating.gate.{0,2}.{weight,bias}                Linear(64, 64), Linear(64, 20)
(`gating.time_proj` is a parameter-free sinusoidal embedding.) The released LoRA is a diffusers FLUX
LoRA file: load it with facemogle.lora.load_lora.

Timestep conventions. Our MoGLE embeds `t * time_scale` for the noise level t in [0, 1]. The official
code feeds its gate two different values for the same noise level:
    sampler   src/flux/generate.py calls `mogle(condition_latents, latents, t)` once per step with t from
              the scheduler's `timesteps`, i.e. sigma * 1000, while the transformer gets timestep / 1000.
              Every published image and number was made this way: time_scale=1000.
    training  src/train/model.py passes the same t = sigmoid(randn) in [0, 1] to the gate and to the
              transformer: time_scale=1.
`load_official_mogle` defaults to "sampler", which reproduces the released weights' outputs; "training"
gives the gate the inputs it was trained on, for fine-tuning from the release with our training loop
(which, like our sampler, feeds the gate the same t as the transformer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from facemogle.data_only import load_data, load_tensors
from facemogle.face_parts import NUM_PARTS
from facemogle.mogle import MoGLE, MoGLEConfig

OfficialConvention = Literal["sampler", "training"]
OFFICIAL_TIME_SCALES: dict[str, float] = {"sampler": 1000.0, "training": 1.0}
OFFICIAL_TOKEN_DIM, OFFICIAL_EXPERT_HIDDEN = 64, 32  # the official MoGLE()'s defaults
OFFICIAL_RENAMES = {  # the official gate's modules -> ours
    "gating.timestep_embedding.linear_1": "gate.time_embed.linear_1",
    "gating.timestep_embedding.linear_2": "gate.time_embed.linear_2",
    "gating.noise_proj": "gate.noise_proj",
    "gating.gate.0": "gate.mlp.0",
    "gating.gate.2": "gate.mlp.2",
}


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """safetensors, or a torch checkpoint read with weights_only=True (never arbitrary pickle)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        return load_tensors(path)
    state = load_data(path, map_location="cpu")
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return state


def convert_official_mogle(official: dict[str, torch.Tensor], config: MoGLEConfig) -> dict[str, torch.Tensor]:
    """Map the official keys onto MoGLE's state dict (experts stacked, Linear weights transposed)."""
    if (config.gate, config.experts, config.expert_set) != ("dynamic", "mlp", "all"):
        raise ValueError("official MoGLE weights are for gate=dynamic, experts=mlp, expert_set=all")
    experts = ["global_expert"] + [f"local_experts.{i}" for i in range(NUM_PARTS)]

    def take(key: str) -> torch.Tensor:
        if key not in official:
            raise ValueError(f"official MoGLE state dict lacks key {key!r}")
        return official[key]

    def stack(suffix: str) -> list[torch.Tensor]:
        """One parameter of every expert, each the global expert's shape (else torch.stack's error)."""
        tensors = [take(f"{e}.{suffix}") for e in experts]
        for e, t in zip(experts, tensors, strict=True):
            if t.shape != tensors[0].shape:
                raise ValueError(
                    f"official MoGLE key {e}.{suffix} has shape {tuple(t.shape)}, {experts[0]}.{suffix} "
                    f"has {tuple(tensors[0].shape)}"
                )
        return tensors

    out = {
        "experts.w1": torch.stack([t.T for t in stack("net.0.weight")]),
        "experts.b1": torch.stack(stack("net.0.bias")),
        "experts.w2": torch.stack([t.T for t in stack("net.2.weight")]),
        "experts.b2": torch.stack(stack("net.2.bias")),
    }
    renames = OFFICIAL_RENAMES
    for old, new in renames.items():
        for p in ("weight", "bias"):
            out[f"{new}.{p}"] = take(f"{old}.{p}")
    used = {f"{e}.net.{i}.{p}" for e in experts for i in (0, 2) for p in ("weight", "bias")}
    used |= {f"{old}.{p}" for old in renames for p in ("weight", "bias")}
    unexpected = sorted(set(official) - used)
    if unexpected:
        raise ValueError(f"official MoGLE state dict has unexpected keys: {unexpected[:5]}")
    return out


def official_class_problem(config: MoGLEConfig) -> str | None:
    """Why the official MoGLE class cannot hold a MoGLE of this config (None: it can). The official class is
    built with its defaults (src/moe/mogle.py, MoGLE()): 20 MLP experts Linear(64, 32), ReLU, Linear(32, 64)
    and the dynamic gate; its sampler feeds the gate sigma x 1000."""
    for key, value, official in (
        ("gate", config.gate, "dynamic"),
        ("experts", config.experts, "mlp"),
        ("expert_set", config.expert_set, "all"),
        ("token_dim", config.token_dim, OFFICIAL_TOKEN_DIM),
        ("expert_hidden", config.expert_hidden, OFFICIAL_EXPERT_HIDDEN),
        ("time_scale", config.time_scale, OFFICIAL_TIME_SCALES["sampler"]),
    ):
        if value != official:
            return f"model.mogle.{key}={value!r}, the official MoGLE class holds {key} {official!r} only"
    return None


def to_official_mogle(state: dict[str, torch.Tensor], config: MoGLEConfig) -> dict[str, torch.Tensor]:
    """MoGLE's state dict -> the official class's (the inverse of convert_official_mogle)."""
    problem = official_class_problem(config)
    if problem:
        raise ValueError(problem)
    experts = ["global_expert"] + [f"local_experts.{i}" for i in range(NUM_PARTS)]
    out = {}
    for i, e in enumerate(experts):
        out[f"{e}.net.0.weight"] = state["experts.w1"][i].T
        out[f"{e}.net.0.bias"] = state["experts.b1"][i]
        out[f"{e}.net.2.weight"] = state["experts.w2"][i].T
        out[f"{e}.net.2.bias"] = state["experts.b2"][i]
    for old, new in OFFICIAL_RENAMES.items():
        for p in ("weight", "bias"):
            out[f"{old}.{p}"] = state[f"{new}.{p}"]
    return {k: v.detach().cpu().contiguous().clone() for k, v in out.items()}


def load_official_mogle(
    path: str | Path,
    token_dim: int = 64,
    expert_hidden: int = 32,
    convention: OfficialConvention = "sampler",
) -> MoGLE:
    """Build a MoGLE matching the official release and load its weights, every shape checked.

    convention: "sampler" (time_scale 1000, as the official generate() drives the gate) or "training"
    (time_scale 1, the official training's inputs); see the module docstring."""
    if convention not in OFFICIAL_TIME_SCALES:
        raise ValueError(
            f"load_official_mogle({str(path)!r}): convention={convention!r}, expected one of "
            f"{sorted(OFFICIAL_TIME_SCALES)}"
        )
    config = MoGLEConfig(
        token_dim=token_dim, expert_hidden=expert_hidden, time_scale=OFFICIAL_TIME_SCALES[convention]
    )
    mogle = MoGLE(config)
    state = read_state_dict(path)  # its own errors name the file
    try:
        converted = convert_official_mogle(state, config)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    expected = mogle.state_dict()
    for key, value in converted.items():
        if value.shape != expected[key].shape:
            name, shape, wanted = _as_in_file(key, value, expected[key])
            raise ValueError(
                f"{path}: key {name} has shape {shape}, MoGLE(token_dim={token_dim}, "
                f"expert_hidden={expert_hidden}) expects {wanted} (its {key})"
            )
    mogle.load_state_dict(converted, strict=True)
    return mogle


_EXPERT_KEYS = {
    "experts.w1": "net.0.weight",
    "experts.b1": "net.0.bias",
    "experts.w2": "net.2.weight",
    "experts.b2": "net.2.bias",
}


def _as_in_file(key: str, value: torch.Tensor, expected: torch.Tensor) -> tuple[str, tuple, tuple]:
    """Our key -> the official key it came from, with its shape and the one expected, as the file holds them
    (an expert stack's first expert, Linear weights transposed back)."""
    if key in _EXPERT_KEYS:
        first, wanted = (value[0].T, expected[0].T) if key.endswith(("w1", "w2")) else (value[0], expected[0])
        return f"global_expert.{_EXPERT_KEYS[key]}", tuple(first.shape), tuple(wanted.shape)
    module, _, param = key.rpartition(".")
    official = {ours: theirs for theirs, ours in OFFICIAL_RENAMES.items()}[module]
    return f"{official}.{param}", tuple(value.shape), tuple(expected.shape)
