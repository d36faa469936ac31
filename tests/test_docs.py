"""The code blocks of the getting-started page and the how-to guides run, so the documentation cannot rot.

The convention (docs/concepts/architecture.md, "The documentation is tested"):

* a ```` ```python ```` block runs with ``exec``, in one namespace per page;
* a ```` ```console ```` block runs its ``$ `` lines (a line ending in ``\\`` goes on on the next one); the other
  lines are sample output and are not compared;
* a ```` ```bash ```` or ```` ```sh ```` block runs as written;
* shell blocks run with ``bash`` under ``set -e -o pipefail``, the environment's ``lorahub`` first on ``PATH``;
* a block right after ``<!-- docs: skip (reason) -->`` is shown and not run; the reason is required;
* blocks in any other language (``toml``, ``json``, ``text``, none) are only shown;
* a service a page starts in the background writes its process id to ``NAME.pid`` in the page's folder; it is
  stopped after the page, pass or fail.

Each page runs top to bottom in a fresh working directory and a fresh ``LORAHUB_HOME``. The vendored real adapters
are copied to ``tests/fixtures/real/`` inside that directory, and ``examples/registry.yml`` to ``examples/``, so a
page names them as a reader in a clone does.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import registry_unavailable

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
FIXTURES = Path("tests") / "fixtures" / "real"

TUTORIAL = "getting-started.md"
HOW_TO_GUIDES = (
    "library.md",
    "registry.md",
    "team.md",
    "distribution.md",
    "licenses.md",
    "convert.md",
    "export.md",
    "loading.md",
    "training.md",
    "provenance.md",
    "consent.md",
    "serve.md",
)
TESTED_PAGES = (TUTORIAL, *HOW_TO_GUIDES)
PROGRAMS_NEEDED = {"distribution.md": "docker-registry"}
"""Pages that start a service of their own; without the program they are skipped like the service's own tests."""

PYTHON = frozenset({"python", "py"})
CONSOLE = frozenset({"console"})
SCRIPT = frozenset({"bash", "sh", "shell"})
RUNNABLE = PYTHON | CONSOLE | SCRIPT

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
DIRECTIVE = re.compile(r"<!--\s*docs:(?P<body>.*?)-->")
SKIP = re.compile(r"^\s*skip\s*\((?P<reason>[^)]*\S[^)]*)\)\s*$")
BLOCK_TIMEOUT_S = 600


@dataclass(frozen=True)
class Block:
    page: str
    line: int  # of the opening fence, 1-based, as an editor shows it
    lang: str
    code: str
    skip_reason: str | None

    @property
    def runs(self) -> bool:
        return self.lang in RUNNABLE and self.skip_reason is None

    @property
    def where(self) -> str:
        return f"docs/{self.page}:{self.line}"


def directive_before(lines: list[str], fence_index: int) -> str | None:
    """The ``docs:`` comment on the last non-blank line above a fence, if there is one."""
    for previous in reversed(lines[:fence_index]):
        if previous.strip():
            match = DIRECTIVE.search(previous)
            return match.group("body") if match else None
    return None


def parse_blocks(page: str, text: str) -> list[Block]:
    lines = text.splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        indent, fence = opening.group("indent"), opening.group("fence")
        body: list[str] = []
        end = index + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            body.append(lines[end].removeprefix(indent))
            end += 1
        directive = directive_before(lines, index)
        skip = SKIP.match(directive) if directive is not None else None
        blocks.append(
            Block(
                page=page,
                line=index + 1,
                lang=opening.group("lang").lower(),
                code="\n".join(body) + "\n",
                skip_reason=skip.group("reason").strip() if skip else None,
            )
        )
        index = end + 1
    return blocks


def page_blocks(page: str) -> list[Block]:
    return parse_blocks(page, (DOCS / page).read_text(encoding="utf-8"))


def console_commands(code: str) -> str:
    """The ``$ `` lines of a console transcript, with their ``\\`` continuations, as a script."""
    commands: list[str] = []
    continuing = False
    for line in code.splitlines():
        if continuing:
            commands.append(line)
        elif line.startswith("$ "):
            commands.append(line[2:])
        else:
            continue
        continuing = line.rstrip().endswith("\\")
    return "\n".join(commands) + "\n"


def failure(block: Block, output: str, detail: str) -> str:
    return f"{block.where}: {block.lang} block failed ({detail})\n--- block ---\n{block.code}--- output ---\n{output}"


class PageRunner:
    """Runs one page's blocks in order: python in one namespace, shell in bash, all in one folder and home."""

    def __init__(self, page: str, workdir: Path, env: dict[str, str]) -> None:
        self.page = page
        self.workdir = workdir
        self.env = env
        self.namespace: dict[str, Any] = {"__name__": f"docs_{Path(page).stem.replace('-', '_')}"}

    def run(self, block: Block) -> None:
        if block.lang in PYTHON:
            self.run_python(block)
        else:
            script = console_commands(block.code) if block.lang in CONSOLE else block.code
            self.run_shell(block, script)

    def run_python(self, block: Block) -> None:
        # Padding keeps the traceback's line numbers those of the page.
        source = "\n" * block.line + block.code
        output = io.StringIO()
        try:
            with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
                exec(compile(source, f"docs/{block.page}", "exec"), self.namespace)
        except Exception as error:
            pytest.fail(failure(block, output.getvalue() + traceback.format_exc(), type(error).__name__))

    def run_shell(self, block: Block, script: str) -> None:
        completed = subprocess.run(
            ["bash", "-c", "set -e -o pipefail\n" + script],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT_S,
            check=False,
        )
        if completed.returncode != 0:
            output = completed.stdout + completed.stderr
            pytest.fail(failure(block, output, f"exit {completed.returncode}"))


