from __future__ import annotations

from pathlib import Path

import click

from ..formats.base import DEVICE


@click.command("build")
@click.argument("build_file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), help="Output folder (overrides the file's)."
)
@click.option(
    "--plan", "plan_only", is_flag=True, help="Print every cell with estimates and status; run nothing."
)
@click.option(
    "--cell", "cells", multiple=True, help="Run only this cell (repeatable), in this process (CI jobs)."
)
@click.option(
    "--model", "models", multiple=True, help="Only this model's cells (repeatable): plan, run, emit, collect."
)
@click.option(
    "--jobs",
    type=click.IntRange(1),
    help="Cells at once, also bounded by memory (default: the build file's [build] jobs, else 1).",
)
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True)
@click.option("--address", help="Ray cluster address (with --executor ray); default: a local Ray instance.")
@click.option(
    "--emit",
    type=click.Choice(["github-matrix"]),
    help="Print every cell with its needs and runner as a CI matrix and exit (fails, naming them, "
    "if some cell fits no runner of the build file's [runners]).",
)
@click.option(
    "--collect",
    "collect_states",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Merge CI jobs' output folders (each job's --out: artifacts/ and build/state.json) into "
    "--out variant by variant, then report and publish (repeatable).",
)
@click.option("--force", is_flag=True, help="Redo cells even when they are up to date.")
@click.option(
    DEVICE.cli_flag,
    DEVICE.name,
    metavar=DEVICE.metavar,
    help=f"{DEVICE.help} Overrides the build file's [build] / [[format]] device (default {DEVICE.default}).",
)
@click.option(
    "--publish/--no-publish", default=True, show_default=True, help="Publish what passed to the target."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (plan or results).")
def build(
    build_file: Path | None,
    out: Path | None,
    plan_only: bool,
    cells: tuple[str, ...],
    models: tuple[str, ...],
    jobs: int | None,
    executor: str,
    address: str | None,
    emit: str | None,
    collect_states: tuple[Path, ...],
    force: bool,
    device: str | None,
    publish: bool,
    as_json: bool,
) -> None:
    """Run BUILD_FILE (default: the bundled offline demo on the micro models): every model x format x
    type cell, resumable, then a report and publishing of what passed. Exit status: 0 all gates
    passed, 3 a gate failed or a cell errored, 4 cells were skipped on this machine."""
    from .. import build as b
    from .console import console, print_json, print_table

    if emit:
        print_json(b.github_matrix(build_file, out=out, models=list(models) or None))
        return
    if plan_only:
        spec = b.load_build(build_file, out=out, device=device)
        chosen = b.select_models(spec.cells(), list(models) or None)
        rows = b.plan(spec, b.spec.select(chosen, list(cells) or None))
        if as_json:
            click.echo(b.dump_plan(rows))
            return
        print_table(_plan_table(spec, rows))
        homeless = [r.cell.id for r in rows if r.buildable and r.runner is None]
        if homeless:
            console().print(
                f"{len(homeless)} cells fit no runner of the build file's [runners] "
                f"({', '.join(x.label for x in spec.runners)}): {', '.join(homeless)}",
                markup=False,
            )
        return
    if collect_states:
        outcome = b.collect(
            build_file, out=out, states=list(collect_states), models=list(models) or None, publish=publish
        )
    else:
        import contextlib

        from ..formats.base import no_progress
        from .console import err_console, progress_reporter

        def on_event(cid: str, status: str) -> None:
            style = {"passed": "green", "failed": "red", "error": "red", "start": "cyan"}.get(
                status, "yellow"
            )
            err_console().print(f"[{style}]{status:>7}[/{style}] {cid}")

        # cells named with --cell run in this process and report here; workers print their own lines
        prog, update = (
            progress_reporter(", ".join(cells)) if cells else (contextlib.nullcontext(), no_progress)
        )
        with prog:
            outcome = b.build(
                build_file,
                out=out,
                cells=list(cells) or None,
                executor=executor,
                jobs=jobs,
                address=address,
                force=force,
                publish=publish,
                on_event=on_event,
                progress=update,
                device=device,
            )
    if as_json:
        print_json(
            {
                "cells": outcome.entries,
                "skipped": outcome.skipped,
                "published": outcome.published,
                "report": str(outcome.report_dir) if outcome.report_dir else None,
            }
        )
    else:
        _print_outcome(outcome)
    raise SystemExit(outcome.exit_code)


def _plan_table(spec, rows):
    from rich.table import Table

    from .console import short_bytes

    t = Table(title=f"Build plan: {spec.name} ({spec.source}) -> {spec.out}", title_justify="left")
    for col in (
        "cell",
        "status",
        "device",
        "est. size",
        "est. peak memory",
        "est. GPU memory",
        "est. disk",
        "est. time",
        "runner",
        "note",
    ):
        t.add_column(col, justify="right" if col.startswith("est") else "left")
    style = {"done": "green", "todo": "cyan", "changed": "yellow", "skip": "red"}
    for r in rows:
        runner = r.runner.label if r.runner else ("[red]none fits[/]" if r.buildable else "-")
        t.add_row(
            r.cell.id,
            f"[{style[r.status]}]{r.status}[/]",
            r.device,
            short_bytes(r.artifact_bytes) if r.artifact_bytes else "?",
            short_bytes(r.peak_bytes) if r.peak_bytes else "?",
            short_bytes(r.gpu_peak_bytes) if r.gpu_peak_bytes else "-",
            short_bytes(r.needs.disk_bytes) if r.needs else "?",
            _duration(r.seconds),
            runner,
            r.reason,
        )
    return t


def _duration(s: float | None) -> str:
    if not s:
        return "?"
    return f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.0f} min" if s >= 60 else f"{s:.0f} s"


def _print_outcome(outcome) -> None:
    from rich.table import Table

    from ..eval.metric_table import columns
    from .console import console, print_table

    shown = columns("ppl_increase_pct", "kld_mean", "decode_tps")
    t = Table(title="Build results", title_justify="left")
    for col in ("cell", "status", *(m.label for m in shown), "note"):
        t.add_column(col)
    for cid, e in outcome.entries.items():
        res = (e.get("results") or [{}])[0]
        t.add_row(cid, e.get("status", "?"), *(m.format(res.get(m.key)) for m in shown), e.get("error") or "")
    for cid, reason in outcome.skipped.items():
        t.add_row(cid, "skipped", *("-" for _ in shown), reason)
    con = console()
    print_table(t)
    if outcome.report_dir:
        con.print(f"Report: {outcome.report_dir / 'report.md'} (also report.html, report.json, plots)")
    for p in outcome.published:
        con.print(f"Published: {p}")
