"""Small data trees in temporary folders, shared by the data tests (no tests of its own)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from data_modules.layouts import RAW_IMAGE_DIR, raw_part_path
from facemogle.face_parts import PART_INDEX


def random_image(path: Path, size: int | tuple[int, int], seed: int = 0) -> Path:
    w, h = (size, size) if isinstance(size, int) else size
    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def blob_labels(size: int, seed: int = 0) -> np.ndarray:
    """A label map with background, skin, hair, two eyes, nose and lips in rectangles."""
    labels = np.zeros((size, size), dtype=np.uint8)
    s = size // 8
    rng = np.random.default_rng(seed)
    labels[s : 7 * s, s : 7 * s] = PART_INDEX["skin"]
    labels[: 2 * s, :] = PART_INDEX["hair"]
    labels[3 * s : 4 * s, 2 * s : 3 * s] = PART_INDEX["l_eye"]
    labels[3 * s : 4 * s, 5 * s : 6 * s] = PART_INDEX["r_eye"]
    labels[4 * s : 5 * s, 3 * s + int(rng.integers(0, 2)) : 5 * s] = PART_INDEX["nose"]
    labels[6 * s : 7 * s, 3 * s : 5 * s] = PART_INDEX["u_lip"]
    return labels


def write_mm_tree(
    root: Path, keys, size: int = 32, mask_size: int | None = None, captions: dict | None = None
) -> Path:
    """face/{key}.jpg, mask/{key}.png (grayscale labels), text/{key}.txt with two captions each."""
    for i, key in enumerate(keys):
        random_image(root / "face" / f"{key}.jpg", size, seed=i)
        (root / "mask").mkdir(parents=True, exist_ok=True)
        Image.fromarray(blob_labels(mask_size or size, seed=i)).save(root / "mask" / f"{key}.png")
        (root / "text").mkdir(parents=True, exist_ok=True)
        lines = (captions or {}).get(key, [f"face {key} first caption", f"face {key} second caption"])
        (root / "text" / f"{key}.txt").write_text("\n".join(lines) + "\n")
    return root


def write_raw_tree(root: Path, parts_by_id: dict[int, dict[str, np.ndarray]], image_size: int = 64) -> Path:
    """The raw CelebAMask-HQ release: CelebA-HQ-img/{i}.jpg and one binary 0/255 PNG per given part."""
    for i, parts in parts_by_id.items():
        random_image(root / RAW_IMAGE_DIR / f"{i}.jpg", image_size, seed=i)
        for part, on in parts.items():
            path = raw_part_path(root, i, part)
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(on.astype(np.uint8) * 255).save(path)
    return root
