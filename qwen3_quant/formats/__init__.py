"""Registry of quantisation formats, keyed by format name.

Adding a format: one package under ``qwen3_quant.formats`` exposing a
:class:`~qwen3_quant.formats.base.QuantFormat` object, and one line in ``BUILTIN`` below. From
outside this package: :func:`register` the object in your own process, or declare it as an entry
point of the ``qwen3_quant.formats`` group (``name = "package.module:OBJECT"``) so that every
process (build workers, Ray nodes) finds it. Everything else the program needs from a format is
declared by that object: see :mod:`qwen3_quant.formats.base` and docs/adding-a-format.md.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

from ..errors import UnknownFormatError
from .base import EvalTarget, Option, QuantFormat, Runtime, SizeEstimate, UsageContext, check_contract

__all__ = [
    "FORMATS",
    "get_format",
    "all_formats",
    "register",
    "unregister",
    "option_flag",
    "QuantFormat",
    "SizeEstimate",
    "Option",
    "Runtime",
    "EvalTarget",
    "UsageContext",
]

BUILTIN: dict[str, str] = {
    "gguf": "qwen3_quant.formats.gguf:FORMAT",
    "gptq": "qwen3_quant.formats.gptqmodel:GPTQ_FORMAT",
    "awq": "qwen3_quant.formats.gptqmodel:AWQ_FORMAT",
    "onnx": "qwen3_quant.formats.onnx:FORMAT",
    "mlx": "qwen3_quant.formats.mlx:FORMAT",
}

ENTRY_POINT_GROUP = "qwen3_quant.formats"

_specs: dict[str, str | QuantFormat] = dict(BUILTIN)
_loaded: dict[str, QuantFormat] = {}
_plugins_read = False


def _registry() -> dict[str, str | QuantFormat]:
    """The formats: built-in, registered in this process, and installed as entry points."""
    global _plugins_read
    if not _plugins_read:
        _plugins_read = True
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            _specs.setdefault(ep.name.lower(), ep.value)
    return _specs


class _Names(Mapping[str, str | QuantFormat]):
    """The registered format names (a live view: ``name in FORMATS``, ``list(FORMATS)``)."""

    def __getitem__(self, key: str) -> str | QuantFormat:
        return _registry()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(_registry())

    def __len__(self) -> int:
        return len(_registry())


FORMATS = _Names()


def register(fmt: QuantFormat) -> QuantFormat:
    """Register a format object (checked against the contract first); returns it."""
    check_contract(fmt)
    _specs[fmt.name] = fmt
    _loaded[fmt.name] = fmt
    return fmt


def unregister(name: str) -> None:
    """Remove a format registered with :func:`register` (the built-in ones stay)."""
    if name in BUILTIN:
        raise ValueError(f"{name} is a built-in format")
    _specs.pop(name, None)
    _loaded.pop(name, None)


def get_format(name: str) -> QuantFormat:
    key = name.strip().lower()
    if key in _loaded:
        return _loaded[key]
    specs = _registry()
    if key not in specs:
        raise UnknownFormatError(f"unknown format '{name}'", hint="choose one of: " + ", ".join(specs))
    spec = specs[key]
    if isinstance(spec, str):
        module, attr = spec.split(":")
        spec = getattr(importlib.import_module(module), attr)
    check_contract(spec)
    _loaded[key] = spec
    return spec


def all_formats() -> list[QuantFormat]:
    return [get_format(n) for n in list(_registry())]


def find_option(name: str) -> Option | None:
    """The declaration of an option by keyword, from whichever format declares it."""
    for f in all_formats():
        o = f.option(name)
        if o is not None:
            return o
    return None


def option_flag(name: str) -> str:
    """The CLI spelling of a quantize option, for messages: ``block_size`` -> ``--block-size``."""
    o = find_option(name)
    return o.spelling if o else "--" + name.replace("_", "-")


def int_choice(
    given: dict, key: str, choices: tuple[int, ...], default: int, *, fmt: str | None = None
) -> int:
    """An integer option from ``given`` (a number or its digits) that must be one of ``choices``;
    anything else is a UsageError naming the flag (and ``fmt``, when given) and the choices."""
    from ..errors import UsageError

    if key not in given:
        return default
    value = given[key]
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value not in choices:
        what = f"{option_flag(key)} {given[key]}"
        raise UsageError(
            f"{fmt} does not take {what}" if fmt else f"{what} is not supported",
            hint="choose one of: " + ", ".join(map(str, choices)),
        )
    return value


def noisy_loggers() -> list[str]:
    """The library loggers the formats ask the CLI and build workers to quieten."""
    return list(dict.fromkeys(n for f in all_formats() for n in f.noisy_loggers))
