"""Procedurally drawn faces in the MM-CelebA-HQ layout, for tests and smoke runs without the real data.

    python -m data_modules.synthetic --out data/synthetic --n 300 --size 64 --seed 0

writes face/{i}.jpg, mask/{i}.png (palette label map), text/{i}.txt (5-10 captions) and
attributes.json ({"{i}": {...}}) for ids i = 0..n-1. Face i depends only on (seed, i).

The faces are drawn by data_modules.synthetic_drawing; their captions are written here from the same
attributes.
"""

from __future__ import annotations

import argparse
import os
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from data_modules.face_files import atomic_save, save_label_map
from data_modules.synthetic_drawing import Attributes, draw_labels, render, sample_attributes
from facemogle.atomic import atomic_write_json, atomic_write_text
from facemogle.cli import run_cli


@dataclass
class SyntheticFace:
    image: np.ndarray  # (S, S, 3) uint8
    labels: np.ndarray  # (S, S) uint8
    attributes: Attributes
    captions: list[str]


def draw_face(rng: np.random.Generator, size: int) -> SyntheticFace:
    a = sample_attributes(rng)
    offset = (rng.normal(0, 0.04), rng.normal(0.02, 0.04))
    fine, geo = draw_labels(2 * size, a, offset)
    image = render(fine, geo, a, rng).reshape(size, 2, size, 2, 3).mean((1, 3))
    labels, _ = draw_labels(size, a, offset)
    return SyntheticFace(np.round(image).astype(np.uint8), labels, a, captions(a, rng))


def _phrases(a: Attributes) -> dict[str, list[str]]:
    """Phrases true for `a`, by verb: the person has / is / wears them."""
    has, is_, wears = [], ["bald"] if a.hair_length == "bald" else [], []
    is_.append("smiling" if a.smiling else "not smiling")
    if a.hair_length != "bald":
        texture = "wavy" if a.wavy else "straight"
        length = {"short": "short ", "long": "long ", "medium": ""}[a.hair_length]
        has.append(f"{length}{a.hair_color} {texture} hair")
        if a.bangs:
            has.append("bangs")
    if a.skin == "pale":
        has.append("pale skin")
    if a.mouth_open:
        has.append("mouth slightly open")
    for flag, text in (
        (a.lipstick, "lipstick"),
        (a.eyeglasses, "eyeglasses"),
        (a.hat, "a hat"),
        (a.earrings, "earrings"),
        (a.necklace, "a necklace"),
    ):
        if flag:
            wears.append(text)
    return {"has": has, "is": is_, "wears": wears}


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _sentence(subject: str, pronoun: str, phrases: dict[str, list[str]]) -> str:
    """ "She has blond wavy hair and wears eyeglasses. She is smiling." from the chosen phrases."""
    first = [
        f"{verb} {_join(phrases[key])}" for key, verb in (("has", "has"), ("wears", "wears")) if phrases[key]
    ]
    sentences = [f"{subject} {' and '.join(first)}."] if first else []
    if phrases["is"]:
        sentences.append(f"{pronoun if first else subject} is {_join(phrases['is'])}.")
    return " ".join(sentences)


def captions(a: Attributes, rng: np.random.Generator) -> list[str]:
    """5-10 distinct captions; the first mentions every attribute, the others random subsets."""
    female = a.gender == "female"
    pronoun = "She" if female else "He"
    noun = "woman" if female else "man"
    subjects = [pronoun, f"This {noun}", f"The {noun}", "The person", "This person"]
    phrases = _phrases(a)
    out = [_sentence(subjects[int(rng.integers(2))], pronoun, phrases)]
    want = int(rng.integers(5, 11))
    for _ in range(100):
        if len(out) == want:
            break
        pick = {k: [p for p in v if rng.random() < 0.6] for k, v in phrases.items()}
        if not any(pick.values()):
            pick["is"] = phrases["is"][:1]
        for chosen in pick.values():
            rng.shuffle(chosen)
        text = _sentence(subjects[int(rng.integers(len(subjects)))], pronoun, pick)
        if text not in out:
            out.append(text)
    for subject in subjects:  # few attributes: the full description with every subject gives 5
        text = _sentence(subject, pronoun, phrases)
        if len(out) < 5 and text not in out:
            out.append(text)
    return out


def _write_faces(out: Path, ids: range, size: int, seed: int) -> dict[str, dict]:
    """Draw and write faces `ids`; their attributes by id."""
    attributes = {}
    for i in ids:
        face = draw_face(np.random.default_rng([seed, i]), size)
        atomic_save(Image.fromarray(face.image), out / "face" / f"{i}.jpg", quality=95)
        save_label_map(face.labels, out / "mask" / f"{i}.png")
        atomic_write_text(out / "text" / f"{i}.txt", "\n".join(face.captions) + "\n")
        attributes[str(i)] = asdict(face.attributes)
    return attributes


def default_workers() -> int:
    """The cores this process may use (sched_getaffinity is Linux's; elsewhere all of them)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def write_synthetic(
    out: str | Path, n: int, size: int, seed: int = 0, progress: bool = False, workers: int = 1
) -> Path:
    """workers > 1 draws in that many processes: the files are the same, as face i depends on (seed, i)
    alone. attributes.json is written last, so a set that has it is complete."""
    if n <= 0 or size < 16 or size % 2:
        raise ValueError(f"need n > 0 and an even size >= 16, got n={n}, size={size}")
    if workers < 1:
        raise ValueError(f"need workers >= 1, got {workers}")
    out = Path(out)
    chunks = [range(start, min(start + 50, n)) for start in range(0, n, 50)]
    draw = partial(_write_faces, out, size=size, seed=seed)
    pool = ProcessPoolExecutor(min(workers, len(chunks))) if workers > 1 else None
    attributes = {}
    with pool or nullcontext(), tqdm(total=n, desc="synthetic faces", disable=not progress) as bar:
        for ids, drawn in zip(chunks, pool.map(draw, chunks) if pool else map(draw, chunks), strict=True):
            attributes |= drawn  # in chunk order: the ids ascend
            bar.update(len(ids))
    atomic_write_json(out / "attributes.json", attributes)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write a synthetic face set in the MM-CelebA-HQ layout.")
    parser.add_argument("--out", required=True)
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--workers", type=int, default=default_workers(), help="processes drawing faces (default: the cores)"
    )
    args = parser.parse_args(argv)
    write_synthetic(args.out, args.n, args.size, args.seed, progress=True, workers=args.workers)


if __name__ == "__main__":
    run_cli(main)
