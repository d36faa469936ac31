"""Output sinks: data on stdout, chatter and errors on stderr; ``--json`` prints one JSON document."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

PIPE_WIDTH = 120
"""Width when stdout is not a terminal: wide enough that a 64-hex hash stays on one line for copying."""

# emoji=False: metadata keys such as cloneofsimo's ``unet:100:rank`` must not become pictures.
stdout = Console(highlight=False, emoji=False, width=None if sys.stdout.isatty() else PIPE_WIDTH)
stderr = Console(stderr=True, highlight=False, emoji=False, soft_wrap=not sys.stderr.isatty())
"""Not a terminal (a log, a pipe): lines are not wrapped, so a path or a digest in a message stays whole."""


def print_json(data: Any) -> None:
    """One JSON document, written as it is encoded (a scan's summary of 30,000 files is never one string)."""
    for chunk in json.JSONEncoder(indent=2, ensure_ascii=False, default=str).iterencode(data):
        sys.stdout.write(chunk)
    sys.stdout.write("\n")


def print_checks(checks: Iterable[Any]) -> None:
    """A checklist (``verify``, ``pull``): one line per check, ✓ or ✗, its name and what it found."""
    for check in checks:
        mark = "[green]✓[/]" if check.ok else "[bold red]✗[/]"
        stdout.print(f"{mark} {check.name:<20} {escape(check.detail)}", markup=True)


@contextmanager
def file_progress(verb: str, *, disable: bool) -> Iterator[Callable[[int, int, Path], None]]:
    """A progress bar on stderr for a run over many files; yields the SDK's ``progress(done, total, path)``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    file_name = TextColumn("{task.fields[file]}")
    columns = (TextColumn(verb), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), file_name)
    with Progress(*columns, console=stderr, transient=True, disable=disable) as bar:
        task = bar.add_task(verb, total=None, file="")

        def advance(done: int, total: int, path: Path) -> None:
            bar.update(task, completed=done, total=total, file=path.name)

        yield advance
