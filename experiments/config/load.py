"""Reading a config: the schema's defaults <- a YAML file <- `key=value` overrides, and writing one back."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from experiments.config.schema import Config, EvaluatorsConfig, PretrainConfig
from facemogle.data_only import refuse_resolvers
from facemogle.rules import RuleError

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


class Sources:
    """Where each key's value came from: the command line, the YAML file, or the default."""

    def __init__(self, path: str | Path | None, overrides: list[str]):
        self.path = path
        self.cli = OmegaConf.from_dotlist(list(overrides))
        self.yaml = OmegaConf.load(path) if path is not None else OmegaConf.create()

    def of(self, key: str) -> str:
        if OmegaConf.select(self.cli, key, default=None) is not None:
            return "the command line"
        if OmegaConf.select(self.yaml, key, default=None) is not None:
            return str(self.path)
        return "the default"

    def where(self, key: str) -> str:
        return f" (from {self.of(key)})"


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    schema: type[Schema] = Config,
    allow_resolvers: bool = False,
) -> Schema:
    """Defaults <- YAML file <- `key=value` overrides, checked against the `schema` dataclass (stage 2's
    `Config` unless told otherwise); -> an instance of `schema`. A value calling an OmegaConf resolver
    (`${oc.env:...}`) is an error naming the key unless `allow_resolvers` (facemogle.data_only). A value
    outside its range is an error naming the full key, the value and where it came from."""
    layers = []  # (where its values came from, the layer)
    if path is not None:
        if not Path(path).is_file():
            raise ValueError(f"config file {path} does not exist")
        layers.append((f"{path}: ", OmegaConf.load(path)))
    layers.append(("from the command line: ", OmegaConf.from_dotlist(list(overrides or []))))
    if not allow_resolvers:
        for where, layer in layers:
            refuse_resolvers(layer, where.removesuffix(": "), ALLOW_RESOLVERS_HINT)
    merged = OmegaConf.structured(schema)
    for where, layer in layers:  # one at a time, so that an error names the layer its key came from
        try:
            merged = OmegaConf.merge(merged, layer)
        except ConfigKeyError as err:
            raise ValueError(
                f"{where}unknown config key {err.full_key!r}; valid keys: {_siblings(err, schema)}"
                f"{_other_command(layer, schema)}"
            ) from err
        except ValidationError as err:
            key = err.full_key or err.key
            what = f"bad value for {key!r}: " if key else ""
            raise ValueError(
                f"{where}{what}{str(err.msg or err).splitlines()[0]}{_other_command(layer, schema)}"
            ) from err
    try:
        return OmegaConf.to_object(merged)
    except RuleError as err:
        key = _full_key(merged, err)
        if not key:  # a dataclass built by another's __post_init__: its relative key is all there is
            raise
        raise ValueError(err.message(key, Sources(path, list(overrides or [])).where(key))) from err


def _full_key(node: DictConfig, err: RuleError, prefix: str = "") -> str:
    """The dotted key of the field `err` refused: the first node of its dataclass whose field breaks the rule,
    children before parents as OmegaConf.to_object builds them."""
    for key in node.keys():
        child = node[key]
        if isinstance(child, DictConfig):
            found = _full_key(child, err, f"{prefix}{key}.")
            if found:
                return found
    if OmegaConf.get_type(node) is err.owner and not err.rule(node[err.key]):
        return f"{prefix}{err.key}"
    return ""


# the config schemas and the command each is for, to name the command a config given to another is for
COMMANDS = {
    Config: "experiments.train",
    PretrainConfig: "experiments.pretrain_backbone",
    EvaluatorsConfig: "experiments.train_evaluators",
}


def _other_command(layer, schema: type[Any]) -> str:
    """'; this is a config for python -m X' when the layer's top-level keys are another schema's only."""
    keys = set(layer.keys())
    fits = [c for s, c in COMMANDS.items() if keys <= set(OmegaConf.structured(s).keys())]
    if keys <= set(OmegaConf.structured(schema).keys()) or not fits:
        return ""
    return f"; its keys are those of a config for python -m {fits[0]}"


def _siblings(err: ConfigKeyError, schema: type[Any]) -> str:
    parent = err.full_key.rsplit(".", 1)[0] if "." in err.full_key else ""
    node = OmegaConf.structured(schema)
    for part in filter(None, parent.split(".")):
        node = node[part]
    return ", ".join(sorted(node.keys()))


def to_yaml(config: Config | PretrainConfig | EvaluatorsConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(config))
