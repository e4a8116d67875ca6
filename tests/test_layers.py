"""The source tree's layers: facemogle -> callbacks / data_modules -> experiments; imports point down.

A piece two layers need lives in the lower one; callbacks and data_modules, side by side, import neither
each other; and no module imports an entry point (a script directly in experiments/ that runs as
`python -m experiments.NAME`) as a library. Inside experiments/ the packages named by concern have layers of
their own (EXPERIMENT_LAYERS), and its top-level files are the entry points and nothing else.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("facemogle", "callbacks", "data_modules", "experiments")
# What each layer may not import: everything above it and its sibling.
FORBIDDEN = {
    "facemogle": {"callbacks", "data_modules", "experiments", "tests"},
    "callbacks": {"data_modules", "experiments", "tests"},
    "data_modules": {"callbacks", "experiments", "tests"},
    "experiments": {"tests"},
}
# experiments/' packages, lowest first: each imports only the ones in lower rows, never a sibling in its row.
EXPERIMENT_LAYERS = (
    ("config",),
    ("runs", "slurm"),
    ("training", "evaluation", "app"),
    ("ablation",),
    ("benchmarks",),
)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, dotted module) for every import in the file, `from a import b` giving both a and a.b."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def sources(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def entry_points(folder: Path = REPO / "experiments") -> set[str]:
    """NAME for each NAME.py directly in folder with a top-level `if __name__ == "__main__":` (a script run as
    `python -m experiments.NAME`)."""
    found = set()
    for path in folder.glob("*.py"):
        for node in ast.parse(path.read_text(), filename=str(path)).body:
            test = node.test if isinstance(node, ast.If) else None
            if (
                isinstance(test, ast.Compare)
                and isinstance(test.left, ast.Name)
                and test.left.id == "__name__"
            ):
                found.add(path.stem)
    return found


def test_imports_point_down_the_layers():
    climbing = [
        f"{path.relative_to(REPO)}:{line} imports {module}"
        for package, forbidden in FORBIDDEN.items()
        for path in sources(package)
        for line, module in imported_modules(path)
        if module.split(".")[0] in forbidden
    ]
    assert not climbing, "\n".join(climbing)


def test_no_module_imports_an_entry_point_as_a_library():
    scripts = {f"experiments.{name}" for name in entry_points()}
    assert {"experiments.train", "experiments.evaluate", "experiments.sample"} <= scripts
    borrowed = [
        f"{path.relative_to(REPO)}:{line} imports {module}"
        for package in PACKAGES
        for path in sources(package)
        for line, module in imported_modules(path)
        if module in scripts and path != REPO / (module.replace(".", "/") + ".py")
    ]
    assert not borrowed, "\n".join(borrowed)


def test_the_checks_see_a_climbing_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("from experiments import evaluate\ndef f():\n    import callbacks.visuals\n")
    assert imported_modules(module) == [
        (1, "experiments"),
        (1, "experiments.evaluate"),
        (3, "callbacks.visuals"),
    ]


def experiment_packages() -> set[str]:
    return {path.parent.name for path in (REPO / "experiments").glob("*/__init__.py")}


def test_every_experiments_package_has_a_layer():
    assert experiment_packages() == {name for row in EXPERIMENT_LAYERS for name in row}


def test_experiments_packages_import_only_the_rows_below_them():
    level = {name: i for i, row in enumerate(EXPERIMENT_LAYERS) for name in row}
    climbing = []
    for package, own in level.items():
        for path in sources(f"experiments/{package}"):
            for line, module in imported_modules(path):
                parts = module.split(".")
                if parts[0] != "experiments" or len(parts) < 2 or parts[1] == package:
                    continue
                if parts[1] not in level or level[parts[1]] >= own:
                    climbing.append(f"{path.relative_to(REPO)}:{line} imports {module}")
    assert not climbing, "\n".join(climbing)


def test_experiments_top_level_files_are_entry_points_only():
    files = {path.stem for path in (REPO / "experiments").glob("*.py")} - {"__init__"}
    assert len(files) >= 10
    assert files == entry_points()


TRAINER_FACTORY = REPO / "experiments" / "training" / "trainer.py"


def trainer_calls(path: Path) -> list[int]:
    """Lines of the file that construct a Lightning Trainer (`Trainer(...)`, `L.Trainer(...)`)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        func = node.func if isinstance(node, ast.Call) else None
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if name == "Trainer":
            found.append(node.lineno)
    return found


def test_every_stage_builds_its_trainer_in_the_one_factory():
    builders = {
        path: lines for package in PACKAGES for path in sources(package) if (lines := trainer_calls(path))
    }
    assert list(builders) == [TRAINER_FACTORY] and len(builders[TRAINER_FACTORY]) == 1, builders


def test_the_trainer_check_sees_a_second_factory(tmp_path):
    extra = tmp_path / "other.py"
    extra.write_text("import lightning as L\n\ndef f():\n    return L.Trainer(max_steps=1)\n")
    assert trainer_calls(extra) == [4]


# The model and data code stays in short files with one job each (experiments/ holds the long ablation reports).
MAX_LINES = 300


def test_no_model_data_or_callback_file_is_over_max_lines():
    long = {
        str(path.relative_to(REPO)): n
        for package in ("facemogle", "callbacks", "data_modules")
        for path in sources(package)
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}
