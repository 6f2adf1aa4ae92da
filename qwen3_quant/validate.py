"""Validating artifact variants in their runtime and recording the result in the manifest."""

from __future__ import annotations

import logging
import math
from pathlib import Path

from .artifact import load_manifest, record_validation
from .eval.evaluate import EvalOptions, EvalResult, eval_targets, evaluate
from .eval.gates import Gates, default_gates
from .formats import get_format
from .formats.base import Progress, no_progress

log = logging.getLogger(__name__)


def _failed(target, error: str) -> EvalResult:
    """The result of a variant that could not be evaluated (did not load, crashed in its runtime)."""
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
        gates=[{"name": "loads", "value": 0.0, "limit": 1.0, "passed": False, "error": error}],
    )


def gates_for(folder: Path, variant: str, overrides: dict[str, float | None] | None = None) -> Gates:
    m = load_manifest(folder)
    recipe = m["variants"][variant].get("recipe") or {}
    bits = recipe.get("bits") or get_format(m["format"]).nominal_bits(variant)
    return default_gates(int(bits)).with_overrides(overrides or {})


def validate_artifact(
    folder: str | Path,
    variant: str | None = None,
    *,
    options: EvalOptions | None = None,
    gate_overrides: dict[str, float | None] | None = None,
    progress: Progress = no_progress,
) -> list[EvalResult]:
    """Evaluate each variant (or one) against the source model and record pass/fail.

    A variant that fails to load in its runtime is recorded as failed with the error, not raised.
    """
    from .errors import Qwen3QuantError

    folder = Path(folder)
    m = load_manifest(folder)
    names = [variant] if variant else list(m["variants"])
    results = []
    for name in names:
        target = eval_targets(folder, name)[0]
        gates = gates_for(folder, name, gate_overrides)
        try:
            res = evaluate(target, options=options, gates=gates, progress=progress)
            record_validation(
                folder, name, {"passed": res.passed, "gates": gates.to_dict(), "result": res.to_dict()}
            )
        except Qwen3QuantError as exc:
            log.error("%s %s failed validation: %s", folder.name, name, exc.one_line())
            record_validation(
                folder, name, {"passed": False, "gates": gates.to_dict(), "error": exc.one_line()}
            )
            res = _failed(target, exc.one_line())
        results.append(res)
    return results
