"""Validating artifact variants in their runtime and recording the result in the manifest; the
same loop serves ``qwen3-quant eval`` (which records nothing)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

from .artifact import Manifest, ValidationRecord, record_validation
from .eval.evaluate import EvalOptions, EvalResult, EvalTarget, eval_targets, evaluate
from .eval.gates import Gates, default_gates
from .formats import FORMATS, get_format
from .formats.base import Progress, no_progress
from .io import path_inside, sha256_file

log = logging.getLogger(__name__)


def check_eval_inputs(options: EvalOptions) -> None:
    """Refuse evaluation inputs that would fail only after hours of quantising: an unreadable,
    empty or non-UTF-8 ``text``, an unwritable ``reference_dir``, a ``device`` that is not there.
    One-line typed errors."""
    from .device import resolve_device
    from .errors import UsageError
    from .io import check_writable
    from .textdata import load_eval_text

    resolve_device(options.device)

    name, text = load_eval_text(options.text)
    if not text.strip():
        raise UsageError(f"the evaluation text {name} is empty", hint="pass a text file with content")
    if options.reference_dir is not None:
        check_writable(Path(options.reference_dir), what="reference folder")


def _failed(target: EvalTarget, error: str, gate: str = "loads") -> EvalResult:
    """The result of a variant that could not be evaluated: ``gate`` ``loads`` when it did not
    load in its runtime, ``evaluates`` when the evaluation failed for another reason."""
    return EvalResult(
        artifact=str(target.path),
        runtime=target.runtime,
        base=None,
        text="",
        text_sha256="",
        protocol=0,
        ctx=0,
        tokens=0,
        tokens_scored=0,
        windows=0,
        perplexity=math.nan,
        variant=target.variant,
        passed=False,
        gates=[{"name": gate, "value": 0.0, "limit": 1.0, "passed": False, "error": error}],
    )


def gates_for(manifest: Manifest, variant: str, overrides: dict[str, float | None] | None = None) -> Gates:
    """A variant's gates: the defaults for its recipe's bits (else its format's nominal bits)."""
    bits = manifest.variant(variant).bits
    if bits is None:
        bits = get_format(manifest.format).nominal_bits(variant) if manifest.format in FORMATS else 16
    return default_gates(int(bits)).with_overrides(overrides or {})


def target_gates(target: EvalTarget, overrides: dict[str, float | None], *, has_base: bool) -> Gates | None:
    """An artifact variant's gates as validation sets them; 16-bit gates for a model compared with
    a given base; none when there is nothing to compare with."""
    if target.manifest_dir is not None and target.variant:
        return gates_for(Manifest.read(target.manifest_dir), target.variant, overrides)
    return default_gates(16).with_overrides(overrides) if has_base else None


def evaluate_path(
    path: str | Path,
    *,
    variant: str | None = None,
    base: str | Path | None = None,
    options: EvalOptions | None = None,
    gate_overrides: dict[str, float | None] | None = None,
    progress: Progress = no_progress,
) -> list[EvalResult]:
    """Evaluate everything at ``path`` (every variant of an artifact folder, or one) with the gates
    validation would apply; nothing is recorded."""
    results = []
    for t in eval_targets(path, variant, runtime=(options or EvalOptions()).runtime):
        gates = target_gates(t, gate_overrides or {}, has_base=base is not None)
        results.append(evaluate(t, base=base, options=options, gates=gates, progress=progress))
    return results


def measured_files(folder: Path, manifest: Manifest, variant: str) -> dict[str, str]:
    """The sha256 of the files a validation of ``variant`` measures, hashed as it starts."""
    fmt = get_format(manifest.format) if manifest.format in FORMATS else None
    files = manifest.files_of(variant, with_shared=fmt is None or fmt.variant_counts_shared_files)
    paths = {f: path_inside(folder, f, what=f"{folder}: file of {variant}") for f in files}
    return {f: sha256_file(p) for f, p in paths.items() if p.is_file()}


def _naming(progress: Progress, variant: str) -> Progress:
    """The reports of one variant's validation, named after it: ``validate Q4_K_M: scoring in llama.cpp``."""

    def report(stage: str, done: float, total: float) -> None:
        progress(f"validate {variant}: {stage}", done, total)

    return report


def validate_artifact(
    folder: str | Path,
    variant: str | None = None,
    *,
    options: EvalOptions | None = None,
    gate_overrides: dict[str, float | None] | None = None,
    progress: Progress = no_progress,
) -> list[EvalResult]:
    """Evaluate each variant (or one) against the source model and record pass/fail, with the
    sha256 of the files measured.

    A variant that fails to load in its runtime is recorded as failed with the error, not raised.
    """
    from .errors import Qwen3QuantError, RuntimeLoadError

    folder = Path(folder)
    m = Manifest.read(folder)
    names = [variant] if variant else list(m.variants)
    results = []
    for name in names:
        target = eval_targets(folder, name)[0]
        gates = gates_for(m, name, gate_overrides)
        hashes = measured_files(folder, m, name)
        try:
            res = evaluate(target, options=options, gates=gates, progress=_naming(progress, name))
            record = ValidationRecord(bool(res.passed), gates.to_dict(), res.to_dict(), files_sha256=hashes)
        except Qwen3QuantError as exc:
            log.error("%s %s failed validation: %s", folder.name, name, exc.one_line())
            record = ValidationRecord(False, gates.to_dict(), error=exc.one_line(), files_sha256=hashes)
            res = _failed(
                target, exc.one_line(), "loads" if isinstance(exc, RuntimeLoadError) else "evaluates"
            )
        record_validation(folder, name, record)
        results.append(res)
    return results
