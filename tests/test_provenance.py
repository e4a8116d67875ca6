"""The commit a results table records: a change to tracked code marks it dirty, a change to the table's own
output directory (whose committed files the study rewrites) does not."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from experiments.evaluation.protocol import git_commit

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    _git(tmp_path, "init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results" / "ablation").mkdir(parents=True)
    (tmp_path / "results" / "ablation" / "ablation.md").write_text("old table\n")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    return tmp_path


def test_a_rewritten_results_directory_is_not_an_uncommitted_change(repo: Path):
    (repo / "results" / "ablation" / "ablation.md").write_text("new table\n")
    record = git_commit(exclude=repo / "results" / "ablation", repo=repo)
    assert len(record["commit"]) == 40 and record["dirty"] is False
    assert git_commit(repo=repo)["dirty"] is True


def test_a_changed_code_file_is_an_uncommitted_change_whatever_is_excluded(repo: Path):
    (repo / "code.py").write_text("x = 2\n")
    assert git_commit(exclude=repo / "results" / "ablation", repo=repo)["dirty"] is True
    # an output directory outside the checkout excludes nothing
    assert git_commit(exclude=repo.parent / "elsewhere", repo=repo)["dirty"] is True


def test_outside_a_checkout_the_commit_is_unknown(tmp_path: Path):
    assert git_commit(repo=tmp_path) == {"commit": None, "dirty": None}
