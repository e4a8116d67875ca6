"""Stage 1: pretrain the tiny FLUX backbone (experiments/training/backbone_stage.py) from a YAML config and overrides.

    python -m experiments.pretrain_backbone --config experiments/configs/backbone_tiny.yaml \
        data=data/synthetic out=checkpoints/tiny-flux [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict

from experiments.config.load import add_allow_resolvers, load_config
from experiments.config.schema import PretrainConfig
from experiments.training.backbone_stage import pretrain_backbone
from facemogle.cli import run_cli


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m experiments.pretrain_backbone", description=__doc__.split("\n")[0]
    )
    p.add_argument("--config", help="a YAML file mirroring experiments.config.PretrainConfig")
    add_allow_resolvers(p)
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args(argv)
    config = load_config(
        args.config, args.overrides, schema=PretrainConfig, allow_resolvers=args.allow_resolvers
    )
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    report = pretrain_backbone(config)
    print(json.dumps(asdict(report), indent=2))


if __name__ == "__main__":
    run_cli(main)
