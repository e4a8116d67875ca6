"""The gate read per face region: token regions, mean weights per region, own and global experts."""

import pytest
import torch

from facemogle.face_parts import NUM_CONDITION_MAPS, PART_INDEX
from facemogle.gate_analysis import (
    GLOBAL_EXPERT,
    gate_usage,
    own_and_global,
    region_gate_weights,
    stacked_weights,
    token_regions,
)


def test_each_token_reads_the_part_under_it():
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[0, :4, 4:] = PART_INDEX["hair"]  # the top right quarter
    assert token_regions(labels, 4).tolist() == [[0, PART_INDEX["hair"], 0, 0]]
    with pytest.raises(ValueError, match="5 tokens do not tile a 8x8 mask"):
        token_regions(labels, 5)


def test_own_and_global_average_the_faces_where_a_region_is_present():
    hair, skin = PART_INDEX["hair"], PART_INDEX["skin"]
    labels = torch.full((2, 4, 4), skin)
    labels[0, :2] = hair  # hair in the first face only: its top two tokens
    gates = torch.zeros(2, 4, NUM_CONDITION_MAPS)  # (b, l, e), one step
    gates[:, :, GLOBAL_EXPERT] = 0.5
    gates[0, :2, 1 + hair] = 0.5  # the first face's hair tokens on the hair expert
    gates[0, 2:, 1 + skin] = 0.5
    gates[1, :, 1 + skin] = 0.25
    regions = region_gate_weights([gates], labels)  # (2, 1, 19, 20)
    assert regions[1, 0, hair].isnan().all()  # no hair token in the second face
    weights = own_and_global(regions)
    assert weights.parts == ["skin", "hair"]
    torch.testing.assert_close(weights.own, torch.tensor([[0.375, 0.5]]))  # skin: mean of 0.5 and 0.25
    torch.testing.assert_close(weights.global_, torch.tensor([[0.5, 0.5]]))


def test_own_and_global_need_all_twenty_experts():
    with pytest.raises(ValueError, match="gate over 19 experts"):
        own_and_global(torch.rand(1, 2, 19, 19))


def test_gate_usage_gives_each_experts_share_and_the_entropy_per_step_and_region():
    hair, skin = PART_INDEX["hair"], PART_INDEX["skin"]
    labels = torch.full((1, 2, 2), skin)
    labels[0, 0] = hair  # the top two tokens
    picked = torch.tensor(
        [[[1.0, 0.0], [1.0, 0.0], [0.5, 0.5], [0.5, 0.5]]]
    )  # (b, l, e): hair picks expert 0
    ungated = torch.ones(1, 1, 2)  # a plain sum: each of the 2 experts a half
    weights = stacked_weights([picked, ungated], batch=1, num_tokens=4)
    assert weights.shape == (1, 2, 4, 2)
    usage = gate_usage(weights, labels)
    torch.testing.assert_close(usage.load, torch.tensor([[0.75, 0.25], [0.5, 0.5]]))
    log2 = torch.log(torch.tensor(2.0))
    torch.testing.assert_close(usage.entropy, torch.stack([log2 / 2, log2]))
    torch.testing.assert_close(usage.region_weights[0, hair], torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(usage.region_entropy[:, skin], torch.stack([log2, log2]))
    assert usage.region_entropy[:, PART_INDEX["hat"]].isnan().all()
