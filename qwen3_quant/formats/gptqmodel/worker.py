"""The GPTQModel run, in a process of its own: ``python -m qwen3_quant.formats.gptqmodel.worker JOB``.

A separate process keeps GPTQModel's global patches (defuser, transformers hooks), its thread
pools and its terminal output away from the caller, and returns all its memory when it ends.
The job file says what to do; progress goes to ``job["events"]`` (JSON lines) and the outcome to
``job["result"]``; the library's own output goes to stdout / stderr (the caller's log file).

Steps: (MoE) count calibration tokens per expert with the unquantised model, a decoder layer at a
time, and apply the starved-expert policy; quantise with GPTQModel; save; summarise GPTQModel's
per-module log.

Host memory: with ``job["offload_dir"]`` (the quantizer always sets it) GPTQModel loads a
meta-device shell and materialises one decoder layer at a time from the safetensors shards
(``LazyTurtle``); each quantised module, and the embeddings and norms once the calibration inputs
are captured, are written to that folder, and the save reads them back from it.

``job["device"]`` is ``cpu`` or ``cuda:0``: the caller makes the chosen GPU the only one this
process sees (``CUDA_VISIBLE_DEVICES``). On CUDA, GPTQModel materialises each decoder layer from
the shards onto the GPU for the calibration forwards and the solver (``QuantizeConfig.device``;
read from GPTQModel's source, ``shell_module_materialize``); the host keeps the shell.
"""

from __future__ import annotations

import csv
import gc
import json
import logging
import sys
import time
import traceback
from pathlib import Path
from typing import Any

log = logging.getLogger("qwen3_quant.gptqmodel.worker")


class Events:
    def __init__(self, path: str):
        self.fh = open(path, "a", buffering=1)  # noqa: SIM115 - open for the life of the process

    def __call__(self, stage: str, done: float, total: float, **extra: Any) -> None:
        self.fh.write(json.dumps({"stage": stage, "done": done, "total": total, **extra}) + "\n")


def routing_pass(job: dict, events: Events) -> dict[str, Any]:
    """Calibration tokens routed to each expert, counted a decoder layer at a time on the job's
    device (one layer in memory, not a second copy of the model beside GPTQModel's)."""
    from ...checkpoint import inspect_checkpoint
    from .config import threshold_tokens
    from .moe import count_routed_tokens_layerwise

    samples = job["samples"]
    total = sum(len(s) for s in samples)
    spec = job["moe"]["threshold"]
    device = job.get("device", "cpu")
    stats = count_routed_tokens_layerwise(
        inspect_checkpoint(Path(job["source"])),
        samples,
        threshold=threshold_tokens(spec, total),
        threshold_spec=spec,
        device=device,
        progress=lambda d, t: events("counting routed tokens", d, t),
    )
    gc.collect()
    if device != "cpu":
        import torch

        torch.cuda.empty_cache()
    return stats.summary()


def quantize_config(job: dict):
    from gptqmodel.quantization.config import (
        AWQConfig,
        ExpertsRoutingBypass,
        Fallback,
        FallbackStrategy,
        GPTQConfig,
        MoEConfig,
        RTNConfig,
    )

    common = {
        "bits": job["bits"],
        "group_size": job["group_size"],
        "sym": job["sym"],
        **offload_options(job),
    }
    if (
        job.get("device", "cpu") != "cpu"
    ):  # where layers are calibrated and solved; the model stays on the host
        common["device"] = job["device"]
    if job["method"] == "rtn":
        return RTNConfig(**common)
    moe = job.get("moe")
    spec = moe["threshold"] if moe else "0.5%"
    # GPTQModel's own low-coverage fallback (round-to-nearest below `threshold` routed tokens) has
    # the same semantics as our starved-expert threshold, so `rtn` is exactly this fallback
    fallback = Fallback(strategy=FallbackStrategy.RTN, threshold=spec if spec.endswith("%") else float(spec))
    extra: dict[str, Any] = {"fallback": fallback}
    if moe and moe["policy"] == "calibrate-all":
        # every expert sees every calibration token; the layer output still uses the real routing
        extra["moe"] = MoEConfig(routing=ExpertsRoutingBypass())
    if job["method"] == "awq":
        return AWQConfig(**common, **extra)
    return GPTQConfig(**common, desc_act=job["act_order"], damp_percent=job["damp_percent"], **extra)


def offload_options(job: dict) -> dict[str, Any]:
    """GPTQModel's checkpoint-backed loading: with ``offload_dir`` the model is a meta-device shell
    whose decoder layers are read from the safetensors shards as they are reached, and each
    quantised module is written to ``offload_dir`` (not GPTQModel's default under the system
    temporary folder) until the save; without it, the whole bf16 model is loaded first."""
    if job.get("offload_dir"):
        return {"offload_to_disk": True, "offload_to_disk_path": job["offload_dir"]}
    return {"offload_to_disk": False}


def load_kwargs(job: dict) -> dict[str, Any]:
    """``GPTQModel.load`` arguments: on the CPU the model and the work stay there; on CUDA the
    quantisation device is in the QuantizeConfig and GPTQModel refuses a ``device`` beside it."""
    return {"device": "cpu"} if job.get("device", "cpu") == "cpu" else {}


