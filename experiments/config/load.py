"""Reading a config: the schema's defaults <- a YAML file <- `key=value` overrides, and writing one back."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from experiments.config.schema import Config, EvaluatorsConfig, PretrainConfig
from facemogle.data_only import refuse_resolvers

Schema = TypeVar("Schema")


ALLOW_RESOLVERS_HINT = " (the training commands' --allow-resolvers lets a config of your own call them)"


def add_allow_resolvers(parser: argparse.ArgumentParser) -> None:
    """The training commands' opt-in to resolvers in a config of one's own (never in a run's or an export's)."""
    parser.add_argument(
        "--allow-resolvers",
        action="store_true",
        help="let --config and key=value call OmegaConf resolvers such as ${oc.env:NAME} (refused by default: "
        "a config reads no environment; the run's config.yaml records the resolved values)",
    )


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    schema: type[Schema] = Config,
    allow_resolvers: bool = False,
) -> Schema:
    """Defaults <- YAML file <- `key=value` overrides, checked against the `schema` dataclass (stage 2's
    `Config` unless told otherwise); -> an instance of `schema`. A value calling an OmegaConf resolver
    (`${oc.env:...}`) is an error naming the key unless `allow_resolvers` (facemogle.data_only)."""
    layers = [OmegaConf.structured(schema)]
    if path is not None:
        if not Path(path).is_file():
            raise ValueError(f"config file {path} does not exist")
        layers.append(OmegaConf.load(path))
        if not allow_resolvers:
            refuse_resolvers(layers[-1], str(path), ALLOW_RESOLVERS_HINT)
    layers.append(OmegaConf.from_dotlist(list(overrides or [])))
    if not allow_resolvers:
        refuse_resolvers(layers[-1], "from the command line", ALLOW_RESOLVERS_HINT)
    try:
        merged = OmegaConf.merge(*layers)
        return OmegaConf.to_object(merged)
    except ConfigKeyError as err:
        raise ValueError(
            f"{_where(path)}unknown config key {err.full_key!r}; valid keys: {_siblings(err, schema)}"
        ) from err
    except ValidationError as err:
        raise ValueError(
            f"{_where(path)}bad value for {err.full_key!r}: {str(err.msg).splitlines()[0]}"
        ) from err


def _where(path) -> str:
    return f"{path}: " if path is not None else ""


def _siblings(err: ConfigKeyError, schema: type[Any]) -> str:
    parent = err.full_key.rsplit(".", 1)[0] if "." in err.full_key else ""
    node = OmegaConf.structured(schema)
    for part in filter(None, parent.split(".")):
        node = node[part]
    return ", ".join(sorted(node.keys()))


def to_yaml(config: Config | PretrainConfig | EvaluatorsConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(config))
