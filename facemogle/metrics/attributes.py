"""Attribute accuracy of faces from their colours: is the hair the colour the caption asks for, are the lips
painted as it says.

A face parser finds the regions; each attribute reads one colour feature from them, and a nearest-class-mean
classifier (each feature dimension divided by its spread) names the attribute. The class means are fit on
real faces whose attributes are known (the synthetic set's attributes.json), so the measurement needs no
colour constants of its own. Both attributes are ones a caption states and a mask cannot carry, so in the
text+mask mode they measure how much of the text survives the mask.

    hair_color  the median RGB of the hair pixels
    lipstick    the lips' green / red ratio less the skin's: unpainted lips are a darker skin tone, painted
                ones far redder than the skin, whatever the skin tone

Legend: b faces, f feature dimensions, k classes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from facemogle.face_parts import PART_INDEX

MIN_PIXELS = 3  # fewer pixels of a region: no feature (the attribute counts as missed)


def region_median(images: torch.Tensor, parse: torch.Tensor, parts: tuple[str, ...]) -> torch.Tensor:
    """images (b, 3, H, W), parse (b, H, W) part labels -> (b, 3) median colour over the parts' pixels, nan
    where the parse has fewer than MIN_PIXELS of them."""
    wanted = torch.tensor([PART_INDEX[p] for p in parts], device=parse.device)
    out = torch.full((images.shape[0], 3), float("nan"))
    for i, (image, labels) in enumerate(zip(images.float(), parse, strict=True)):
        inside = torch.isin(labels, wanted)
        if int(inside.sum()) >= MIN_PIXELS:
            out[i] = image[:, inside].median(dim=1).values.cpu()
    return out


def hair_color_feature(images: torch.Tensor, parse: torch.Tensor) -> torch.Tensor:
    return region_median(images, parse, ("hair",))  # (b, 3)


def lipstick_feature(images: torch.Tensor, parse: torch.Tensor) -> torch.Tensor:
    lips, skin = region_median(images, parse, ("u_lip", "l_lip")), region_median(images, parse, ("skin",))
    green_red = lambda c: c[:, 1] / c[:, 0].clamp_min(1e-3)  # noqa: E731
    return (green_red(lips) - green_red(skin))[:, None]  # (b, 1)


FEATURES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "hair_color": hair_color_feature,
    "lipstick": lipstick_feature,
}


@dataclass
class NearestMean:
    """Nearest class mean, each feature dimension divided by its standard deviation over the fit data."""

    classes: list[str]
    means: torch.Tensor  # (k, f)
    scale: torch.Tensor  # (f,)

    @classmethod
    def fit(cls, features: torch.Tensor, labels: list[str | None]) -> NearestMean:
        """features (b, f); labels None (no target) or with a nan feature are left out."""
        keep = [i for i, y in enumerate(labels) if y is not None and not features[i].isnan().any()]
        classes = sorted({labels[i] for i in keep})
        if len(classes) < 2:
            raise ValueError(f"an attribute classifier needs faces of two classes at least, got {classes}")
        x = features[keep].double()
        means = torch.stack([x[[j for j, i in enumerate(keep) if labels[i] == c]].mean(0) for c in classes])
        return cls(classes, means, x.std(0).clamp_min(1e-6))

    def predict(self, features: torch.Tensor) -> list[str | None]:
        """(b, f) -> the nearest class of each face; None where its feature is nan."""
        distance = (((features.double()[:, None] - self.means[None]) / self.scale) ** 2).sum(-1)  # (b, k)
        nearest = distance.argmin(-1)
        return [
            None if d.isnan().any() else self.classes[j]
            for d, j in zip(distance, nearest.tolist(), strict=True)
        ]


@dataclass
class Accuracy:
    accuracy: float  # nan without targets
    n: int  # faces with a target
    chance: float  # expected accuracy of the same predictions against the targets shuffled

    def as_dict(self) -> dict:
        return {"accuracy": self.accuracy, "n": self.n, "chance": self.chance}


def accuracy(predicted: list[str | None], targets: list[str | None]) -> Accuracy:
    """Over the faces with a target; a face without a prediction (no region found) counts as wrong. chance:
    sum over classes of (share of targets) x (share of predictions), what a permutation scores on average."""
    pairs = [(p, t) for p, t in zip(predicted, targets, strict=True) if t is not None]
    if not pairs:
        return Accuracy(float("nan"), 0, float("nan"))
    n = len(pairs)
    hits = sum(p == t for p, t in pairs)
    classes = {t for _, t in pairs}
    chance = sum(sum(t == c for _, t in pairs) * sum(p == c for p, _ in pairs) for c in classes) / n**2
    return Accuracy(hits / n, n, chance)
