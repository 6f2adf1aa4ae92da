"""What made an artifact, recorded in its manifest and shown on its model card under "Reproduce".

The caller says what is running: the CLI passes the command line it parsed, a build passes the
equivalent ``qwen3-quant quantize`` command of its cell (and names the build file and cell), and a
library call from Python records the call itself. Nothing here reads ``sys.argv``.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

KINDS = ("cli", "build", "python")
PROGRAM = "qwen3-quant"


@dataclass(frozen=True)
class Provenance:
    kind: str  # cli | build | python
    command: str  # a shell command line (cli, build) or a Python call (python) that reproduces it
    build_file: str | None = None  # for kind "build": the build file and the cell that ran
    cell: str | None = None
    # the device the quantisation computed on (qwen3_quant.device facts: name, driver, CUDA, VRAM)
    quantised_on: dict[str, Any] | None = None

    @property
    def language(self) -> str:
        """The code-block language of ``command`` on a model card."""
        return "python" if self.kind == "python" else "sh"

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Provenance | None:
        if not d or not d.get("command"):
            return None
        return cls(
            str(d.get("kind", "cli")),
            str(d["command"]),
            d.get("build_file"),
            d.get("cell"),
            dict(d["quantised_on"]) if isinstance(d.get("quantised_on"), dict) else None,
        )


def shell_command(words: Sequence[Any]) -> str:
    """``qwen3-quant`` followed by the words, each quoted for a POSIX shell."""
    return " ".join([PROGRAM, *(shlex.quote(str(w)) for w in words)])


def quantize_command(model: str, fmt: str, options: Mapping[str, Any], extra: Sequence[str] = ()) -> str:
    """The ``qwen3-quant quantize`` command for ``options`` spelled as the format declares its flags."""
    from .formats import get_format

    words = ["quantize", model, "--format", fmt, *get_format(fmt).option_words(options), *extra]
    return shell_command(words)


def python_call(function: str, *args: Any, **kwargs: Any) -> str:
    """``qwen3_quant.quantize.quantize('Qwen3-8B', 'gguf', types=['Q4_K_M'])``: a library call as
    Python that reproduces it (arguments that are None are left out)."""
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items() if v is not None]
    module, _, name = function.rpartition(".")
    return f"from {module} import {name}\n{name}({', '.join(parts)})"
