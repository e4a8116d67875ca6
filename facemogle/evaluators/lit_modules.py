"""The LightningModules that train the small evaluators; each receives its built model.

    FaceParserModule  class-weighted cross-entropy plus soft Dice; tests mask consistency (mIoU per image)
    ClipModule        CLIPModel's own contrastive loss; tests caption retrieval (facemogle.metrics.retrieval)

Both run AdamW under `warmup_cosine` over trainer.max_steps, stepped by Lightning every optimizer step.
Batches come from data_modules.evaluator_data: image (b, 3, H, W) in [0, 1], labels (b, H, W), caption.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import lightning as L
import torch
import torch.nn.functional as F

from facemogle.evaluators.clip import ClipEmbedder
from facemogle.evaluators.parser import FaceParser
from facemogle.face_parts import NUM_PARTS, PARTS
from facemogle.metrics.mask import MaskConsistency
from facemogle.metrics.retrieval import CaptionRetrieval
from facemogle.rules import NON_NEGATIVE, POSITIVE, Range, check_ranges

MAX_LOGIT_SCALE = math.log(100)  # CLIP's own cap on the contrastive temperature's inverse
RETRIEVAL_GROUP = 100  # recall@k is measured among groups of this many test faces


@dataclass
class AdamWConfig:
    """AdamW's settings, shared by the parser's and the CLIP's training configs."""

    lr: float = 1e-3
    weight_decay: float = 0.01

    RULES: ClassVar[dict[str, Range]] = {"lr": POSITIVE, "weight_decay": NON_NEGATIVE}

    def __post_init__(self) -> None:
        check_ranges(self)


@dataclass
class ParserTrainConfig(AdamWConfig):
    lr: float = 3e-3
    dice_weight: float = 1.0  # the soft Dice term beside the class-weighted cross-entropy

    RULES: ClassVar[dict[str, Range]] = {**AdamWConfig.RULES, "dice_weight": NON_NEGATIVE}


@dataclass
class ClipTrainConfig(AdamWConfig):
    lr: float = 2e-3
    weight_decay: float = 0.05


def warmup_cosine(steps: int) -> Callable[[int], float]:
    """The lr factor at optimizer step s: linear warm-up over the first 5 % of `steps`, then a cosine to 0."""
    if steps <= 0:
        raise ValueError(f"the lr schedule needs a positive number of steps (trainer.max_steps), got {steps}")
    warmup = max(1, steps // 20)
    return lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))


def _adamw_with_schedule(module: L.LightningModule, lr: float, weight_decay: float, name: str) -> dict:
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(module.trainer.max_steps))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step", "name": name}}


def class_weights(labels: torch.Tensor) -> torch.Tensor:
    """Inverse square-root pixel frequency, scaled so an average pixel weighs 1: small parts (an eye is
    ~6 pixels at 64^2) count more, without drowning the large ones."""
    freq = torch.bincount(labels.flatten(), minlength=NUM_PARTS).double()
    freq = (freq / freq.sum()).clamp_min(1e-4)
    weights = freq.rsqrt()
    return (weights / (weights * freq).sum()).float()


def dice_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """1 - soft Dice per image and class, averaged over the (image, class) pairs where the class is in the
    mask or the prediction holds more than a pixel of it: the pairs the per-image mIoU averages over, so a
    missed eye or a stray earring costs as much as a poorly drawn cheek."""
    probs = logits.softmax(1)
    target = F.one_hot(labels, logits.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    overlap = (probs * target).sum((2, 3))
    total = (probs + target).sum((2, 3))
    present = (target.sum((2, 3)) > 0) | (probs.sum((2, 3)) > 1)
    dice = 1 - (2 * overlap + 1) / (total + 1)
    return (dice * present).sum() / present.sum()


class FaceParserModule(L.LightningModule):
    def __init__(self, parser: FaceParser, weights: torch.Tensor, config: ParserTrainConfig | None = None):
        """weights: (19,) per-class cross-entropy weights, `class_weights` of the training labels."""
        super().__init__()
        parser.train()  # Lightning keeps a module's mode; a loaded parser comes in eval mode
        if weights.shape != (NUM_PARTS,):
            raise ValueError(f"class weights must have shape ({NUM_PARTS},), got {tuple(weights.shape)}")
        self.parser = parser
        self.config = config or ParserTrainConfig()
        self.register_buffer("class_weights", weights.float())
        self.mask_scores = MaskConsistency()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits, labels = self.parser(batch["image"]), batch["labels"]  # (b, 19, H, W), (b, H, W)
        cross_entropy = F.cross_entropy(logits, labels, weight=self.class_weights)
        loss = cross_entropy + self.config.dice_weight * dice_loss(logits, labels)
        self.log("parser/train/loss", loss, prog_bar=True, batch_size=labels.shape[0])
        return loss

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self.mask_scores.update(self.parser.parse(batch["image"]), batch["labels"])

    def on_test_epoch_end(self) -> None:
        scores = self.mask_scores.compute()
        self.log("parser/test/miou", scores["miou"])
        self.log("parser/test/pixel_acc", scores["pixel_acc"])
        for part, iou in zip(PARTS, scores["per_class_iou"], strict=True):
            self.log(f"parser/test/iou/{part}", iou)
        self.mask_scores.reset()

    def configure_optimizers(self) -> dict:
        c = self.config
        return _adamw_with_schedule(self, c.lr, c.weight_decay, "parser/lr")


class ClipModule(L.LightningModule):
    def __init__(self, clip: ClipEmbedder, config: ClipTrainConfig | None = None, seed: int = 0):
        """seed: the test's pairwise draw (each image's random other caption)."""
        super().__init__()
        self.clip = clip
        clip.model.train()  # ClipEmbedder starts in eval mode, for scoring; Lightning keeps a module's mode
        self.config = config or ClipTrainConfig()
        self.retrieval = CaptionRetrieval(top_k=(1, 5), group_size=RETRIEVAL_GROUP, seed=seed)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        tokens = self.clip.tokenize(batch["caption"])
        out = self.clip.model(
            input_ids=tokens.input_ids,
            attention_mask=tokens.attention_mask,
            pixel_values=self.clip.pixel_values(batch["image"]),
            return_loss=True,
        )
        self.log("clip/train/loss", out.loss, prog_bar=True, batch_size=len(batch["caption"]))
        return out.loss

    def on_train_batch_end(self, outputs, batch: dict, batch_idx: int) -> None:
        with torch.no_grad():
            self.clip.model.logit_scale.clamp_(max=MAX_LOGIT_SCALE)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self.retrieval.update(self.clip(batch["image"]), self.clip.text_embeddings(batch["caption"]))

    def on_test_epoch_end(self) -> None:
        for name, value in self.retrieval.compute().items():
            self.log(f"clip/test/{name}", value)
        self.retrieval.reset()

    def configure_optimizers(self) -> dict:
        c = self.config
        return _adamw_with_schedule(self, c.lr, c.weight_decay, "clip/lr")
