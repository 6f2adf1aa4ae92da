"""Evaluate a model or artifact in its runtime: perplexity, KLD against the unquantised model,
prefill/decode throughput, peak memory, and the gates.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..artifact import Manifest, host_description
from ..checkpoint import fingerprint
from ..errors import UsageError
from ..formats.base import EvalTarget
from ..io import cache_root
from ..textdata import load_eval_text
from . import metrics
from .gates import Gates, check_gates
from .metric_table import GATED
from .options import DEFAULT_REFERENCE_DTYPE, REFERENCE_DTYPES, EvalOptions
from .protocol import PROTOCOL_VERSION, effective_ctx, make_windows, text_sha256
from .reference import Scores, load_reference, reference_path, save_reference, score_windows
from .runner import REFERENCE, detect_runtime, open_runner
from .speed import PeakRSS, measure_speed

__all__ = ["EvalOptions", "EvalResult", "EvalTarget", "eval_targets", "evaluate", "get_reference"]
log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    artifact: str
    runtime: str
    base: str | None
    text: str
    text_sha256: str
    protocol: int
    ctx: int
    tokens: int
    tokens_scored: int
    windows: int
    perplexity: float
    base_perplexity: float | None = None
    ppl_increase_pct: float | None = None
    kld_mean: float | None = None
    kld_median: float | None = None
    kld_p99: float | None = None
    top1_agreement: float | None = None
    prefill_tps: float | None = None
    decode_tps: float | None = None
    prompt_tokens: int | None = None
    decode_tokens: int | None = None
    peak_rss_bytes: int | None = None
    load_seconds: float | None = None
    eval_seconds: float | None = None
    hardware: str = field(default_factory=host_description)
    device: dict[str, Any] | None = None  # where it was validated (qwen3_quant.device facts)
    backend: str | None = None  # what computed: "MarlinQuantLinear (float16 on cuda:0)", "CPU"
    variant: str | None = None
    gates: list[dict] = field(default_factory=list)
    passed: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def eval_targets(
    path: str | Path, variant: str | None = None, runtime: str | None = None
) -> list[EvalTarget]:
    """What to evaluate at ``path``: an artifact folder's format says (one target per GGUF type);
    a plain model folder or file is served by the runtime that recognises it."""
    from ..formats import FORMATS, get_format

    p = Path(path)
    folder = p.parent if p.is_file() else p
    manifest = Manifest.read_or_none(folder)
    if manifest and manifest.format in FORMATS:
        targets = get_format(manifest.format).eval_targets(p, manifest, variant)
        return [EvalTarget(t.path, runtime or t.runtime, t.variant, t.manifest_dir) for t in targets]
    if manifest:  # a folder another tool (or an unregistered format) recorded: served as it looks
        names = [n for n, v in manifest.variants.items() if p.is_dir() or p.name in v.files]
        return [EvalTarget(p, runtime or detect_runtime(p), variant or (names[0] if names else None), folder)]
    return [EvalTarget(p, runtime or detect_runtime(p), variant, None)]


def base_of(target: EvalTarget) -> Path | None:
    """The unquantised model an artifact was made from, as its manifest records it."""
    if target.manifest_dir is None:
        return target.path if target.runtime == REFERENCE.name else None
    m = Manifest.read_or_none(target.manifest_dir)
    p = Path(m.source["path"]) if m and m.source.get("path") else None
    return p if p and p.is_dir() else None


def _tokenize(tok_dir: Path, text: str, max_tokens: int | None) -> np.ndarray:
    from transformers import AutoTokenizer

    from ..checkpoint import check_tokenizer

    check_tokenizer(tok_dir)  # a broken file is one line naming it, not a tokenizers traceback
    tok = AutoTokenizer.from_pretrained(tok_dir)
    tok.model_max_length = 1 << 30  # windows are cut here, not by the tokenizer

    def encode(t: str) -> np.ndarray:
        return np.asarray(tok(t, add_special_tokens=False)["input_ids"], dtype=np.int64)

    if max_tokens:
        # encoding a generous prefix gives the same first max_tokens tokens as the whole text
        # when the prefix yields clearly more than max_tokens
        head = encode(text[: max_tokens * 16])
        ids = head if len(head) > max_tokens + 64 else encode(text)
        return ids[:max_tokens]
    return encode(text)


def _model_max_context(folder: Path) -> int:
    import json

    cfg = json.loads((folder / "config.json").read_text())
    return int((cfg.get("text_config") or cfg).get("max_position_embeddings") or 2048)


def get_reference(
    base: Path,
    tokens: np.ndarray,
    text_sha: str,
    ctx: int,
    k: int,
    ref_dir: Path | None,
    threads: int | None = None,
    progress=None,
    *,
    dtype: str = DEFAULT_REFERENCE_DTYPE,
    whole_model: bool = False,
    device=None,
) -> Scores:
    """Load the base model's stored top-k log-probabilities, computing and storing them once
    (on ``device``, the CPU by default).

    Computed a decoder layer at a time (memory: one layer plus the windows' hidden states) with
    the layers in ``dtype``; ``whole_model`` loads the whole model in fp32 instead (the old way,
    kept to check the layer-at-a-time numbers against)."""
    path = reference_path(
        ref_dir or cache_root() / "reference",
        fingerprint(base),
        text_sha,
        ctx,
        k,
        len(tokens),
        dtype="float32" if whole_model else dtype,
    )
    ref = load_reference(path)
    if ref is None:
        windows = make_windows(len(tokens), ctx)
        stage = "scoring the unquantised model"
        if whole_model:
            with open_runner(base, ctx=ctx, threads=threads, runtime=REFERENCE.name, device=device) as runner:
                ref = score_windows(runner, tokens, windows, keep_topk=k, progress=progress, stage=stage)
        else:
            from .layerwise_reference import layerwise_reference

            _set_threads(threads)
            ref = layerwise_reference(
                base,
                tokens,
                windows,
                k=k,
                dtype=dtype,
                device=device.torch if device is not None else "cpu",
                progress=progress,
            )
        save_reference(path, ref)
        log.info("stored reference log-probabilities in %s", path)
    return ref


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def _artifact_phase(
    target: EvalTarget,
    tokens: np.ndarray,
    ctx: int,
    ref: Scores | None,
    opts: EvalOptions,
    device=None,
    progress=None,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    windows = make_windows(len(tokens), ctx)
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        runner = open_runner(
            target.path, ctx=ctx, threads=opts.threads, runtime=target.runtime, device=device
        )
        out["load_seconds"] = time.perf_counter() - t0
        out["backend"] = runner.backend or None
        try:
            scores = score_windows(
                runner, tokens, windows, ref=ref, progress=progress, stage=f"scoring in {target.runtime}"
            )
            out["nll"] = scores.nll
            out["kld"], out["top1_same"] = scores.kld, scores.top1_same
            if opts.speed:
                n_prompt = max(1, min(opts.prompt_tokens, ctx - opts.decode_tokens, len(tokens)))
                sp = measure_speed(runner, tokens[:n_prompt].tolist(), opts.decode_tokens, opts.repeats)
                out["speed"] = sp
        finally:
            runner.close()
        out["eval_seconds"] = time.perf_counter() - t0
    out["peak_rss_bytes"] = rss.peak
    return out


def _isolated_phase(*args) -> dict[str, Any]:
    from ..io import peak_rss_bytes

    out = _artifact_phase(*args)
    out["peak_rss_bytes"] = max(out["peak_rss_bytes"], peak_rss_bytes())
    return out


def evaluate(
    target: EvalTarget | str | Path,
    *,
    base: str | Path | None = None,
    options: EvalOptions | None = None,
    gates: Gates | None = None,
    progress=None,
) -> EvalResult:
    """Evaluate one target. ``base`` defaults to the source recorded in the artifact's manifest.
    The reference and the artifact run on ``options.device`` (checked before anything loads)."""
    from ..device import resolve_device

    opts = options or EvalOptions()
    if opts.reference_dtype not in REFERENCE_DTYPES:
        raise UsageError(
            f"unknown reference dtype '{opts.reference_dtype}'", hint="use " + " or ".join(REFERENCE_DTYPES)
        )
    device = resolve_device(opts.device)
    if not isinstance(target, EvalTarget):
        targets = eval_targets(target, runtime=opts.runtime)
        if len(targets) != 1:
            raise UsageError(
                f"{target} holds {len(targets)} variants", hint="evaluate them with eval_targets()"
            )
        target = targets[0]
    base_path = Path(base) if base else base_of(target)
    text_name, text = load_eval_text(opts.text)
    sha = text_sha256(text)
    tok_dir = base_path or (target.path if target.path.is_dir() else None)
    if tok_dir is None:
        raise UsageError(
            f"no tokenizer for {target.path.name}", hint="pass --base with the unquantised model folder"
        )
    tokens = _tokenize(tok_dir, text, opts.token_budget)
    model_max = _model_max_context(tok_dir) if (tok_dir / "config.json").is_file() else opts.ctx or 2048
    ctx = effective_ctx(opts.ctx, model_max)
    windows = make_windows(len(tokens), ctx)
    if not windows:
        raise UsageError(
            f"the text '{text_name}' gives fewer than 2 tokens", hint="evaluate on a longer text"
        )
    ref = (
        get_reference(
            base_path,
            tokens,
            sha,
            ctx,
            opts.topk,
            opts.reference_dir,
            opts.threads,
            progress,
            dtype=opts.reference_dtype,
            device=device,
        )
        if base_path
        else None
    )
    args = (target, tokens, ctx, ref, opts, device)
    if opts.isolate:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
            art = pool.submit(_isolated_phase, *args).result()
    else:
        art = _artifact_phase(*args, progress=progress)
    res = EvalResult(
        artifact=str(target.path),
        runtime=target.runtime,
        base=str(base_path) if base_path else None,
        text=text_name,
        text_sha256=sha,
        protocol=PROTOCOL_VERSION,
        ctx=ctx,
        tokens=int(len(tokens)),
        tokens_scored=int(len(art["nll"])),
        windows=len(windows),
        perplexity=metrics.perplexity(art["nll"]),
        peak_rss_bytes=int(art["peak_rss_bytes"]),
        load_seconds=art["load_seconds"],
        eval_seconds=art["eval_seconds"],
        variant=target.variant,
        device=device.facts,
        backend=art.get("backend"),
    )
    if device.is_cuda:
        res.hardware = f"{device.describe()}; host {host_description()}"
    if ref is not None:
        res.base_perplexity = ref.perplexity
        res.ppl_increase_pct = metrics.ppl_delta_pct(res.perplexity, ref.perplexity)
        s = metrics.summarise_kld(art["kld"], art["top1_same"])
        res.kld_mean, res.kld_median, res.kld_p99, res.top1_agreement = (
            s.mean,
            s.median,
            s.p99,
            s.top1_agreement,
        )
    if "speed" in art:
        sp = art["speed"]
        res.prefill_tps, res.decode_tps = sp.prefill_tps, sp.decode_tps
        res.prompt_tokens, res.decode_tokens = sp.prompt_tokens, sp.decode_tokens
    if gates is not None:
        results = check_gates(gates, **{m.key: getattr(res, m.key) for m in GATED})
        res.gates = [asdict(g) for g in results]
        res.passed = all(g.passed for g in results)
    return res


def perplexity_only(model_dir: str | Path, text: str, *, ctx: int) -> Scores:
    """Perplexity of an unquantised folder on a text, on the fixed protocol (used by scripts),
    computed a decoder layer at a time."""
    from .layerwise_reference import layerwise_reference

    tokens = _tokenize(Path(model_dir), text, None)
    return layerwise_reference(Path(model_dir), tokens, make_windows(len(tokens), ctx), k=0, dtype="float32")
