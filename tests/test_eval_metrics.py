"""Metric code on hand-made and random data: FID / KID / CMMD / CLIP score / mask consistency."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from facemogle.evaluators import FACE_PARSING_PYTORCH_ORDER, SmallClipConfig, build_small_clip, label_map_for
from facemogle.face_parts import NUM_PARTS, PALETTE, PARTS
from facemogle.metrics import CMMD, FeatureKID, GenerationMetrics, MaskConsistency, gaussian_mmd2
from facemogle.tiny_tokenizers import build_clip_tokenizer

TINY_CLIP = SmallClipConfig(image_size=32, patch_size=8, hidden_size=32, layers=1, heads=2, projection_dim=8)


def palette_images(labels: torch.Tensor) -> torch.Tensor:
    """(b, H, W) labels -> (b, 3, H, W) in [0, 1]: the mask drawn in the palette."""
    return (torch.as_tensor(PALETTE, dtype=torch.float32)[labels] / 255.0).permute(0, 3, 1, 2)


class PaletteParser(nn.Module):
    """A perfect parser for palette images: the nearest palette colour."""

    def parse(self, images: torch.Tensor) -> torch.Tensor:
        palette = torch.as_tensor(PALETTE, dtype=torch.float32, device=images.device) / 255.0  # (19, 3)
        return torch.cdist(images.permute(0, 2, 3, 1), palette[None, None]).argmin(-1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.parse(images)


def random_labels(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Blocky label maps, so every image holds several parts."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, NUM_PARTS, (n, size // 8, size // 8), generator=g)
    return coarse.repeat_interleave(8, 1).repeat_interleave(8, 2)


def tiny_clip(seed: int = 0):
    return build_small_clip(build_clip_tokenizer(vocab_size=300), TINY_CLIP, seed=seed)


def test_perfect_parse_gives_miou_and_accuracy_one():
    labels = random_labels(5)
    metric = MaskConsistency()
    metric.update(labels, labels.clone())
    scores = metric.compute()
    assert scores["miou"] == 1.0 and scores["pixel_acc"] == 1.0
    seen = torch.zeros(NUM_PARTS, dtype=torch.bool)
    seen[labels.unique()] = True
    assert (
        torch.all(scores["per_class_iou"][seen] == 1.0) and torch.isnan(scores["per_class_iou"][~seen]).all()
    )


def test_miou_counts_the_classes_present_in_mask_or_parse():
    target = torch.zeros(1, 2, 2, dtype=torch.long)
    target[0, 0, 0] = 1  # background 3 px, skin 1 px
    pred = torch.zeros_like(target)
    pred[0, 1, 1] = 2  # the parse misses the skin pixel and invents a nose pixel
    metric = MaskConsistency()
    metric.update(pred, target)
    scores = metric.compute()
    # background IoU 2/4; skin 0/1; nose 0/1 -> mIoU (0.5 + 0 + 0) / 3; accuracy 2/4
    assert scores["miou"].item() == pytest.approx(0.5 / 3)
    assert scores["pixel_acc"].item() == pytest.approx(0.5)
    assert scores["per_class_iou"][PARTS.index("skin")] == 0.0


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_mask_metric_does_not_depend_on_batch_size(batch):
    target = random_labels(64, seed=1)
    pred = torch.where(torch.rand(target.shape, generator=torch.Generator().manual_seed(2)) < 0.3, 0, target)
    reference = MaskConsistency()
    reference.update(pred[:1], target[:1])
    for i in range(1, 64):
        reference.update(pred[i : i + 1], target[i : i + 1])
    metric = MaskConsistency()
    for start in range(0, 64, batch):
        metric.update(pred[start : start + batch], target[start : start + batch])
    got, want = metric.compute(), reference.compute()
    assert 0.2 < want["miou"] < 0.95
    for key in ("miou", "pixel_acc", "per_class_iou"):
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=1e-12, equal_nan=True)


def test_mask_metric_names_bad_inputs():
    with pytest.raises(ValueError, match="pred and target"):
        MaskConsistency().update(
            torch.zeros(1, 4, 4, dtype=torch.long), torch.zeros(1, 4, 5, dtype=torch.long)
        )
    with pytest.raises(ValueError, match="target holds labels"):
        MaskConsistency().update(torch.zeros(1, 4, 4, dtype=torch.long), torch.full((1, 4, 4), 19))


def test_cmmd_matches_the_pairwise_definition_and_vanishes_on_identical_sets():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, 5, generator=g), torch.randn(4, 5, generator=g) + 0.5
    xn, yn = nn.functional.normalize(x.double(), dim=-1), nn.functional.normalize(y.double(), dim=-1)

    def k(a, b):
        return torch.exp(-((a - b) ** 2).sum() / (2 * 10.0**2))

    def mean_k(a, b):
        return torch.stack([k(p, q) for p in a for q in b]).mean()

    want = 1000 * (mean_k(xn, xn) + mean_k(yn, yn) - 2 * mean_k(xn, yn))
    metric = CMMD()
    metric.update(x, real=True)
    metric.update(y[:2], real=False)
    metric.update(y[2:], real=False)
    torch.testing.assert_close(metric.compute(), want)
    assert gaussian_mmd2(x, x).abs() < 1e-12
    metric.reset()  # keeps the real embeddings
    metric.update(x.flip(0), real=False)
    assert metric.num_real == 6 and metric.compute().abs() < 1e-9


def test_kid_is_reproducible_and_caps_its_subset_size():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(20, 8, generator=g), torch.randn(12, 8, generator=g) + 1
    values = []
    for _ in range(2):
        kid = FeatureKID(8, subsets=5, subset_size=1000, seed=3)
        kid.update(real, real=True)
        kid.update(fake, real=False)
        values.append(kid.compute()[0])
    assert values[0] == values[1] and values[0] > 0


def test_identical_image_sets_give_zero_fid_and_cmmd_and_a_perfect_mask_score():
    labels = random_labels(24)
    images = palette_images(labels)  # (24, 3, 32, 32)
    clip = tiny_clip()
    metrics = GenerationMetrics(clip, clip=clip, parser=PaletteParser())
    metrics.update_real(images)
    captions = ["a woman with black hair"] * 24
    for start in range(0, 24, 10):
        metrics.update(images[start : start + 10], captions[start : start + 10], labels[start : start + 10])
    out = metrics.compute()
    assert abs(out["fid"]) < 1e-3
    assert abs(out["cmmd"]) < 1e-6
    assert out["mask_miou"] == 1.0 and out["pixel_acc"] == 1.0
    assert 0 <= out["clip_score"] <= 100 and out["kid"] < 0.05

    metrics.reset()  # generated images forgotten, real statistics kept
    metrics.update(torch.rand(24, 3, 32, 32, generator=torch.Generator().manual_seed(2)), None, None)
    out = metrics.compute()
    assert metrics.num_real == 24 and out["fid"] > 1e-2 and out["cmmd"] > 1e-3
    assert "mask_miou" not in out and "clip_score" not in out


def test_face_parsing_pytorch_order_maps_names_to_facemogle_parts():
    mapping = label_map_for(FACE_PARSING_PYTORCH_ORDER)
    assert sorted(mapping) == list(range(NUM_PARTS))
    assert PARTS[mapping[FACE_PARSING_PYTORCH_ORDER.index("hair")]] == "hair"
    with pytest.raises(ValueError, match="label order"):
        label_map_for(PARTS[:-1] + ("beard",), "label order")
