"""Artifact folders for tests of the tools that consume them (publish, build): real files with a real
manifest written by :func:`qwen3_quant.artifact.record_variant`, and validation records shaped by the
real gate code from given metrics. Weights are random bytes: nothing here loads in a runtime."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..artifact import Manifest, ValidationRecord, record_validation, record_variant
from ..eval.evaluate import EvalResult
from ..eval.gates import check_gates, default_gates
from ..formats import get_format
from ..provenance import Provenance
from ..validate import measured_files


def gate_metrics(bits: int, passing: bool) -> dict[str, float]:
    """Metrics well inside (or well outside) the default gates for ``bits``."""
    g = default_gates(bits)
    if passing:
        return {
            "ppl_increase_pct": g.max_ppl_increase_pct * 0.4,
            "kld_mean": g.max_kld_mean * 0.4,
            "top1_agreement": 1 - (1 - g.min_top1_agreement) * 0.4,
        }
    return {
        "ppl_increase_pct": g.max_ppl_increase_pct * 2.5,
        "kld_mean": g.max_kld_mean * 3,
        "top1_agreement": g.min_top1_agreement * 0.8,
    }


def validation_record(
    bits: int,
    metrics: dict[str, float],
    variant: str,
    runtime: str,
    files_sha256: dict[str, str] | None = None,
) -> ValidationRecord:
    """A manifest ``validation`` entry for the given metrics, judged by the default gates, naming
    the sha256 of the files it measured."""
    gates = default_gates(bits)
    checked = check_gates(gates, **metrics)
    base_ppl = 12.5
    res = EvalResult(
        artifact=f"/tmp/artifacts/{variant}",
        runtime=runtime,
        base="/home/someone/models/base",
        text="builtin:pydoc",
        text_sha256="0" * 64,
        protocol=1,
        ctx=512,
        tokens=4096,
        tokens_scored=4088,
        windows=8,
        perplexity=base_ppl * (1 + metrics["ppl_increase_pct"] / 100),
        base_perplexity=base_ppl,
        ppl_increase_pct=metrics["ppl_increase_pct"],
        kld_mean=metrics["kld_mean"],
        kld_median=metrics["kld_mean"] / 2,
        kld_p99=metrics["kld_mean"] * 8,
        top1_agreement=metrics["top1_agreement"],
        prefill_tps=812.5,
        decode_tps=41.3,
        prompt_tokens=512,
        decode_tokens=64,
        peak_rss_bytes=1_234_567_890,
        variant=variant,
        gates=[asdict(g) for g in checked],
        passed=all(g.passed for g in checked),
    )
    return ValidationRecord(
        bool(res.passed), gates.to_dict(), res.to_dict(), files_sha256=dict(files_sha256 or {})
    )


def make_artifact(
    root: Path,
    fmt: str = "gguf",
    *,
    model: str = "Qwen3-8B",
    hub_id: str | None = "Qwen/Qwen3-8B",
    variants: dict[str, int] | None = None,
    validation: dict[str, str | None] | None = None,
    size: int = 4096,
    command: str | None = None,
    **double: Any,
) -> Path:
    """Write an artifact folder under ``root`` named as the format names it, with the format's own
    test double for each variant (``double`` goes to it: e.g. GGUF ``shards={"Q8_0": 3}``,
    ``imatrix=False``).

    ``variants``: name -> bits (GGUF: types; others: one variant). ``validation``: variant ->
    ``"pass"``, ``"fail"`` (gates), ``"error"`` (did not load) or ``None`` (never validated);
    default all pass.
    """
    f = get_format(fmt)
    if variants is None:
        variants = {"Q4_K_M": 4, "Q8_0": 8} if f.shares_folder else {f.table_types[0]: 4}
    validation = validation or {}
    first, bits0 = next(iter(variants.items()))
    axis_value = bits0 if f.cell_axis == "bits" else first
    name = f.artifact_name(model, f.parse_options({f.cell_axis: axis_value}))
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    source = {
        "spec": hub_id or model,
        "name": model,
        "hub_id": hub_id,
        "revision": None,
        "path": f"/home/someone/.cache/{model}",
        "fingerprint": "f" * 16,
    }
    shards = double.pop("shards", None) or {}
    for variant, bits in variants.items():
        made = f.write_test_double(
            folder, model, variant, bits, size=size, shards=shards.get(variant), **double
        )
        cmd = command or f"qwen3-quant quantize {hub_id or model} --format {f.name} -o {folder}"
        record_variant(
            folder,
            name=name,
            fmt=f.name,
            source=source,
            variant=variant,
            files=made.files,
            recipe=made.recipe,
            shared_files=made.shared_files,
            provenance=Provenance("cli", cmd),
        )
        state = validation.get(variant, "pass")
        measured = measured_files(folder, Manifest.read(folder), variant)
        if state in ("pass", "fail"):
            record_validation(
                folder,
                variant,
                validation_record(bits, gate_metrics(bits, state == "pass"), variant, f.runtime, measured),
            )
        elif state == "error":
            record_validation(
                folder,
                variant,
                ValidationRecord(
                    False,
                    default_gates(bits).to_dict(),
                    error="llama.cpp could not load the file (bad magic)",
                    files_sha256=measured,
                ),
            )
    return folder
