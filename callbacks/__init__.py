"""Lightning callbacks: generation metrics, sample grids and gate maps during training."""

from callbacks.generation_eval import (
    EvalSubsetSource,
    GenerationEvalConfig,
    GenerationEvaluator,
    Generator,
    log_images,
)

__all__ = [
    "EvalSubsetSource",
    "GenerationEvalConfig",
    "GenerationEvaluator",
    "Generator",
    "log_images",
]
