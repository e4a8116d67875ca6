"""On-disk face data sets: scanning the folder layouts into records (data_modules.face_files reads and writes
the files).

Layouts (`scan(root, layout)`):

    mm-celeba-hq   face/{key}.jpg, mask/{key}.png, text/{key}.txt (one caption per line) and/or
                   text.json ({"{key}.jpg": [captions]}). Keys are any file stems, so the zero-shot sets
                   (face/, mask/, text/) read the same way; images may also be .png/.jpeg/.webp.
    celebamask-hq  the raw release: CelebA-HQ-img/{i}.jpg and
                   CelebAMask-HQ-mask-anno/{i // 2000}/{i:05d}_{part}.png, one binary PNG per annotated
                   part, merged into a label map in the official part order (later parts overwrite
                   earlier ones). Captions, which the release lacks, come from text/ or text.json under
                   the root or from `captions=` (a text folder or a json file as above).

Masks are 8-bit label maps (grayscale: the pixel value is the label), palette PNGs (read by colour, or by
index when the palette is greys: data_modules.readers) or RGB images in the CelebAMask-HQ palette, mapped
back to labels. Images and masks are turned as their EXIF orientation says; captions in UTF-8, UTF-16/32
or a single-byte Western encoding are decoded (data_modules.readers.decode_text).

Mask/image size rule: the two must have the same aspect ratio and one must be an integer multiple of
the other (1024^2 image with a 512^2 mask is fine, 1024^2 with 500^2 or 512x256 is not).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from data_modules.readers import decode_text
from facemogle.face_parts import PARTS

LAYOUTS = ("auto", "mm-celeba-hq", "celebamask-hq")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
RAW_IMAGE_DIR = "CelebA-HQ-img"
RAW_MASK_DIR = "CelebAMask-HQ-mask-anno"
RAW_IDS_PER_FOLDER = 2000
_RAW_PART_FILE = re.compile(r"^(\d+)_(" + "|".join(PARTS) + r")\.png$")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the data set, naming the offending file."""

    file: Path
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"


class DataFileError(ValueError):
    """A data file is unusable; str() reads "FILE: problem"."""

    def __init__(self, file: Path, message: str):
        super().__init__(f"{file}: {message}")
        self.problem = Problem(Path(file), message)


@dataclass(frozen=True)
class FaceRecord:
    """One face: where its image, mask and captions come from. Exactly one of `mask`, `parts` is set."""

    key: str
    image: Path
    mask: Path | None = None  # label map or palette image
    parts: tuple[tuple[str, Path], ...] = ()  # raw layout: (part name, binary PNG), any order
    captions: tuple[str, ...] = ()
    caption_file: Path | None = None  # where the captions were read from (or should have been)

    def files(self) -> list[Path]:
        extra = [self.caption_file] if self.caption_file and self.caption_file.suffix == ".txt" else []
        masks = [self.mask] if self.mask is not None else [p for _, p in self.parts]
        return [self.image, *masks, *extra]


@dataclass
class Scan:
    records: list[FaceRecord]
    problems: list[Problem] = field(default_factory=list)


def sort_keys(keys) -> list[str]:
    """Numeric order when every key is an integer (CelebA-HQ ids), else lexicographic."""
    keys = list(keys)
    if all(k.isdigit() for k in keys):
        return sorted(keys, key=int)
    return sorted(keys)


def detect_layout(root: Path) -> str:
    if (root / RAW_IMAGE_DIR).is_dir():
        return "celebamask-hq"
    if (root / "face").is_dir():
        return "mm-celeba-hq"
    raise ValueError(
        f"{root}: neither face/ (MM-CelebA-HQ layout) nor {RAW_IMAGE_DIR}/ (CelebAMask-HQ) found"
    )


def scan(root: str | Path, layout: str = "auto", captions: str | Path | None = None) -> Scan:
    """List the faces under `root`; ids present in one folder only become problems, not records."""
    root = Path(root)
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r} is not one of {LAYOUTS}")
    if not root.is_dir():
        raise ValueError(f"data root {root} does not exist")
    layout = detect_layout(root) if layout == "auto" else layout
    if layout == "mm-celeba-hq":
        return _scan_mm(root)
    return _scan_raw(root, Path(captions) if captions else None)


def _stems(folder: Path, suffixes: tuple[str, ...]) -> tuple[dict[str, Path], list[Problem]]:
    found: dict[str, Path] = {}
    problems = []
    if not folder.is_dir():
        return found, problems
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in suffixes:
            continue
        if path.stem in found:
            problems.append(Problem(path, f"duplicate id {path.stem!r} (also {found[path.stem].name})"))
            continue
        found[path.stem] = path
    return found, problems


