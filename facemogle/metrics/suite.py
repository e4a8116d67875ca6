"""All of the paper's generation metrics on one stream of (generated image, caption, input mask).

    fid, kid        FID / KID on the features of `features` (Inception, or the small CLIP's image tower)
    cmmd            CMMD on the CLIP's image embeddings
    clip_score      torchmetrics' CLIPScore between each image and its caption, with the same CLIP
    mask_miou,      the face parser's labels of each generated image against its input mask
    pixel_acc,
    iou/{part}

Real-image features go in once (`update_real`) and survive `reset()`, which clears generated images only.
Every state syncs across DDP ranks in `compute()`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.multimodal.clip_score import CLIPScore

from facemogle.evaluators import (
    ClipEmbedder,
    EvaluatorConfig,
    FaceParser,
    build_feature_extractor,
    load_clip,
    load_face_parser,
)
from facemogle.face_parts import PARTS
from facemogle.metrics.cmmd import CMMD
from facemogle.metrics.mask import MaskConsistency
from facemogle.metrics.quality import FeatureFID, FeatureKID

PAPER_METRICS = ("fid", "kid", "cmmd", "clip_score", "mask_miou", "pixel_acc")


@dataclass
class MetricsConfig:
    kid_subsets: int = 100
    kid_subset_size: int = 1000  # capped at the number of samples
    seed: int = 0  # KID's subset draws


@dataclass
class RealFeatures:
    """What the real images contribute, cacheable per data set: (n, d) features and (n, p) CLIP embeddings."""

    features: torch.Tensor
    clip: torch.Tensor | None


class GenerationMetrics(nn.Module):
    """Any of clip / parser may be None: the metrics needing it are then left out."""

    def __init__(
        self,
        features: nn.Module,
        clip: ClipEmbedder | None = None,
        parser: FaceParser | None = None,
        config: MetricsConfig | None = None,
    ):
        super().__init__()
        config = config or MetricsConfig()
        if not isinstance(getattr(features, "num_features", None), int):
            raise ValueError(
                f"feature extractor {type(features).__name__} must declare an int `num_features`"
            )
        self.features, self.clip, self.parser = features, clip, parser
        d = features.num_features
        self.fid = FeatureFID(d)
        self.kid = FeatureKID(
            d, subsets=config.kid_subsets, subset_size=config.kid_subset_size, seed=config.seed
        )
        self.cmmd = CMMD() if clip is not None else None
        self.clip_score = (
            CLIPScore(model_name_or_path=clip.clip_score_factory()) if clip is not None else None
        )
        self.mask = MaskConsistency() if parser is not None else None
        for module in (features, clip, parser):
            if module is not None:
                module.requires_grad_(False).eval()

    @property
    def num_real(self) -> int:
        return self.fid.num_real

    @torch.no_grad()
    def extract_real(self, images: torch.Tensor) -> RealFeatures:
        """images (b, 3, H, W) in [0, 1] -> their features, to pass to `add_real` (now or from a cache)."""
        return RealFeatures(self.features(images), self.clip(images) if self.clip is not None else None)

    def add_real(self, real: RealFeatures) -> None:
        self.fid.update(real.features, real=True)
        self.kid.update(real.features, real=True)
        if self.cmmd is not None:
            if real.clip is None:
                raise ValueError("real features lack CLIP embeddings, which CMMD needs")
            self.cmmd.update(real.clip, real=True)

    def update_real(self, images: torch.Tensor) -> None:
        self.add_real(self.extract_real(images))

    @torch.no_grad()
    def update(self, images: torch.Tensor, captions: list[str] | None, masks: torch.Tensor | None) -> None:
        """images (b, 3, H, W) in [0, 1] generated; captions: b strings; masks (b, h, w) input labels."""
        images = images.float().clamp(0, 1)
        features = self.features(images)
        self.fid.update(features, real=False)
        self.kid.update(features, real=False)
        if self.clip is not None:
            self.cmmd.update(self.clip(images), real=False)
            if captions is not None:
                self.clip_score.update((images * 255).round().to(torch.uint8), list(captions))
        if self.parser is not None and masks is not None:
            target = masks.long()
            if tuple(target.shape[-2:]) != tuple(images.shape[-2:]):
                target = F.interpolate(target[:, None].float(), size=images.shape[-2:], mode="nearest")[
                    :, 0
                ].long()
            self.mask.update(self.parser.parse(images), target)

    def compute(self) -> dict[str, float]:
        """Scalars by name: the PAPER_METRICS available, kid_std, iou/{part} (nan: part never present)."""
        out: dict[str, float] = {"fid": float(self.fid.compute())}
        kid_mean, kid_std = self.kid.compute()
        out.update(kid=float(kid_mean), kid_std=float(kid_std))
        if self.clip is not None:
            out["cmmd"] = float(self.cmmd.compute())
            if int(self.clip_score.n_samples) > 0:
                out["clip_score"] = float(self.clip_score.compute())
        if self.mask is not None and int(self.mask.images) > 0:
            scores = self.mask.compute()
            out.update(mask_miou=float(scores["miou"]), pixel_acc=float(scores["pixel_acc"]))
            out.update(
                {f"iou/{part}": float(v) for part, v in zip(PARTS, scores["per_class_iou"], strict=True)}
            )
        return out

    def reset(self) -> None:
        """Forget generated images; real features stay."""
        for metric in (self.fid, self.kid, self.cmmd, self.clip_score, self.mask):
            if metric is not None:
                metric.reset()


def build_generation_metrics(
    evaluators: EvaluatorConfig | None = None, config: MetricsConfig | None = None
) -> GenerationMetrics:
    """Load the evaluator models named by `evaluators` and bundle them (on the CPU; move as needed)."""
    evaluators = evaluators or EvaluatorConfig()
    clip = load_clip(evaluators.clip_path) if evaluators.clip_path else None
    parser = (
        load_face_parser(evaluators.parser_path, evaluators.parser_label_order)
        if evaluators.parser_path
        else None
    )
    features = build_feature_extractor(evaluators.features, clip, evaluators.inception_path)
    return GenerationMetrics(features, clip=clip, parser=parser, config=config)
