"""MoGLE's gate read per face region: the mean weight the image tokens of a region give each expert.

The generation-metrics callback draws it as gate maps during training; the ablation plots the full
model's gate over the sampling steps. Pure functions of tensors.

Legend: b faces, s sampling steps, l image tokens, e experts (20: global, then one per part), p parts (19).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from facemogle.face_parts import NUM_CONDITION_MAPS, NUM_PARTS, PARTS

GLOBAL_EXPERT = 0  # the global colour map's expert; part p's local expert is 1 + p (facemogle.face_parts)


def token_regions(labels: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """labels (b, H, W) -> (b, l) the part under each packed image token (nearest), l = num_tokens."""
    h_img, w_img = labels.shape[-2:]
    h = int(round((num_tokens * h_img / w_img) ** 0.5))
    w = num_tokens // max(h, 1)
    if h * w != num_tokens:
        raise ValueError(f"{num_tokens} tokens do not tile a {h_img}x{w_img} mask")
    grid = F.interpolate(labels[:, None].float(), size=(h, w), mode="nearest")[:, 0].long()
    return grid.flatten(1)


def region_gate_weights(gate_weights: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """gate_weights: per step (b, l, e); labels (b, H, W) -> (b, s, p, e) mean weight per region
    (nan where the region has no token)."""
    weights = torch.stack([g.float() for g in gate_weights], dim=1)  # (b, s, l, e)
    regions = token_regions(labels.to(weights.device), weights.shape[2])  # (b, l)
    onehot = F.one_hot(regions, NUM_PARTS).float()  # (b, l, p)
    sums = torch.einsum("bsle,blp->bspe", weights, onehot)  # (b, s, p, e)
    counts = onehot.sum(1)[:, None, :, None]  # (b, 1, p, 1)
    return torch.where(counts > 0, sums / counts.clamp_min(1), torch.full_like(sums, float("nan")))


@dataclass
class OwnAndGlobal:
    parts: list[str]  # the regions present in at least one face, in PARTS order
    own: torch.Tensor  # (s, r) mean weight of a region's tokens on the region's own local expert
    global_: torch.Tensor  # (s, r) ... on the global expert


def own_and_global(region_weights: torch.Tensor) -> OwnAndGlobal:
    """region_weights (b, s, p, e) over all 20 experts -> their mean over the faces where each region
    is present, on the region's own expert and on the global one."""
    if region_weights.shape[-1] != NUM_CONDITION_MAPS:
        raise ValueError(
            f"gate over {region_weights.shape[-1]} experts: own and global weights need all {NUM_CONDITION_MAPS}"
        )
    mean = region_weights.nanmean(0)  # (s, p, e); nan for regions in no face
    present = [p for p in range(NUM_PARTS) if not mean[:, p].isnan().all()]
    own = torch.stack([mean[:, p, 1 + p] for p in present], dim=1)
    return OwnAndGlobal([PARTS[p] for p in present], own, mean[:, present, GLOBAL_EXPERT])


def stacked_weights(gate_weights: list[torch.Tensor], batch: int, num_tokens: int) -> torch.Tensor:
    """Per step (b, l, e), (b, 1, e) or (1, 1, e) as MoGLE applies them -> (b, s, l, e), each token's weights
    divided by their sum: the share of each expert (a gate-less sum of e experts gives each 1 / e)."""
    steps = [g.float().expand(batch, num_tokens, g.shape[-1]) for g in gate_weights]
    weights = torch.stack(steps, dim=1)
    return weights / weights.sum(-1, keepdim=True).clamp_min(1e-12)


@dataclass
class GateUsage:
    """Over the faces: how the gate spreads the image tokens over the experts, per sampling step."""

    load: torch.Tensor  # (s, e) mean share of each expert over every token
    entropy: torch.Tensor  # (s,) mean per-token entropy of the shares (nats; log e when even)
    region_weights: (
        torch.Tensor
    )  # (s, p, e) mean share per face region, over the faces that have it (nan: none)
    region_entropy: torch.Tensor  # (s, p) mean per-token entropy per face region (nan: in no face)


def gate_usage(weights: torch.Tensor, labels: torch.Tensor) -> GateUsage:
    """weights (b, s, l, e) from `stacked_weights`; labels (b, H, W) the faces' label maps."""
    entropy = -(weights * weights.clamp_min(1e-12).log()).sum(-1)  # (b, s, l)
    steps = range(weights.shape[1])
    regions = region_gate_weights([weights[:, s] for s in steps], labels)  # (b, s, p, e)
    region_entropy = region_gate_weights([entropy[:, s, :, None] for s in steps], labels)[..., 0]  # (b, s, p)
    return GateUsage(
        weights.mean((0, 2)), entropy.mean((0, 2)), regions.nanmean(0), region_entropy.nanmean(0)
    )


def own_expert_weights(
    gate_weights: torch.Tensor, labels: torch.Tensor, expert_indices: Sequence[int]
) -> torch.Tensor:
    """gate_weights (b, s, l, e) over the active experts (`expert_indices`: their condition maps), labels
    (b, H, W) -> (b, l): each token's weight on its own region's local expert, averaged over the steps (on
    the global expert where the model has no local one)."""
    slot = torch.full((NUM_CONDITION_MAPS,), -1, dtype=torch.long)
    slot[torch.as_tensor(list(expert_indices))] = torch.arange(len(expert_indices))
    slot = torch.where(slot < 0, slot[GLOBAL_EXPERT], slot)  # global-only: every token its one expert
    own = slot[1 + token_regions(labels.cpu(), gate_weights.shape[2])]  # (b, l)
    weights = gate_weights.float().mean(1)  # (b, l, e)
    return weights.gather(-1, own.to(weights.device)[..., None])[..., 0]
