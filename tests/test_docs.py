"""The README and docs/ hold together: every relative link and anchor resolves, every `python -m MODULE` and
`make TARGET` they name exists, the README stays a door (short, the two commands first), and the entry points
in experiments/ are exactly the `python -m experiments.NAME` commands the pages document."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from tests.test_layers import entry_points

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
README_MAX_LINES = 160

FENCE = re.compile(r"^```.*?^```[^\n]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]+`")
LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
# a module in lower case; a placeholder (`experiments.NAME`, `experiments.*`) is no module
PYTHON_M = re.compile(r"python -m ([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)*)(?![\w*]|\.[\w*])")
TARGET = re.compile(r"[a-z][\w-]*")


def prose(text: str) -> str:
    """The text without fenced code blocks and inline code, where brackets are code, not links."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation but hyphens and underscores dropped, spaces to
    hyphens (unicode letters and digits kept)."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor the headings of a markdown text produce, a repeated one numbered as GitHub does."""
    seen: dict[str, int] = {}
    found = set()
    for line in FENCE.sub("", text).splitlines():
        match = re.match(r"#{1,6} +(.*?) *#* *$", line)
        if match:
            slug = github_slug(match.group(1))
            found.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return found


def broken_links(text: str, base: Path) -> list[str]:
    """The relative links and images in a markdown text (of a file in folder base) whose file or anchor is
    missing."""
    broken = []
    for target in LINK.findall(prose(text)):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (base / path).resolve() if path else None
        if file is not None and not file.exists():
            broken.append(target)
        elif anchor:
            if file is not None and file.suffix != ".md":
                broken.append(target)
            elif anchor not in anchors(file.read_text() if file else text):
                broken.append(target)
    return broken


def python_modules(text: str) -> set[str]:
    return set(PYTHON_M.findall(text))


def module_exists(name: str, root: Path = REPO) -> bool:
    """Whether `python -m name` finds something to run: a file or a package with __main__ in the repository for
    the repository's own packages, an installed module for the rest (pytest)."""
    path = root.joinpath(*name.split("."))
    if (root / name.split(".")[0]).is_dir():
        return path.with_suffix(".py").is_file() or (path / "__main__.py").is_file()
    return importlib.util.find_spec(name) is not None


def code(text: str) -> list[str]:
    """The inline code spans and the lines of the fenced code blocks."""
    spans = [span.strip("`") for span in INLINE_CODE.findall(FENCE.sub("", text))]
    lines = [line for block in FENCE.findall(text) for line in block.splitlines()[1:-1]]
    return spans + lines


def make_targets(text: str) -> set[str]:
    """The targets of every `make ...` command in the code of a markdown text (variables and comments skipped)."""
    targets = set()
    for snippet in code(text):
        for command in re.findall(r"(?:^|[;&|]\s*)make ([^#;&|`]*)", snippet.strip()):
            targets |= {word for word in command.split() if TARGET.fullmatch(word)}
    return targets


def makefile_targets(makefile: Path = REPO / "Makefile") -> set[str]:
    text = makefile.read_text()
    named = set(re.findall(r"^([a-z][\w-]*)\s*:(?!=)", text, re.MULTILINE))
    phony = re.search(r"^\.PHONY:(.*)$", text, re.MULTILINE)
    return named | (set(phony.group(1).split()) if phony else set())


def first_code_block(text: str) -> list[str]:
    block = FENCE.search(text)
    return block.group(0).splitlines()[1:-1] if block else []


def documented_entry_points(texts: list[str]) -> set[str]:
    """The NAMEs of the top-level `python -m experiments.NAME` commands in the texts."""
    names = set().union(*(python_modules(text) for text in texts))
    return {name.split(".")[1] for name in names if name.startswith("experiments.") and name.count(".") == 1}


def all_text() -> list[str]:
    return [page.read_text() for page in PAGES]


# --- the repository's pages


def test_every_relative_link_and_anchor_resolves():
    links = sum(len(LINK.findall(prose(page.read_text()))) for page in PAGES)
    assert links >= 2 * len(PAGES)  # every page links back to the README and on to another
    broken = {page.name: broken_links(page.read_text(), page.parent) for page in PAGES}
    assert {name: found for name, found in broken.items() if found} == {}


