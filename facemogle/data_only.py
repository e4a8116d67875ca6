"""Files are read as data, never as code: every torch file the project opens goes through `load_data`, and
every config through `refuse_resolvers`.

`torch.load(weights_only=True)` unpickles tensors, containers and plain values only; a checkpoint, cache or
weights file that names any other global (an `os.system` in a `__reduce__`, a class of ours) is refused with
the file's name, as `NotDataOnly`, before anything of it runs. Runs and exports are shared and downloaded,
so no file under them is trusted to hold code; Lightning's checkpoints hold only such data. For the same
reason a config value calling an OmegaConf resolver (`${oc.env:...}`) is refused where it is read, unless the
command was given its opt-in flag (--allow-resolvers).
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
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


def reading_weights_in(folder: Path):
    """`reading_safetensors` for a model folder, naming its weights file (transformers' from_pretrained)."""
    return reading_safetensors(next(iter(sorted(folder.glob("*.safetensors"))), folder))


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors, read by `reading_safetensors`."""
    with reading_safetensors(path):
        return load_file(path)


# `${name:...}`: a resolver call (oc.env, oc.decode, a registered function), as against `${a.b}`, a reference
RESOLVER_CALL = re.compile(r"\$\{\s*([A-Za-z_][\w.]*)\s*:")


def resolver_calls(node: DictConfig | ListConfig) -> dict[str, str]:
    """{dotted key: value} of every value of an unresolved OmegaConf node that calls a resolver."""
    found: dict[str, str] = {}

    def walk(value: Any, key: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{key}[{i}]")
        elif isinstance(value, str) and RESOLVER_CALL.search(value):
            found[key] = value

    walk(OmegaConf.to_container(node, resolve=False), "")
    return found


def refuse_resolvers(node: DictConfig | ListConfig, source: str, hint: str = "") -> None:
    """A config value that would call a resolver when read is a ValueError naming `source` and the key: a
    config resolves references to its own keys only, never the environment (`${oc.env:WANDB_API_KEY}` would
    carry a secret into the logger and the export) or other code."""
    calls = resolver_calls(node)
    if calls:
        key, value = next(iter(calls.items()))
        name = RESOLVER_CALL.search(value).group(1)
        raise ValueError(
            f"{source}: {key}={value!r} calls the resolver {name!r}; configs resolve references to their own "
            f"keys (${{a.b}}) only{hint}"
        )


def load_weights(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """module.load_state_dict(state, strict=True), with a missing, unexpected or wrong-shaped tensor a
    ValueError naming `source` (the file), the key and both shapes instead of torch's RuntimeError."""
    expected = module.state_dict()
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    if missing or unexpected:
        raise ValueError(f"{source}: keys missing {missing[:5]}, unexpected {unexpected[:5]}")
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise ValueError(
                f"{source}: {key} has shape {tuple(value.shape)}, the model expects {tuple(expected[key].shape)}"
            )
    module.load_state_dict(state, strict=True)
