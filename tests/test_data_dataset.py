from __future__ import annotations

import numpy as np
import pytest
import torch

from data_modules.datamodule import DataConfig, FaceDataModule
from data_modules.dataset import Dropout, FaceDataset, load_faces, sample_dropout
from data_modules.layouts import scan
from data_modules.resumable import SeededItems
from data_modules.split import SplitConfig, split_keys, split_records
from facemogle.face_parts import NUM_CONDITION_MAPS, PALETTE
from tests.test_data_trees import write_mm_tree


@pytest.fixture
def tree(tmp_path):
    return write_mm_tree(tmp_path, [str(i) for i in range(6)], size=32, mask_size=64)


def test_an_item_holds_image_labels_and_the_20_condition_maps(tree):
    item = FaceDataset(scan(tree).records, resolution=16)[0]
    assert item["image"].shape == (3, 16, 16) and item["image"].min() >= -1 and item["image"].max() <= 1
    labels, cond = item["labels"], item["cond_maps"]
    assert labels.dtype == torch.long and labels.shape == (16, 16)
    assert cond.shape == (NUM_CONDITION_MAPS, 3, 16, 16)
    palette = torch.as_tensor(PALETTE, dtype=torch.float32) / 127.5 - 1
    assert torch.allclose(cond[0], palette[labels].permute(2, 0, 1))
    for part in range(NUM_CONDITION_MAPS - 1):
        assert torch.equal(cond[1 + part], ((labels == part).float() * 2 - 1).expand(3, -1, -1))
    assert item["caption"] == "face 0 first caption" and item["key"] == "0"


def test_nearest_resize_keeps_mask_labels_crisp(tree):
    record = scan(tree).records[0]
    item = FaceDataset([record], resolution=24)[0]
    original = set(np.unique(np.array(__import__("PIL").Image.open(record.mask))).tolist())
    assert set(item["labels"].unique().tolist()) <= original


def test_celebahq_protocol_trains_on_the_first_27000_ids_and_tests_on_the_rest():
    keys = [str(i) for i in (*range(0, 40), 26999, 27000, 29999)]
    split = split_keys(keys, SplitConfig("celebahq", val_size=5, seed=1))
    assert split.test == ["27000", "29999"]
    assert len(split.val) == 5 and set(split.val) < set(keys) - set(split.test)
    assert sorted(split.train + split.val, key=int) == [k for k in keys if int(k) < 27000]
    assert split_keys(keys, SplitConfig("celebahq", val_size=5, seed=1)) == split  # fixed subset
    assert split_keys(keys, SplitConfig("celebahq", val_size=5, seed=2)).val != split.val


def test_celebahq_protocol_rejects_keys_that_are_not_celebahq_ids():
    with pytest.raises(ValueError, match="'abc'.*fraction"):
        split_keys(["1", "abc"], SplitConfig("celebahq", val_size=0))
    with pytest.raises(ValueError, match="'30000'"):
        split_keys(["1", "30000"], SplitConfig("celebahq", val_size=0))


def test_fraction_protocol_splits_a_small_set_sensibly():
    keys = [str(i) for i in range(300)]
    split = split_keys(keys, SplitConfig("fraction", val_fraction=0.05, test_fraction=0.1))
    assert split.test == [str(i) for i in range(270, 300)]
    assert len(split.val) == 14 and len(split.train) == 256
    assert sorted(split.train + split.val + split.test, key=int) == keys
    tiny = split_keys(["a", "b", "c"], SplitConfig("fraction"))
    assert (len(tiny.train), len(tiny.val), len(tiny.test)) == (1, 1, 1)


def test_split_records_are_the_first_n_of_a_split_in_key_order(tree):
    records = scan(tree).records
    split = split_keys([r.key for r in records], SplitConfig("fraction", test_fraction=0.5))
    test = split_records(records, SplitConfig("fraction", test_fraction=0.5), "test")
    assert [r.key for r in test] == split.test == ["3", "4", "5"]
    assert [r.key for r in split_records(records, SplitConfig("fraction", test_fraction=0.5), "test", 2)] == [
        "3",
        "4",
    ]
    with pytest.raises(ValueError, match="split 'dev'"):
        split_records(records, SplitConfig("fraction"), "dev")
    with pytest.raises(ValueError, match="data.split: the val split of these 6 faces is empty"):
        split_records(records, SplitConfig("fraction", val_fraction=0.0), "val")


