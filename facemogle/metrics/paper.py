"""Face-MoGLE's Table 1 columns as its own evaluation (src/eval/) computes them, on one stream of
(generated image, first caption, real face).

    fid, kid                 clean-fid's protocol (facemogle.metrics.clean_fid), KID x 1000
    cmmd                     cmmd-pytorch: CLIP ViT-L/14-336 embeddings, Gaussian MMD sigma 10, x 1000
    mask                     DINO ViT-B/8 structure distance, the official figure (summed per batch of 64,
                             averaged over batches), official preprocessing (facemogle.metrics.structure)
    mask_per_image           the same distance averaged per image (batch-size independent)
    mask_splice_per_image    per image, with Splice's preprocessing (224 px, ImageNet normalisation); only
                             with dino_splice (on 64^2 faces it upsamples to 224 and costs most of the rest)
    text                     CLIP ViT-B/16 text score: mean of logit_scale.exp() * cos(image, first caption)
    image_reward             ImageReward-v1.0, mean over images

A model left out (None) leaves its columns out. Real-image features (clean-fid's, CMMD's) go in once and
survive `reset()`; the structure distance pairs each generated image with its own real face. Every state
syncs across DDP ranks in `compute()`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from facemogle.evaluators.clean_inception import CleanInceptionFeatures, load_clean_inception
from facemogle.evaluators.clip import load_clip
from facemogle.evaluators.config import PaperEvaluatorConfig
from facemogle.evaluators.dino import DinoKeys, load_dino
from facemogle.evaluators.image_reward import ImageRewardScorer, load_image_reward
from facemogle.evaluators.paper_clip import ClipTextScore, CmmdEmbedding
from facemogle.metrics.clean_fid import CleanFidKid
from facemogle.metrics.cmmd import CMMD
from facemogle.metrics.scores import MeanScore
from facemogle.metrics.structure import DinoStructureDistance

PAPER_COLUMNS = ("fid", "kid", "cmmd", "mask", "text", "image_reward")


@dataclass
class PaperReal:
    """What the real images contribute, cacheable per data set: clean-fid features and CMMD embeddings."""

    features: torch.Tensor | None  # (n, d)
    cmmd: torch.Tensor | None  # (n, p)


class PaperMetrics(nn.Module):
    def __init__(
        self,
        inception: CleanInceptionFeatures | None = None,
        cmmd_clip: CmmdEmbedding | None = None,
        text_clip: ClipTextScore | None = None,
        dino: DinoKeys | None = None,
        image_reward: ImageRewardScorer | None = None,
        kid_seed: int = 42,
        dino_splice: bool = False,
    ):
        super().__init__()
        self.inception, self.cmmd_clip, self.text_clip = inception, cmmd_clip, text_clip
        self.dino, self.image_reward = dino, image_reward
        self.fid_kid = CleanFidKid(kid_seed=kid_seed) if inception is not None else None
        self.cmmd = CMMD() if cmmd_clip is not None else None
        self.text = MeanScore() if text_clip is not None else None
        self.reward = MeanScore() if image_reward is not None else None
        self.mask = self.mask_splice = None
        if dino is not None:
            self.mask = DinoStructureDistance(DinoKeys(dino.model, dino.layer, "official"))
            if dino_splice:
                self.mask_splice = DinoStructureDistance(DinoKeys(dino.model, dino.layer, "splice"))
        for module in (inception, cmmd_clip, text_clip, dino, image_reward):
            if module is not None:
                module.requires_grad_(False).eval()

    @torch.no_grad()
    def extract_real(self, images: torch.Tensor) -> PaperReal:
        """images (b, 3, H, W) in [0, 1] -> their features, to pass to `add_real` (now or from a cache)."""
        return PaperReal(
            self.inception(images) if self.inception is not None else None,
            self.cmmd_clip(images) if self.cmmd_clip is not None else None,
        )

    def add_real(self, real: PaperReal) -> None:
        for metric, features, name in (
            (self.fid_kid, real.features, "clean-fid"),
            (self.cmmd, real.cmmd, "CMMD"),
        ):
            if metric is not None:
                if features is None:
                    raise ValueError(f"real features lack the {name} features")
                metric.update(features, real=True)

    @torch.no_grad()
    def update(
        self, images: torch.Tensor, captions: list[str] | None, real_images: torch.Tensor | None
    ) -> None:
        """images (b, 3, H, W) in [0, 1] generated; captions: b first captions; real_images: their faces."""
        images = images.float().clamp(0, 1)
        if self.fid_kid is not None:
            self.fid_kid.update(self.inception(images), real=False)
        if self.cmmd is not None:
            self.cmmd.update(self.cmmd_clip(images), real=False)
        if captions is not None:
            if self.text is not None:
                self.text.update(self.text_clip(images, captions))
            if self.reward is not None:
                self.reward.update(self.image_reward(images, captions))
        if self.mask is not None and real_images is not None:
            real_images = real_images.float()
            self.mask.update(images, real_images)
            if self.mask_splice is not None:
                self.mask_splice.update(images, real_images)

    def compute(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.fid_kid is not None:
            out.update(self.fid_kid.compute())
        if self.cmmd is not None:
            out["cmmd"] = float(self.cmmd.compute())
        if self.mask is not None and int(self.mask.images) > 0:
            distance = self.mask.compute()
            out.update(mask=float(distance["official"]), mask_per_image=float(distance["per_image"]))
            if self.mask_splice is not None:
                out["mask_splice_per_image"] = float(self.mask_splice.compute()["per_image"])
        if self.text is not None and int(self.text.images) > 0:
            out["text"] = float(self.text.compute())
        if self.reward is not None and int(self.reward.images) > 0:
            out["image_reward"] = float(self.reward.compute())
        return out

    def reset(self) -> None:
        """Forget generated images; real features stay."""
        for metric in (self.fid_kid, self.cmmd, self.text, self.reward, self.mask, self.mask_splice):
            if metric is not None:
                metric.reset()

    def preprocessing(self) -> dict[str, str]:
        """How each column reads an image, for the protocol record."""
        out = {}
        if self.inception is not None:
            out["fid_kid"] = self.inception.preprocessing + "; clean-fid FID, KID x 1000"
        if self.cmmd_clip is not None:
            out["cmmd"] = self.cmmd_clip.preprocessing
        if self.dino is not None:
            out["mask"] = f"layer {self.dino.layer} keys; " + self.mask.dino.preprocessing_text
        if self.mask_splice is not None:
            out["mask_splice_per_image"] = (
                f"layer {self.dino.layer} keys; " + self.mask_splice.dino.preprocessing_text
            )
        if self.text_clip is not None:
            out["text"] = self.text_clip.preprocessing
        if self.image_reward is not None:
            out["image_reward"] = self.image_reward.preprocessing
        return out


def build_paper_metrics(config: PaperEvaluatorConfig) -> PaperMetrics:
    """Load the models `config` names (on the CPU; move as needed)."""
    return PaperMetrics(
        inception=load_clean_inception(config.inception_path) if config.inception_path else None,
        cmmd_clip=CmmdEmbedding(load_clip(config.cmmd_clip_path)) if config.cmmd_clip_path else None,
        text_clip=ClipTextScore(load_clip(config.text_clip_path)) if config.text_clip_path else None,
        dino=load_dino(config.dino_path, config.dino_layer) if config.dino_path else None,
        image_reward=load_image_reward(config.image_reward_path) if config.image_reward_path else None,
        kid_seed=config.kid_seed,
        dino_splice=config.dino_splice,
    )
