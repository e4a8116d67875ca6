"""Convert the raw CelebAMask-HQ release to the MM-CelebA-HQ layout, once:

    python -m data_modules.prepare --from celebamask-hq SRC --out DST [--captions TEXT_DIR_OR_JSON]

DST/face/{i}.jpg are the original files (copied, ids kept), DST/mask/{i}.png the merged label maps as
palette PNGs (official part order, later parts overwrite earlier ones), DST/text/{i}.txt the captions
when given (an MM-CelebA-HQ text/ folder or text.json). Outputs are written atomically and existing ones
are kept, so an interrupted run can simply be restarted. Problems (an image without masks, ...) are
reported and the affected ids skipped.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from multiprocessing import Pool
from pathlib import Path

from tqdm import tqdm

from data_modules.face_files import merge_parts, save_label_map
from data_modules.layouts import DataFileError, FaceRecord, Problem, scan
from facemogle.atomic import atomic_write, atomic_write_text
from facemogle.cli import run_cli

log = logging.getLogger(__name__)
SOURCES = ("celebamask-hq",)


def _convert(job: tuple[FaceRecord, Path]) -> Problem | None:
    record, out = job
    image = out / "face" / f"{record.key}.jpg"
    mask = out / "mask" / f"{record.key}.png"
    try:
        if not mask.is_file():
            save_label_map(merge_parts(record.parts), mask)
    except DataFileError as e:
        return e.problem
    if not image.is_file():
        atomic_write(image, lambda tmp: shutil.copyfile(record.image, tmp))
    if record.captions:
        atomic_write_text(out / "text" / f"{record.key}.txt", "\n".join(record.captions) + "\n")
    return None


def prepare_celebamask_hq(
    src: str | Path,
    out: str | Path,
    captions: str | Path | None = None,
    workers: int = 1,
    progress: bool = False,
) -> list[Problem]:
    """Convert SRC (raw release) into OUT (MM-CelebA-HQ layout); returns the problems met."""
    src, out = Path(src), Path(out)
    scanned = scan(src, "celebamask-hq", captions)
    for folder in ("face", "mask", "text"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    jobs = [(r, out) for r in scanned.records]
    bar = dict(total=len(jobs), desc="prepare", disable=not progress)
    if workers > 1:
        with Pool(workers) as pool:
            results = list(tqdm(pool.imap(_convert, jobs, chunksize=16), **bar))
    else:
        results = [_convert(job) for job in tqdm(jobs, **bar)]
    problems = scanned.problems + [p for p in results if p is not None]
    if problems:
        log.warning("prepare: %d problems: %s", len(problems), "; ".join(map(str, problems)))
    return problems


def main(argv: list[str] | None = None) -> int:
    """Exit status 0: converted; 1: problems listed, one a line; 2 (run_cli): no data set to convert."""
    parser = argparse.ArgumentParser(description="Convert a face data set to the MM-CelebA-HQ layout.")
    parser.add_argument("--from", dest="source", choices=SOURCES, required=True)
    parser.add_argument("src")
    parser.add_argument("--out", required=True)
    parser.add_argument("--captions", default=None, help="MM-CelebA-HQ text/ folder or text.json to copy")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    problems = prepare_celebamask_hq(args.src, args.out, args.captions, args.workers, progress=True)
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    run_cli(lambda: sys.exit(main()))
