"""Generation metrics as torchmetrics `Metric`s: FID / KID on shared features, CMMD, mask consistency (ours,
suite.py); Face-MoGLE's own evaluation: clean-fid FID / KID, the DINO structure distance, mean scores
(the CLIP text score, ImageReward), bundled in paper.py."""

from facemogle.metrics.clean_fid import CleanFidKid, fid_from_features, kernel_distance
from facemogle.metrics.cmmd import CMMD, gaussian_mmd2
from facemogle.metrics.mask import MaskConsistency, per_image_iou
from facemogle.metrics.paper import PAPER_COLUMNS, PaperMetrics, PaperReal, build_paper_metrics
from facemogle.metrics.quality import FeatureFID, FeatureKID, PrecomputedFeatures
from facemogle.metrics.scores import MeanScore
from facemogle.metrics.structure import DinoStructureDistance
from facemogle.metrics.suite import (
    PAPER_METRICS,
    GenerationMetrics,
    MetricsConfig,
    RealFeatures,
    build_generation_metrics,
)

__all__ = [
    "CMMD",
    "PAPER_COLUMNS",
    "PAPER_METRICS",
    "CleanFidKid",
    "DinoStructureDistance",
    "MeanScore",
    "PaperMetrics",
    "PaperReal",
    "build_paper_metrics",
    "fid_from_features",
    "kernel_distance",
    "FeatureFID",
    "FeatureKID",
    "GenerationMetrics",
    "MaskConsistency",
    "MetricsConfig",
    "PrecomputedFeatures",
    "RealFeatures",
    "build_generation_metrics",
    "gaussian_mmd2",
    "per_image_iou",
]
