from __future__ import annotations

from pathlib import Path

import click

from ..formats import FORMATS


@click.command("quantize")
@click.argument("model")
@click.option(
    "--format",
    "fmt",
    required=True,
    type=click.Choice(list(FORMATS), case_sensitive=False),
    help="Output format.",
)
@click.option("--type", "types", help="GGUF: llama.cpp type(s), comma-separated (e.g. Q8_0,Q6_K,Q4_K_M).")
@click.option("--precision", help="ONNX: fp32, fp16, int8 or int4.")
@click.option("--bits", type=int, help="GPTQ/AWQ: 4 or 8.")
@click.option("--group-size", type=int, help="GPTQ/AWQ: 32, 64 or 128.")
@click.option("--sym/--asym", default=None, help="GPTQ/AWQ: symmetric or asymmetric quantisation.")
@click.option("--act-order/--no-act-order", default=None, help="GPTQ: quantise columns by activation order.")
@click.option("--block-size", type=int, help="ONNX int4: 32, 64 or 128.")
@click.option("--accuracy-level", type=int, help="ONNX int4: MatMulNBits accuracy level (0-4).")
@click.option("--quantizer", help="ONNX int4 weight quantiser: rtn or k_quant.")
@click.option(
    "--imatrix/--no-imatrix",
    default=None,
    help="GGUF: importance matrix for K-quants (default on for 4 bits and below).",
)
@click.option("--calib", help="Calibration mix: a name from calib/ or a .toml file (default: default).")
@click.option("--calib-samples", type=int, help="Override the mix's sample count.")
@click.option("--max-shard-size", help="GGUF: split files above this size (e.g. 45G).")
@click.option("--starved-experts", help="MoE GPTQ/AWQ: fail, calibrate-all or rtn.")
@click.option(
    "--starved-threshold",
    help="MoE GPTQ/AWQ: experts routed fewer calibration tokens are starved: a count or a % of them (default 0.5%).",
)
@click.option("--revision", help="Hub revision of MODEL.")
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Artifact folder (default: qwen3-quant-out/<artifact name>).",
)
@click.option("--overwrite", is_flag=True, help="Replace existing artifacts.")
@click.option(
    "--validate/--no-validate",
    default=True,
    show_default=True,
    help="Validate each artifact in its runtime (perplexity, KLD, speed, gates).",
)
@click.option("--text", help="Validation text (default builtin:pydoc; 'wikitext2' or a file).")
@click.option("--ctx", type=click.IntRange(2), help="Validation window length.")
@click.option("--max-tokens", type=click.IntRange(2), help="Validate on the first N tokens only.")
@click.option(
    "--gate", "gate_opts", multiple=True, metavar="NAME=VALUE", help="Gate override (ppl=, kld=, top1=)."
)
@click.option(
    "--json-out", type=click.Path(dir_okay=False, path_type=Path), help="Write results as JSON here."
)
def quantize(
    model: str,
    fmt: str,
    out_dir: Path | None,
    overwrite: bool,
    validate: bool,
    text: str | None,
    ctx: int | None,
    max_tokens: int | None,
    gate_opts: tuple[str, ...],
    revision: str | None,
    json_out: Path | None,
    **options,
) -> None:
    """Quantise MODEL (catalog name such as Qwen3-8B, Hub id, or local folder) to one format, then
    validate every artifact in the runtime that serves it."""
    from ..eval.evaluate import EvalOptions
    from ..eval.gates import parse_gate_overrides
    from ..quantize import quantize as run
    from .console import console, progress_bar, write_json
    from .report_tables import eval_table

    if options.get("types"):
        options["types"] = [t.strip() for t in options["types"].split(",") if t.strip()]
    overrides = parse_gate_overrides(gate_opts)
    prog, update = progress_bar()
    with prog:
        res = run(
            model,
            fmt,
            out_dir=out_dir,
            overwrite=overwrite,
            validate=validate,
            revision=revision,
            eval_options=EvalOptions(text=text, ctx=ctx, max_tokens=max_tokens),
            gate_overrides=overrides,
            progress=update,
            **options,
        )
    con = console()
    con.print(f"[bold]{res.artifact_dir}[/bold]: {', '.join(res.variants)}")
    if res.validations:
        con.print(eval_table(res.validations, title=f"Validation of {res.artifact_dir.name}"))
    if json_out:
        write_json(
            json_out,
            {
                "artifact_dir": str(res.artifact_dir),
                "format": res.format,
                "variants": res.variants,
                "validations": [v.to_dict() for v in res.validations],
            },
        )
    if res.passed is False:
        raise SystemExit(3)
