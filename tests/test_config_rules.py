"""Each ranged config key is checked once, by the dataclass that defines it (its `RULES`, facemogle.rules): a
value outside the range, given on the command line, is one error naming the full key, the value and the
command line; and no other module repeats a range check of these keys."""

from __future__ import annotations

import ast
import re
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import get_type_hints

import pytest
import torch

from experiments.config.load import load_config
from experiments.config.schema import Config, EvaluatorsConfig, PretrainConfig
from facemogle.lit_module import OptimConfig, lr_schedule
from facemogle.rules import Range

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("facemogle", "data_modules", "callbacks", "experiments")
# each schema with the shipped config a user starts from
SCHEMAS = {
    Config: "experiments/configs/tiny.yaml",
    PretrainConfig: "experiments/configs/backbone_tiny.yaml",
    EvaluatorsConfig: "experiments/configs/evaluators_synthetic.yaml",
}


def ruled_keys(schema: type, prefix: str = "") -> list[tuple[str, Range]]:
    """(full dotted key, its range) for every rule of `schema` and of every dataclass nested in it."""
    found = [(prefix + key, rule) for key, rule in getattr(schema, "RULES", {}).items()]
    hints = get_type_hints(schema)
    for f in fields(schema):
        if is_dataclass(hints[f.name]):
            found += ruled_keys(hints[f.name], f"{prefix}{f.name}.")
    return found


RULED = [(schema, key, rule) for schema in SCHEMAS for key, rule in ruled_keys(schema)]


def keys_of(schema: type) -> list[str]:
    return [key for s, key, _ in RULED if s is schema]


def test_every_stage_has_its_rules_each_key_one_rule():
    assert all(len(keys_of(schema)) == len(set(keys_of(schema))) for schema in SCHEMAS)
    assert [len(keys_of(schema)) >= 15 for schema in SCHEMAS] == [True, True, True]
    # keys that were checked in two or three places before
    assert {"seed", "train.optim.warmup_steps", "train.optim.decay_steps", "data.text_dropout"} <= set(
        keys_of(Config)
    )
    assert {"seed", "resolution", "flux.text_dropout", "split.seed"} <= set(keys_of(PretrainConfig))
    assert {"seed", "data.resolution", "clip.steps", "parser.train.lr"} <= set(keys_of(EvaluatorsConfig))


@pytest.mark.parametrize(
    "schema, key, rule", RULED, ids=[f"{schema.__name__}:{key}" for schema, key, _ in RULED]
)
def test_a_value_outside_a_rule_is_one_error_naming_the_key_and_the_command_line(schema, key, rule):
    assert not rule(rule.bad)
    with pytest.raises(ValueError) as err:
        load_config(SCHEMAS[schema], [f"{key}={rule.bad}"], schema=schema)
    pattern = rf"{re.escape(key)}=[^ ]+ \(from the command line\) {re.escape(rule.says)}"
    assert re.fullmatch(pattern, str(err.value)), str(err.value)


def test_a_value_outside_a_rule_in_the_yaml_names_the_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("train:\n  optim:\n    warmup_steps: -3\n")
    with pytest.raises(ValueError, match=r"^train.optim.warmup_steps=-3 \(from .*mine.yaml\) must be >= 0$"):
        load_config(path)


def test_the_lr_schedule_leaves_the_range_of_warmup_and_decay_to_the_config():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match=r"^warmup_steps=-1 must be >= 0$"):
        OptimConfig(warmup_steps=-1)
    assert lr_schedule(optimizer, OptimConfig(warmup_steps=0, decay_steps=0), max_steps=10) is None


def range_checks(path: Path, names: set[str]) -> list[int]:
    """The line of each range check of a ruled field: an `if` outside any other `if` that raises, whose test
    compares only fields of those names (`cfg.warmup_steps < 0`) with numbers; a check across keys
    (`warmup_steps + decay_steps > max_steps`) or inside a branch on another value is not one."""

    def number(node: ast.expr) -> bool:
        node = node.operand if isinstance(node, ast.UnaryOp) else node
        return isinstance(node, ast.Constant) and isinstance(node.value, int | float)

    def ruled(node: ast.expr) -> bool:
        return isinstance(node, ast.Attribute) and node.attr in names

    def pure_range(test: ast.expr) -> bool:
        if isinstance(test, ast.BoolOp):
            return all(pure_range(value) for value in test.values)
        if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            return pure_range(test.operand)
        if not isinstance(test, ast.Compare):
            return False
        sides = [test.left, *test.comparators]
        return any(ruled(s) for s in sides) and all(ruled(s) or number(s) for s in sides)

    def visit(node: ast.AST, inside_if: bool) -> list[int]:
        found = []
        if isinstance(node, ast.If) and not inside_if and pure_range(node.test):
            if any(isinstance(n, ast.Raise) for n in ast.walk(node)):
                found.append(node.lineno)
        for child in ast.iter_child_nodes(node):
            found += visit(child, inside_if or isinstance(node, ast.If))
        return found

    return visit(ast.parse(path.read_text(), filename=str(path)), False)


def test_the_range_check_finder_finds_the_checks_the_dataclasses_replaced(tmp_path):
    repeated = tmp_path / "repeated.py"
    repeated.write_text(
        "def lr_schedule(cfg):\n"
        "    if cfg.warmup_steps < 0 or cfg.decay_steps < 0:\n"
        "        raise ValueError('must be >= 0')\n"
        "    if cfg.warmup_steps + cfg.decay_steps > cfg.max_steps:\n"
        "        raise ValueError('exceed max_steps')\n"
        "    if not 0 <= cfg.text_dropout <= 1:\n"
        "        raise ValueError('a probability')\n"
    )
    assert range_checks(repeated, {"warmup_steps", "decay_steps", "text_dropout"}) == [2, 6]


def test_no_module_repeats_the_range_check_of_a_ruled_key():
    names = {key.rsplit(".", 1)[-1] for _, key, _ in RULED}
    assert {"warmup_steps", "text_dropout", "seed", "resolution", "batch_size"} <= names
    sources = [path for package in PACKAGES for path in (REPO / package).rglob("*.py")]
    assert len(sources) > 50
    hits = [f"{path.relative_to(REPO)}:{line}" for path in sources for line in range_checks(path, names)]
    assert hits == []
