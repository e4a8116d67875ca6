"""Evaluator models: loaders for the real ones, builders for the small ones trained on synthetic faces.

    face parser   SegformerForSemanticSegmentation in a local transformers directory (config.json,
                  model.safetensors, optional preprocessor_config.json for size / mean / std).
                  `FaceParser` maps its classes to facemogle's part order (face_parts.PARTS).
    CLIP          CLIPModel + CLIPProcessor in a local transformers directory. `ClipEmbedder` gives
                  image / text embeddings; it is also the FID/KID feature extractor for synthetic data
                  (projected image embeddings, not normalised) and the model behind CLIPScore and CMMD.
    Inception     FID's standard network (needs the `gpu` extra: torch-fidelity), weights from a local file,
                  DEFAULT_INCEPTION_PATH unless told otherwise.

Every extractor maps float images in [0, 1], (b, 3, H, W), to features (b, num_features).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPProcessor,
    CLIPTextConfig,
    CLIPVisionConfig,
    PreTrainedTokenizerBase,
    SegformerConfig,
    SegformerForSemanticSegmentation,
)

from facemogle.face_parts import NUM_PARTS, PARTS

# face-parsing.PyTorch (BiSeNet) and checkpoints trained with its data preparation use this order.
FACE_PARSING_PYTORCH_ORDER: tuple[str, ...] = (
    "background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear", "r_ear", "ear_r",
    "nose", "mouth", "u_lip", "l_lip", "neck", "neck_l", "cloth", "hair", "hat",
)  # fmt: skip
LABEL_ORDERS: dict[str, tuple[str, ...]] = {
    "celebamask-hq": PARTS,
    "face-parsing.pytorch": FACE_PARSING_PYTORCH_ORDER,
}

# The file torch-fidelity and pytorch-fid both use (the same bytes: sha256 starts with 6726825d), from
# https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth
# or https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth
DEFAULT_INCEPTION_PATH = Path("checkpoints/inception/pt_inception-2015-12-05-6726825d.pth")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _require_dir(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ValueError(
            f"{path}: no {what} here (config.json missing); expected a transformers model directory"
        )
    return path


def _normalise(images: torch.Tensor, size: tuple[int, int], mean, std) -> torch.Tensor:
    """(b, 3, H, W) in [0, 1] -> resized to size and normalised."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images (b, 3, H, W) in [0, 1], got shape {tuple(images.shape)}")
    images = images.float()
    if tuple(images.shape[-2:]) != tuple(size):
        images = F.interpolate(images, size=size, mode="bicubic", align_corners=False, antialias=True)
    mean_t = torch.tensor(mean, device=images.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=images.device).view(1, 3, 1, 1)
    return (images - mean_t) / std_t


# ----------------------------------------------------------------------------------------------- parser


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
        pixels = _normalise(images, size, self.mean, self.std).to(self.model.dtype)
        logits = self.model(pixel_values=pixels).logits  # (b, K, h, w)
        logits = F.interpolate(logits.float(), size=images.shape[-2:], mode="bilinear", align_corners=False)
        return logits.index_select(1, self.gather_index)

    @torch.no_grad()
    def parse(self, images: torch.Tensor) -> torch.Tensor:
        """images (b, 3, H, W) in [0, 1] -> labels (b, H, W) long."""
        return self.forward(images).argmax(1)


def label_map_for(order: Sequence[str], source: str = "label order") -> list[int]:
    """Part names in checkpoint order -> facemogle index of each."""
    unknown = [name for name in order if name not in PARTS]
    if unknown or sorted(order) != sorted(PARTS):
        raise ValueError(
            f"{source}: expected the {NUM_PARTS} part names {PARTS} in some order, got {list(order)}"
        )
    return [PARTS.index(name) for name in order]


def load_face_parser(path: str | Path, label_order: str | Sequence[str] | None = None) -> FaceParser:
    """A SegFormer face parser from a local directory.

    label_order: None reads class names from the config's id2label (generic LABEL_k names mean facemogle's
    order); a name in LABEL_ORDERS ("face-parsing.pytorch", "celebamask-hq"); or 19 part names.
    """
    path = _require_dir(path, "face parser")
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
    upsampled (an eye is ~6 x 3 pixels at 64^2). Stride 1 with stages of 16-128 channels costs 1.8x per
    step and, trained for the same time, scored lower (mIoU 0.794 against 0.805 on the synthetic test split);
    so did a 80^2 input (0.805). experiments.train_evaluators trains it to 0.852 in 200 s on 2 cores."""

    image_size: int = 64
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


# ------------------------------------------------------------------------------------------------- CLIP


class ClipEmbedder(nn.Module):
    """A CLIPModel with its processor: embeddings from tensors, and the model interface CLIPScore calls.

    forward(images (b, 3, H, W) in [0, 1]) -> projected image embeddings (b, projection_dim), unnormalised.
    """

    def __init__(self, model: CLIPModel, processor: CLIPProcessor):
        super().__init__()
        self.model = model.eval()
        self.processor = processor
        self.num_features = model.config.projection_dim
        image_processor = processor.image_processor
        self.mean = tuple(getattr(image_processor, "image_mean", None) or CLIP_MEAN)
        self.std = tuple(getattr(image_processor, "image_std", None) or CLIP_STD)
        self.image_size = model.config.vision_config.image_size

    @property
    def config(self):
        return self.model.config

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = _normalise(images, (self.image_size, self.image_size), self.mean, self.std)
        return self.get_image_features(pixels.to(self.model.dtype)).float()

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return _pooled(self.model.get_image_features(pixel_values=pixel_values))

    def get_text_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return _pooled(self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask))

    def text_embeddings(self, captions: list[str]) -> torch.Tensor:
        """captions -> (b, projection_dim) unnormalised."""
        tokens = self.processor.tokenizer(captions, padding=True, truncation=True, return_tensors="pt")
        device = next(self.model.parameters()).device
        return self.get_text_features(
            tokens["input_ids"].to(device), tokens["attention_mask"].to(device)
        ).float()

    def clip_score_factory(self) -> Callable[[], tuple[ClipEmbedder, CLIPProcessor]]:
        """What torchmetrics' CLIPScore(model_name_or_path=...) accepts for a local model."""
        return lambda: (self, self.processor)


