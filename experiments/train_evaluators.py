"""Train the small evaluator models on a synthetic face set and report their quality on its test split.

    python -m experiments.train_evaluators --config experiments/configs/evaluators_synthetic.yaml [key=value ...]

The config mirrors experiments.config.EvaluatorsConfig. The run directory (`run_dir`) holds:
    parser/, clip/              the SegFormer face parser (19 classes) and the CLIPModel + CLIPProcessor, as
                                ordinary transformers directories (facemogle.evaluators.load_face_parser / load_clip)
    report.json                 their quality on the test split (below), the config, the faces, the seconds
    config.yaml                 the resolved config
    checkpoints/{parser,clip}/  Lightning's last.ckpt of each
    logs/{parser,clip}/ or wandb/  the logger's files (logger.kind)

Reported on the test split (data.split, the "fraction" protocol for the synthetic set):
    parser   mIoU per image over the classes present (in the mask or the parse), averaged over images;
             per-class IoU; pixel accuracy
    CLIP     pairwise: an image's own caption scores above a random other image's caption (share of pairs);
             image->text recall@1/@5 among groups of 100 images with their first captions
"""

from __future__ import annotations

import argparse

from experiments.config.load import add_allow_resolvers, load_config
from experiments.config.schema import EvaluatorsConfig
from experiments.training.evaluators import summary, train_evaluators
from facemogle.cli import run_cli


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(
        prog="python -m experiments.train_evaluators", description=__doc__.split("\n")[0]
    )
    p.add_argument("--config", help="a YAML file mirroring experiments.config.EvaluatorsConfig")
    add_allow_resolvers(p)
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args(argv)
    config = load_config(
        args.config, args.overrides, schema=EvaluatorsConfig, allow_resolvers=args.allow_resolvers
    )
    report = train_evaluators(config)
    print(summary(report, config.run_dir))
    return report


if __name__ == "__main__":
    run_cli(main)
