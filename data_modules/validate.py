"""Validation pass run before training, and `python -m data_modules.validate ROOT`.

Problems found: an id present in one folder only (from the scan), an unreadable or truncated image or
mask, a mask whose size does not match the image (rule in data_modules.layouts: same aspect ratio and an
integer scale factor), labels above 18 or a colour outside the palette, a missing or empty caption.
`strict=True` raises a ValueError naming the first problem's file; `strict=False` drops the affected
items, logs how many and which, and returns the report.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field

from PIL import Image

from data_modules.face_files import IMAGE_ERRORS, read_mask, sizes_compatible
from data_modules.layouts import LAYOUTS, DataFileError, FaceRecord, Problem, Scan, scan
from data_modules.readers import oriented_size
from facemogle.cli import run_cli

log = logging.getLogger(__name__)


@dataclass
class Report:
    records: list[FaceRecord]  # the items that passed
    problems: list[Problem] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # keys of records dropped for a problem

    @property
    def ok(self) -> bool:
        return not self.problems


def check_record(record: FaceRecord) -> list[Problem]:
    """Everything wrong with one face (empty list when it is usable)."""
    problems = []
    if not record.captions:
        where = record.caption_file or record.image
        problems.append(Problem(where, f"missing or empty caption for id {record.key!r}"))
    try:
        with Image.open(record.image) as im:
            im.load()
            image_size = oriented_size(im)
    except IMAGE_ERRORS as e:
        return [*problems, Problem(record.image, f"unreadable image ({e})")]
    try:
        labels = read_mask(record)
    except DataFileError as e:
        return [*problems, e.problem]
    mask_size = (labels.shape[1], labels.shape[0])
    if not sizes_compatible(image_size, mask_size):
        mask = record.mask or record.parts[0][1]
        problems.append(
            Problem(
                mask,
                f"mask is {mask_size[0]}x{mask_size[1]} but image {record.image.name} is "
                f"{image_size[0]}x{image_size[1]} (needs the same aspect ratio and an integer scale factor)",
            )
        )
    return problems


def validate(scanned: Scan, strict: bool = True) -> Report:
    problems = list(scanned.problems)
    records, skipped = [], []
    for record in scanned.records:
        found = check_record(record)
        problems += found
        if found:
            skipped.append(record.key)
        else:
            records.append(record)
    if problems and strict:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise ValueError(f"{problems[0]}{more}")
    if problems:
        log.warning(
            "data validation: %d problems, skipped %d items: %s",
            len(problems),
            len(skipped),
            "; ".join(str(p) for p in problems),
        )
    return Report(records, problems, skipped)


def main(argv: list[str] | None = None) -> int:
    """Exit status 0: every item usable; 1: problems listed, one a line; 2 (run_cli): no data set to check."""
    parser = argparse.ArgumentParser(description="Check a face data set; one line per problem.")
    parser.add_argument("root")
    parser.add_argument("--layout", default="auto", choices=LAYOUTS)
    parser.add_argument("--captions", default=None, help="caption folder or json (raw CelebAMask-HQ layout)")
    args = parser.parse_args(argv)
    report = validate(scan(args.root, args.layout, args.captions), strict=False)  # no data set at all: raises
    for problem in report.problems:
        print(problem)
    print(f"{len(report.records)} items ok, {len(report.skipped)} with problems", file=sys.stderr)
    return 1 if report.problems else 0


if __name__ == "__main__":
    run_cli(lambda: sys.exit(main()))
