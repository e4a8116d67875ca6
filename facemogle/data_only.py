"""Files are read as data, never as code: every torch file the project opens goes through `load_data`.

`torch.load(weights_only=True)` unpickles tensors, containers and plain values only; a checkpoint, cache or
weights file that names any other global (an `os.system` in a `__reduce__`, a class of ours) is refused with
the file's name, as `NotDataOnly`, before anything of it runs. Runs and exports are shared and downloaded,
so no file under them is trusted to hold code; Lightning's checkpoints hold only such data.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file


class NotDataOnly(ValueError):
    """A file that holds more than tensors and plain data (or is no torch file at all)."""


def _reason(error: pickle.UnpicklingError) -> str:
    # torch wraps the unpickler's own line ("Trying to load unsupported GLOBAL posix.system ...") in advice
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    named = [line for line in lines if "GLOBAL" in line or "Unsupported" in line]
    return (named or lines[-1:] or ["not a torch file"])[0]


def load_data(path: str | Path, **kwargs: Any) -> Any:
    """torch.load(path, weights_only=True, **kwargs); a file needing more is a NotDataOnly naming it."""
    try:
        return torch.load(path, weights_only=True, **kwargs)
    except pickle.UnpicklingError as e:
        raise NotDataOnly(
            f"{path} is refused: it does not load as data only ({_reason(e)}). facemogle never unpickles "
            "code from a file (torch.load weights_only=True); remove the file, or write it again as tensors"
        ) from None


@contextmanager
def reading_safetensors(path: str | Path) -> Iterator[None]:
    """Inside it, a truncated or foreign safetensors file (a SafetensorError) is a ValueError naming it."""
    try:
        yield
    except SafetensorError as e:
        raise ValueError(
            f"{path} is not a complete safetensors file ({e}): copy or download it again"
        ) from None


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors, read by `reading_safetensors`."""
    with reading_safetensors(path):
        return load_file(path)