class _Captions:
    """Captions from a text folder ({key}.txt) and/or a json file ({"{key}.jpg": [...]})."""

    def __init__(self, folder: Path | None, json_file: Path | None):
        self.folder = folder if folder is not None and folder.is_dir() else None
        self.json_file = json_file if json_file is not None and json_file.is_file() else None
        self.table: dict[str, list[str]] = {}
        if self.json_file is not None:
            data = json.loads(decode_text(self.json_file.read_bytes(), str(self.json_file)))
            if not isinstance(data, dict):
                raise ValueError(f"{self.json_file}: expected an object {{'id.jpg': [captions]}}")
            self.table = {Path(k).stem: v if isinstance(v, list) else [v] for k, v in data.items()}
        self.files = _stems(self.folder, (".txt",))[0] if self.folder else {}

    @property
    def present(self) -> bool:
        return self.folder is not None or self.json_file is not None

    def keys(self) -> set[str]:
        return set(self.files) | set(self.table)

    def get(self, key: str) -> tuple[tuple[str, ...], Path | None]:
        """The captions and their file; a caption file that is not text raises DataFileError."""
        if key in self.files:
            path = self.files[key]
            try:
                lines = decode_text(path.read_bytes(), str(path)).splitlines()
            except ValueError as e:
                raise DataFileError(path, str(e).removeprefix(f"{path}: ")) from e
            return tuple(s.strip() for s in lines if s.strip()), path
        if key in self.table:
            return tuple(str(s).strip() for s in self.table[key] if str(s).strip()), self.json_file
        where = self.folder / f"{key}.txt" if self.folder else self.json_file
        return (), where


def _scan_mm(root: Path) -> Scan:
    images, problems = _stems(root / "face", IMAGE_SUFFIXES)
    masks, more = _stems(root / "mask", IMAGE_SUFFIXES)
    problems += more
    if not images:
        raise ValueError(f"{root / 'face'}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    if not (root / "mask").is_dir():
        raise ValueError(f"{root / 'mask'}: mask folder missing")
    texts = _Captions(root / "text", root / "text.json")
    if not texts.present:
        raise ValueError(f"{root}: no captions (neither text/ nor text.json)")
    problems += [
        Problem(masks[k], "mask without an image in face/") for k in sort_keys(set(masks) - set(images))
    ]
    problems += [
        Problem(texts.get(k)[1] or root, "captions without an image in face/")
        for k in sort_keys(texts.keys() - set(images))
    ]
    records = []
    for key in sort_keys(images):
        if key not in masks:
            problems.append(Problem(images[key], f"image without a mask (mask/{key}.png)"))
            continue
        try:
            captions, source = texts.get(key)
        except DataFileError as e:
            problems.append(e.problem)
            continue
        records.append(FaceRecord(key, images[key], mask=masks[key], captions=captions, caption_file=source))
    return Scan(records, problems)


def _scan_raw(root: Path, captions: Path | None) -> Scan:
    images, problems = _stems(root / RAW_IMAGE_DIR, (".jpg",))
    parts: dict[str, list[tuple[str, Path]]] = {}
    for path in sorted((root / RAW_MASK_DIR).glob("*/*.png")):
        match = _RAW_PART_FILE.match(path.name)
        if match is None:
            problems.append(Problem(path, "not a CelebAMask-HQ part file ({id:05d}_{part}.png)"))
            continue
        parts.setdefault(str(int(match.group(1))), []).append((match.group(2), path))
    if captions is not None and captions.suffix == ".json":
        texts = _Captions(None, captions)
    elif captions is not None:
        texts = _Captions(captions, None)
    else:
        texts = _Captions(root / "text", root / "text.json")
    for key in sort_keys(set(parts) - set(images)):
        problems.append(
            Problem(parts[key][0][1], f"mask parts for id {key} without {RAW_IMAGE_DIR}/{key}.jpg")
        )
    records = []
    for key in sort_keys(images):
        if key not in parts:
            problems.append(Problem(images[key], f"image without mask parts in {RAW_MASK_DIR}/"))
            continue
        try:
            text, source = texts.get(key) if texts.present else ((), root / "text" / f"{key}.txt")
        except DataFileError as e:
            problems.append(e.problem)
            continue
        records.append(
            FaceRecord(key, images[key], parts=tuple(parts[key]), captions=text, caption_file=source)
        )
    return Scan(records, problems)


def raw_part_path(root: Path, index: int, part: str) -> Path:
    """Where the raw release keeps the binary mask of `part` for image `index`."""
    return root / RAW_MASK_DIR / str(index // RAW_IDS_PER_FOLDER) / f"{index:05d}_{part}.png"
