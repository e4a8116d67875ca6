"""Evaluate a finished run: `python -m experiments.evaluate --run RUN_DIR --split test [--n N] [--modes ...]`.

Writes RUN_DIR/eval/SPLIT.json and SPLIT.md (experiments/evaluation/run.py says what they hold). Evaluator
models are given by path: --clip DIR and --parser DIR (`make evaluators` trains the small synthetic ones
into checkpoints/evaluators/synthetic/{clip,parser}); for real data --features inception --inception FILE
--clip DIR --parser DIR. `--protocol paper` adds Face-MoGLE's own evaluation (Table 1's columns) with the
models given by --inception-torchscript, --cmmd-clip, --text-clip, --dino and --image-reward.
"""

from __future__ import annotations

import argparse

from data_modules.split import SPLITS
from experiments.evaluation.run import PROTOCOLS, EvalSettings, evaluate_run
from experiments.runs.io import add_allow_unverified
from experiments.runs.prerequisites import require_run
from facemogle.cli import run_cli
from facemogle.evaluators import EvaluatorConfig
from facemogle.evaluators.config import PaperEvaluatorConfig
from facemogle.metrics.suite import MetricsConfig
from facemogle.sampling import MODES, TEXT_ONLY_CONDITIONS, check_modes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="Evaluate a finished facemogle run (FID, KID, CMMD, CLIP score, mask)."
    )
    ap.add_argument("--run", required=True, help="run directory with export/ (experiments.train)")
    ap.add_argument("--split", default="test", choices=SPLITS)
    ap.add_argument("--n", type=int, default=None, help="first N faces of the split (default: all)")
    ap.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, from {MODES}")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument(
        "--steps", type=int, default=None, help="sampling steps (default: the run's train.sample)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--text-only-condition",
        choices=TEXT_ONLY_CONDITIONS,
        default=None,
        help="text mode: an all-background mask as the condition, or no condition tokens "
        "(default: the run's train.sample.text_only_condition)",
    )
    ap.add_argument("--device", default=None, help="default: cuda when there is one, else cpu")
    ap.add_argument("--features", default=EvaluatorConfig.features, help="FID/KID features: clip | inception")
    ap.add_argument("--clip", default=None, help="CLIP directory (none: no CLIP score / CMMD)")
    ap.add_argument("--parser", default=None, help="SegFormer face parser directory (none: no mask mIoU)")
    ap.add_argument(
        "--parser-label-order",
        default=None,
        help="celebamask-hq | jonathandinu/face-parsing | face-parsing.pytorch | bisenet",
    )
    ap.add_argument("--inception", default=None, help="Inception weights file (--features inception)")
    ap.add_argument("--cache-dir", default="cache/eval", help="real-image feature cache ('' for none)")
    ap.add_argument("--kid-subset-size", type=int, default=MetricsConfig.kid_subset_size)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides of the run's config")
    add_allow_unverified(ap)
    paper = ap.add_argument_group("the paper's protocol (--protocol paper)")
    paper.add_argument(
        "--protocol", choices=PROTOCOLS, default="ours", help="paper: also Face-MoGLE's own metrics"
    )
    paper.add_argument(
        "--inception-torchscript", default=None, help="clean-fid's inception-2015-12-05.pt (FID, KID)"
    )
    paper.add_argument(
        "--cmmd-clip", default=None, help="CLIP directory for CMMD (openai/clip-vit-large-patch14-336)"
    )
    paper.add_argument(
        "--text-clip", default=None, help="CLIP directory for the text score (openai/clip-vit-base-patch16)"
    )
    paper.add_argument("--dino", default=None, help="DINO ViT directory for Mask (facebook/dino-vitb8)")
    paper.add_argument(
        "--dino-layer", type=int, default=None, help="the block whose keys are compared (default: last)"
    )
    paper.add_argument(
        "--dino-splice",
        action="store_true",
        help="also Mask under Splice's preprocessing (224 px, ImageNet norm)",
    )
    paper.add_argument("--image-reward", default=None, help="ImageReward-v1.0 directory (IR)")
    paper.add_argument(
        "--kid-seed", type=int, default=PaperEvaluatorConfig.kid_seed, help="clean-fid KID subsets"
    )
    return ap.parse_args(argv)


def settings_from(args: argparse.Namespace) -> EvalSettings:
    modes = check_modes([m.strip() for m in args.modes.split(",") if m.strip()], "--modes")
    evaluators = EvaluatorConfig(
        clip_path=args.clip or None,
        parser_path=args.parser or None,
        parser_label_order=args.parser_label_order,
        features=args.features,
        inception_path=args.inception,
    )
    return EvalSettings(
        run=args.run,
        split=args.split,
        n=args.n,
        modes=modes,
        batch_size=args.batch_size,
        steps=args.steps,
        seed=args.seed,
        text_only_condition=args.text_only_condition,
        device=args.device,
        evaluators=evaluators,
        kid_subset_size=args.kid_subset_size,
        cache_dir=args.cache_dir or None,
        overrides=args.set,
        verify=not args.allow_unverified,
        protocol=args.protocol,
        paper=PaperEvaluatorConfig(
            inception_path=args.inception_torchscript,
            cmmd_clip_path=args.cmmd_clip,
            text_clip_path=args.text_clip,
            dino_path=args.dino,
            dino_layer=args.dino_layer,
            dino_splice=args.dino_splice,
            image_reward_path=args.image_reward,
            kid_seed=args.kid_seed,
        ),
    )


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    settings = settings_from(args)
    require_run(args.run, clip=args.clip, parser=args.parser, data=True)
    evaluation = evaluate_run(settings)
    print(evaluation.table)
    print(f"wrote {evaluation.json_path} and {evaluation.markdown_path}")
    return evaluation.results


if __name__ == "__main__":
    run_cli(main)
