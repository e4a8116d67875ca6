"""Which evaluator models a run is scored with, and the FID/KID feature extractor they give."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from facemogle.evaluators.clip import CLIP_HINT, ClipEmbedder
from facemogle.evaluators.inception import load_inception
from facemogle.evaluators.parser import LABEL_ORDERS

FEATURE_EXTRACTORS = ("inception", "clip")


@dataclass
class EvaluatorConfig:
    """Where the evaluator models are; None: the metrics that need one are left out. Synthetic data: the
    small ones shipped in checkpoints/evaluators/synthetic (clip/, parser/; `make evaluators` rebuilds them).
    Real data:
    features="inception" with inception_path, clip_path a CLIP directory (e.g. openai/clip-vit-large-patch14),
    parser_path a SegFormer face parser (with parser_label_order if its classes are in another order)."""

    clip_path: str | None = None  # None: no CLIP score / CMMD
    parser_path: str | None = None  # None: no mask consistency
    parser_label_order: str | None = None  # None (id2label names) | a key of parser.LABEL_ORDERS
    features: str = "clip"  # FID / KID features: "clip" (clip_path's image tower) | "inception"
    inception_path: str | None = None  # features="inception": pt_inception-2015-12-05-6726825d.pth

    def __post_init__(self) -> None:
        if self.features not in FEATURE_EXTRACTORS:
            raise ValueError(f"evaluators.features={self.features!r}: expected one of {FEATURE_EXTRACTORS}")
        if self.parser_label_order is not None and self.parser_label_order not in LABEL_ORDERS:
            raise ValueError(
                f"evaluators.parser_label_order={self.parser_label_order!r}: expected one of {sorted(LABEL_ORDERS)}"
            )


def build_feature_extractor(
    kind: str, clip: ClipEmbedder | None = None, inception_path: str | None = None
) -> nn.Module:
    """FID/KID features: "inception" (the standard, real data) or "clip" (the CLIP image tower)."""
    if kind == "inception":
        return load_inception(inception_path)
    if kind == "clip":
        if clip is None:
            raise ValueError(
                f"evaluators.features='clip' needs a CLIP model (evaluators.clip_path, or --clip): {CLIP_HINT}"
            )
        return clip
    raise ValueError(f"feature extractor {kind!r} is not one of {FEATURE_EXTRACTORS}")


@dataclass
class PaperEvaluatorConfig:
    """The models of Face-MoGLE's own evaluation (src/eval/), by local path; None leaves that column out.
    Real data: inception_path clean-fid's inception-2015-12-05.pt, cmmd_clip_path openai/clip-vit-large-patch14-336,
    text_clip_path openai/clip-vit-base-patch16, dino_path facebook/dino-vitb8, image_reward_path a directory
    with ImageReward-v1.0 (facemogle.evaluators.image_reward). The embedded default ships (paper_evaluators writes)
    small stand-ins of the same classes (facemogle.evaluators.standins)."""

    inception_path: str | None = None  # FID / KID (clean-fid)
    cmmd_clip_path: str | None = None  # CMMD
    text_clip_path: str | None = None  # the text score
    dino_path: str | None = None  # Mask: DINO structure distance
    dino_layer: int | None = None  # None: the last block (11 in ViT-B/8, the official layer)
    dino_splice: bool = False  # also the distance under Splice's preprocessing (224 px, ImageNet mean/std)
    image_reward_path: str | None = None  # IR
    kid_seed: int = 42  # the official evaluation's seed_everything(42)

    def paths(self) -> dict[str, str | None]:
        return {
            "inception": self.inception_path,
            "cmmd_clip": self.cmmd_clip_path,
            "text_clip": self.text_clip_path,
            "dino": self.dino_path,
            "image_reward": self.image_reward_path,
        }
