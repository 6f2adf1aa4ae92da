"""Shared rich consoles and table helpers for the CLI."""

from __future__ import annotations

import json
import sys
from functools import cache
from pathlib import Path
from typing import Any


@cache
def console():
    from rich.console import Console

    c = Console(highlight=False)
    if not c.is_terminal:  # tables piped to a file or CI log: do not squeeze them to 80 columns
        c = Console(highlight=False, width=max(c.width, 140))
    return c


@cache
def err_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def write_json(path: Path, obj: Any) -> None:
    from ..io import atomic_write_json

    atomic_write_json(Path(path), obj)


def progress_bar():
    """A rich progress bar on stderr and a ``(desc, done, total)`` callback driving it."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    prog = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console(),
        transient=True,
    )
    tasks: dict[str, int] = {}

    def update(desc: str, done: float, total: float) -> None:
        if desc not in tasks:
            tasks[desc] = prog.add_task(desc, total=total)
        prog.update(tasks[desc], completed=done, total=total)

    return prog, update


def short_bytes(n: float) -> str:
    """Compact size for wide tables: 639M, 5.03G, 142G."""
    for unit, div in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            v = n / div
            return f"{v:.3g}{unit}" if v < 100 else f"{v:.0f}{unit}"
    return f"{int(n)}B"
