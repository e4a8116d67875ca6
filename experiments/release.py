"""Record a released set (the parts of the embedded default the repository ships), or compare a rebuilt one:

    python -m experiments.release write checkpoints/tiny-flux --parts . --metrics stage1.json --command "make backbone"
    python -m experiments.release compare checkpoints/tiny-flux checkpoints/rebuilt/tiny-flux

`write` records each file of --parts (relative to the set; `.` for all) with its sha256, the commit, the
command, the machine and the metrics in --metrics, in SET/release.json (facemogle.release). `compare` prints
whether the rebuilt set's files equal the released ones and, when they do not, which differ and how far the
set's metrics moved; it exits 0 either way (`make backbone` and `make evaluators` run it after a rebuild).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from facemogle.cli import run_cli
from facemogle.release import compare, write_release


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Record a released set, or compare a rebuilt one with it.")
    commands = ap.add_subparsers(dest="command", required=True)
    write = commands.add_parser("write", help="write SET/release.json")
    write.add_argument("set", type=Path)
    write.add_argument(
        "--parts", nargs="+", default=["."], help="files or folders of the set, relative to it"
    )
    write.add_argument(
        "--metrics", default=None, help="a JSON file of the set (relative) holding its metrics"
    )
    write.add_argument("--sections", nargs="+", default=None, help="only these top-level keys of --metrics")
    write.add_argument("--commit", default=None, help="the commit whose code made the set (default: HEAD)")
    write.add_argument("--command", dest="made_by", required=True, help="the command that made the set")
    check = commands.add_parser("compare", help="a rebuilt set against the released one")
    check.add_argument("shipped", type=Path)
    check.add_argument("rebuilt", type=Path)
    args = ap.parse_args(argv)
    if args.command == "write":
        print(
            f"wrote {write_release(args.set, args.parts, args.made_by, args.metrics, args.sections, args.commit)}"
        )
    else:
        print(compare(args.shipped, args.rebuilt).summary(args.shipped, args.rebuilt))


if __name__ == "__main__":
    run_cli(main)
