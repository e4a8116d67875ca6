"""Generation metrics as torchmetrics `Metric`s: FID / KID on shared features, CMMD, mask consistency."""

from facemogle.metrics.cmmd import CMMD, gaussian_mmd2
from facemogle.metrics.mask import MaskConsistency, per_image_iou
from facemogle.metrics.quality import FeatureFID, FeatureKID, PrecomputedFeatures
from facemogle.metrics.suite import (
    PAPER_METRICS,
    GenerationMetrics,
    MetricsConfig,
    RealFeatures,
    build_generation_metrics,
)

__all__ = [
    "CMMD",
    "PAPER_METRICS",
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
