"""Face parsers: a SegFormer whose classes are permuted into facemogle's part order.

A real one loads from a local transformers directory (config.json, model.safetensors, optional
preprocessor_config.json for size / mean / std); the small one for 64^2 synthetic faces is built here and
trained by facemogle.evaluators.lit_modules.FaceParserModule.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import SegformerConfig, SegformerForSemanticSegmentation

from facemogle.data_only import reading_weights_in
from facemogle.evaluators.common import MAKE_EVALUATORS, normalise_images, require_model_dir
from facemogle.face_parts import NUM_PARTS, PARTS

# face-parsing.PyTorch (zllrunning's BiSeNet) and checkpoints trained with its data preparation use this order.
FACE_PARSING_PYTORCH_ORDER: tuple[str, ...] = (
    "background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear", "r_ear", "ear_r",
    "nose", "mouth", "u_lip", "l_lip", "neck", "neck_l", "cloth", "hair", "hat",
)  # fmt: skip
# The label orders of the common face parsers, by name. jonathandinu/face-parsing (a SegFormer) lists
# CelebAMask-HQ's own order in its config's id2label; an early copy of it named the classes "skin.png", ...
# in another order, which the names (read from id2label when no order is given) sort out.
LABEL_ORDERS: dict[str, tuple[str, ...]] = {
    "celebamask-hq": PARTS,
    "jonathandinu/face-parsing": PARTS,
    "face-parsing.pytorch": FACE_PARSING_PYTORCH_ORDER,
    "bisenet": FACE_PARSING_PYTORCH_ORDER,
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PARSER_HINT = f"{MAKE_EVALUATORS}; for real faces pass a SegFormer face parser directory"


class FaceParser(nn.Module):
    """A SegFormer whose output classes are permuted into facemogle's part order.

    `label_map[k]` is the facemogle part index of the checkpoint's class k.
    """

    def __init__(
        self,
        model: SegformerForSemanticSegmentation,
        label_map: Sequence[int],
        image_size: int,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ):
        super().__init__()
        if sorted(label_map) != list(range(NUM_PARTS)):
            raise ValueError(f"label_map must be a permutation of 0..{NUM_PARTS - 1}, got {list(label_map)}")
        if model.config.num_labels != NUM_PARTS:
            raise ValueError(f"the face parser has {model.config.num_labels} classes, expected {NUM_PARTS}")
        self.model = model
        self.image_size = image_size
        self.mean, self.std = tuple(mean), tuple(std)
        # gather index: output part p reads checkpoint class inverse[p]
        inverse = torch.empty(NUM_PARTS, dtype=torch.long)
        inverse[torch.as_tensor(list(label_map))] = torch.arange(NUM_PARTS)
        self.register_buffer("gather_index", inverse, persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (b, 3, H, W) in [0, 1] -> logits (b, 19, H, W) in facemogle's part order."""
        size = (self.image_size, self.image_size)
        pixels = normalise_images(images, size, self.mean, self.std).to(self.model.dtype)
        logits = self.model(pixel_values=pixels).logits  # (b, K, h, w)
        logits = F.interpolate(logits.float(), size=images.shape[-2:], mode="bilinear", align_corners=False)
        return logits.index_select(1, self.gather_index)

    @torch.no_grad()
    def parse(self, images: torch.Tensor) -> torch.Tensor:
        """images (b, 3, H, W) in [0, 1] -> labels (b, H, W) long."""
        return self.forward(images).argmax(1)


def label_map_for(order: Sequence[str], source: str = "label order") -> list[int]:
    """Part names in checkpoint order (a ".png" suffix, as mask file names carry it, is ignored) ->
    facemogle index of each."""
    order = [name.removesuffix(".png") for name in order]
    unknown = [name for name in order if name not in PARTS]
    if unknown or sorted(order) != sorted(PARTS):
        raise ValueError(
            f"{source}: expected the {NUM_PARTS} part names {PARTS} in some order, got {list(order)}"
        )
    return [PARTS.index(name) for name in order]


