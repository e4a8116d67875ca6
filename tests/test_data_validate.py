from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from data_modules.datamodule import DataConfig, FaceDataModule
from data_modules.layouts import scan
from data_modules.split import SplitConfig
from data_modules.validate import main as validate_main
from data_modules.validate import validate
from tests.test_data_trees import random_image, write_mm_tree


@pytest.fixture
def tree(tmp_path):
    return write_mm_tree(tmp_path / "data", [str(i) for i in range(5)], size=32)


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _break(tree, kind: str) -> tuple[str, str]:
    """Damage item 1 (or the folders) one way; -> (file name expected in the message, problem words)."""
    if kind == "truncated image":
        _truncate(tree / "face" / "1.jpg")
        return "1.jpg", "unreadable image"
    if kind == "unreadable image":
        (tree / "face" / "1.jpg").write_bytes(b"not an image at all")
        return "1.jpg", "unreadable image"
    if kind == "truncated mask":
        _truncate(tree / "mask" / "1.png")
        return "1.png", "unreadable mask"
    if kind == "mask size":
        Image.fromarray(np.zeros((24, 24), np.uint8)).save(tree / "mask" / "1.png")
        return "1.png", "mask is 24x24 but image 1.jpg is 32x32"
    if kind == "mask aspect":
        Image.fromarray(np.zeros((16, 32), np.uint8)).save(tree / "mask" / "1.png")
        return "1.png", "mask is 32x16"
    if kind == "label above 18":
        labels = np.zeros((32, 32), np.uint8)
        labels[3, 3] = 19
        Image.fromarray(labels).save(tree / "mask" / "1.png")
        return "1.png", "label 19 is out of range"
    if kind == "missing caption":
        (tree / "text" / "1.txt").unlink()
        return "1.txt", "missing or empty caption"
    if kind == "empty caption":
        (tree / "text" / "1.txt").write_text("\n  \n")
        return "1.txt", "missing or empty caption"
    if kind == "image only":
        (tree / "mask" / "1.png").unlink()
        return "1.jpg", "image without a mask"
    if kind == "mask only":
        (tree / "face" / "1.jpg").unlink()
        return "1.png", "mask without an image"
    if kind == "caption only":
        random_image(tree / "face" / "9.jpg", 32).unlink()
        (tree / "text" / "9.txt").write_text("orphan caption\n")
        return "9.txt", "captions without an image"
    raise AssertionError(kind)


KINDS = [
    "truncated image",
    "unreadable image",
    "truncated mask",
    "mask size",
    "mask aspect",
    "label above 18",
    "missing caption",
    "empty caption",
    "image only",
    "mask only",
    "caption only",
]


@pytest.mark.parametrize("kind", KINDS)
def test_each_bad_input_raises_a_value_error_naming_the_file(tree, kind):
    name, words = _break(tree, kind)
    with pytest.raises(ValueError, match=words) as err:
        validate(scan(tree), strict=True)
    assert name in str(err.value)


@pytest.mark.parametrize("kind", KINDS)
def test_non_strict_validation_skips_and_reports_the_bad_items(tree, kind, caplog):
    name, _ = _break(tree, kind)
    with caplog.at_level(logging.WARNING, logger="data_modules.validate"):
        report = validate(scan(tree), strict=False)
    assert not report.ok and any(name in str(p) for p in report.problems)
    bad = "9" if kind == "caption only" else "1"
    assert bad not in [r.key for r in report.records] and len(report.records) >= 4
    assert name in caplog.text


def test_validate_cli_prints_one_line_per_problem_and_fails(tree, capsys):
    assert validate_main([str(tree)]) == 0
    _break(tree, "label above 18")
    _break(tree, "missing caption")
    (tree / "mask" / "3.png").unlink()
    assert validate_main([str(tree)]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    assert any("1.png" in line for line in lines) and any("1.txt" in line for line in lines)
    assert any("3.jpg" in line for line in lines)


def test_datamodule_raises_before_training_and_non_strict_runs_a_whole_epoch(tree):
    _break(tree, "truncated image")
    config = DataConfig(
        root=str(tree), resolution=16, split=SplitConfig("fraction", test_fraction=0), batch_size=2
    )
    with pytest.raises(ValueError, match="1.jpg"):
        FaceDataModule(config).setup("fit")
    config.strict = False
    dm = FaceDataModule(config)
    dm.setup("fit")
    assert dm.report.skipped == ["1"]
    assert sum(len(b["key"]) for b in dm.train_dataloader()) + len(dm.datasets["val"]) == 4
