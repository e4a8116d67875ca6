"""Small stand-ins for the paper's evaluation models on the embedded default, in the real files' formats.

    dino/                      a ViTModel with DINO ViT-B/8's structure (patch 8, CLS token), 2 blocks of width 32
    inception-2015-12-05.pt    a scripted TinyInception with clean-fid's interface, 64 features
    image_reward/              ImageReward's BLIP classes and head, one block of width 32, a WordPiece tokenizer
    manifest.json              what each is, its seed, and that it is untrained

All three keep the random weights of a fixed seed: no synthetic data teaches DINO's self-distillation or
ImageReward's human preferences, and a random network is still a fixed, deterministic function of its input.
The DINO keys' self-similarity then compares which 8 x 8 patches look alike (the layout the structure
distance measures, without DINO's semantics); the random convolution's pooled features compare colour and
texture statistics (FID / KID on them are distances between the two sets' distributions, not Inception's);
the random reward is a fixed score of (image, caption) with no preference behind it. The CLIP columns use
the small CLIP `make evaluators` trains. 64 Inception features rather than 2048: with 120 images a 2048-wide
covariance is singular and slow for scipy's sqrtm (docs/evaluation.md has the time).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from facemogle.atomic import atomic_write_json
from facemogle.evaluators.clean_inception import INCEPTION_TORCHSCRIPT, save_tiny_inception
from facemogle.evaluators.dino import SmallDinoConfig, build_small_dino, save_dino
from facemogle.evaluators.image_reward import SmallImageRewardConfig, save_small_image_reward
from facemogle.tiny_tokenizers import build_bert_tokenizer

STANDIN_INCEPTION_FEATURES = 64
MANIFEST = "manifest.json"


def write_standins(
    root: str | Path, image_size: int = 64, seed: int = 0, corpus: Iterable[str] | None = None
) -> Path:
    """Writes the stand-ins under root (see the module docstring); corpus: captions for the tokenizer's words."""
    root = Path(root)
    dino = SmallDinoConfig(image_size=image_size)
    save_dino(build_small_dino(dino, seed=seed), root / "dino")
    save_tiny_inception(root / INCEPTION_TORCHSCRIPT, STANDIN_INCEPTION_FEATURES, seed=seed)
    reward = SmallImageRewardConfig(image_size=image_size)
    save_small_image_reward(root / "image_reward", build_bert_tokenizer(corpus=corpus), reward, seed=seed)
    manifest = {
        "trained": False,
        "seed": seed,
        "dino": {"class": "transformers.ViTModel", **vars(dino)},
        "inception": {"class": "TinyInception (torchscript)", "num_features": STANDIN_INCEPTION_FEATURES},
        "image_reward": {"class": "BlipVisionModel + BlipTextModel + ImageReward head", **vars(reward)},
    }
    atomic_write_json(root / MANIFEST, manifest, indent=2)  # last: its presence marks a complete set
    return root
