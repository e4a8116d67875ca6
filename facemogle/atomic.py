"""Writes that are never seen half done: a file or folder appears complete at its final path, or not at all.

Each writer fills a temporary name in the target's own folder (so the rename never crosses filesystems),
flushes it to disk, and `os.replace`s it onto the target; a failed or interrupted write leaves the old
target, if any, and no temporary behind. A full disk is an OSError (ENOSPC) naming the target and its folder,
whatever the writer raised (torch.save reports it as a RuntimeError "basic_ios::clear: iostream error").
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def _temporary(path: Path) -> Path:
    # the pid keeps writers in parallel (a SLURM array sharing a cache) off each other's temporaries
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# what torch's stream writer says when a write fails (a full disk, mostly)
_TORCH_WRITE_FAILED = ("iostream error", "failed writing file", "unexpected pos")


class DiskFull(OSError):
    """A write that failed for want of space, naming its file and folder."""


def disk_full(path: Path, error: BaseException) -> DiskFull | None:
    """The one-line OSError for `error` when it is a failed write of `path` on a full disk, else None."""
    failed = isinstance(error, OSError) and error.errno == errno.ENOSPC
    failed |= isinstance(error, RuntimeError) and any(m in str(error) for m in _TORCH_WRITE_FAILED)
    if not failed:
        return None
    free = shutil.disk_usage(path.parent if path.parent.exists() else Path.cwd()).free
    return DiskFull(
        errno.ENOSPC, f"No space left on device: writing {path} failed ({free} bytes free in {path.parent})"
    )


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` to fill a temporary file, then move it onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    try:
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        tmp.unlink(missing_ok=True)
        full = disk_full(path, e)
        if full is None:
            raise
        raise full from e
    finally:
        tmp.unlink(missing_ok=True)  # still there only when the write or the rename failed
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, data, indent: int = 1) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=indent))


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Fill the yielded temporary folder; on success it replaces `path` (an older folder there is removed
    only once the new one is complete), on failure it is removed and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, old = _temporary(path), path.with_name(f".{path.name}.{os.getpid()}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        for file in tmp.rglob("*"):
            if file.is_file():
                _fsync(file)
        if path.exists():
            path.rename(old)
        tmp.rename(path)
    except (OSError, RuntimeError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        full = disk_full(path, e)
        if full is None:
            raise
        raise full from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
