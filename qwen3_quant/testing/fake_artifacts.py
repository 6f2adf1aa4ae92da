"""Artifact folders for tests of the tools that consume them (publish, build): real files with a real
manifest written by :func:`qwen3_quant.artifact.record_variant`, and validation records shaped by the
real gate code from given metrics. Weights are random bytes: nothing here loads in a runtime."""

from __future__ import annotations

import json
import random
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..artifact import record_validation, record_variant
from ..eval.evaluate import EvalResult
from ..eval.gates import check_gates, default_gates
from ..formats import FORMATS, get_format
from ..publish.naming import gguf_file_name


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


def _bytes(seed: str, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def validation_record(bits: int, metrics: dict[str, float], variant: str, runtime: str) -> dict[str, Any]:
    """A manifest ``validation`` entry for the given metrics, judged by the default gates."""
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
    return {"passed": res.passed, "gates": gates.to_dict(), "result": res.to_dict()}


def make_artifact(
    root: Path,
    fmt: str = "gguf",
    *,
    model: str = "Qwen3-8B",
    hub_id: str | None = "Qwen/Qwen3-8B",
    variants: dict[str, int] | None = None,
    validation: dict[str, str | None] | None = None,
    size: int = 4096,
    shards: dict[str, int] | None = None,
    command: str | None = None,
    imatrix: bool = True,
) -> Path:
    """Write an artifact folder under ``root`` named as the format names it.

    ``variants``: name -> bits (GGUF: types; others: one variant). ``validation``: variant ->
    ``"pass"``, ``"fail"`` (gates), ``"error"`` (did not load) or ``None`` (never validated);
    default all pass. ``shards``: GGUF variant -> number of split files.
    """
    fmt = fmt.lower()
    if variants is None:
        variants = {"Q4_K_M": 4, "Q8_0": 8} if fmt == "gguf" else {"W4g128" if fmt != "onnx" else "int4": 4}
    validation = validation or {}
    bits0 = next(iter(variants.values()))
    if fmt in FORMATS:  # the name the format itself gives its artifacts
        f = get_format(fmt)
        axis_value = bits0 if f.cell_axis == "bits" else next(iter(variants))
        name = f.artifact_name(model, f.parse_options({f.cell_axis: axis_value}))
    else:
        name = f"{model}-{fmt.upper()}"
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
    shared: list[str] = []
    if fmt != "gguf":
        cfg = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3"}
        if fmt in ("gptq", "awq"):
            cfg["quantization_config"] = {"quant_method": fmt, "bits": bits0, "group_size": 128}
        (folder / "config.json").write_text(json.dumps(cfg, indent=2))
        (folder / "tokenizer.json").write_text(json.dumps({"model": {"type": "BPE"}}))
        (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "Qwen2Tokenizer"}))
        shared = ["config.json", "tokenizer.json", "tokenizer_config.json"]
        if fmt == "onnx":
            (folder / "genai_config.json").write_text(json.dumps({"model": {"type": "qwen3"}}))
            shared.append("genai_config.json")
    for variant, bits in variants.items():
        if fmt == "gguf":
            n = (shards or {}).get(variant)
            files = (
                [gguf_file_name(model, variant, shard=i, shards=n) for i in range(1, n + 1)]
                if n
                else [gguf_file_name(model, variant)]
            )
            recipe: dict[str, Any] = {"type": variant, "bits": bits, "imatrix": imatrix and bits <= 4}
            if imatrix and bits <= 4:
                recipe["calibration"] = {"mix": "default", "samples": 128, "hash": "ab12cd34ef56"}
        elif fmt == "onnx":
            files = ["model.onnx", "model.onnx.data"]
            recipe = {"precision": variant, "bits": bits, "block_size": 32, "accuracy_level": 4}
        else:
            files = ["model.safetensors"]
            recipe = {
                "bits": bits,
                "group_size": 128,
                "sym": True,
                "calibration": {"mix": "default", "samples": 128, "hash": "ab12cd34ef56"},
            }
        for f in files:
            (folder / f).write_bytes(_bytes(f"{name}/{f}", size))
        cmd = command or f"qwen3-quant quantize {hub_id or model} --format {fmt} -o {folder}"
        record_variant(
            folder,
            name=name,
            fmt=fmt,
            source=source,
            variant=variant,
            files=files,
            recipe=recipe,
            shared_files=shared,
            command=cmd,
        )
        state = validation.get(variant, "pass")
        runtime = {"gguf": "llama.cpp", "onnx": "onnxruntime"}.get(fmt, "gptqmodel")
        if state in ("pass", "fail"):
            record_validation(
                folder,
                variant,
                validation_record(bits, gate_metrics(bits, state == "pass"), variant, runtime),
            )
        elif state == "error":
            record_validation(
                folder,
                variant,
                {
                    "passed": False,
                    "gates": default_gates(bits).to_dict(),
                    "error": "llama.cpp could not load the file (bad magic)",
                },
            )
    return folder
