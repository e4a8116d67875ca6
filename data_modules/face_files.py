"""A face's files: reading images, label maps and the raw release's part masks, and writing label maps and
images atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from data_modules.layouts import DataFileError, FaceRecord
from data_modules.readers import oriented
from facemogle.atomic import atomic_write
from facemogle.face_parts import PALETTE, PART_INDEX, check_labels
from facemogle.mask_images import labels_from_image

# PIL signals broken files with OSError (truncated, unidentified) and SyntaxError (broken PNG chunks).
IMAGE_ERRORS = (OSError, SyntaxError, ValueError)


def read_image(path: Path) -> Image.Image:
    """Fully decoded RGB image, turned as its EXIF orientation says; a truncated or unreadable file raises
    (see IMAGE_ERRORS)."""
    with Image.open(path) as im:
        im.load()
        return oriented(im).convert("RGB")


def read_label_map(path: Path) -> np.ndarray:
    """(H, W) uint8 labels from a grayscale / palette label map or an RGB palette image."""
    try:
        with Image.open(path) as im:
            im.load()
            labels = labels_from_image(oriented(im), source=str(path)).labels
    except (OSError, SyntaxError) as e:
        raise DataFileError(path, f"unreadable mask ({e})") from e
    except ValueError as e:  # bad labels or colours; the message names the file already
        raise DataFileError(path, str(e).removeprefix(f"{path}: ")) from e
    return labels


def merge_parts(parts: tuple[tuple[str, Path], ...]) -> np.ndarray:
    """Binary part masks -> (H, W) uint8 label map; in overlaps the later part of PARTS wins."""
    labels = None
    for name, path in sorted(parts, key=lambda p: PART_INDEX[p[0]]):
        try:
            with Image.open(path) as im:
                im.load()
                on = np.asarray(oriented(im).convert("L")) >= 128
        except IMAGE_ERRORS as e:
            raise DataFileError(path, f"unreadable part mask ({e})") from e
        if labels is None:
            labels = np.zeros(on.shape, dtype=np.uint8)
        if on.shape != labels.shape:
            h, w = labels.shape
            raise DataFileError(
                path, f"part mask is {on.shape[1]}x{on.shape[0]}, the other parts are {w}x{h}"
            )
        labels[on] = PART_INDEX[name]
    assert labels is not None, "a raw record has at least one part"
    return labels


def read_mask(record: FaceRecord) -> np.ndarray:
    return read_label_map(record.mask) if record.mask is not None else merge_parts(record.parts)


def sizes_compatible(image: tuple[int, int], mask: tuple[int, int]) -> bool:
    """Same aspect ratio and an integer scale factor between them (either way)."""
    (iw, ih), (mw, mh) = image, mask
    if iw * mh != ih * mw:
        return False
    return (iw % mw == 0 and ih % mh == 0 and iw // mw == ih // mh) or (
        mw % iw == 0 and mh % ih == 0 and mw // iw == mh // ih
    )


def save_label_map(labels: np.ndarray, path: Path) -> None:
    """Write a palette PNG whose indices are the labels (opens as colours, reads back as labels)."""
    check_labels(labels, source=str(path))
    im = Image.fromarray(np.asarray(labels, dtype=np.uint8))  # mode "L"; putpalette makes it "P"
    im.putpalette(PALETTE.reshape(-1).tolist())
    atomic_save(im, path)


def atomic_save(im: Image.Image, path: Path, **kwargs) -> None:
    """Save through facemogle.atomic, so an interrupted run never leaves half a file."""
    fmt = Image.registered_extensions()[path.suffix.lower()]
    atomic_write(path, lambda tmp: im.save(tmp, format=fmt, **kwargs))
