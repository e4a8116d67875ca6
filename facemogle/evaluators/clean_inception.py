"""FID / KID features in clean-fid's protocol (clean-fid 0.1.35, mode "clean"), without its package.

clean-fid needs torchvision, which breaks transformers on the CPU torch wheel, so its feature path is
reproduced here from its definition:
    1. the image as uint8 (b, H, W, 3): generated floats in [0, 1] are rounded, as a saved file stores them
    2. each channel resized to 299 x 299 by PIL bicubic in float mode ("F"), clipped to [0, 255]
    3. (x - 128) / 128 and the torchscript Inception's `layers` module: (b, 2048) pool features
The network is NVIDIA's torchscript port of the TF Inception, `inception-2015-12-05.pt`, the file clean-fid
downloads. `TinyInception` is a module with the same interface (`layers`, and forward(img, return_features)
taking [0, 255] images at any size), scripted and saved as that file for tests and the embedded default.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from facemogle.evaluators.common import require_file, to_uint8

INCEPTION_TORCHSCRIPT = "inception-2015-12-05.pt"
INCEPTION_TORCHSCRIPT_URL = (
    "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
)
CLEAN_INCEPTION_HINT = (
    f"clean-fid's FID / KID use NVIDIA's torchscript Inception: download {INCEPTION_TORCHSCRIPT_URL} on a "
    f"machine with internet access to e.g. checkpoints/inception/{INCEPTION_TORCHSCRIPT} and pass its path"
)
CLEAN_SIZE = 299


def clean_resize(images: np.ndarray, size: int = CLEAN_SIZE) -> torch.Tensor:
    """(b, H, W, 3) uint8 -> (b, 3, size, size) float32 in [0, 255]: clean-fid's PIL bicubic resize, each
    channel as a float image."""
    out = np.empty((images.shape[0], 3, size, size), dtype=np.float32)
    for i, image in enumerate(images):
        for c in range(3):
            channel = Image.fromarray(image[:, :, c].astype(np.float32))
            out[i, c] = np.asarray(channel.resize((size, size), resample=Image.BICUBIC)).clip(0, 255)
    return torch.from_numpy(out)


class CleanInceptionFeatures(nn.Module):
    """forward(images (b, 3, H, W) in [0, 1]) -> (b, num_features) float32, clean-fid's features."""

    def __init__(self, network: torch.jit.ScriptModule):
        super().__init__()
        self.network = network.eval()
        with torch.no_grad():
            probe = self.network.layers(torch.zeros(1, 3, CLEAN_SIZE, CLEAN_SIZE))
        self.num_features = int(probe.numel())

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = clean_resize(to_uint8(images)).to(images.device)
        features = self.network.layers((pixels - 128) / 128)
        return features.reshape(images.shape[0], -1).float()

    @property
    def preprocessing(self) -> str:
        return (
            "uint8 (rounded), each channel PIL bicubic in float mode to 299x299, clipped to [0, 255], "
            "(x-128)/128, torchscript Inception `layers` (pool features)"
        )


def load_clean_inception(path: str | Path | None) -> CleanInceptionFeatures:
    """NVIDIA's torchscript Inception from a local file, or from a directory holding inception-2015-12-05.pt."""
    if path is not None and Path(path).is_dir():
        path = Path(path) / INCEPTION_TORCHSCRIPT
    path = require_file(path, "torchscript Inception", CLEAN_INCEPTION_HINT)
    network = torch.jit.load(str(path), map_location="cpu")
    if not hasattr(network, "layers"):
        raise ValueError(
            f"{path}: not clean-fid's torchscript Inception (no `layers` module); {CLEAN_INCEPTION_HINT}"
        )
    return CleanInceptionFeatures(network)


class TinyInception(nn.Module):
    """The torchscript Inception's interface at a small size, random weights: `layers` maps (b, 3, 299, 299)
    in [-1, 1] to (b, num_features, 1, 1); forward takes [0, 255] images, resizes them to 299 (bilinear,
    as the NVIDIA module does) and returns the features, or class probabilities."""

    def __init__(self, num_features: int = 2048, width: int = 16, classes: int = 1008):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(3, width, kernel_size=8, stride=8),
            nn.ReLU(),
            nn.Conv2d(width, num_features, kernel_size=3, stride=2),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.output = nn.Linear(num_features, classes)
        for conv in (self.layers[0], self.layers[2]):  # He init: random features keep the input's scale
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
        self.size = CLEAN_SIZE  # an attribute: TorchScript cannot read a module-level constant

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        if img.shape[2] != self.size or img.shape[3] != self.size:
            img = F.interpolate(img, size=(self.size, self.size), mode="bilinear", align_corners=False)
        features = self.layers((img - 128) / 128).flatten(1)
        if return_features:
            return features
        return self.output(features).softmax(1)


def save_tiny_inception(path: str | Path, num_features: int = 2048, seed: int = 0) -> Path:
    """A scripted TinyInception (seeded random weights) saved as a torchscript file, like the real one."""
    torch.manual_seed(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.script(TinyInception(num_features).eval()).save(str(path))
    return path
