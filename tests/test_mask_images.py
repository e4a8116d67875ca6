import numpy as np
import pytest
import torch
from PIL import Image

from callbacks.visuals import token_heatmap
from facemogle.face_parts import PALETTE, PART_INDEX, colorize
from facemogle.gate_analysis import own_expert_weights
from facemogle.mask_images import labels_from_image, majority_downsample, mask_batch


def test_strict_reading_refuses_an_off_palette_colour_and_snapping_takes_the_nearest():
    rgb = colorize(np.array([[0, 1], [13, 17]], dtype=np.uint8)).astype(np.int16)
    rgb[0, 1] += (3, 2, -1)  # skin, a little off
    image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    with pytest.raises(ValueError, match=r"m.png: colour \(207, 2, 0\)"):
        labels_from_image(image, "m.png")
    reading = labels_from_image(image, "m.png", snap=True)
    assert reading.labels.tolist() == [[0, 1], [13, 17]] and (reading.snapped, reading.far) == (1, 0)


def test_a_transparent_pixel_is_background_and_an_odd_palette_snaps():
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., :3] = PALETTE[PART_INDEX["hair"]]
    rgba[0, 0, 3] = rgba[1, 1, 3] = 255  # two opaque hair pixels, two transparent ones
    assert labels_from_image(Image.fromarray(rgba), snap=True).labels.tolist() == [[13, 0], [0, 13]]
    quantised = Image.fromarray(colorize(np.array([[1, 13]], dtype=np.uint8)) + 2).quantize(
        2
    )  # P, off colours
    with pytest.raises(ValueError, match="neither a CelebAMask-HQ colour nor a grey label"):
        labels_from_image(quantised)
    assert labels_from_image(quantised, snap=True).labels.tolist() == [[1, 13]]


def test_majority_downsampling_drops_stray_edge_pixels():
    labels = torch.full((1, 8, 8), PART_INDEX["skin"])
    labels[0, :4, :4] = PART_INDEX["hair"]
    labels[0, 3, 3] = PART_INDEX["nose"]  # a stray pixel at a corner of the hair block
    assert majority_downsample(labels, 2)[0].tolist() == [[13, 1], [1, 1]]
    assert majority_downsample(labels, 3).shape == (1, 3, 3)  # no integer factor: nearest


def test_a_batch_of_masks_in_any_form_and_a_warning_per_snapped_image():
    labels = np.array([[0, 1], [13, 17]], dtype=np.uint8)
    off = Image.fromarray((colorize(labels).astype(np.int16) + 1).clip(0, 255).astype(np.uint8))
    batch, warnings = mask_batch([labels, torch.from_numpy(labels)[None], off])
    assert batch.shape == (3, 2, 2) and (batch == torch.from_numpy(labels).long()).all()
    assert len(warnings) == 1 and warnings[0].startswith("mask_image[2]: 4 pixels")


def test_the_gate_on_each_tokens_own_expert_and_its_heat_map():
    labels = torch.zeros(1, 16, 16, dtype=torch.long)
    labels[0, :8] = PART_INDEX["hair"]  # the upper two token rows: hair
    weights = torch.full((1, 2, 16, 20), 0.01)  # (b, steps, 4 x 4 tokens, experts)
    weights[0, :, :8, 1 + PART_INDEX["hair"]] = 0.5
    weights[0, :, 8:, 1 + PART_INDEX["background"]] = 0.25
    own = own_expert_weights(weights, labels, list(range(20)))
    assert own.tolist() == [[0.5] * 8 + [0.25] * 8]
    only_global = own_expert_weights(weights[..., :1], labels, [0])
    assert torch.allclose(only_global, torch.full((1, 16), 0.01))
    heat = token_heatmap(own[0], 16, 16)
    assert heat.shape == (16, 16, 3) and (heat[0, 0] != heat[-1, -1]).any()
