"""``qwen3-quant quantize``: its format options are built from what the registered formats declare
(``QuantFormat.options``), so a new format's flags appear without an edit here."""

from __future__ import annotations

from pathlib import Path

import click

from ..eval.options import DEFAULT_MAX_TOKENS, DEFAULT_TEXT
from ..eval.protocol import DEFAULT_CTX
from ..formats.base import DEVICE


def format_option_params() -> list[click.Option]:
    """One click option per option name any registered format declares; the help says which
    formats take it and their defaults."""
    from ..errors import FormatContractError
    from ..formats import all_formats

    by_name: dict[str, list] = {}
    for f in all_formats():
        for o in f.options:
            by_name.setdefault(o.name, []).append((f, o))
    params = []
    for name, decls in by_name.items():
        first = decls[0][1]
        for f, o in decls[1:]:
            if (o.type, o.cli_flag, o.off_flag) != (first.type, first.cli_flag, first.off_flag):
                raise FormatContractError(
                    f"format {f.name!r} declares option {name!r} unlike format {decls[0][0].name!r}"
                )
        texts: dict[str, list[str]] = {}
        for f, o in decls:
            text = o.help + (f" Default: {o.default}." if o.default is not None else "")
            texts.setdefault(text, []).append(f.name.upper())
        help_text = " ".join(f"{'/'.join(names)}: {text}" for text, names in texts.items())
        if first.type is bool:
            decl = f"{first.cli_flag}/{first.cli_off_flag}"
            params.append(click.Option([decl, name], default=None, help=help_text))
        else:
            ptype = int if first.type is int else str
            params.append(
                click.Option(
                    [first.cli_flag, name], type=ptype, metavar=first.metavar or None, help=help_text
                )
            )
    return params


def _split_lists(options: dict) -> dict:
    """Comma-separated values of list options, as the formats take them."""
    from ..formats import find_option

    out = {}
    for k, v in options.items():
        o = find_option(k)
        if v is not None and o is not None and o.type is list:
            v = [t.strip() for t in str(v).split(",") if t.strip()]
        out[k] = v
    return out


def device_param() -> click.Option:
    """``--device``, as :data:`~qwen3_quant.formats.base.DEVICE` declares it (quantize, eval, build)."""
    return click.Option(
        [DEVICE.cli_flag, DEVICE.name],
        metavar=DEVICE.metavar,
        help=f"{DEVICE.help} Default: {DEVICE.default}.",
    )


def run_quantize(
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
    as_json: bool,
    device: str | None = None,
    **options,
) -> None:
    """Quantise MODEL (catalog name such as Qwen3-8B, Hub id, or local folder) to one format, then
    validate every artifact in the runtime that serves it."""
    from ..eval.evaluate import EvalOptions
    from ..eval.gates import parse_gate_overrides
    from ..provenance import Provenance, quantize_command
    from ..quantize import quantize as run
    from .console import check_json_out, json_errors, progress_reporter, write_json

    with json_errors(as_json):
        options = _split_lists({k: v for k, v in options.items() if v is not None})
        overrides = parse_gate_overrides(gate_opts)
        check_json_out(json_out)
        extra: list[str] = []
        for flag, value in (
            ("--revision", revision),
            ("-o", out_dir),
            ("--text", text),
            ("--ctx", ctx),
            ("--max-tokens", max_tokens),
            ("--device", device),
        ):
            if value is not None:
                extra += [flag, str(value)]
        extra += [w for g in gate_opts for w in ("--gate", g)]
        extra += (["--overwrite"] if overwrite else []) + ([] if validate else ["--no-validate"])
        provenance = Provenance("cli", quantize_command(model, fmt.lower(), options, extra))
        prog, update = progress_reporter(f"{Path(model).name} {fmt.upper()}")
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
                provenance=provenance,
                device=device,
                **options,
            )
    doc = {
        "ok": res.passed is not False,
        "artifact_dir": str(res.artifact_dir),
        "format": res.format,
        "variants": res.variants,
        "passed": res.passed,
        "validations": [v.to_dict() for v in res.validations],
    }
    if res.passed is False:
        failed = [v.variant or v.artifact for v in res.validations if v.passed is False]
        doc["error"] = "validation failed: " + ", ".join(map(str, failed))
    if json_out:
        write_json(json_out, doc)
    if as_json:
        from .console import print_json

        print_json(doc)
    else:
        from .console import console, print_table
        from .report_tables import eval_table

        console().print(f"[bold]{res.artifact_dir}[/bold]: {', '.join(res.variants)}")
        if res.validations:
            print_table(eval_table(res.validations, title=f"Validation of {res.artifact_dir.name}"))
    if res.passed is False:
        raise SystemExit(3)


def make_command() -> click.Command:
    """The command, with the format options of the formats registered now."""
    from ..formats import FORMATS

    common = [
        click.Argument(["model"]),
        click.Option(
            ["--format", "fmt"],
            required=True,
            metavar="FORMAT",
            help="Output format: " + ", ".join(FORMATS) + ".",
        ),
        *format_option_params(),
        click.Option(["--revision"], help="Hub revision of MODEL."),
        device_param(),
        click.Option(
            ["-o", "--out", "out_dir"],
            type=click.Path(file_okay=False, path_type=Path),
            help="Artifact folder (default: qwen3-quant-out/<artifact name>).",
        ),
        click.Option(["--overwrite"], is_flag=True, help="Replace existing artifacts."),
        click.Option(
            ["--validate/--no-validate"],
            default=True,
            show_default=True,
            help="Validate each artifact in its runtime (perplexity, KLD, speed, gates).",
        ),
        click.Option(["--text"], help=f"Validation text (default {DEFAULT_TEXT}; 'wikitext2' or a file)."),
        click.Option(
            ["--ctx"],
            type=click.IntRange(2),
            help=f"Validation window length in tokens (default {DEFAULT_CTX}, capped by the model).",
        ),
        click.Option(
            ["--max-tokens"],
            type=click.IntRange(2),
            help=f"Validate on the first N tokens only (default {DEFAULT_MAX_TOKENS}).",
        ),
        click.Option(
            ["--gate", "gate_opts"],
            multiple=True,
            metavar="NAME=VALUE",
            help="Gate override (ppl=, kld=, top1=).",
        ),
        click.Option(
            ["--json-out"],
            type=click.Path(dir_okay=False, path_type=Path),
            help="Write results as JSON here.",
        ),
        click.Option(
            ["--json", "as_json"],
            is_flag=True,
            help='Print the result as JSON on stdout (on failure too: {"ok": false, "error": ...}).',
        ),
    ]
    return click.Command("quantize", callback=run_quantize, params=common, help=run_quantize.__doc__)
