"""The ``qwen3-quant`` command line: a Click group whose subcommands load on first use.

Every command is a thin wrapper over a library function; library errors become one-line messages
and exit codes here and nowhere else.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

import click

from .. import __version__
from ..errors import Qwen3QuantError

# name -> (module, function, one-line help). Only commands that work are listed.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "models": (
        "qwen3_quant.cli.models_cmd",
        "models",
        "The eight Qwen3 models: shapes, parameters, artifact sizes.",
    ),
    "check": ("qwen3_quant.cli.check_cmd", "check", "Check a checkpoint (catalog name, Hub id or folder)."),
    "eval": (
        "qwen3_quant.cli.eval_cmd",
        "eval_",
        "Perplexity, KLD, tokens/s and memory of a model or artifact.",
    ),
    "build": (
        "qwen3_quant.cli.build_cmd",
        "build",
        "Run the models x formats matrix: resumable, parallel, with a report.",
    ),
    "calib": ("qwen3_quant.cli.calib_cmd", "calib", "Calibration mixes: list and show with token counts."),
    "quantize": (
        "qwen3_quant.cli.quantize_cmd",
        "make_command",
        "Quantise a model to GGUF, GPTQ, AWQ or ONNX and validate every artifact.",
    ),
    "publish": ("qwen3_quant.cli.publish_cmd", "publish", "Publish a validated artifact (Hub or folder)."),
}

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        cmd = getattr(importlib.import_module(module), attr)
        return cmd if isinstance(cmd, click.Command) else cmd()  # built now from the registered formats

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(n, h) for n, (_, _, h) in COMMANDS.items()])

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except Qwen3QuantError as exc:
            err = click.ClickException(exc.one_line())
            err.exit_code = exc.exit_code
            raise err from exc
        except KeyboardInterrupt:
            click.echo(
                "interrupted: nothing unfinished was kept under a final name; rerun to resume", err=True
            )
            sys.exit(130)


def setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    from rich.logging import RichHandler

    from .console import err_console

    logging.basicConfig(
        level=level,
        format="%(message)s",
        handlers=[RichHandler(console=err_console(), show_path=verbosity > 1, show_time=verbosity > 1)],
        force=True,
    )
    from ..formats import noisy_loggers

    for noisy in (*noisy_loggers(), "accelerate", "httpx"):
        logging.getLogger(noisy).setLevel(logging.ERROR if verbosity < 2 else logging.DEBUG)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error" if verbosity == 0 else "warning")


@click.group(cls=LazyGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "--version", prog_name="qwen3-quant")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.pass_context
def main(ctx: click.Context, verbose: int) -> None:
    """Quantise Qwen3 and Qwen3-MoE models, validate each artifact in its runtime, publish what passed."""
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    setup_logging(verbose)
