"""Files from other tools read as their authors meant: palette masks by colour, EXIF orientation, captions
in other encodings, masks of another aspect ratio in the sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from data_modules.dataset import load_face
from data_modules.face_files import read_label_map
from data_modules.layouts import scan
from data_modules.readers import decode_text
from data_modules.validate import validate
from experiments.sample import read_mask
from facemogle.face_parts import PALETTE, PART_INDEX
from facemogle.sampling import sample
from tests.test_data_trees import blob_labels, write_mm_tree

CAPTION = "Elle a les cheveux blonds, un café et un crème brûlée."


def test_a_palette_mask_with_the_colours_in_another_order_keeps_its_labels(tmp_path):
    labels = blob_labels(32)
    order = np.random.default_rng(0).permutation(len(PALETTE))  # new index i holds colour of label order[i]
    index_of = np.argsort(order)
    im = Image.fromarray(index_of[labels].astype(np.uint8), mode="L")
    im.putpalette(PALETTE[order].reshape(-1).tolist())
    im.save(tmp_path / "m.png")
    assert Image.open(tmp_path / "m.png").mode == "P"
    np.testing.assert_array_equal(read_label_map(tmp_path / "m.png"), labels)


def test_a_quantized_rgb_mask_reads_as_its_colours(tmp_path):
    labels = blob_labels(32)
    Image.fromarray(PALETTE[labels].astype(np.uint8)).quantize(colors=19).save(tmp_path / "q.png")
    np.testing.assert_array_equal(read_label_map(tmp_path / "q.png"), labels)


def test_a_palette_of_greys_is_a_label_map_and_a_foreign_palette_an_error(tmp_path):
    labels = blob_labels(32)
    grey = Image.fromarray(labels, mode="L")
    grey.putpalette([v for i in range(256) for v in (i, i, i)])
    grey.save(tmp_path / "g.png")
    np.testing.assert_array_equal(read_label_map(tmp_path / "g.png"), labels)
    odd = Image.fromarray(labels, mode="L")
    odd.putpalette([v for i in range(256) for v in (i, 200, 7)])
    odd.save(tmp_path / "o.png")
    with pytest.raises(ValueError, match=r"o\.png: palette colour \(0, 200, 7\)"):
        read_label_map(tmp_path / "o.png")


def _with_orientation(image: Image.Image, path, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.save(path, exif=exif)


def test_exif_orientation_turns_faces_and_masks_and_validation_sees_the_turned_size(tmp_path):
    root = write_mm_tree(tmp_path / "d", ["0"], size=32)
    upright = np.zeros((32, 48, 3), dtype=np.uint8)
    upright[:8] = 255  # white band at the top when shown upright
    labels = np.zeros((32, 48), dtype=np.uint8)
    labels[:8] = PART_INDEX["hair"]
    # stored rotated by 90 degrees, with orientation 6 ("rotate 90 clockwise to show")
    _with_orientation(Image.fromarray(np.rot90(upright, 1).copy()), root / "face" / "0.jpg", 6)
    _with_orientation(Image.fromarray(np.rot90(labels, 1).copy(), mode="L"), root / "mask" / "0.png", 6)
    np.testing.assert_array_equal(read_label_map(root / "mask" / "0.png"), labels)
    report = validate(scan(root), strict=True)
    assert report.ok
    image, square = load_face(report.records[0], 32)
    assert image[:8].mean() > 200 and image[8:].mean() < 60  # the band on top, not on a side
    assert (square[:8] == PART_INDEX["hair"]).all() and (square[8:] == 0).all()


@pytest.mark.parametrize(
    "encoding", ["utf-8", "utf-8-sig", "latin-1", "cp1252", "utf-16", "utf-16-le", "utf-16-be", "utf-32"]
)
def test_captions_in_other_encodings_are_decoded_not_garbled(tmp_path, encoding):
    root = write_mm_tree(tmp_path / "d", ["0"], size=32)
    (root / "text" / "0.txt").write_bytes(f"{CAPTION}\nShe smiles.\n".encode(encoding))
    (record,) = scan(root).records
    assert record.captions == (CAPTION, "She smiles.")


def test_a_caption_file_that_is_not_text_is_a_problem_naming_it(tmp_path):
    root = write_mm_tree(tmp_path / "d", ["0", "1"], size=32)
    (root / "text" / "1.txt").write_bytes(bytes(range(1, 40)) * 3)
    scanned = scan(root)
    assert [r.key for r in scanned.records] == ["0"]
    (problem,) = scanned.problems
    assert problem.file == root / "text" / "1.txt" and "control character" in problem.message
    with pytest.raises(ValueError, match="1.txt"):
        validate(scanned, strict=True)
    assert decode_text(b"plain", "x") == "plain"


def test_the_sampler_refuses_to_stretch_a_mask_of_another_aspect_ratio(backbone, tmp_path):
    from facemogle.denoiser import Denoiser
    from facemogle.mogle import MoGLE

    wide = torch.zeros(1, 32, 64, dtype=torch.long)
    with pytest.raises(ValueError, match="64x32, not the 64x64"):
        sample(backbone, Denoiser(backbone.transformer, MoGLE()), None, wide, height=64, width=64)
    labels = np.zeros((32, 64), dtype=np.uint8)
    labels[:, 16:48] = PART_INDEX["skin"]
    Image.fromarray(labels, mode="L").save(tmp_path / "wide.png")
    with pytest.raises(ValueError, match=r"wide\.png: mask is 64x32.*--mask-fit crop"):
        read_mask(tmp_path / "wide.png", 64, "error")
    cropped = read_mask(tmp_path / "wide.png", 64, "crop")
    assert cropped.shape == (32, 32) and (cropped == PART_INDEX["skin"]).all()
