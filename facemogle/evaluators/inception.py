"""FID's standard Inception-v3 (needs the `gpu` extra: torch-fidelity), weights from a local file."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

# The file torch-fidelity and pytorch-fid both use (the same bytes: sha256 starts with 6726825d).
INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_URLS = (
    f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{INCEPTION_FILE}",
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth",
)
INCEPTION_HINT = (
    f"download {INCEPTION_FILE} ({INCEPTION_URLS[0]}) on a machine with internet access, copy it here "
    f"(e.g. checkpoints/inception/{INCEPTION_FILE}) and pass its path (eval.evaluators.inception_path, "
    "or --inception)"
)


class InceptionFeatures(nn.Module):
    """FID's Inception-v3 pool features (2048) through torchmetrics / torch-fidelity; input [0, 1] floats."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network
        self.num_features = 2048

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network((images.clamp(0, 1) * 255).round().to(torch.uint8)).reshape(images.shape[0], -1)


def load_inception(path: str | Path | None) -> InceptionFeatures:
    if path is None or str(path) == "":
        raise ValueError(f"FID features 'inception' need the Inception weights file: {INCEPTION_HINT}")
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"Inception weights not found at {path}: {INCEPTION_HINT}")
    from torchmetrics.image.fid import NoTrainInceptionV3  # needs torch-fidelity (the `gpu` extra)

    network = NoTrainInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))
    return InceptionFeatures(network)
