"""Rich tables for evaluation results."""

from __future__ import annotations

from ..io import human_bytes
from .console import fmt


def eval_table(results, title: str = "Evaluation"):
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for col in (
        "artifact",
        "runtime",
        "tokens",
        "ppl",
        "base ppl",
        "Δppl %",
        "KLD mean",
        "top-1 %",
        "prefill tok/s",
        "decode tok/s",
        "peak RSS",
        "gates",
    ):
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
            fmt(r.perplexity),
            fmt(r.base_perplexity),
            fmt(r.ppl_increase_pct, "+.2f"),
            fmt(r.kld_mean, ".5f"),
            fmt(None if r.top1_agreement is None else 100 * r.top1_agreement, ".1f"),
            fmt(r.prefill_tps, ".1f"),
            fmt(r.decode_tps, ".1f"),
            human_bytes(r.peak_rss_bytes) if r.peak_rss_bytes else "-",
            gates,
        )
    return t
