"""One GPTQ / AWQ artifact: calibration, the GPTQModel worker process, the standard checkpoint,
the manifest.

The artifact is written under a temporary name and renamed when complete. An artifact already
there with the same recipe, source, calibration tokens and intact files is kept; anything else
already there is replaced only with ``overwrite``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...artifact import VariantKey, decide_variant, record_variant
from ...calib import CalibSet, load_mix
from ...device import visible_devices
from ...errors import Qwen3QuantError, UsageError
from ...io import atomic_output, ensure_free_space, make_readable, remove_path
from ..base import Progress, no_progress
from .config import GPTQModelConfig
from .export import finalize_checkpoint
from .moe import RoutingStats, StarvedExpertsError

if TYPE_CHECKING:
    from ...checkpoint import CheckpointInfo
    from ...sources import ModelSource

log = logging.getLogger(__name__)
QUANTIZER = "gptqmodel"
OFFLOAD_DIR = "offload"  # in the job's work folder


def offload_disk_bytes(fmt, arch, variant: str) -> int:
    """Disk a quantisation needs at its peak, while GPTQModel saves: the offload folder (every
    quantised module and the unquantised embeddings, norms and head: about the artifact) and the
    artifact being written."""
    return int((1 + fmt.scratch_artifact_copies) * fmt.estimate(arch, variant).artifact_bytes)


class QuantizerFailedError(Qwen3QuantError):
    """GPTQModel stopped with an error."""


def calibration(cfg: GPTQModelConfig, model_dir: Path) -> CalibSet | None:
    if cfg.method == "rtn":
        return None
    return load_mix(cfg.calib).build(model_dir, samples=cfg.calib_samples)


def variant_key(
    fmt: str, cfg: GPTQModelConfig, source_fp: str, calib_sha: str | None, is_moe: bool
) -> VariantKey:
    """What the checkpoint depends on: the method's settings and the calibration tokens (by hash)."""
    settings = cfg.key()
    if not is_moe:
        settings.pop("starved_experts")
        settings.pop("starved_threshold")
    return VariantKey(fmt, cfg.variant, source_fp, {**settings, "calibration_sha256": calib_sha})


def _worker_env(device=None, base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    root = str(Path(__file__).resolve().parents[3])  # the folder holding the qwen3_quant package
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("HF_HUB_OFFLINE", "1")  # the worker reads local folders only
    env["CUDA_VISIBLE_DEVICES"] = visible_devices(device, env.get("CUDA_VISIBLE_DEVICES"))
    return env


def run_worker(job: dict[str, Any], work: Path, progress: Progress, device=None) -> dict[str, Any]:
    """Run the GPTQModel worker on ``job``; returns its result. Its output goes to ``work/gptqmodel.log``."""
    work = work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    job = {**job, "events": str(work / "events.jsonl"), "result": str(work / "result.json")}
    for f in ("events.jsonl", "result.json"):
        (work / f).unlink(missing_ok=True)
    (work / "job.json").write_text(json.dumps(job))
    log_path = work / "gptqmodel.log"
    cmd = [sys.executable, "-m", "qwen3_quant.formats.gptqmodel.worker", str(work / "job.json")]
    with open(log_path, "w") as logf:
        # GPTQModel writes a logs/ folder into its working directory: keep it in `work`
        env = _worker_env(device)
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=work)
        try:
            _follow(proc, work / "events.jsonl", progress)
        except BaseException:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
    res_file = work / "result.json"
    result = json.loads(res_file.read_text()) if res_file.is_file() else {}
    if proc.returncode != 0 or result.get("status") == "error":
        err = result.get("error") or f"the GPTQModel worker exited with status {proc.returncode}"
        raise QuantizerFailedError(f"GPTQModel failed: {err}", hint=f"its full output is in {log_path}")
    return result


