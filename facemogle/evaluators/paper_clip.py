"""The paper's CLIP metrics with the reference code's own preprocessing, on a `ClipEmbedder` (load_clip).

    ClipTextScore   the official text consistency (Taited/clip-score, OpenAI CLIP ViT-B/16): per image
                    logit_scale.exp() * cos(image, caption); OpenAI's preprocessing: the shorter side resized
                    to the tower's input with PIL bicubic, a centre crop, ToTensor, CLIP's mean / std
    CmmdEmbedding   CMMD's embedding (cmmd-pytorch, CLIP ViT-L/14 at 336 px): the centred square crop resized
                    with PIL bicubic to the tower's input (uint8), / 255, CLIP's mean / std; L2-normalised

Both take float images in [0, 1], rounded to uint8 first as the reference code reads image files. The
real models are transformers directories of openai/clip-vit-base-patch16 and
openai/clip-vit-large-patch14-336; the embedded default uses the small trained CLIP for both (same class).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from facemogle.evaluators.clip import ClipEmbedder
from facemogle.evaluators.common import center_crop, pil_pixels, to_uint8

TEXT_CLIP_HINT = (
    "the paper's text score uses OpenAI CLIP ViT-B/16: `huggingface-cli download openai/clip-vit-base-patch16 "
    "--local-dir checkpoints/clip-vit-base-patch16` on a machine with internet access, then pass that directory"
)
CMMD_CLIP_HINT = (
    "the paper's CMMD uses CLIP ViT-L/14 at 336 px: `huggingface-cli download openai/clip-vit-large-patch14-336 "
    "--local-dir checkpoints/clip-vit-large-patch14-336` on a machine with internet access, then pass that directory"
)


def openai_clip_pixels(images: torch.Tensor, size: int, mean, std) -> torch.Tensor:
    """OpenAI CLIP's `_transform(size)` on the uint8 images: Resize(size, bicubic), CenterCrop(size), ToTensor,
    Normalize; (b, 3, H, W) in [0, 1] -> (b, 3, size, size)."""
    resized = []
    for array in to_uint8(images):
        image = Image.fromarray(array)
        w, h = image.size
        short, long = min(w, h), max(w, h)
        new_long = int(size * long / short)  # torchvision's output size for Resize(int)
        new_w, new_h = (size, new_long) if w <= h else (new_long, size)
        if (new_w, new_h) != (w, h):
            image = image.resize((new_w, new_h), resample=Image.BICUBIC)
        resized.append(center_crop(image, size, size))
    return pil_pixels(resized, mean, std)


def cmmd_pixels(images: torch.Tensor, size: int, mean, std) -> torch.Tensor:
    """cmmd-pytorch's reading of an image file: the centred square crop, PIL bicubic to size x size on the
    uint8 image, / 255, then the processor's normalisation (its bicubic resize to the same size is the identity)."""
    resized = []
    for array in to_uint8(images):
        image = Image.fromarray(array)
        side = min(image.size)
        top, left = (image.height - side) // 2, (image.width - side) // 2
        image = image.crop((left, top, left + side, top + side))
        resized.append(image.resize((size, size), resample=Image.BICUBIC))
    return pil_pixels(resized, mean, std)


class ClipTextScore(nn.Module):
    """forward(images (b, 3, H, W) in [0, 1], captions) -> (b,) logit_scale.exp() * cosine similarity."""

    def __init__(self, clip: ClipEmbedder):
        super().__init__()
        self.clip = clip.eval()
        self.image_size = clip.image_size

    @torch.no_grad()
    def forward(self, images: torch.Tensor, captions: list[str]) -> torch.Tensor:
        if len(captions) != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {len(captions)} captions")
        model = self.clip.model
        pixels = openai_clip_pixels(images, self.image_size, self.clip.mean, self.clip.std)
        image = self.clip.get_image_features(pixels.to(model.logit_scale.device, model.dtype)).float()
        text = self.clip.text_embeddings(list(captions))
        cosine = (F.normalize(image, dim=-1) * F.normalize(text, dim=-1)).sum(-1)
        return model.logit_scale.exp().float() * cosine

    @property
    def preprocessing(self) -> str:
        return (
            f"uint8, shorter side to {self.image_size} (PIL bicubic), centre crop {self.image_size}, "
            "/255, CLIP mean/std; first caption; logit_scale.exp() * cosine, mean over images"
        )


class CmmdEmbedding(nn.Module):
    """forward(images (b, 3, H, W) in [0, 1]) -> (b, projection_dim) L2-normalised image embeddings."""

    def __init__(self, clip: ClipEmbedder):
        super().__init__()
        self.clip = clip.eval()
        self.image_size = clip.image_size

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        model = self.clip.model
        pixels = cmmd_pixels(images, self.image_size, self.clip.mean, self.clip.std)
        embeddings = self.clip.get_image_features(pixels.to(model.logit_scale.device, model.dtype)).float()
        return F.normalize(embeddings, dim=-1)

    @property
    def preprocessing(self) -> str:
        return (
            f"uint8, centred square crop, PIL bicubic to {self.image_size}, /255, CLIP mean/std; "
            "L2-normalised projected embedding; Gaussian MMD sigma 10 x 1000"
        )
