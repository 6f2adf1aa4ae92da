"""Rich tables for evaluation results, with the columns and precision the metric table declares."""

from __future__ import annotations

from ..eval.metric_table import TABLE_COLUMNS, columns


def eval_table(results, title: str = "Evaluation"):
    from rich.table import Table

    shown = columns(*TABLE_COLUMNS)
    t = Table(title=title, title_justify="left")
    for col in ("artifact", "runtime", "tokens", *(m.label for m in shown), "gates"):
        t.add_column(col, justify="left" if col in ("artifact", "runtime", "gates") else "right")
    for r in results:
        name = r.variant or r.artifact.rstrip("/").split("/")[-1]
        gates = (
            "-"
            if r.passed is None
            else (
                "[green]pass[/green]"
                if r.passed
                else "[red]FAIL[/red] " + ", ".join(g["name"] for g in r.gates if not g["passed"])
            )
        )
        t.add_row(
            name,
            r.runtime,
            f"{r.tokens_scored} / {r.windows}w",
            *(m.format(getattr(r, m.key)) for m in shown),
            gates,
        )
    return t
