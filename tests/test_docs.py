"""Every relative link in the README and docs/ points at a file that exists (and, into a Markdown file, at a
heading that exists); the README stays short and keeps its Space front matter and its two commands."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
README_MAX_LINES = 300


def links(text: str) -> list[str]:
    """The targets of the Markdown links and images of `text`, code blocks and inline code left out."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    return LINK.findall(text)


def anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    markdown = re.sub(r"```.*?```", "", markdown, flags=re.S)
    headings = re.findall(r"^#{1,6} +(.+?) *$", markdown, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def shown(file: Path) -> Path:
    return file.relative_to(ROOT) if file.is_relative_to(ROOT) else file


def broken_links(page: Path) -> list[str]:
    """'target (why)' for each relative link of `page` that points at no file, or at no heading of one."""
    broken = []
    for target in links(page.read_text()):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...: not a file of this repository
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target} (no file {shown(file)})")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file.read_text()):
            broken.append(f"{target} (no heading #{anchor} in {shown(file)})")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_points_at_a_file_that_exists(page):
    assert broken_links(page) == []


def test_the_check_catches_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# A page\n\n[ok](#a-page) [missing](nowhere.md) ![gone](../gone.png) [bad anchor](#nothing) "
                    "[web](https://example.com) `[in code](nowhere.md)`\n")
    assert [line.split(" ")[0] for line in broken_links(page)] == ["nowhere.md", "../gone.png", "#nothing"]


def test_the_readme_is_short_and_keeps_its_front_matter_and_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= README_MAX_LINES
    front_matter = readme.split("---\n")[1]
    for key in ("sdk: gradio", "app_file: app.py", "suggested_hardware: cpu-basic"):
        assert key in front_matter
    assert "## Two commands" in readme
    test_command = ".venv/bin/python -m pytest -q"
    assert test_command in readme and test_command in (ROOT / ".ci" / "run").read_text()


def swallowed_line_breaks(source: str) -> list[int]:
    """Line numbers of the string literals of `source` whose backslash-newline Python joins into one line: in a
    `--help` example (a module docstring shown by argparse) the continuation would vanish and the command read
    as one long line with a gap. A raw string keeps the backslash."""
    tree = ast.parse(source)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            literal = ast.get_source_segment(source, node) or ""
            if "\\\n" in literal and not literal.lstrip()[:1].lower() == "r":
                found.append(node.lineno)
    return found


@pytest.mark.parametrize("module", sorted([*(ROOT / "tiny_dit").rglob("*.py"), *(ROOT / "benchmarks").glob("*.py"),
                                           ROOT / "app.py"]), ids=lambda path: str(shown(path)))
def test_help_examples_keep_their_line_continuations(module):
    assert swallowed_line_breaks(module.read_text()) == []


def test_the_check_catches_a_swallowed_continuation():
    assert swallowed_line_breaks('"""Run:\n    train --steps 10 \\\n        --lr 1e-3\n"""\n') == [1]
    assert swallowed_line_breaks('r"""Run:\n    train --steps 10 \\\n        --lr 1e-3\n"""\n') == []
