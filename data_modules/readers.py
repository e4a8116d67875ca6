"""Files written by other tools, read as their authors meant them.

- Text: UTF-8, or UTF-16/32 (with or without a byte-order mark), or a Windows / Latin-1 single-byte file;
  control characters left after decoding mean the file is not text, which is an error naming it.
- Images: the EXIF orientation tag applied (phones and cameras store pixels sideways and say so in it).
- Palette masks: read by facemogle.mask_images (through the palette's colours, or by index for greys).
"""

from __future__ import annotations

import codecs
import re

from PIL import Image, ImageOps

_BOMS = (  # UTF-32 before UTF-16: the UTF-32-LE mark starts with the UTF-16-LE one
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_ORIENTATION = 0x0112
_SWAPS_SIDES = {5, 6, 7, 8}  # the orientations that rotate by 90 degrees


def decode_text(data: bytes, source: str) -> str:
    """Bytes of a caption file -> its text; ValueError naming `source` when it is not text."""
    encoding = next((enc for bom, enc in _BOMS if data.startswith(bom)), None)
    if encoding is None and b"\x00" in data:
        encoding = _utf16_without_bom(data)
    try:
        if encoding is not None:
            text = data.decode(encoding)
        else:
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                # Not UTF-8: the single-byte Western encodings of Windows and older editors.
                text = data.decode("cp1252", errors="strict") if _is_cp1252(data) else data.decode("latin-1")
    except UnicodeDecodeError as e:
        raise ValueError(f"{source}: not readable as {encoding} text ({e.reason})") from e
    bad = _CONTROL.search(text)
    if bad:
        raise ValueError(
            f"{source}: control character {bad.group()!r} at position {bad.start()}: not a text file "
            "(save captions as UTF-8 text)"
        )
    return text


def _utf16_without_bom(data: bytes) -> str | None:
    """ASCII-range text in UTF-16 has a zero in every other byte; which half tells the byte order."""
    if len(data) % 2:
        return None
    even, odd = data[0::2], data[1::2]
    if odd.count(0) > 0.9 * len(odd):
        return "utf-16-le"
    if even.count(0) > 0.9 * len(even):
        return "utf-16-be"
    return None


def _is_cp1252(data: bytes) -> bool:
    try:
        data.decode("cp1252")
    except UnicodeDecodeError:
        return False
    return True


def oriented(im: Image.Image) -> Image.Image:
    """The image as its EXIF orientation says it is to be shown (unchanged without the tag)."""
    return ImageOps.exif_transpose(im)


def oriented_size(im: Image.Image) -> tuple[int, int]:
    """(width, height) as shown, without decoding the pixels."""
    w, h = im.size
    return (h, w) if im.getexif().get(_ORIENTATION) in _SWAPS_SIDES else (w, h)