def _pooled(output) -> torch.Tensor:
    # transformers >= 5 returns a model output whose pooler_output is the projected embedding
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def load_clip(path: str | Path) -> ClipEmbedder:
    """CLIPModel + CLIPProcessor from a local directory (both saved there)."""
    path = _require_dir(path, "CLIP model")
    if not (path / "tokenizer_config.json").is_file():
        raise ValueError(
            f"{path}: CLIP tokenizer missing (tokenizer_config.json); save the CLIPProcessor there"
        )
    return ClipEmbedder(CLIPModel.from_pretrained(path), CLIPProcessor.from_pretrained(path))


@dataclass
class SmallClipConfig:
    image_size: int = 64
    patch_size: int = 8
    hidden_size: int = 64
    layers: int = 2
    heads: int = 2
    projection_dim: int = 64
    max_text_length: int = 77


def build_small_clip(
    tokenizer: PreTrainedTokenizerBase, config: SmallClipConfig | None = None, seed: int = 0
):
    """A CLIPModel with small towers and its processor (PIL image processor, `tokenizer`)."""
    config = config or SmallClipConfig()
    torch.manual_seed(seed)
    text = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=2 * config.hidden_size,
        num_hidden_layers=config.layers,
        num_attention_heads=config.heads,
        max_position_embeddings=config.max_text_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision = CLIPVisionConfig(
        image_size=config.image_size,
        patch_size=config.patch_size,
        hidden_size=config.hidden_size,
        intermediate_size=2 * config.hidden_size,
        num_hidden_layers=config.layers,
        num_attention_heads=config.heads,
    )
    model = CLIPModel(
        CLIPConfig(text_config=text, vision_config=vision, projection_dim=config.projection_dim)
    )
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": config.image_size},
        crop_size={"height": config.image_size, "width": config.image_size},
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
    )
    return ClipEmbedder(model, CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer))


def save_clip(clip: ClipEmbedder, path: str | Path) -> None:
    clip.model.save_pretrained(path)
    clip.processor.save_pretrained(path)


# -------------------------------------------------------------------------------------------- Inception


class InceptionFeatures(nn.Module):
    """FID's Inception-v3 pool features (2048) through torchmetrics / torch-fidelity; input [0, 1] floats."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network
        self.num_features = 2048

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network((images.clamp(0, 1) * 255).round().to(torch.uint8)).reshape(images.shape[0], -1)


def load_inception(path: str | Path = DEFAULT_INCEPTION_PATH) -> InceptionFeatures:
    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"Inception weights not found at {path}. Download pt_inception-2015-12-05-6726825d.pth "
            "(https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth) "
            "on a machine with internet access and place it there, or pass its path."
        )
    from torchmetrics.image.fid import NoTrainInceptionV3  # needs torch-fidelity (the `gpu` extra)

    network = NoTrainInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))
    return InceptionFeatures(network)


FEATURE_EXTRACTORS = ("inception", "clip")
SYNTHETIC_EVALUATORS = Path("checkpoints/evaluators/synthetic")  # `python -m experiments.train_evaluators`


@dataclass
class EvaluatorConfig:
    """Where the evaluator models are. Defaults: the small ones trained on the synthetic set.
    Real data: features="inception", clip_path a CLIP directory (e.g. openai/clip-vit-large-patch14),
    parser_path a SegFormer face parser (with parser_label_order if its classes are in another order)."""

    clip_path: str | None = str(SYNTHETIC_EVALUATORS / "clip")  # None: no CLIP score / CMMD
    parser_path: str | None = str(SYNTHETIC_EVALUATORS / "parser")  # None: no mask consistency
    parser_label_order: str | None = None  # None | "celebamask-hq" | "face-parsing.pytorch"
    features: str = "clip"  # FID / KID features: "clip" (clip_path's image tower) | "inception"
    inception_path: str = str(DEFAULT_INCEPTION_PATH)

    def __post_init__(self) -> None:
        if self.features not in FEATURE_EXTRACTORS:
            raise ValueError(f"evaluators.features={self.features!r}: expected one of {FEATURE_EXTRACTORS}")
        if self.parser_label_order is not None and self.parser_label_order not in LABEL_ORDERS:
            raise ValueError(
                f"evaluators.parser_label_order={self.parser_label_order!r}: expected one of {sorted(LABEL_ORDERS)}"
            )


def build_feature_extractor(
    kind: str, clip: ClipEmbedder | None = None, inception_path=DEFAULT_INCEPTION_PATH
):
    """FID/KID features: "inception" (the standard, real data) or "clip" (the CLIP image tower)."""
    if kind == "inception":
        return load_inception(inception_path)
    if kind == "clip":
        if clip is None:
            raise ValueError("feature extractor 'clip' needs a CLIP model (eval.clip_path)")
        return clip
    raise ValueError(f"feature extractor {kind!r} is not one of {FEATURE_EXTRACTORS}")