def test_the_readme_links_every_docs_page_and_each_links_back():
    readme = README.read_text()
    pages = sorted((REPO / "docs").glob("*.md"))
    assert len(pages) >= 11
    assert [page.name for page in pages if f"(docs/{page.name})" not in readme] == []
    assert [page.name for page in pages if "(../README.md)" not in page.read_text()] == []


def test_every_python_m_module_named_exists():
    modules = set().union(*(python_modules(text) for text in all_text()))
    assert len(modules) >= 10
    assert sorted(name for name in modules if not module_exists(name)) == []


def test_every_make_target_named_exists():
    named = set().union(*(make_targets(text) for text in all_text()))
    assert {"train", "test", "test-slow", "test-slurm", "ablate", "demo"} <= named
    assert sorted(named - makefile_targets()) == []


def test_the_readme_is_short_and_starts_with_make_train_and_make_test():
    text = README.read_text()
    assert len(text.splitlines()) <= README_MAX_LINES
    commands = [line.split("#")[0].split() for line in first_code_block(text)]
    assert ["make", "train"] in commands and ["make", "test"] in commands


def test_every_entry_point_is_documented_and_every_documented_one_exists():
    found = entry_points()
    assert len(found) >= 10
    assert documented_entry_points(all_text()) == found


# --- the checks catch what they are for


def test_a_missing_file_or_anchor_is_reported(tmp_path):
    (tmp_path / "page.md").write_text("# A page\n\n## Stage 1: the tiny backbone\n")
    text = (
        "# Here\n\n[ok](page.md) [ok](page.md#stage-1-the-tiny-backbone) [ok](#here) ![pic](gone.png)\n"
        "[no](missing.md) [no](page.md#stage-1) [no](#nowhere) [web](https://example.com/x.md)\n"
        "`[code](not-a-link.md)`\n"
    )
    assert broken_links(text, tmp_path) == ["gone.png", "missing.md", "page.md#stage-1", "#nowhere"]


def test_github_slugs_drop_punctuation_and_number_repeats():
    assert (
        github_slug("The paper's own evaluation (`--protocol paper`)")
        == "the-papers-own-evaluation---protocol-paper"
    )
    assert github_slug("FLUX.1-dev") == "flux1-dev"
    assert anchors("# Setup\n## Setup\n```\n# not a heading\n```\n") == {"setup", "setup-1"}


def test_a_missing_module_is_reported(tmp_path):
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "train.py").write_text("")
    assert module_exists("experiments.train", tmp_path)
    assert not module_exists("experiments.training", tmp_path)
    assert module_exists("pytest", tmp_path)
    assert not module_exists("no_such_module_anywhere", tmp_path)
    assert python_modules(
        "`python -m experiments.train --config x`, python -m experiments.NAME, python -m pytest."
    ) == {
        "experiments.train",
        "pytest",
    }


def test_make_targets_are_read_from_commands_and_a_missing_one_is_reported(tmp_path):
    text = (
        'Run `make data backbone evaluators`, then `make train RUN=runs/x ARGS="a=b"`.\n\n'
        "```bash\nmake test-slow   # make nothing here\nmake smokee\n```\n"
    )
    assert make_targets(text) == {"data", "backbone", "evaluators", "train", "test-slow", "smokee"}
    makefile = tmp_path / "Makefile"
    makefile.write_text(".PHONY: data train\nX ?= 1\ndata:\n\ttrue\ntest-slow: x\n\ttrue\n")
    assert make_targets(text) - makefile_targets(makefile) == {"backbone", "evaluators", "smokee"}


def test_a_readme_without_the_two_commands_first_is_caught():
    assert first_code_block("# x\n\n```bash\nmake test\n```\n\n```bash\nmake train\n```\n") == ["make test"]
    assert first_code_block("no code at all") == []


def test_an_undocumented_or_a_missing_entry_point_is_caught(tmp_path):
    (tmp_path / "train.py").write_text('def main():\n    pass\n\n\nif __name__ == "__main__":\n    main()\n')
    (tmp_path / "helpers.py").write_text("def main():\n    pass\n")
    assert entry_points(tmp_path) == {"train"}
    documented = documented_entry_points(
        ["`python -m experiments.train`, `python -m experiments.slurm.submit`"]
    )
    assert documented == {"train"}
    assert documented_entry_points(["python -m experiments.gone"]) != entry_points(tmp_path)
