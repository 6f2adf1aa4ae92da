from __future__ import annotations

import click


@click.group("calib")
def calib() -> None:
    """Calibration mixes used by GPTQ, AWQ and the GGUF importance matrix (they ship with the package;
    --calib also takes a .toml mix or your own .txt / .jsonl file)."""


@calib.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_(as_json: bool) -> None:
    """List the named mixes."""
    from ..calib import list_mixes, load_mix
    from .console import console, print_json

    mixes = {name: (path, load_mix(path)) for name, path in list_mixes().items()}
    if as_json:
        print_json(
            [
                {
                    "name": name,
                    "samples": m.samples,
                    "seq_len": m.seq_len,
                    "description": m.description,
                    "path": str(path),
                    "sources": [s.name for s in m.sources],
                }
                for name, (path, m) in mixes.items()
            ]
        )
        return
    for name, (path, m) in mixes.items():
        console().print(
            f"[bold]{name}[/bold]  {m.samples} x {m.seq_len} tokens  {m.description}  [dim]{path}[/dim]"
        )


@calib.command("show")
@click.argument("name", default="default")
@click.option(
    "--model",
    default="Qwen3-Micro",
    show_default=True,
    help="Model whose tokenizer and chat template render the mix (token counts depend on it).",
)
@click.option("--samples", type=click.IntRange(1), help="Override the mix's sample count.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--example", "examples", type=click.IntRange(0), default=0, help="Print N rendered samples.")
def show(name: str, model: str, samples: int | None, as_json: bool, examples: int) -> None:
    """Show mix NAME (or a .toml mix, .txt or .jsonl file): its sources, shares and tokens."""
    from ..calib import load_mix
    from ..sources import resolve_model
    from .console import console, print_json, print_table

    mix = load_mix(name)
    cs = mix.build(resolve_model(model).path, samples=samples)
    summary = cs.summary()
    if as_json:
        print_json({**mix.record(), "built_with": model, **summary, "sources": summary["sources"]})
        return
    from rich.table import Table

    t = Table(title=f"Calibration mix {mix.name}: {mix.description}", title_justify="left")
    for col in ("source", "kind", "share", "samples", "tokens", "from", "licence"):
        t.add_column(col, justify="right" if col in ("share", "samples", "tokens") else "left")
    for s in mix.sources:
        got = summary["sources"].get(s.name, {"samples": 0, "tokens": 0})
        t.add_row(
            s.name,
            s.kind + (f" thinking={'on' if s.thinking else 'off'}" if s.thinking is not None else ""),
            f"{s.share:.2f}",
            str(got["samples"]),
            str(got["tokens"]),
            s.describe(),
            s.license,
        )
    con = console()
    print_table(t)
    con.print(
        f"{summary['samples']} samples, {summary['tokens']} tokens (seq_len {cs.seq_len}, seed {mix.seed}), "
        f"tokenizer of {model}; sha256 {summary['sha256'][:16]}"
    )
    for i in range(min(examples, len(cs.texts))):
        con.rule(f"sample {i} ({cs.source_of[i]})")
        con.print(cs.texts[i], markup=False, highlight=False)
