"""Benchmarks: `python -m experiments.benchmark {experts,data,...}` prints a table measured in one run.

Each benchmark is a module `experiments/benchmarks/NAME.py` with a `main(argv)` function.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import experiments.benchmarks as benchmarks
from facemogle.cli import run_cli


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__) if not m.name.startswith("_"))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    names = available()
    if not argv or argv[0] not in names:
        raise SystemExit(f"usage: python -m experiments.benchmark {{{','.join(names)}}} [options]")
    importlib.import_module(f"experiments.benchmarks.{argv[0]}").main(argv[1:])


if __name__ == "__main__":
    run_cli(main)
