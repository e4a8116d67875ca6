import numpy as np
import pytest
import torch

from facemogle.face_parts import (
    NUM_CONDITION_MAPS,
    PALETTE,
    PARTS,
    colorize,
    labels_from_colors,
    present_maps,
    split_mask,
)


def test_parts_follow_the_official_celebamask_hq_order():
    assert len(PARTS) == 19
    assert PARTS[0] == "background" and PARTS[13] == "hair" and PARTS[18] == "cloth"
    assert PARTS.index("ear_r") == 15 and PARTS.index("neck_l") == 16


def test_split_mask_gives_global_colour_map_and_one_binary_map_per_part():
    labels = torch.randint(0, 19, (2, 8, 8))
    maps = split_mask(labels)
    assert maps.shape == (2, NUM_CONDITION_MAPS, 3, 8, 8)
    expected_global = torch.as_tensor(PALETTE)[labels].permute(0, 3, 1, 2).float() / 127.5 - 1
    torch.testing.assert_close(maps[:, 0], expected_global)
    for k in range(19):
        on = labels == k
        assert torch.all(maps[:, 1 + k][on.unsqueeze(1).expand(-1, 3, -1, -1)] == 1)
        assert torch.all(maps[:, 1 + k][~on.unsqueeze(1).expand(-1, 3, -1, -1)] == -1)


def test_split_mask_rejects_labels_out_of_range():
    with pytest.raises(ValueError, match="label 19 is out of range"):
        split_mask(torch.full((4, 4), 19))


def test_present_maps_are_the_maps_that_are_not_all_empty():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 19, (4, 6, 6), generator=g) % torch.tensor([19, 3, 1, 2]).view(-1, 1, 1)
    labels[3] = torch.where(labels[3] > 0, 13, 0)  # background and hair only
    present = present_maps(labels)
    assert torch.equal(present, split_mask(labels).flatten(-3).amax(-1) > -1)
    assert present[2].tolist() == [False, True] + [False] * 18  # all background: the global map is black
    assert present[3].tolist() == [True, True] + [False] * 12 + [True] + [False] * 5


def test_palette_colours_map_back_to_labels():
    labels = np.random.default_rng(0).integers(0, 19, (16, 16))
    np.testing.assert_array_equal(labels_from_colors(colorize(labels)), labels)


def test_an_unknown_colour_is_an_error_naming_file_and_colour():
    rgb = colorize(np.zeros((4, 4), dtype=np.int64))
    rgb[2, 3] = (1, 2, 3)
    with pytest.raises(ValueError, match=r"mask_7.png: colour \(1, 2, 3\) at pixel \(x=3, y=2\)"):
        labels_from_colors(rgb, source="mask_7.png")
