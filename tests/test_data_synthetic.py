from __future__ import annotations

import json
import re

import numpy as np
import pytest

from data_modules.face_files import read_label_map
from data_modules.layouts import scan
from data_modules.synthetic import draw_face, main, write_synthetic
from data_modules.synthetic_drawing import HAIR_COLORS, sample_attributes
from data_modules.validate import validate
from facemogle.face_parts import PART_INDEX


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    main(["--out", str(out), "--n", "24", "--size", "32", "--seed", "3"])
    return out


def test_generator_writes_the_mm_celeba_hq_layout_with_integer_ids(synthetic):
    assert sorted(int(p.stem) for p in (synthetic / "face").glob("*.jpg")) == list(range(24))
    attributes = json.loads((synthetic / "attributes.json").read_text())
    assert sorted(attributes, key=int) == [str(i) for i in range(24)]
    report = validate(scan(synthetic), strict=True)
    assert [r.key for r in report.records] == [str(i) for i in range(24)]
    for record in report.records:
        assert 5 <= len(record.captions) <= 10 and len(set(record.captions)) == len(record.captions)
        assert read_label_map(record.mask).shape == (32, 32)


def test_the_same_seed_gives_the_same_files_and_another_seed_does_not(synthetic, tmp_path):
    main(["--out", str(tmp_path / "a"), "--n", "4", "--size", "32", "--seed", "3"])
    main(["--out", str(tmp_path / "b"), "--n", "4", "--size", "32", "--seed", "4"])
    for folder, name in (("face", "{}.jpg"), ("mask", "{}.png"), ("text", "{}.txt")):
        for i in range(4):
            same = (tmp_path / "a" / folder / name.format(i)).read_bytes()
            assert same == (synthetic / folder / name.format(i)).read_bytes()
    other = [(tmp_path / "b" / "face" / f"{i}.jpg").read_bytes() for i in range(4)]
    assert all(o != (synthetic / "face" / f"{i}.jpg").read_bytes() for i, o in enumerate(other))


def _mean(image, labels, part):
    return image[labels == PART_INDEX[part]].astype(float).mean(0)


def test_drawing_in_processes_writes_the_same_files(synthetic, tmp_path):
    # 60 faces are two chunks of work; the module's set was drawn by the command's default workers
    one = write_synthetic(tmp_path / "one", 60, 32, seed=3, workers=1)
    three = write_synthetic(tmp_path / "three", 60, 32, seed=3, workers=3)
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(three) for p in three.rglob("*") if p.is_file())
    assert len(files) == 3 * 60 + 1
    for name in files:
        assert (one / name).read_bytes() == (three / name).read_bytes(), name
    for i in range(24):
        assert (one / "face" / f"{i}.jpg").read_bytes() == (synthetic / "face" / f"{i}.jpg").read_bytes()
    with pytest.raises(ValueError, match="workers"):
        write_synthetic(tmp_path / "none", 4, 32, workers=0)


def test_image_regions_differ_where_labels_differ_and_are_not_flat():
    for i in range(12):
        face = draw_face(np.random.default_rng([0, i]), 64)
        image, labels = face.image, face.labels
        present = [
            p for p in ("background", "skin", "hair", "cloth", "l_eye") if (labels == PART_INDEX[p]).sum() > 4
        ]
        assert {"background", "skin", "cloth"} <= set(present)
        for a in present:
            for b in present:
                if a < b:
                    assert np.abs(_mean(image, labels, a) - _mean(image, labels, b)).max() > 12, (i, a, b)
        skin = image[labels == PART_INDEX["skin"]].astype(float)
        assert skin.std(0).max() > 3  # shading and noise: not a colour lookup


def test_accessories_in_the_label_map_match_the_attributes():
    for i in range(40):
        face = draw_face(np.random.default_rng([1, i]), 128)
        present = set(np.unique(face.labels).tolist())
        a = face.attributes
        assert (PART_INDEX["eye_g"] in present) == a.eyeglasses, i
        assert (PART_INDEX["hat"] in present) == a.hat, i
        assert (PART_INDEX["ear_r"] in present) == a.earrings, i
        assert (PART_INDEX["neck_l"] in present) == a.necklace, i
        assert (PART_INDEX["mouth"] in present) == a.mouth_open, i
        assert (PART_INDEX["hair"] in present) == (a.hair_length != "bald" or a.hat), i


def test_accessories_appear_at_realistic_frequencies():
    draws = [sample_attributes(np.random.default_rng([2, i])) for i in range(1000)]
    rate = lambda name: np.mean([getattr(d, name) for d in draws])  # noqa: E731
    assert 0.03 < rate("eyeglasses") < 0.12 and 0.02 < rate("hat") < 0.09
    assert 0.1 < rate("earrings") < 0.3 and 0.05 < rate("necklace") < 0.2 and 0.35 < rate("smiling") < 0.6


WORDS = {
    "eyeglasses": "eyeglasses",
    "hat": r"\bhat\b",
    "earrings": "earrings",
    "necklace": "necklace",
    "lipstick": "lipstick",
    "bangs": "bangs",
    "mouth_open": "mouth slightly open",
}


def test_captions_agree_with_the_drawn_attributes(synthetic):
    attributes = json.loads((synthetic / "attributes.json").read_text())
    for record in scan(synthetic).records:
        a = attributes[record.key]
        full = record.captions[0]
        for name, pattern in WORDS.items():
            assert bool(re.search(pattern, full)) == a[name], (record.key, name, full)
        for caption in record.captions:
            for name, pattern in WORDS.items():
                assert not re.search(pattern, caption) or a[name], (record.key, caption)
            colors = [c for c in HAIR_COLORS if re.search(rf"\b{c}\b", caption)]
            assert colors in ([], [a["hair_color"]]), (record.key, caption)
            assert ("not smiling" in caption) <= (not a["smiling"]) and ("is smiling" in caption) <= a[
                "smiling"
            ]
            pronouns = set(re.findall(r"\b(She|He|woman|man)\b", caption))
            allowed = {"She", "woman"} if a["gender"] == "female" else {"He", "man"}
            assert pronouns <= allowed, (record.key, caption)
            assert ("bald" in caption) <= (a["hair_length"] == "bald")


def test_a_face_is_a_function_of_its_generator_and_size():
    # how fast faces are drawn: `python -m experiments.benchmark synthetic`
    for size in (32, 48):
        a, b = draw_face(np.random.default_rng([5, 0]), size), draw_face(np.random.default_rng([5, 0]), size)
        assert a.labels.shape == (size, size) and a.image.shape == (size, size, 3)
        assert (
            np.array_equal(a.image, b.image)
            and np.array_equal(a.labels, b.labels)
            and a.attributes == b.attributes
        )
    other = draw_face(np.random.default_rng([5, 1]), 32)
    assert not np.array_equal(other.image, draw_face(np.random.default_rng([5, 0]), 32).image)
