"""Evaluator models: loaders for the real ones, builders for the small ones trained on synthetic faces.

    parser.py     face parser: SegformerForSemanticSegmentation in a local transformers directory;
                  `FaceParser` maps its classes to facemogle's part order (face_parts.PARTS)
    clip.py       CLIPModel + CLIPProcessor in a local transformers directory; `ClipEmbedder` gives image /
                  text embeddings (also the FID/KID features for synthetic data, CLIPScore's and CMMD's model)
    inception.py  FID's standard network from a local weights file (needs the `gpu` extra: torch-fidelity)
    config.py     EvaluatorConfig / PaperEvaluatorConfig: where the models are (no defaults: a missing model
                  is a named error)
    the paper's own evaluation (facemogle.metrics.paper):
    clean_inception.py  clean-fid's resize and torchscript Inception features (inception-2015-12-05.pt)
    paper_clip.py       the CLIP text score and CMMD embedding with the reference code's preprocessing
    dino.py             DINO ViT keys and their self-similarity (the Mask column's structure distance)
    image_reward.py     ImageReward-v1.0 on transformers' BLIP classes, from its own checkpoint
    standins.py         small stand-ins of those models for the embedded default
    lit_modules.py the LightningModules that train the small parser and CLIP (experiments.train_evaluators)

Every extractor maps float images in [0, 1], (b, 3, H, W), to features (b, num_features).
"""

from facemogle.evaluators.clip import (
    CLIP_MEAN,
    CLIP_STD,
    ClipEmbedder,
    SmallClipConfig,
    build_small_clip,
    load_clip,
    save_clip,
)
from facemogle.evaluators.config import (
    FEATURE_EXTRACTORS,
    EvaluatorConfig,
    PaperEvaluatorConfig,
    build_feature_extractor,
)
from facemogle.evaluators.inception import INCEPTION_FILE, InceptionFeatures, load_inception
from facemogle.evaluators.parser import (
    FACE_PARSING_PYTORCH_ORDER,
    IMAGENET_MEAN,
    IMAGENET_STD,
    LABEL_ORDERS,
    FaceParser,
    SmallParserConfig,
    build_small_parser,
    label_map_for,
    load_face_parser,
    save_face_parser,
)

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "FACE_PARSING_PYTORCH_ORDER",
    "FEATURE_EXTRACTORS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INCEPTION_FILE",
    "LABEL_ORDERS",
    "ClipEmbedder",
    "EvaluatorConfig",
    "PaperEvaluatorConfig",
    "FaceParser",
    "InceptionFeatures",
    "SmallClipConfig",
    "SmallParserConfig",
    "build_feature_extractor",
    "build_small_clip",
    "build_small_parser",
    "label_map_for",
    "load_clip",
    "load_face_parser",
    "load_inception",
    "save_clip",
    "save_face_parser",
]
