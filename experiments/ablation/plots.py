"""Figures of the ablation drawn with PIL (no plotting library in the dependencies): annotated heat maps and
line charts with confidence bands, and panels put side by side. Each function returns a PIL image."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from callbacks.visuals import heat_colors

WHITE, BLACK, GREY = (255, 255, 255), (0, 0, 0), (190, 190, 190)
# distinguishable line colours, cycled
PALETTE = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189), (140, 86, 75))
FONT = ImageFont.load_default()


def _text_width(text: str) -> int:
    return int(math.ceil(FONT.getlength(text)))


def heatmap(
    values: np.ndarray,
    rows: list[str],
    columns: list[str],
    title: str,
    fmt: str = "{:.2f}",
    higher_is_better: bool = True,
    marked: tuple[int, int] | None = None,
    cell: tuple[int, int] = (44, 18),
) -> Image.Image:
    """values (r, c), nan for no value -> coloured cells with their numbers, the best end of the scale
    brightest; `marked` (row, column) gets a frame."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    low, high = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
    scaled = (values - low) / (high - low) if high > low else np.full_like(values, 0.5)
    colors = heat_colors(scaled if higher_is_better else 1 - scaled)
    cw, ch = max(cell[0], *(_text_width(c) + 6 for c in columns)), cell[1]
    left = max(_text_width(r) for r in rows) + 8
    top = 30
    image = Image.new("RGB", (left + cw * len(columns) + 4, top + ch * len(rows) + 4), WHITE)
    draw = ImageDraw.Draw(image)
    draw.text((2, 2), title, fill=BLACK, font=FONT)
    for j, name in enumerate(columns):
        draw.text((left + j * cw + 3, top - 13), name, fill=BLACK, font=FONT)
    for i, name in enumerate(rows):
        draw.text((2, top + i * ch + 3), name, fill=BLACK, font=FONT)
        for j in range(len(columns)):
            box = (left + j * cw, top + i * ch, left + (j + 1) * cw - 1, top + (i + 1) * ch - 1)
            value = values[i, j]
            draw.rectangle(box, fill=tuple(int(c) for c in colors[i, j]) if np.isfinite(value) else WHITE)
            text = fmt.format(value) if np.isfinite(value) else "-"
            shade = BLACK if not np.isfinite(value) or colors[i, j].mean() > 110 else WHITE
            draw.text((box[0] + 3, box[1] + 3), text, fill=shade, font=FONT)
    if marked is not None:
        i, j = marked
        draw.rectangle(
            (left + j * cw, top + i * ch, left + (j + 1) * cw - 1, top + (i + 1) * ch - 1),
            outline=BLACK,
            width=2,
        )
    return image


@dataclass
class Series:
    name: str
    x: list[float]
    y: list[float]
    low: list[float] | None = None  # a band from low to high (a confidence interval), where finite
    high: list[float] | None = None


def line_chart(series: list[Series], title: str, x_label: str, y_label: str, size=(420, 260)) -> Image.Image:
    """Lines with markers (and shaded bands) on linear axes, a legend on the right."""
    width, height = size
    legend = max([_text_width(s.name) for s in series] + [40]) + 30
    left, right, top, bottom = 48, 10 + legend, 30, 34
    image = Image.new("RGB", (width + legend, height), WHITE)
    draw = ImageDraw.Draw(image, "RGBA")
    draw.text((left, 4), title, fill=BLACK, font=FONT)
    xs = [v for s in series for v in s.x]
    ys = [v for s in series for v in [*s.y, *(s.low or []), *(s.high or [])] if np.isfinite(v)]
    if not xs or not ys:
        draw.text((left, height // 2), "no data", fill=BLACK, font=FONT)
        return image
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
    pad = (y1 - y0) * 0.05
    y0, y1 = y0 - pad, y1 + pad
    plot_w, plot_h = width + legend - left - right, height - top - bottom

    def at(x: float, y: float) -> tuple[float, float]:
        return left + (x - x0) / (x1 - x0) * plot_w, top + (1 - (y - y0) / (y1 - y0)) * plot_h

    draw.rectangle((left, top, left + plot_w, top + plot_h), outline=GREY)
    for k in range(5):
        y = y0 + (y1 - y0) * k / 4
        _, py = at(x0, y)
        draw.line((left - 3, py, left, py), fill=BLACK)
        draw.text((2, py - 5), f"{y:.4g}", fill=BLACK, font=FONT)
    for x in sorted(set(xs)):
        px, _ = at(x, y0)
        draw.line((px, top + plot_h, px, top + plot_h + 3), fill=BLACK)
        draw.text((px - _text_width(f"{x:g}") / 2, top + plot_h + 5), f"{x:g}", fill=BLACK, font=FONT)
    draw.text((left + plot_w / 2 - _text_width(x_label) / 2, height - 13), x_label, fill=BLACK, font=FONT)
    draw.text((left, top - 11), y_label, fill=(80, 80, 80), font=FONT)
    for k, s in enumerate(series):
        color = PALETTE[k % len(PALETTE)]
        if s.low is not None and s.high is not None:
            band = [(x, lo, hi) for x, lo, hi in zip(s.x, s.low, s.high, strict=True) if np.isfinite(lo)]
            if len(band) >= 2:
                outline = [at(x, hi) for x, _, hi in band] + [at(x, lo) for x, lo, _ in reversed(band)]
                draw.polygon(outline, fill=(*color, 50))
        points = [at(x, y) for x, y in zip(s.x, s.y, strict=True) if np.isfinite(y)]
        if len(points) >= 2:
            draw.line(points, fill=color, width=2)
        for px, py in points:
            draw.ellipse((px - 2.5, py - 2.5, px + 2.5, py + 2.5), fill=color)
        ly = top + 4 + 14 * k
        draw.line(
            (width + legend - legend + 4, ly + 5, width + legend - legend + 20, ly + 5), fill=color, width=2
        )
        draw.text((width + 26, ly), s.name, fill=BLACK, font=FONT)
    return image


def side_by_side(images: list[Image.Image], gap: int = 8) -> Image.Image:
    canvas = Image.new(
        "RGB", (sum(i.width for i in images) + gap * (len(images) - 1), max(i.height for i in images)), WHITE
    )
    x = 0
    for image in images:
        canvas.paste(image, (x, 0))
        x += image.width + gap
    return canvas


def stacked(images: list[Image.Image], gap: int = 8) -> Image.Image:
    canvas = Image.new(
        "RGB", (max(i.width for i in images), sum(i.height for i in images) + gap * (len(images) - 1)), WHITE
    )
    y = 0
    for image in images:
        canvas.paste(image, (0, y))
        y += image.height + gap
    return canvas