def _follow(proc: subprocess.Popen, events: Path, progress: Progress) -> None:
    pos = 0
    while True:
        running = proc.poll() is None
        if events.is_file():
            with open(events) as fh:
                fh.seek(pos)
                for line in fh:
                    if line.endswith("\n"):
                        e = json.loads(line)
                        progress(e["stage"], e["done"], e["total"])
                        pos += len(line.encode())
        if not running:
            return
        time.sleep(0.25)


def quantize_artifact(
    source: ModelSource,
    info: CheckpointInfo,
    cfg: GPTQModelConfig,
    dest: Path,
    *,
    fmt: str,
    overwrite: bool = False,
    progress: Progress = no_progress,
    provenance=None,
    device=None,
) -> list[str]:
    arch = info.arch
    if cfg.starved_experts_given and not arch.is_moe:
        raise UsageError(
            f"--starved-experts / --starved-threshold apply to Qwen3-MoE models; {source.name} is dense",
            hint="leave them out",
        )
    dest = Path(dest)
    progress("building calibration set", 0, 1)
    cs = calibration(cfg, source.path)
    progress("building calibration set", 1, 1)
    src = source.manifest_record()  # fingerprinted once: the key and the manifest agree
    key = variant_key(fmt, cfg, src["fingerprint"], cs.sha256 if cs else None, arch.is_moe)
    variant = cfg.variant
    if not decide_variant(dest, key, overwrite=overwrite):
        return [variant]
    from .. import get_format

    job = {
        "method": cfg.method,
        "bits": cfg.bits,
        "group_size": cfg.group_size,
        "sym": cfg.sym,
        "act_order": cfg.act_order,
        "damp_percent": cfg.damp_percent,
        "source": str(Path(source.path).resolve()),
        "samples": cs.samples if cs else [],
        "moe": {"policy": cfg.starved_experts, "threshold": cfg.starved_threshold} if arch.is_moe else None,
        # the worker sees only the chosen GPU (visible_devices), as its device 0
        "device": "cuda:0" if device is not None and device.is_cuda else "cpu",
    }
    work = dest.parent / f".{dest.name}.work"
    # GPTQModel reads the model a layer at a time and writes each quantised module here until the
    # save: beside the output, on its file system, never the system's temporary folder
    job["offload_dir"] = str((work / OFFLOAD_DIR).resolve())
    ensure_free_space(
        dest.parent,
        offload_disk_bytes(get_format(fmt), arch, variant),
        what=f"GPTQModel's offload folder and {dest.name}",
    )
    try:
        _write(
            source,
            arch,
            cfg,
            cs,
            key,
            job,
            dest,
            work,
            fmt=fmt,
            src=src,
            progress=progress,
            provenance=provenance,
            device=device,
        )
    except QuantizerFailedError:
        remove_path(work / OFFLOAD_DIR)
        raise  # its log stays in `work`
    except BaseException:
        remove_path(work)
        raise
    remove_path(work)
    return [variant]


