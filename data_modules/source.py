"""Where a run's faces come from: the data-source keys that stage 2's `data` (DataConfig) and the evaluators'
`data` (EvaluatorDataConfig) share by inheritance. Stage 1's config keeps its own top-level `data` (the root),
`resolution` and `split` keys, which its YAML files and commands write."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from data_modules.layouts import LAYOUTS
from data_modules.split import SplitConfig
from facemogle.rules import POSITIVE, Range, check_ranges


@dataclass
class DataSource:
    root: str = "data/synthetic"
    layout: str = "auto"  # one of data_modules.layouts.LAYOUTS
    captions: str | None = None  # raw CelebAMask-HQ only: caption folder or json
    resolution: int = 64
    split: SplitConfig = field(default_factory=SplitConfig)

    RULES: ClassVar[dict[str, Range]] = {"resolution": POSITIVE}

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"data.layout={self.layout!r}: expected one of {LAYOUTS}")
        check_ranges(self)
