"""The choice of the checkpoint a run resumes from (callbacks.checkpoints writes them atomically).

`newest_checkpoint` picks, among every checkpoint of a run (last.ckpt, requeue.ckpt, step-NNNNNN.ckpt;
files, or folders of shards), the one with the highest training step that loads, and logs each one it
skipped and why: a run killed between two writes resumes from whichever is newest. A checkpoint is read as
data only (facemogle.data_only): one that would unpickle code, whatever its name, stops the resume with its
name instead of being skipped, as it is no half-written file but a file someone put there.
"""

from __future__ import annotations

import logging
import pickle
import zipfile
from pathlib import Path

from torch.distributed.checkpoint import FileSystemReader

from facemogle.data_only import NotDataOnly, load_data

log = logging.getLogger(__name__)

# The file Lightning writes beside the shards of a sharded checkpoint folder (its name is private there).
METADATA_FILENAME = "meta.pt"

# what a truncated, emptied or overwritten checkpoint raises when read
UNREADABLE = (
    OSError,
    EOFError,
    RuntimeError,
    KeyError,
    ValueError,
    pickle.UnpicklingError,
    zipfile.BadZipFile,
)


def checkpoint_step(path: Path) -> int:
    """The training step a checkpoint holds; raises one of UNREADABLE when it does not load, NotDataOnly
    when it would unpickle more than data."""
    if path.is_dir():  # FSDP: shards with their .metadata, and rank 0's meta.pt
        FileSystemReader(path).read_metadata()
        meta = load_data(path / METADATA_FILENAME, map_location="cpu")
    else:
        meta = load_data(path, map_location="cpu", mmap=True)
    return int(meta["global_step"])


def newest_checkpoint(folder: Path) -> Path | None:
    """The loadable checkpoint with the highest step in `folder` (the later written on a tie), or None."""
    found = []
    for path in sorted(folder.glob("*.ckpt")) if folder.is_dir() else []:
        try:
            step = checkpoint_step(path)
        except NotDataOnly:
            raise
        except UNREADABLE as e:
            log.warning("resume: skipping %s, which does not load (%s: %s)", path, type(e).__name__, e)
            continue
        found.append((step, path.stat().st_mtime_ns, path))
    if not found:
        return None
    step, _, path = max(found)
    log.info("resume: from %s (step %d)", path, step)
    return path
