"""``quantize()``: one model to one format, then validation of every variant in its runtime."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .checkpoint import inspect_checkpoint
from .errors import DependencyMissingError
from .eval.evaluate import EvalOptions, EvalResult
from .formats import get_format
from .formats.base import Progress, no_progress
from .io import check_writable, ensure_free_space, safe_name
from .provenance import Provenance, python_call
from .sources import resolve_model
from .validate import check_eval_inputs

log = logging.getLogger(__name__)
DEFAULT_OUT = Path("qwen3-quant-out")


@dataclass
class QuantizeResult:
    artifact_dir: Path
    format: str
    variants: list[str]
    validations: list[EvalResult] = field(default_factory=list)

    @property
    def passed(self) -> bool | None:
        if not self.validations:
            return None
        return all(v.passed is not False for v in self.validations)


def quantize(
    model: str,
    fmt: str,
    *,
    out_dir: str | Path | None = None,
    out_root: str | Path | None = None,
    overwrite: bool = False,
    validate: bool = True,
    eval_options: EvalOptions | None = None,
    gate_overrides: dict[str, float | None] | None = None,
    revision: str | None = None,
    progress: Progress = no_progress,
    provenance: Provenance | None = None,
    device: str | None = None,
    **options: Any,
) -> QuantizeResult:
    """Quantise ``model`` (catalog name, Hub id or folder) to ``fmt`` with format ``options``.

    Options are checked before the model is downloaded or loaded. The artifact goes to
    ``out_dir``, or ``<out_root>/<artifact name>`` (default root ``qwen3-quant-out``).
    ``provenance`` is what the manifests and model cards record as having made the artifact: the
    CLI and builds pass their command; by default, this call itself. ``device`` (``auto``, ``cpu``,
    ``cuda``, ``cuda:N``) is where quantisation and validation compute; validation follows it
    unless ``eval_options.device`` says otherwise. The manifest records the device.
    """
    from .device import parse_device

    f = get_format(fmt)
    given = {k: v for k, v in options.items() if v is not None}
    config = f.parse_options(given)
    parse_device(device)  # a bad spelling fails with the other options
    if provenance is None:
        provenance = Provenance(
            "python",
            python_call(
                "qwen3_quant.quantize.quantize",
                model,
                f.name,
                out_dir=str(out_dir) if out_dir else None,
                revision=revision,
                device=device,
                **given,
            ),
        )
    check_writable(Path(out_dir) if out_dir else Path(out_root or DEFAULT_OUT))
    if validate:
        check_eval_inputs(eval_options or EvalOptions())
    if not f.available():
        raise DependencyMissingError(
            f"the {f.name} format's libraries are not installed", hint=f"pip install 'qwen3-quant[{f.extra}]'"
        )
    dev = quantise_device(f, device)  # before the model is downloaded
    src = resolve_model(model, revision=revision)
    info = inspect_checkpoint(src.path)
    if out_dir:
        dest = Path(out_dir)
    else:  # the name comes from the model's name, which a Hub id or a folder chose
        name = safe_name(f.artifact_name(src.name, config), what=f"artifact name for {model}")
        dest = Path(out_root or DEFAULT_OUT) / name
    if overwrite or not dest.exists():  # else kept, or (GGUF) types added, each checked as it is written
        need = sum(f.estimate(info.arch, v).artifact_bytes for v in f.variants(config))
        ensure_free_space(dest.parent if not dest.exists() else dest, need, what=f"write {dest.name}")
    if dev.is_cuda:
        check_fits_gpu(dev, [(v, f.estimate(info.arch, v).gpu_peak_bytes) for v in f.variants(config)])
    provenance = replace(provenance, quantised_on=dev.facts)
    variants = f.quantize(
        src, info, config, dest, overwrite=overwrite, progress=progress, provenance=provenance, device=dev
    )
    result = QuantizeResult(dest, f.name, variants)
    if validate:
        from .validate import validate_artifact

        eval_options = eval_options or EvalOptions()
        if eval_options.device is None:
            eval_options = replace(eval_options, device=device)
        for v in variants:
            result.validations += validate_artifact(
                dest, v, options=eval_options, gate_overrides=gate_overrides, progress=progress
            )
    return result


def quantise_device(f, device: str | None):
    """The device ``f`` quantises on: the one asked for (checked to be there), or the CPU for a
    format whose quantisation does not use a GPU (the choice is still checked: validation uses it)."""
    from .device import CPU, cpu_facts, resolve_device

    dev = resolve_device(device)
    if dev.is_cuda and not f.gpu_quantise:
        log.info("%s quantises on the CPU; %s is used for validation", f.name.upper(), dev.torch)
        return replace(CPU, requested=dev.requested, facts=cpu_facts())
    return dev


def check_fits_gpu(dev, needs: list[tuple[str, int | None]]) -> None:
    """Refuse, before loading anything, a quantisation whose estimated GPU memory exceeds what the
    device has free."""
    from .errors import DeviceError

    free = dev.facts.get("free_vram_bytes")
    for variant, need in needs:
        if need and free is not None and need > free:
            raise DeviceError(
                f"{variant} needs about {need / 1024**3:.1f} GiB of GPU memory to quantise, "
                f"{dev.facts.get('name', dev.torch)} ({dev.torch}) has {free / 1024**3:.1f} GiB free",
                hint="free the GPU, use a larger one (--device cuda:N), fewer --calib-samples, or --device cpu",
            )