def load_face_parser(path: str | Path, label_order: str | Sequence[str] | None = None) -> FaceParser:
    """A SegFormer face parser from a local directory.

    label_order: None reads class names from the config's id2label (generic LABEL_k names mean facemogle's
    order); a name in LABEL_ORDERS ("celebamask-hq", "jonathandinu/face-parsing", "face-parsing.pytorch" /
    "bisenet"); or 19 part names.
    """
    path = require_model_dir(path, "face parser", PARSER_HINT)
    with reading_weights_in(path):
        model = SegformerForSemanticSegmentation.from_pretrained(path).eval()
    if isinstance(label_order, str):
        if label_order not in LABEL_ORDERS:
            raise ValueError(
                f"label_order {label_order!r} is not one of {sorted(LABEL_ORDERS)} nor a list of names"
            )
        label_order = LABEL_ORDERS[label_order]
    if label_order is None:
        names = [model.config.id2label[i] for i in range(model.config.num_labels)]
        label_order = PARTS if all(n.startswith("LABEL_") for n in names) else names
    processor = path / "preprocessor_config.json"
    prep = json.loads(processor.read_text()) if processor.is_file() else {}
    size = prep.get("size", {"height": 512})
    image_size = size.get("height", size.get("shortest_edge", 512)) if isinstance(size, dict) else int(size)
    return FaceParser(
        model,
        label_map_for(label_order, f"{path}: label order"),
        image_size,
        prep.get("image_mean", IMAGENET_MEAN),
        prep.get("image_std", IMAGENET_STD),
    )


@dataclass
class SmallParserConfig:
    """A SegFormer for 64^2 faces. Stride 2 in the first stage, so the logits come at 32^2 and are
    upsampled (an eye is ~6 x 3 pixels at 64^2): stride 1 cost 1.8x per step and scored lower in the same
    time, as did a larger input (the tuning log in docs/evaluation.md)."""

    image_size: int = 64  # the network's input; other image sizes are resized to it
    hidden_sizes: list[int] = field(default_factory=lambda: [32, 64, 128, 160])
    depths: list[int] = field(default_factory=lambda: [1, 1, 2, 1])
    num_attention_heads: list[int] = field(default_factory=lambda: [1, 1, 2, 4])
    sr_ratios: list[int] = field(default_factory=lambda: [4, 2, 1, 1])
    strides: list[int] = field(default_factory=lambda: [2, 2, 2, 2])
    patch_sizes: list[int] = field(default_factory=lambda: [3, 3, 3, 3])
    decoder_hidden_size: int = 64


def build_small_parser(config: SmallParserConfig | None = None, seed: int = 0) -> FaceParser:
    config = config or SmallParserConfig()
    torch.manual_seed(seed)
    seg_config = SegformerConfig(
        num_labels=NUM_PARTS,
        id2label=dict(enumerate(PARTS)),
        label2id={name: i for i, name in enumerate(PARTS)},
        hidden_sizes=config.hidden_sizes,
        depths=config.depths,
        num_attention_heads=config.num_attention_heads,
        sr_ratios=config.sr_ratios,
        strides=config.strides,
        patch_sizes=config.patch_sizes,
        mlp_ratios=[2, 2, 2, 2],
        decoder_hidden_size=config.decoder_hidden_size,
        drop_path_rate=0.0,
    )
    model = SegformerForSemanticSegmentation(seg_config)
    return FaceParser(model, list(range(NUM_PARTS)), config.image_size)


def save_face_parser(parser: FaceParser, path: str | Path) -> None:
    """An ordinary transformers directory: config.json, model.safetensors, preprocessor_config.json."""
    path = Path(path)
    parser.model.save_pretrained(path)
    prep = {
        "size": {"height": parser.image_size, "width": parser.image_size},
        "image_mean": list(parser.mean),
        "image_std": list(parser.std),
        "do_normalize": True,
        "do_resize": True,
        "image_processor_type": "SegformerImageProcessor",
    }
    (path / "preprocessor_config.json").write_text(json.dumps(prep, indent=2))
