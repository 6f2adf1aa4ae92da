from __future__ import annotations

from pathlib import Path

import click

from ..eval.options import DEFAULT_MAX_TOKENS, DEFAULT_TEXT, DEFAULTS, REFERENCE_DTYPES
from ..eval.protocol import DEFAULT_CTX
from ..formats.base import DEVICE


def resolve_path_or_model(spec: str) -> Path:
    p = Path(spec).expanduser()
    if p.exists():
        return p
    from ..sources import resolve_model

    return resolve_model(spec).path


def load_dataset_text(name: str) -> Path:
    """``wikitext2`` through the ``datasets`` library (online), saved as a text file in the cache."""
    from ..errors import UsageError, require
    from ..io import atomic_write_text, cache_root

    if name.lower() not in ("wikitext2", "wikitext-2"):
        raise UsageError(f"unknown dataset '{name}'", hint="use wikitext2, or --text FILE")
    ds = require("datasets", "datasets")
    out = cache_root() / "datasets" / "wikitext-2-raw-v1-test.txt"
    if not out.is_file():
        rows = ds.load_dataset("Salesforce/wikitext", "wikitext-2-raw-v1", split="test")
        atomic_write_text(out, "\n\n".join(rows["text"]))
    return out


@click.command("eval")
@click.argument("target")
@click.option(
    "--base", help="Unquantised model to compare with (default: the source in the artifact's manifest)."
)
@click.option(
    "--text",
    "text",
    help="Evaluation text: a UTF-8 file, 'wikitext2' (shared data file) or "
    f"'{DEFAULT_TEXT}' (default, ships with Python).",
)
@click.option("--dataset", help="Evaluation text from the datasets library when online: wikitext2.")
@click.option(
    "--ctx",
    type=click.IntRange(2),
    help=f"Window length in tokens (default {DEFAULT_CTX}, capped by the model).",
)
@click.option(
    "--max-tokens",
    type=click.IntRange(2),
    help=f"Score only the first N tokens of the text.  [default: {DEFAULT_MAX_TOKENS}]",
)
@click.option("--variant", help="One variant of a multi-variant artifact folder (e.g. Q4_K_M).")
@click.option(
    "--speed/--no-speed", default=True, show_default=True, help="Measure prefill and decode tokens/s."
)
@click.option(
    "--prompt-tokens",
    default=DEFAULTS.prompt_tokens,
    show_default=True,
    type=click.IntRange(1),
    help="Prompt length for the prefill speed.",
)
@click.option(
    "--decode-tokens",
    default=DEFAULTS.decode_tokens,
    show_default=True,
    type=click.IntRange(2),
    help="Tokens generated for the decode speed.",
)
@click.option(
    "--repeats",
    default=DEFAULTS.repeats,
    show_default=True,
    type=click.IntRange(1),
    help="Timed runs (the median is reported).",
)
@click.option("--threads", type=click.IntRange(1), help="CPU threads for the runtime.")
@click.option(
    DEVICE.cli_flag, DEVICE.name, metavar=DEVICE.metavar, help=f"{DEVICE.help} Default: {DEVICE.default}."
)
@click.option(
    "--gate",
    "gate_opts",
    multiple=True,
    metavar="NAME=VALUE",
    help="Gate override: ppl=<max % increase>, kld=<max mean>, top1=<min agreement>, or off.",
)
@click.option(
    "--isolate/--no-isolate",
    default=False,
    show_default=True,
    help="Score the artifact in a fresh process for a clean peak-memory figure.",
)
@click.option(
    "--reference-dtype",
    type=click.Choice(REFERENCE_DTYPES),
    default=DEFAULTS.reference_dtype,
    show_default=True,
    help="Compute type of the reference's decoder layers (run one at a time); bfloat16 halves their memory.",
)
@click.option(
    "--json-out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the results as JSON here (default: eval-<name>.json).",
)
def eval_(
    target: str,
    base: str | None,
    text: str | None,
    dataset: str | None,
    ctx: int | None,
    max_tokens: int | None,
    variant: str | None,
    speed: bool,
    prompt_tokens: int,
    decode_tokens: int,
    repeats: int,
    threads: int | None,
    device: str | None,
    gate_opts: tuple[str, ...],
    isolate: bool,
    reference_dtype: str,
    json_out: Path | None,
) -> None:
    """Evaluate TARGET (a model name, Hub id, folder, .gguf file or artifact folder): perplexity on a
    fixed protocol, KL divergence against the unquantised model, prefill/decode tokens/s, peak memory."""
    from ..errors import UsageError
    from ..eval.evaluate import EvalOptions
    from ..eval.gates import parse_gate_overrides
    from ..validate import check_eval_inputs, evaluate_path
    from .console import check_json_out, console, print_table, progress_reporter, write_json
    from .report_tables import eval_table

    if text and dataset:
        raise UsageError("--text and --dataset both given", hint="pass one of them")
    if dataset:
        text = str(load_dataset_text(dataset))
    overrides = parse_gate_overrides(gate_opts)
    opts = EvalOptions(
        text=text,
        ctx=ctx,
        max_tokens=max_tokens,
        speed=speed,
        prompt_tokens=prompt_tokens,
        decode_tokens=decode_tokens,
        repeats=repeats,
        threads=threads,
        isolate=isolate,
        device=device,
        reference_dtype=reference_dtype,
    )
    check_eval_inputs(opts)  # before a model is downloaded or loaded
    check_json_out(json_out or Path("eval.json"))
    path = resolve_path_or_model(target)
    base_path = resolve_path_or_model(base) if base else None
    name = path.stem if path.is_file() else path.name
    out = json_out or Path(f"eval-{name}.json")
    prog, update = progress_reporter(name)
    with prog:
        results = evaluate_path(
            path, variant=variant, base=base_path, options=opts, gate_overrides=overrides, progress=update
        )
    print_table(eval_table(results))
    write_json(out, {"results": [r.to_dict() for r in results]})
    console().print(f"JSON: {out}", style="dim")
    if any(r.passed is False for r in results):
        raise SystemExit(3)