def _write(
    source, arch, cfg, cs, key, job, dest, work, *, fmt, src, progress, provenance, device=None
) -> None:
    from .. import get_format

    t0 = time.perf_counter()
    variant = cfg.variant
    with atomic_output(dest, overwrite=True) as tmp:  # decide_variant said what may be replaced
        tmp.mkdir(parents=True)
        result = run_worker({**job, "out": str(tmp.resolve())}, work, progress, device)
        moe, moe_details = _apply_policy(cfg, result)
        progress("writing checkpoint", 0, 1)
        export = finalize_checkpoint(
            tmp, source.path, arch, method=cfg.method, bits=cfg.bits, group=cfg.group_size
        )
        qlog = result.get("quant_log", {})
        recipe = {
            "method": cfg.method,
            "quantizer": QUANTIZER,
            "bits": cfg.bits,
            "group_size": cfg.group_size,
            "sym": cfg.sym,
            "act_order": cfg.act_order,
            "damp_percent": cfg.damp_percent if cfg.method == "gptq" else None,
            "checkpoint_format": "gemm" if cfg.method == "awq" else "gptq",
            "dtype": export["dtype"],
            "calibration": cs.summary() if cs else None,
            "calibration_mix": load_mix(cfg.calib).origin if cs else None,
            "moe": moe,
            "not_quantized": "embeddings, lm_head, norms (incl. q_norm/k_norm), MoE routers",
        }
        details = {
            "routing": moe_details,
            "quantizer_modules": qlog.get("modules"),
            "rtn_fallback_modules": qlog.get("fallback", []),
            "tokens_seen_by_quantizer": {
                k: v for k, v in qlog.get("samples", {}).items() if ".experts." in k
            },
            "export": export,
            "seconds": round(time.perf_counter() - t0, 1),
            "worker_peak_rss_bytes": result.get("peak_rss_bytes"),
            "worker_peak_vram_bytes": result.get("peak_vram_bytes"),
            "device": str(device) if device is not None else "cpu",
            "seconds_routing": result.get("seconds_routing"),
            "seconds_quantize": result.get("seconds_quantize"),
        }
        make_readable(tmp)
        files = sorted(
            str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file() and not p.name.startswith(".")
        )
        record_variant(
            tmp,
            name=get_format(fmt).artifact_name(source.name, cfg),
            fmt=fmt,
            source=src,
            variant=variant,
            files=files,
            recipe=recipe,
            key=key,
            provenance=provenance,
            details=details,
        )


def _apply_policy(
    cfg: GPTQModelConfig, result: dict[str, Any]
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Raise for ``fail`` with starved experts; otherwise describe what the policy did: a summary
    for the recipe and the per-expert statistics for the manifest's details."""
    routing = result.get("routing")
    if routing is None:
        return None, None
    stats = RoutingStats.from_summary(routing)
    starved = stats.starved()
    fell_back = result.get("quant_log", {}).get("fallback", [])
    if result.get("status") == "starved":
        raise StarvedExpertsError(
            f"{len(starved)} expert(s) got fewer than {stats.threshold:g} calibration tokens "
            f"(--starved-threshold {cfg.starved_threshold}): {stats.describe_starved()}; "
            f"per expert min {routing['min']}, median {routing['median']:g}, max {routing['max']}",
            hint="add calibration samples (--calib-samples), or use --starved-experts calibrate-all or rtn",
        )
    if result.get("status") == "fallback":
        raise StarvedExpertsError(
            f"GPTQModel fell back to round-to-nearest for {len(fell_back)} module(s) during quantisation, "
            f"first {fell_back[0]}",
            hint="add calibration samples, or use --starved-experts calibrate-all or rtn",
        )
    if starved:
        log.warning(
            "%d starved expert(s) (%s): %s", len(starved), cfg.starved_experts, stats.describe_starved()
        )
    experts = {tuple(n.split(".")[2:6:3]) for n in fell_back}
    did = {
        "fail": "no expert below the threshold; every expert calibrated on its routed tokens",
        "calibrate-all": "every expert calibrated on every calibration token (GPTQModel ExpertsRoutingBypass)",
        "rtn": f"{len(fell_back)} projection(s) of {len(experts)} expert(s) quantised by round-to-nearest",
    }[cfg.starved_experts]
    summary = {
        "policy": cfg.starved_experts,
        "threshold": cfg.starved_threshold,
        "threshold_tokens": round(stats.threshold, 2),
        "routed_tokens_per_expert": {
            "min": routing["min"],
            "median": routing["median"],
            "max": routing["max"],
        },
        "experts_below_threshold": len(starved),
        "starved_experts": [f"layer {la} expert {e}: {n}" for la, e, n in starved[:16]]
        + ([f"... {len(starved) - 16} more"] if len(starved) > 16 else []),
        "rtn_experts": len(experts),
        "what_happened": did,
    }
    return summary, routing
