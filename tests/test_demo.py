"""The demo's work without a browser (experiments.app.core): masks from uploads and from the editor, a face
with its gate maps, parse and mIoU, the test split's examples."""

import time

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from experiments.app.core import CANVAS, Demo, example_masks, read_upload, to_editor
from experiments.runs.io import load_run
from facemogle.evaluators import load_face_parser
from facemogle.face_parts import PALETTE, PART_INDEX, colorize
from tests.golden_samples import export_tiny_run


@pytest.fixture(scope="module")
def demo(tmp_path_factory, workspace, evaluators):
    root = tmp_path_factory.mktemp("demo-core")
    run = load_run(export_tiny_run(root), [f"data.root={workspace / 'data'}", "data.split.protocol=fraction"])
    return Demo(run, load_face_parser(evaluators / "parser"))


def face_labels() -> np.ndarray:
    """A 64^2 label map of a few large regions: background, skin, hair, a mouth."""
    labels = np.zeros((64, 64), dtype=np.uint8)
    labels[16:60, 12:52] = PART_INDEX["skin"]
    labels[8:24, 10:54] = PART_INDEX["hair"]
    labels[44:50, 24:40] = PART_INDEX["mouth"]
    return labels


def test_an_uploaded_jpeg_mask_snaps_to_the_palette_with_a_warning(tmp_path):
    labels = face_labels()
    jpeg = tmp_path / "mask.jpg"
    Image.fromarray(colorize(labels)).resize((256, 256), Image.NEAREST).save(jpeg, quality=85)
    read, warning = read_upload(str(jpeg))
    small = torch.from_numpy(read.astype(np.int64))[None, ::4, ::4]
    assert (small[0].numpy() == labels).mean() > 0.97
    assert "mask.jpg:" in warning and "took the class of the nearest colour" in warning
    exact = tmp_path / "exact.png"
    Image.fromarray(labels, mode="L").save(exact)  # a grey label map reads as it is
    read, warning = read_upload(str(exact))
    assert np.array_equal(read, labels) and warning is None


def test_a_mask_that_is_not_square_or_not_a_mask_is_refused(tmp_path):
    wide = tmp_path / "wide.png"
    Image.fromarray(colorize(np.zeros((32, 48), dtype=np.uint8))).save(wide)
    with pytest.raises(ValueError, match="wide.png is 48x32: this model makes square faces"):
        read_upload(str(wide))
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(photo)
    with pytest.raises(ValueError, match="photo.png: .* far from every CelebAMask-HQ palette colour"):
        read_upload(str(photo))
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(ValueError, match="notes.png is not an image that can be read"):
        read_upload(str(text))


def test_the_editors_soft_edged_drawing_becomes_labels_at_the_runs_resolution(demo):
    editor = to_editor(face_labels())
    assert editor["composite"].shape == (CANVAS, CANVAS, 4)
    canvas = Image.fromarray(editor["composite"])
    stroke = Image.new("RGBA", canvas.size)
    ImageDraw.Draw(stroke).ellipse((200, 300, 330, 380), fill=(*PALETTE[PART_INDEX["nose"]].tolist(), 255))
    soft = Image.alpha_composite(
        canvas, stroke.resize((128, 128), Image.BILINEAR).resize(canvas.size, Image.BILINEAR)
    )
    labels, warning = demo.labels({"composite": np.asarray(soft), "background": None, "layers": []})
    assert labels.shape == (1, 64, 64) and warning is not None  # the blurred edge's colours were snapped
    expected = face_labels()
    expected[38:47, 25:41] = PART_INDEX["nose"]  # the ellipse's core at 1/8 scale
    assert (labels[0].numpy() == expected).mean() > 0.95 and labels[0, 42, 32] == PART_INDEX["nose"]
    empty = np.zeros((CANVAS, CANVAS, 4), dtype=np.uint8)  # a cleared canvas is transparent: background
    assert demo.labels({"composite": empty})[0].max() == 0


def test_a_face_comes_with_its_gate_maps_parse_and_miou(demo):
    labels = torch.from_numpy(face_labels().astype(np.int64))[None]
    face = demo.generate(labels, "She smiles.", "text+mask", 0, 2, {}, {})
    assert face.image.shape == (64, 64, 3) and face.gate.shape == (64, 64, 3) and face.gate_table.ndim == 3
    assert face.parse.shape == (64, 64, 3) and 0 <= face.miou <= 1
    assert face.regions == ["background", "skin", "mouth", "hair"]
    stronger = demo.generate(labels, "She smiles.", "text+mask", 0, 2, {}, {"hair": 2.5})
    assert np.abs(stronger.image.astype(int) - face.image.astype(int)).max() > 0
    text = demo.generate(labels, "She smiles.", "text", 0, 2, {"text_scale": 3.0}, {})
    assert text.gate is None and text.miou is None and text.parse is not None
    with pytest.raises(ValueError, match="the text\\+mask mode needs a prompt"):
        demo.generate(labels, "  ", "text+mask", 0, 2, {}, {})


def test_examples_are_the_test_splits_masks_with_their_first_caption(demo):
    examples = example_masks(demo.run, 8)  # the workspace's test split holds 2 of its 24 faces
    assert len(examples) == 2 and all(labels.shape == (64, 64) and caption for labels, caption in examples)


def test_an_upload_over_the_byte_or_pixel_limit_is_refused_before_it_is_decoded(tmp_path):
    from experiments.app.core import MAX_UPLOAD_BYTES

    huge = tmp_path / "huge.png"
    Image.new("L", (3000, 3000)).save(huge)  # a few KB, 9 megapixels
    start = time.monotonic()
    with pytest.raises(ValueError, match=r"huge.png is 3000x3000: masks up to 4194304 pixels are read"):
        read_upload(str(huge))
    assert time.monotonic() - start < 1
    heavy = tmp_path / "heavy.png"
    heavy.write_bytes(b"\x89PNG" + bytes(MAX_UPLOAD_BYTES))
    with pytest.raises(ValueError, match=rf"heavy.png is {MAX_UPLOAD_BYTES + 4} bytes: masks up to"):
        read_upload(str(heavy))


def test_a_page_beyond_loopback_needs_a_password_or_consent_and_warns(caplog):
    from experiments.app.page import check_access

    check_access("127.0.0.1", None, False)
    check_access("localhost", None, False)
    with pytest.raises(ValueError, match=r"--host 0.0.0.0 serves the demo to the network with no password"):
        check_access("0.0.0.0", None, False)
    with caplog.at_level("WARNING", logger="experiments.app.page"):
        check_access("0.0.0.0", ("me", "secret"), False)
        check_access("10.1.2.3", None, True)
    assert "password protected" in caplog.text and "OPEN to anyone" in caplog.text
    assert "secret" not in caplog.text


def test_the_demo_command_refuses_an_open_host_before_loading_anything(tmp_path, capsys):
    from experiments import demo as demo_cli

    with pytest.raises(ValueError, match="--auth USER:PASSWORD, or --allow-open-access"):
        demo_cli.main(["--run", str(tmp_path / "no-run"), "--host", "0.0.0.0"])
    with pytest.raises(SystemExit):
        demo_cli.main(["--run", str(tmp_path), "--host", "0.0.0.0", "--auth", "nopassword"])
    assert "--auth 'nopassword': expected USER:PASSWORD" in capsys.readouterr().err
