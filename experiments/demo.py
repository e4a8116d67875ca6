"""An interactive demo of a finished run: draw or upload a mask, type a prompt, look at the face.

    python -m experiments.demo --run runs/tiny [--parser DIR] [--port 7860] [--host 127.0.0.1]
    make demo                                    # the embedded default's run

A gradio page (facemogle.pipeline.FaceMoGLEPipeline underneath):
- inputs: a mask editor whose brushes are the 19 CelebAMask-HQ classes in the official palette (a legend
  names them), upload of a label map or a palette mask, example masks of the run's test split (with their
  captions), prompt, mode, seed, steps, the guidance scales and one strength slider per region expert;
- outputs: the face, the gate's weight on each region's own expert over the image, the gate per region and
  expert at a few steps, and with a face parser (`--parser`, or the run's eval.evaluators.parser_path) the
  parse of the face and its mIoU against the mask.
Colours near but off the palette (a mask saved as JPEG, a soft brush edge) take the nearest class, with a
warning in the page; a mask that is not square, or larger than 8 MiB or 2048x2048 pixels, is refused with a
message there. The page is served on 127.0.0.1; another --host needs --auth USER:PASSWORD or
--allow-open-access, and logs a warning.
"""

from __future__ import annotations

import argparse

import torch

from experiments.app.core import EXAMPLES, Demo, example_masks, find_parser
from experiments.app.page import check_access, launch
from experiments.runs.io import add_allow_unverified, load_run
from experiments.runs.prerequisites import require_run
from facemogle.cli import run_cli


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m experiments.demo", description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, help="a run directory with an export/ folder")
    p.add_argument(
        "--parser", help="a face parser directory (default: the run's eval.evaluators.parser_path)"
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address to serve on; one other than loopback needs --auth or --allow-open-access",
    )
    p.add_argument("--auth", metavar="USER:PASSWORD", help="a login for the page (gradio's auth)")
    p.add_argument(
        "--allow-open-access",
        action="store_true",
        help="serve on a non-loopback --host without a password (a warning is logged)",
    )
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--examples", type=int, default=EXAMPLES, help="example masks from the test split")
    # one request of the tiny model is too small to share out; on a busy CPU more threads wait on each other
    p.add_argument("--threads", type=int, default=1, help="CPU threads for torch (0: torch's default)")
    add_allow_unverified(p)
    args = p.parse_args(argv)
    auth = None
    if args.auth is not None:
        user, _, password = args.auth.partition(":")
        if not user or not password:
            p.error(f"--auth {args.auth!r}: expected USER:PASSWORD")
        auth = (user, password)
    check_access(args.host, auth, args.allow_open_access)  # before the model is loaded
    if args.threads:
        torch.set_num_threads(args.threads)
    require_run(args.run, parser=args.parser)
    run = load_run(args.run, verify=not args.allow_unverified)
    demo = Demo(run, find_parser(run, args.parser))
    launch(demo, example_masks(run, args.examples), args.host, args.port, True, auth, args.allow_open_access)


if __name__ == "__main__":
    run_cli(main)
