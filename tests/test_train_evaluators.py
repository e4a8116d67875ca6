"""The face parser's training: its Dice loss term and its blur augmentation."""

from __future__ import annotations

import torch

from experiments.train_evaluators import dice_loss, gaussian_blur


def _confident(labels: torch.Tensor, classes: int = 19) -> torch.Tensor:
    return 50.0 * torch.nn.functional.one_hot(labels, classes).permute(0, 3, 1, 2).float()


def test_dice_is_zero_for_a_confident_correct_parse_and_one_per_missed_class():
    labels = torch.zeros(2, 16, 16, dtype=torch.long)
    labels[:, 4:8, 4:8] = 4  # an eye on skin-free background
    assert dice_loss(_confident(labels), labels) < 1e-3
    missed = labels.clone()
    missed[:, 4:8, 4:8] = 0  # the parse misses the eye: 1 of the 2 present classes scores ~0
    loss = dice_loss(_confident(missed), labels)
    assert 0.45 < loss < 0.55


def test_a_missed_four_pixel_part_costs_nearly_as_much_as_a_missed_half_image():
    labels = torch.zeros(1, 32, 32, dtype=torch.long)
    labels[:, :16] = 1
    labels[:, 20:22, 20:22] = 15  # a 4-pixel earring, 0.4 % of the pixels
    small, large = labels.clone(), labels.clone()
    small[small == 15] = 0
    large[large == 1] = 0
    missed_small, missed_large = (dice_loss(_confident(p), labels).item() for p in (small, large))
    # 3 classes present. Missing the earring: background ~0, class 1 0, earring 1 - 1/5 (the +1 smoothing).
    # Missing class 1 (half the image): background 1 - 1017/1529, class 1 ~1, earring 0.
    assert abs(missed_small - (1 - 1017 / 1021 + 0.8) / 3) < 1e-3
    assert abs(missed_large - (1 - 1017 / 1529 + 1 - 1 / 513) / 3) < 1e-3
    assert missed_small > 0.6 * missed_large


def test_a_class_only_in_the_prediction_counts():
    labels = torch.zeros(1, 16, 16, dtype=torch.long)
    stray = labels.clone()
    stray[:, :3, :3] = 15  # 9 pixels of earring that is not there
    assert dice_loss(_confident(labels), labels) < 1e-3
    assert dice_loss(_confident(stray), labels) > 0.45  # background ~0.03, earring 1, averaged over 2


def test_gaussian_blur_keeps_sigma_zero_images_and_the_mean_and_softens_an_edge():
    images = torch.zeros(2, 3, 9, 9)
    images[:, :, :, 5:] = 1.0  # a vertical edge
    out = gaussian_blur(images, torch.tensor([0.0, 1.0]))
    assert torch.allclose(out[0], images[0], atol=1e-6)
    row = out[1, 0, 4]
    assert 0 < row[4] < 0.5 < row[5] < 1 and torch.all(row[1:] >= row[:-1])  # monotone, softened
    assert torch.allclose(out[1].mean((1, 2)), images[1].mean((1, 2)), atol=0.02)  # replicated edges