def test_loaded_faces_are_the_evaluation_items_with_images_in_0_1(tree):
    records = scan(tree).records[:3]
    faces = load_faces(records, 16)
    items = [FaceDataset(records, 16)[i] for i in range(3)]
    assert faces.images.shape == (3, 3, 16, 16) and faces.labels.dtype == torch.long
    torch.testing.assert_close(faces.images, torch.stack([(it["image"] + 1) / 2 for it in items]))
    assert torch.equal(faces.labels, torch.stack([it["labels"] for it in items]))
    assert faces.captions == [it["caption"] for it in items] == [f"face {i} first caption" for i in range(3)]
    assert faces[1:3].captions == faces.captions[1:] and len(faces[range(0, 2)]) == 2


def test_a_face_without_a_caption_is_an_error_naming_its_file(tmp_path):
    tree = write_mm_tree(tmp_path, ["0", "1"], captions={"1": []})
    records = [r for r in scan(tree).records if r.key == "1"]
    with pytest.raises(ValueError, match=r"1\.txt: face 1 has no caption"):
        load_faces(records, 16)


def test_the_datamodule_evaluation_subset_is_the_first_validation_faces(tree):
    split = SplitConfig("fraction", val_fraction=0.4)
    config = DataConfig(root=str(tree), resolution=16, split=split, batch_size=2)
    dm = FaceDataModule(config)
    dm.setup("fit")
    faces = dm.eval_subset()
    assert len(faces) == len(dm.split.val) == 2
    assert faces.captions == [f"face {k} first caption" for k in dm.split.val]
    assert 0 <= faces.images.min() and faces.images.max() <= 1


def test_region_and_text_dropout_rates_follow_the_configuration():
    torch.manual_seed(0)
    draws = [sample_dropout(Dropout(text=0.1, region=0.1)) for _ in range(3000)]
    keep = torch.stack([k for k, _ in draws])
    assert keep[:, 0].all()  # the global map is never dropped
    assert abs((~keep[:, 1:]).float().mean().item() - 0.1) < 0.01
    assert abs(np.mean([t for _, t in draws]) - 0.1) < 0.02


def test_dropout_applies_in_training_and_evaluation_switches_it_off(tree):
    records = scan(tree).records
    always = Dropout(text=1.0, region=1.0)
    item = FaceDataset(records, 16, train=True, dropout=always)[0]
    assert item["caption"] == ""
    assert (item["cond_maps"][1:] == -1).all() and not item["cond_keep"][1:].any()
    assert item["cond_maps"][0].max() > -1  # global map kept
    clean = FaceDataset(records, 16, train=False, dropout=always)[0]
    assert clean["caption"] == "face 0 first caption" and clean["cond_keep"].all()
    assert torch.equal(clean["cond_maps"][0], item["cond_maps"][0])


def test_training_picks_a_random_caption_and_evaluation_the_first(tree):
    records = scan(tree).records
    torch.manual_seed(0)
    train = {FaceDataset(records, 8, train=True)[1]["caption"] for _ in range(20)}
    assert train == {"face 1 first caption", "face 1 second caption"}
    assert {FaceDataset(records, 8)[1]["caption"] for _ in range(5)} == {"face 1 first caption"}


def test_datamodule_collates_batches_with_documented_shapes(tree):
    config = DataConfig(root=str(tree), resolution=16, split=SplitConfig("fraction"), batch_size=3)
    dm = FaceDataModule(config)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (3, 3, 16, 16)
    assert batch["cond_maps"].shape == (3, NUM_CONDITION_MAPS, 3, 16, 16)
    assert batch["labels"].shape == (3, 16, 16) and batch["cond_keep"].shape == (3, NUM_CONDITION_MAPS)
    assert len(batch["caption"]) == 3 and len(batch["key"]) == 3
    sizes = [len(dm.datasets[n]) for n in ("train", "val", "test")]
    assert sizes == [4, 1, 1]
    val = next(iter(dm.val_dataloader()))
    assert val["cond_keep"].all() and val["caption"][0].endswith("first caption")


def test_seeded_items_draw_from_the_item_seed_and_leave_the_global_generator_alone():
    class Draws(torch.utils.data.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, index):
            return torch.rand(4)

    items = SeededItems(Draws())
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    first, again, other = items[(0, 7)], items[(2, 7)], items[(0, 8)]
    assert torch.equal(torch.random.get_rng_state(), before)
    torch.manual_seed(7)
    assert torch.equal(first, torch.rand(4)) and torch.equal(first, again)
    assert not torch.equal(first, other)