def lorahub_bin_dir() -> Path:
    """Where the ``lorahub`` of the interpreter running the tests lives (the venv's ``bin``)."""
    beside = Path(sys.executable).parent
    if (beside / "lorahub").exists():
        return beside
    found = shutil.which("lorahub")
    assert found, "the lorahub command is not installed (pip install -e .)"
    return Path(found).parent


def prepare_workdir(workdir: Path) -> None:
    sources = sorted((ROOT / FIXTURES).glob("*.safetensors"))
    assert sources, f"the vendored adapters the pages use are missing from {FIXTURES}"
    target = workdir / FIXTURES
    target.mkdir(parents=True)
    for source in sources:
        shutil.copyfile(source, target / source.name)
    (workdir / "examples").mkdir()
    shutil.copyfile(ROOT / "examples" / "registry.yml", workdir / "examples" / "registry.yml")


def stop_services(workdir: Path) -> None:
    """A page that starts a service in the background (a local registry) writes its process id to ``NAME.pid``
    in its folder and stops it in its last block; should the page fail before that, the service is stopped here."""
    for pid_file in workdir.glob("*.pid"):
        with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
            os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)


def clean_environment(monkeypatch: pytest.MonkeyPatch, home: Path) -> dict[str, str]:
    """The page's environment: its own home and no other lorahub settings, so the examples see what a new user sees."""
    for name in list(os.environ):
        if name.startswith("LORAHUB_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("LORAHUB_HOME", str(home))
    monkeypatch.setenv("PATH", f"{lorahub_bin_dir()}{os.pathsep}{os.environ.get('PATH', '')}")
    return dict(os.environ)


# -- the convention is kept ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("page", TESTED_PAGES)
def test_every_docs_directive_is_a_skip_with_a_reason_above_a_block(page: str) -> None:
    lines = (DOCS / page).read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        directive = DIRECTIVE.search(line)
        if directive is None:
            continue
        assert SKIP.match(directive.group("body")), f"docs/{page}:{number}: write <!-- docs: skip (reason) -->"
        following = next((later for later in lines[number:] if later.strip()), "")
        assert FENCE.match(following), f"docs/{page}:{number}: a skip marker must stand right above a code block"


@pytest.mark.parametrize("page", TESTED_PAGES)
def test_every_tested_page_runs_something(page: str) -> None:
    assert any(block.runs for block in page_blocks(page)), f"docs/{page} has no block that runs"


def test_the_tutorial_runs_entirely_once_installed() -> None:
    """Only the installation is shown and not run: `make test` runs this very suite."""
    skipped = [block for block in page_blocks(TUTORIAL) if block.skip_reason is not None]
    assert [console_commands(block.code).split()[0] for block in skipped] == ["make"]


def test_the_tested_pages_are_the_sites_tutorial_and_how_to_guides() -> None:
    yaml = pytest.importorskip("yaml")

    class Loader(yaml.SafeLoader):
        """mkdocs.yml names Python objects (`!!python/name:`); their values do not matter here."""

    Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: None)
    nav = yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=Loader)["nav"]
    sections = {key: value for entry in nav for key, value in entry.items()}
    assert sections["Getting started"] == TUTORIAL
    guides = [page for entry in sections["How-to guides"] for page in entry.values()]
    assert sorted(guides) == sorted(HOW_TO_GUIDES)


def test_console_transcripts_run_their_commands_only() -> None:
    transcript = "$ lorahub add a \\\n    --name b\nadded b@1\n$ lorahub list\n name\n"
    assert console_commands(transcript) == "lorahub add a \\\n    --name b\nlorahub list\n"


def test_skip_markers_are_read_with_their_reason() -> None:
    text = "<!-- docs: skip (needs a GPU) -->\n```python\nx = 1\n```\n\n```console\n$ true\n```\n"
    first, second = parse_blocks("page.md", text)
    assert (first.line, first.skip_reason, first.runs) == (2, "needs a GPU", False)
    assert (second.line, second.skip_reason, second.runs) == (6, None, True)


@pytest.mark.parametrize(
    ("block_text", "printed"),
    [
        ("```console\n$ echo from-the-shell\n$ false\n```\n", "from-the-shell"),
        ("```python\nprint('from-python')\n1 / 0\n```\n", "from-python"),
    ],
    ids=["console", "python"],
)
def test_a_failing_block_is_reported_with_its_page_line_and_output(
    block_text: str, printed: str, tmp_path: Path
) -> None:
    (block,) = parse_blocks("page.md", "# A page\n\n" + block_text)
    with pytest.raises(pytest.fail.Exception) as failed:
        PageRunner("page.md", tmp_path, dict(os.environ)).run(block)
    assert str(failed.value).startswith("docs/page.md:3: ")
    assert printed in str(failed.value)


# -- the pages run -------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("page", TESTED_PAGES)
def test_page_code_blocks_run(page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if page in PROGRAMS_NEEDED and shutil.which(PROGRAMS_NEEDED[page]) is None:
        registry_unavailable(f"docs/{page} starts {PROGRAMS_NEEDED[page]}, which is not installed")
    workdir = tmp_path / "work"
    workdir.mkdir()
    prepare_workdir(workdir)
    env = clean_environment(monkeypatch, tmp_path / "home")
    monkeypatch.chdir(workdir)
    runner = PageRunner(page, workdir, env)
    try:
        for block in page_blocks(page):
            if block.runs:
                runner.run(block)
    finally:
        stop_services(workdir)
