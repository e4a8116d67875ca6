"""What the demo page (experiments.app.page) calls, without gradio: the run's pipeline behind it, masks in
and out of the editor, the face with its gate maps, parse and mIoU, the test split's example masks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from callbacks.visuals import gate_map, to_uint8, token_heatmap
from data_modules.dataset import load_faces
from data_modules.layouts import scan
from data_modules.readers import oriented
from data_modules.split import split_records
from experiments.runs.io import LoadedRun
from facemogle.evaluators import FaceParser, load_face_parser
from facemogle.face_parts import CONDITION_MAPS, PALETTE, PARTS, colorize
from facemogle.gate_analysis import own_expert_weights
from facemogle.mask_images import labels_from_image, majority_downsample, part_names
from facemogle.metrics.mask import per_image_iou
from facemogle.sampling import seed_generators

CANVAS = 512  # the editor's square canvas, in pixels
EXAMPLES = 8  # example masks from the test split
GATE_PANELS = 2  # steps shown in the gate table (the first and the last): two fit the page's column


@dataclass
class Face:
    image: np.ndarray  # (H, W, 3) uint8
    gate: np.ndarray | None = None  # (H, W, 3): the gate's weight on each token's own region expert
    gate_table: np.ndarray | None = None  # regions x experts at a few steps (callbacks.visuals.gate_map)
    parse: np.ndarray | None = None  # (H, W, 3) the parser's labels of the face, in the palette
    miou: float | None = None  # of the parse against the mask
    regions: list[str] = field(default_factory=list)  # the mask's parts, when a mask was used


def to_editor(labels: np.ndarray) -> dict:
    """(H, W) labels -> the editor's value: the palette image enlarged (nearest) to the canvas."""
    image = Image.fromarray(colorize(labels)).resize((CANVAS, CANVAS), Image.NEAREST)
    rgba = np.asarray(image.convert("RGBA"))
    return {"background": rgba, "layers": [], "composite": rgba}


# An upload's limits, checked before it is decoded: a mask needs no more (the model's faces are 64^2 to 512^2),
# and a small compressed file can decode to gigabytes (the figure is in docs/faults.md).
MAX_UPLOAD_BYTES = 8 * 2**20
MAX_UPLOAD_PIXELS = 2048 * 2048


def read_upload(path: str) -> tuple[np.ndarray, str | None]:
    """An uploaded mask file -> (H, W) labels and a warning when colours were snapped; a mask that is not
    square, or over MAX_UPLOAD_BYTES / MAX_UPLOAD_PIXELS, is a ValueError saying so."""
    name, size = Path(path).name, Path(path).stat().st_size
    if size > MAX_UPLOAD_BYTES:
        raise ValueError(f"{name} is {size} bytes: masks up to {MAX_UPLOAD_BYTES} bytes are read")
    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_UPLOAD_PIXELS:  # from the header, before decoding
                raise ValueError(
                    f"{name} is {im.width}x{im.height}: masks up to {MAX_UPLOAD_PIXELS} pixels are read "
                    "(2048x2048); scale it down first"
                )
            im.load()
            reading = labels_from_image(oriented(im), source=Path(path).name, snap=True)
    except OSError as e:
        raise ValueError(f"{Path(path).name} is not an image that can be read ({e})") from e
    h, w = reading.labels.shape
    if h != w:
        raise ValueError(
            f"{Path(path).name} is {w}x{h}: this model makes square faces, so the mask must be square "
            "(crop it to its face first)"
        )
    return reading.labels, reading.warning(Path(path).name)


class Demo:
    """What the page calls: a run's pipeline, its resolution, and an optional face parser."""

    def __init__(self, run: LoadedRun, parser: FaceParser | None = None):
        self.run, self.pipe, self.parser = run, run.pipeline, parser
        self.pipe.set_progress_bar_config(disable=True)
        self.resolution = run.config.data.resolution
        self.mogle = run.config.model.mogle

    def regions(self) -> list[str]:
        """The condition maps the run has an expert for (a strength slider each)."""
        return [CONDITION_MAPS[i] for i in self.mogle.expert_indices]

    def labels(self, editor: dict | None) -> tuple[torch.Tensor, str | None]:
        """The editor's drawing -> (1, R, R) labels at the run's resolution, and a warning when colours were
        snapped (brush edges, a JPEG background)."""
        composite = None if editor is None else editor.get("composite")
        if composite is None:
            return torch.zeros(1, self.resolution, self.resolution, dtype=torch.long), None
        reading = labels_from_image(Image.fromarray(np.asarray(composite, dtype=np.uint8)), "mask", snap=True)
        labels = torch.from_numpy(reading.labels.astype(np.int64))[None]
        if labels.shape[1] != labels.shape[2]:
            raise ValueError(f"the mask is {labels.shape[2]}x{labels.shape[1]}: draw or upload a square one")
        return majority_downsample(labels, self.resolution), reading.warning("the mask")

    def generate(
        self,
        labels: torch.Tensor,
        prompt: str,
        mode: str,
        seed: int,
        steps: int,
        scales: dict,
        strengths: dict,
    ) -> Face:
        prompt = prompt.strip()
        if "text" in mode and not prompt:
            raise ValueError(f"the {mode} mode needs a prompt")
        out = self.pipe(
            prompt=prompt if "text" in mode else None,
            mask_image=labels if "mask" in mode else None,
            num_inference_steps=int(steps),
            generator=seed_generators(int(seed), 1),
            region_scale={k: v for k, v in strengths.items() if v != 1.0},
            output_type="pt",
            **scales,
        )
        face = Face(to_uint8(out.images)[0], regions=part_names(labels) if "mask" in mode else [])
        if out.region_gate is not None:
            own = own_expert_weights(out.gate_weights, labels, self.mogle.expert_indices)[0]
            face.gate = token_heatmap(own, *face.image.shape[:2])
            face.gate_table = gate_map(out.region_gate[0], out.sigmas, panels=GATE_PANELS)
        if self.parser is not None:
            parsed = self.parser.parse(out.images.to(next(self.parser.parameters()).device)).cpu()
            face.parse = colorize(parsed[0].numpy())
            if "mask" in mode:
                iou, present = per_image_iou(parsed, labels.to(parsed), len(PARTS))
                face.miou = float(iou[present].mean())
        return face


def example_masks(run: LoadedRun, n: int) -> list[tuple[np.ndarray, str]]:
    """The first n faces of the run's test split: (labels, first caption); none when its data is absent."""
    data = run.config.data
    if not Path(data.root).is_dir():
        return []
    records = split_records(scan(data.root, data.layout, data.captions).records, data.split, "test", n)
    faces = load_faces(records, data.resolution)
    return [(faces.labels[i].numpy().astype(np.uint8), faces.captions[i]) for i in range(len(faces))]


def find_parser(run: LoadedRun, path: str | None) -> FaceParser | None:
    """The parser named (an error when it is missing), else the run's eval.evaluators.parser_path when
    that folder exists, else none."""
    if path:
        return load_face_parser(path).eval()
    path = run.config.eval.evaluators.parser_path
    return load_face_parser(path).eval() if path and Path(path).is_dir() else None


def palette_css() -> list[str]:
    """Brush colours as CSS hex, in PARTS order."""
    return [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in PALETTE.tolist()]
