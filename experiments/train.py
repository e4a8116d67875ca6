"""Train Face-MoGLE: `python -m experiments.train --config experiments/configs/tiny.yaml [--resume] [key=value ...]`.

What a run directory holds: experiments/training/run.py.
"""

from __future__ import annotations

import argparse
import errno

from experiments.config.checks import check_config
from experiments.config.load import Sources, add_allow_resolvers, load_config
from experiments.runs.prerequisites import require_config
from experiments.training.run import train
from facemogle.atomic import DiskFull
from facemogle.cli import run_cli


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m experiments.train", description=__doc__.split("\n")[0])
    p.add_argument("--config", help="a YAML file mirroring experiments.config.Config")
    p.add_argument(
        "--resume", action="store_true", help="continue from the newest checkpoint in RUN_DIR/checkpoints"
    )
    add_allow_resolvers(p)
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args(argv)
    config = load_config(args.config, args.overrides, allow_resolvers=args.allow_resolvers)
    sources = Sources(args.config, args.overrides)
    check_config(config, sources)  # a bad value is named before anything is found missing
    require_config(config)
    try:
        train(config, resume=args.resume, sources=sources)
    except OSError as e:
        if e.errno != errno.ENOSPC or e.filename or isinstance(e, DiskFull):
            raise
        # a writer that names no file (the logger's): the run's folder at least
        raise DiskFull(errno.ENOSPC, f"No space left on device under run_dir={config.run_dir}") from e


if __name__ == "__main__":
    run_cli(main)