def quantize_backend(method: str, device: str, backend_enum) -> Any:
    """The kernel backend GPTQModel's quantize() packs for: AWQ on the CPU needs its torch kernel
    (the default AWQ GEMM kernel needs CUDA); everything else, and AWQ on CUDA, GPTQModel's own
    choice (AWQ GEMM, GPTQ Marlin / ExLlama / Triton as the GPU allows)."""
    if method == "awq" and device == "cpu":
        return backend_enum.AWQ_TORCH
    return None


def record_awq_fallbacks(found: list[str]) -> None:
    """AWQ's quant log does not mark the scaling groups it quantised by round-to-nearest for want
    of routed tokens; note them as GPTQModel decides them."""
    try:
        from gptqmodel.looper.awq_processor import AWQProcessor
    except ImportError:
        return
    original = getattr(AWQProcessor, "_should_fallback_group", None)
    if original is None:
        log.warning("cannot record AWQ fallbacks with this GPTQModel version")
        return

    def wrapped(self, layer_names, input_feat):
        decided = original(self, layer_names, input_feat)
        if decided:
            layer = getattr(getattr(self, "_scale_context", None), "layer_index", "?")
            found.extend(f"model.layers.{layer}.{n}" for n in layer_names)
        return decided

    AWQProcessor._should_fallback_group = wrapped


def read_quant_log(path: Path) -> dict[str, Any]:
    """GPTQModel's ``quant_log.csv``: one row per quantised module with the tokens it saw; the
    loss column says when a module fell back to round-to-nearest."""
    if not path.is_file():
        return {"modules": 0, "fallback": [], "samples": {}}
    rows = list(csv.DictReader(path.open()))
    fallback = sorted(
        f"model.layers.{r['layer']}.{r['module']}"
        for r in rows
        if "fallback" in str(r.get("loss", "")).lower()
    )
    samples = {f"model.layers.{r['layer']}.{r['module']}": int(float(r["samples"] or 0)) for r in rows}
    return {"modules": len(rows), "fallback": fallback, "samples": samples}


def run(job: dict) -> dict[str, Any]:
    from ...layerwise import release_freed_memory
    from .libenv import import_gptqmodel, prepare_env

    prepare_env()
    events = Events(job["events"])
    result: dict[str, Any] = {"status": "ok"}
    t0 = time.perf_counter()
    if job.get("moe") and job["method"] != "rtn":
        events("counting routed tokens", 0, 1)
        routing = routing_pass(job, events)
        result["routing"] = routing
        if routing["starved"] and job["moe"]["policy"] == "fail":
            result["status"] = "starved"
            return result
    result["seconds_routing"] = time.perf_counter() - t0

    gptqmodel = import_gptqmodel()
    qc = quantize_config(job)
    events("loading model", 0, 1)
    t1 = time.perf_counter()
    model = gptqmodel.GPTQModel.load(job["source"], qc, **load_kwargs(job))
    n_layers = int(model.model.config.num_hidden_layers)
    done = {"n": 0}

    def layer_complete(layer_idx: int, submodule_finalized: bool = False, **_):
        release_freed_memory()  # else glibc keeps the freed layers' blocks: RSS grows with depth
        done["n"] = max(done["n"], int(layer_idx) + 1)
        events("quantising layers", done["n"], n_layers)

    model.layer_callback = layer_complete
    awq_fallbacks: list[str] = []
    if job["method"] == "awq":
        record_awq_fallbacks(awq_fallbacks)
    events("quantising layers", 0, n_layers)
    kwargs: dict[str, Any] = {"batch_size": 1}
    backend = quantize_backend(job["method"], job.get("device", "cpu"), gptqmodel.BACKEND)
    if backend is not None:
        kwargs["backend"] = backend
    if job.get("device", "cpu") != "cpu":
        import torch

        torch.cuda.reset_peak_memory_stats()
    if job["method"] == "rtn":
        model.quantize(None, **kwargs)
    else:
        calib = [{"input_ids": s, "attention_mask": [1] * len(s)} for s in job["samples"]]
        model.quantize(calib, **kwargs)
    result["seconds_quantize"] = time.perf_counter() - t1
    events("saving", 0, 1)
    out = Path(job["out"])
    model.save(str(out))
    if job.get("offload_dir"):  # the quantised modules are in the checkpoint now
        import shutil

        shutil.rmtree(job["offload_dir"], ignore_errors=True)
    result["quant_log"] = read_quant_log(out / "quant_log.csv")
    if job["method"] == "awq":
        # AWQ's per-module sample counts are not routed-token counts (gate/up use the shared input)
        result["quant_log"]["fallback"] = sorted(set(result["quant_log"]["fallback"]) | set(awq_fallbacks))
        result["quant_log"]["samples"] = {}
    if job.get("moe") and job["moe"]["policy"] == "fail" and result["quant_log"]["fallback"]:
        result["status"] = "fallback"
    result["seconds_total"] = time.perf_counter() - t0
    from ...io import peak_rss_bytes

    result["peak_rss_bytes"] = peak_rss_bytes()
    if job.get("device", "cpu") != "cpu":
        import torch

        result["peak_vram_bytes"] = int(torch.cuda.max_memory_allocated())
        result["device"] = job["device"]
    return result


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Run one GPTQModel job (written by the quantizer).")
    ap.add_argument("job", type=Path)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    job = json.loads(args.job.read_text())
    try:
        result = run(job)
        code = 0
    except BaseException as exc:  # reported to the caller through the result file
        traceback.print_exc()
        result = {"status": "error", "error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
        code = 1
    Path(job["result"]).write_text(json.dumps(result))
    return code


if __name__ == "__main__":
    sys.exit(main())
