"""The documentation tells the truth: its examples run and its claims hold.

Each page's ```python blocks run in order, sharing one namespace, in a
fresh interpreter whose working folder is a temporary one (so the default
store is new and empty). A block whose first line is ``# doc: skip`` is only
compiled. A failure points at the page and the line of the block.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

import zenmeta

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]
SKIP = "# doc: skip"

_FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<info>[^\n`]*)$")

# Runs a page's blocks in __main__'s namespace, as a script would (so that a
# worker process can find a function by name); compile() with the page's path
# and the block's line number makes a traceback point into the Markdown file.
_RUNNER = """
import json, sys

def _run_blocks(page, listing):
    with open(listing, encoding="utf-8") as file:
        blocks = json.load(file)
    for block in blocks:
        code = compile("\\n" * (block["line"] - 1) + block["source"], page, "exec")
        if not block["skip"]:
            exec(code, sys.modules["__main__"].__dict__)

_run_blocks(sys.argv[1], sys.argv[2])
"""


@dataclass(frozen=True)
class Block:
    """A fenced code block: its language, first source line and text."""

    language: str
    line: int
    source: str

    @property
    def skipped(self) -> bool:
        return self.source.lstrip().startswith(SKIP)


def code_blocks(path: Path) -> list[Block]:
    """Every fenced block of a Markdown file, dedented to its fence."""
    blocks: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        index += 1
        if opening is None:
            continue
        indent = opening["indent"]
        start = index
        while index < len(lines) and lines[index].rstrip() != indent + "```":
            index += 1
        body = textwrap.dedent("\n".join(lines[start:index])) + "\n"
        blocks.append(Block(opening["info"].strip().split(" ")[0], start + 1, body))
        index += 1
    return blocks


def python_blocks(path: Path) -> list[Block]:
    return [block for block in code_blocks(path) if block.language in ("python", "py")]


def _page_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _clean_environment() -> dict[str, str]:
    """This process's environment minus zenmeta's and MLflow's settings."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("ZENMETA_", "MLFLOW_"))
    }


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_page_python_blocks_run_in_order(page: Path, tmp_path: Path) -> None:
    """Each page's examples run top to bottom in a fresh interpreter."""
    blocks = python_blocks(page)
    if not blocks:
        pytest.skip("no python blocks")
    listing = tmp_path / "blocks.json"
    records = [{"line": b.line, "source": b.source, "skip": b.skipped} for b in blocks]
    listing.write_text(json.dumps(records), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-c", _RUNNER, str(page), str(listing)],
        cwd=tmp_path,
        env=_clean_environment(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, f"{_page_id(page)} failed:\n{done.stderr[-4000:]}"
    # MLflow's fluent API outside any MLflow run starts a stray one in ./mlflow.db
    strays = [name for name in ("mlflow.db", "mlruns") if (tmp_path / name).exists()]
    assert not strays, f"{_page_id(page)} left a stray MLflow store: {strays}"


def test_skip_markers_are_rare() -> None:
    """Most examples run: at most one block in five is marked `# doc: skip`."""
    blocks = [block for page in PAGES for block in python_blocks(page)]
    skipped = [block for block in blocks if block.skipped]
    assert len(skipped) * 5 <= len(blocks), [(b.line, b.source[:60]) for b in skipped]


def test_api_reference_documents_every_public_name() -> None:
    """Each name in zenmeta.__all__ has its `::: zenmeta.NAME` entry in reference.md."""
    text = (DOCS / "reference.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^::: zenmeta\.(\w+)\s*$", text, flags=re.MULTILINE))
    missing = sorted(set(zenmeta.__all__) - documented - {"__version__"})
    assert not missing, f"add to docs/reference.md: {missing}"


def test_every_page_is_in_the_site_navigation() -> None:
    """mkdocs.yml's nav lists every page of docs/, so none is built unreachable."""
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    listed = set(re.findall(r":\s*([\w-]+\.md)\s*$", config, flags=re.MULTILINE))
    assert listed == {page.name for page in DOCS.glob("*.md")}


# -- the command line page, checked against each command's --help ----------------

_COMMAND_HEADING = re.compile(r"^#+ `(zenmeta(?: [a-z][a-z-]*)*)`\s*$")
_TABLE_OPTION = re.compile(r"^\|\s*`(--[a-z][a-z0-9-]*)")
_HELP_OPTION = re.compile(r"^\s{2}(?:-\w, )?(--[a-z][a-z0-9-]*)")
_HELP_COMMAND = re.compile(r"^\s{2}([a-z][a-z-]*)\s")


def documented_commands() -> dict[str, set[str]]:
    """Each `zenmeta ...` heading of cli.md, with the options of its table."""
    commands: dict[str, set[str]] = {}
    current: str | None = None
    for line in (DOCS / "cli.md").read_text(encoding="utf-8").splitlines():
        heading = _COMMAND_HEADING.match(line)
        if heading:
            current = heading[1]
            commands[current] = set()
        elif line.startswith("#"):
            current = None
        elif current is not None and (option := _TABLE_OPTION.match(line)):
            commands[current].add(option[1])
    return commands


def _zenmeta(arguments: list[str], cwd: Path) -> str:
    """The installed `zenmeta` script's output (`python -m zenmeta` without one)."""
    script = Path(sys.executable).with_name("zenmeta")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "zenmeta"]
    done = subprocess.run(
        [*command, *arguments],
        cwd=cwd,
        env={**_clean_environment(), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _help_section(text: str, title: str, pattern: re.Pattern[str]) -> set[str]:
    """The names a --help text lists under `title` (Options: or Commands:)."""
    found: set[str] = set()
    inside = False
    for line in text.splitlines():
        if line.strip() == title:
            inside = True
        elif inside and line and not line.startswith(" "):
            inside = False
        elif inside and (match := pattern.match(line)):
            found.add(match[1])
    return found


@pytest.mark.parametrize("command", sorted(documented_commands()))
def test_documented_command_options_match_its_help(command: str, tmp_path: Path) -> None:
    """A command's option table in cli.md lists exactly what `--help` shows."""
    shown = _help_section(
        _zenmeta([*command.split()[1:], "--help"], tmp_path), "Options:", _HELP_OPTION
    )
    shown.discard("--help")
    documented = documented_commands()[command]
    assert documented == shown, f"{command}: documented {documented}, --help shows {shown}"


def test_every_command_of_the_cli_is_documented(tmp_path: Path) -> None:
    """Every command reachable from `zenmeta --help` has its section in cli.md."""
    leaves: set[str] = set()
    pending = [["zenmeta"]]
    while pending:
        path = pending.pop()
        text = _zenmeta([*path[1:], "--help"], tmp_path)
        children = _help_section(text, "Commands:", _HELP_COMMAND)
        pending.extend([*path, child] for child in children)
        if not children:
            leaves.add(" ".join(path))
    assert leaves <= set(documented_commands()), sorted(leaves - set(documented_commands()))
