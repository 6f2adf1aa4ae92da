"""Shared rich consoles and table helpers for the CLI."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any


@cache
def console():
    from rich.console import Console

    c = Console(highlight=False)
    if not c.is_terminal:  # a file or CI log: do not wrap lines at 80 columns
        c = Console(highlight=False, width=max(c.width, 140))
    return c


def print_table(table, con=None) -> None:
    """Print a rich table whole: as it is when it fits; at its full width when the output is not
    a terminal (a file or CI log has no width to fit); on a terminal too narrow for it, as one
    block per row with a ``column: value`` line per cell, wrapped, instead of cutting cells to
    ``1…``."""
    from rich.measure import Measurement

    con = con or console()
    need = Measurement.get(con, con.options.update_width(10_000), table).maximum
    if need <= con.width:
        con.print(table)
    elif not con.is_terminal:
        saved = con._width  # Console.print(width=) cannot go past the console's width
        con.width = need
        try:
            con.print(table)
        finally:
            con._width = saved
    else:
        narrow_table(table, con)


def narrow_table(table, con) -> None:
    """``table`` as one block per row (``column: value`` lines), fitting any terminal width."""
    from rich.table import Table
    from rich.text import Text

    if table.title:
        con.print(table.title, style="bold")
    columns = table.columns
    heads = [c.header if isinstance(c.header, str) else str(c.header) for c in columns]
    width = max((len(h) for h in heads[1:]), default=0)
    for row in zip(*(list(c.cells) for c in columns), strict=True):
        block = Table.grid(padding=(0, 1))
        block.add_column(style="dim", no_wrap=True, min_width=width)
        block.add_column(overflow="fold")
        for head, cell in zip(heads[1:], row[1:], strict=True):
            block.add_row(head, cell)
        first = row[0] if isinstance(row[0], Text) else Text.from_markup(str(row[0]))
        con.print(Text.assemble(first, style="bold"))
        con.print(block)


@cache
def err_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def print_json(obj: Any) -> None:
    """``obj`` as JSON on stdout (NaN and infinities as null, so that any parser takes it)."""
    from ..io import finite_json

    sys.stdout.write(json.dumps(finite_json(obj), indent=2, default=str, allow_nan=False) + "\n")


@contextlib.contextmanager
def json_errors(enabled: bool) -> Iterator[None]:
    """With ``--json``, a library error also prints ``{"ok": false, "error": ..., "hint": ...,
    "exit_code": N}`` on stdout (the one-line message still goes to stderr), so a script reading
    stdout always gets JSON."""
    from ..errors import Qwen3QuantError

    try:
        yield
    except Qwen3QuantError as exc:
        if enabled:
            print_json({"ok": False, "error": exc.message, "hint": exc.hint, "exit_code": exc.exit_code})
        raise


def check_json_out(path: Path | None) -> None:
    """Refuse a ``--json-out`` file that cannot be written, before any work."""
    if path is not None:
        from ..io import check_writable

        check_writable(Path(path).expanduser().parent, what="--json-out folder")


def write_json(path: Path, obj: Any) -> None:
    from ..io import atomic_write_json

    atomic_write_json(Path(path), obj)


def progress_reporter(label: str = ""):
    """``(context manager, callback)`` showing the library's ``(stage, done, total)`` reports on
    stderr: rich bars naming ``label`` (model and format) on a terminal, plain time-stamped lines
    otherwise (CI logs, files)."""
    if err_console().is_terminal:
        return progress_bar(label)
    from ..progress import PlainProgress

    return contextlib.nullcontext(), PlainProgress(sys.stderr, label=label)


def progress_bar(label: str = ""):
    """A rich progress bar on stderr and a ``(desc, done, total)`` callback driving it; each
    bar's text starts with ``label``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    prefix = f"{label}: " if label else ""
    prog = Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console(),
        transient=True,
    )
    tasks: dict[str, int] = {}

    def update(desc: str, done: float, total: float) -> None:
        if desc not in tasks:
            tasks[desc] = prog.add_task(prefix + desc, total=total)
        prog.update(tasks[desc], completed=done, total=total)

    return prog, update


def short_bytes(n: float) -> str:
    """Compact size for wide tables: 639M, 5.03G, 142G."""
    for unit, div in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            v = n / div
            return f"{v:.3g}{unit}" if v < 100 else f"{v:.0f}{unit}"
    return f"{int(n)}B"
