"""Mask consistency: how well a face parser's reading of a generated image matches the input mask.

Per image, over the classes present (in the input mask or in the parse):
    IoU_c = |pred == c and target == c| / |pred == c or target == c|
    mIoU = mean of IoU_c over the present classes, pixel accuracy = share of pixels labelled alike.
Scores are averaged over images, so they do not depend on how images are batched (the published code
sums over each batch instead). Per-class IoU is the mean over the images in which the class is present.
States are sums of per-image values and counts, so DDP sync (sum) gives the single-process result.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

from facemogle.face_parts import NUM_PARTS


def confusion_counts(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """pred, target: (b, H, W) integer labels -> (b, C, C) counts, [i, p, t] = #pixels with pred p, target t."""
    b = pred.shape[0]
    index = (pred.reshape(b, -1) * num_classes + target.reshape(b, -1)).long()  # (b, HW)
    counts = torch.zeros(b, num_classes * num_classes, dtype=torch.long, device=pred.device)
    counts.scatter_add_(1, index, torch.ones_like(index))
    return counts.view(b, num_classes, num_classes)


def per_image_iou(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """-> iou (b, C) float64 (0 where absent) and present (b, C) bool: class in the prediction or target."""
    counts = confusion_counts(pred, target, num_classes).double()  # (b, C, C)
    inter = counts.diagonal(dim1=1, dim2=2)  # (b, C)
    union = counts.sum(2) + counts.sum(1) - inter  # (b, C)
    present = union > 0
    return torch.where(present, inter / union.clamp_min(1), torch.zeros_like(union)), present


class MaskConsistency(Metric):
    """update(pred, target) with (b, H, W) integer labels; compute() -> dict of miou, pixel_acc, per_class_iou."""

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(self, num_classes: int = NUM_PARTS, **kwargs):
        super().__init__(**kwargs)
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        self.num_classes = num_classes
        f64 = torch.float64
        self.add_state("class_iou_sum", torch.zeros(num_classes, dtype=f64), dist_reduce_fx="sum")
        self.add_state("class_count", torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("miou_sum", torch.zeros((), dtype=f64), dist_reduce_fx="sum")
        self.add_state("acc_sum", torch.zeros((), dtype=f64), dist_reduce_fx="sum")
        self.add_state("images", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        if pred.shape != target.shape or pred.dim() != 3:
            raise ValueError(
                f"pred and target must both be (b, H, W) label maps, got {tuple(pred.shape)} and {tuple(target.shape)}"
            )
        for name, labels in (("pred", pred), ("target", target)):
            if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
                raise ValueError(f"{name} holds labels outside 0..{self.num_classes - 1}")
        iou, present = per_image_iou(pred, target, self.num_classes)
        self.class_iou_sum += iou.sum(0)
        self.class_count += present.sum(0)
        self.miou_sum += (iou.sum(1) / present.sum(1).clamp_min(1)).sum()
        self.acc_sum += (pred == target).flatten(1).double().mean(1).sum()
        self.images += pred.shape[0]

    def compute(self) -> dict[str, torch.Tensor]:
        n = self.images.clamp_min(1)
        per_class = torch.where(
            self.class_count > 0,
            self.class_iou_sum / self.class_count.clamp_min(1),
            torch.full_like(self.class_iou_sum, float("nan")),
        )
        return {"miou": self.miou_sum / n, "pixel_acc": self.acc_sum / n, "per_class_iou": per_class}
