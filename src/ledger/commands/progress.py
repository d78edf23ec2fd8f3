"""Progress bars for the long commands, on standard error (standard output stays the
command's answer: a key line, a token, JSON)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)


def bar(disable: bool = False) -> Progress:
    """A Rich progress display on a terminal: what it is doing, a bar (pulsing while the
    total is not known), how many of how many, and the time so far."""
    console = Console(stderr=True)
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=disable or not console.is_terminal,  # none in logs (TTY_COMPATIBLE=1 shows it)
        transient=True,
    )
