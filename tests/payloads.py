"""Files that would run code when unpickled: each writes a marker file, so a test can assert that no entry
point ever ran one (tests/test_data_only.py)."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import torch


class WritesMarker:
    """Unpickling it calls os.system("touch MARKER")."""

    def __init__(self, marker: Path):
        self.marker = Path(marker)

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def write_payload(path: Path, marker: Path, **data) -> Path:
    """A torch file at `path` (any name) holding `data`, a step as a checkpoint's, and the payload."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"global_step": 10**6, **data, "payload": WritesMarker(marker)}, path)
    return path
