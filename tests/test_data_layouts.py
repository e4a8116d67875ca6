from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from data_modules.face_files import merge_parts, read_label_map, read_mask, save_label_map, sizes_compatible
from data_modules.layouts import scan
from data_modules.prepare import main as prepare_main
from facemogle.face_parts import PALETTE, PART_INDEX, colorize
from tests.test_data_trees import blob_labels, write_mm_tree, write_raw_tree


def _square(size: int, top: int, left: int, side: int) -> np.ndarray:
    on = np.zeros((size, size), dtype=bool)
    on[top : top + side, left : left + side] = True
    return on


def overlapping_parts(size: int = 32) -> dict[str, np.ndarray]:
    # skin everywhere in the middle; nose, hair, hat and cloth overlap it and each other
    return {
        "hat": _square(size, 0, 0, 10),
        "skin": _square(size, 4, 4, 24),
        "hair": _square(size, 0, 0, 16),
        "nose": _square(size, 12, 12, 8),
        "cloth": _square(size, 24, 0, 8),
        "l_eye": _square(size, 16, 6, 2),
        "eye_g": _square(size, 6, 6, 12),
    }


def test_raw_parts_merge_in_official_order_with_later_parts_winning(tmp_path):
    write_raw_tree(tmp_path, {0: overlapping_parts(), 2001: {"skin": _square(32, 0, 0, 32)}})
    scanned = scan(tmp_path)
    assert [r.key for r in scanned.records] == ["0", "2001"] and not scanned.problems
    labels = read_mask(scanned.records[0])
    assert labels.shape == (32, 32)
    assert labels[31, 31] == PART_INDEX["background"]
    assert labels[20, 20] == PART_INDEX["skin"]
    assert labels[14, 14] == PART_INDEX["hair"]  # hair (13) over nose (2) and skin (1)
    assert labels[2, 2] == PART_INDEX["hat"]  # hat (14) over hair (13)
    assert labels[17, 17] == PART_INDEX["eye_g"]  # eye_g (3) over nose (2)
    assert labels[19, 19] == PART_INDEX["nose"]  # nose (2) over skin (1)
    assert labels[16, 6] == PART_INDEX["l_eye"]  # l_eye (4) over eye_g (3)
    assert labels[26, 2] == PART_INDEX["cloth"]  # cloth (18) over skin
    assert (read_mask(scanned.records[1]) == PART_INDEX["skin"]).all()


def test_merge_does_not_depend_on_the_order_the_files_are_listed(tmp_path):
    write_raw_tree(tmp_path, {3: overlapping_parts()})
    record = scan(tmp_path).records[0]
    assert (merge_parts(record.parts) == merge_parts(tuple(reversed(record.parts)))).all()


def test_prepare_converts_the_raw_release_to_the_mm_layout(tmp_path):
    src, out = tmp_path / "raw", tmp_path / "mm"
    write_raw_tree(src, {0: overlapping_parts(), 5: {"skin": _square(32, 2, 2, 20)}})
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "0.txt").write_text("She has bangs.\nShe is smiling.\n")
    (tmp_path / "text" / "5.txt").write_text("He is bald.\n")
    args = ["--from", "celebamask-hq", str(src), "--out", str(out), "--captions", str(tmp_path / "text")]
    assert prepare_main([*args, "--workers", "1"]) == 0
    with Image.open(out / "mask" / "0.png") as im:
        assert im.mode == "P"
    raw = scan(src, captions=tmp_path / "text").records
    prepared = scan(out).records
    assert [r.key for r in prepared] == ["0", "5"]
    for a, b in zip(raw, prepared, strict=True):
        assert (read_mask(a) == read_mask(b)).all()
        assert a.image.read_bytes() == b.image.read_bytes()
        assert a.captions == b.captions
    assert prepared[0].captions == ("She has bangs.", "She is smiling.")


def test_masks_read_the_same_as_grayscale_palette_or_rgb_colours(tmp_path):
    labels = blob_labels(32)
    Image.fromarray(labels).save(tmp_path / "gray.png")
    save_label_map(labels, tmp_path / "palette.png")
    Image.fromarray(colorize(labels)).save(tmp_path / "rgb.png")
    for name in ("gray.png", "palette.png", "rgb.png"):
        assert (read_label_map(tmp_path / name) == labels).all(), name


def test_an_unknown_mask_colour_is_an_error_naming_the_file_and_colour(tmp_path):
    rgb = colorize(blob_labels(16))
    rgb[3, 5] = (1, 2, 3)
    Image.fromarray(rgb).save(tmp_path / "odd.png")
    with pytest.raises(ValueError, match=r"odd\.png.*\(1, 2, 3\)"):
        read_label_map(tmp_path / "odd.png")


def test_captions_come_from_text_json_when_there_is_no_text_folder(tmp_path):
    write_mm_tree(tmp_path, ["7", "8"])
    for f in (tmp_path / "text").iterdir():
        f.unlink()
    (tmp_path / "text").rmdir()
    (tmp_path / "text.json").write_text(json.dumps({"7.jpg": ["a", "b"], "8.jpg": ["c"]}))
    records = scan(tmp_path).records
    assert [r.captions for r in records] == [("a", "b"), ("c",)]


def test_zero_shot_layout_reads_arbitrary_stems(tmp_path):
    write_mm_tree(tmp_path, ["portrait_b", "Portrait_a", "x-1"])
    assert [r.key for r in scan(tmp_path, "mm-celeba-hq").records] == ["Portrait_a", "portrait_b", "x-1"]


def test_palette_is_the_one_the_label_map_files_carry(tmp_path):
    save_label_map(blob_labels(8), tmp_path / "m.png")
    with Image.open(tmp_path / "m.png") as im:
        assert np.array(im.getpalette()[: 3 * len(PALETTE)]).reshape(-1, 3).tolist() == PALETTE.tolist()


@pytest.mark.parametrize(
    ("image", "mask", "ok"),
    [
        ((1024, 1024), (512, 512), True),
        ((64, 64), (64, 64), True),
        ((32, 32), (64, 64), True),
        ((1024, 1024), (500, 500), False),
        ((64, 64), (64, 32), False),
        ((96, 64), (48, 32), True),
        ((90, 60), (60, 40), False),
    ],
)
def test_mask_size_rule_is_same_aspect_and_integer_factor(image, mask, ok):
    assert sizes_compatible(image, mask) is ok
