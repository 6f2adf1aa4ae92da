"""The ``generate`` source kind: the unquantised model writes its own calibration conversations.

Prompts come from the source's rows (the first user turn of each conversation, or its ``user``
field); the model answers with Qwen3's recommended sampling (thinking: temperature 0.6, top-p 0.95;
non-thinking: 0.7 and 0.8; top-k 20). Row ``i`` is sampled with its own seed, so the rows depend
only on the model, the prompts, the settings and the seed. Rows are appended to a cache file as
they are written (keyed by the model's fingerprint and those settings): a killed or time-bounded
run resumes where it stopped, and a second build reads them back without running the model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CalibrationError
from .material import read_rows, resolve_files
from .mix import Source

log = logging.getLogger(__name__)

SAMPLING = {
    True: {"temperature": 0.6, "top_p": 0.95, "top_k": 20},
    False: {"temperature": 0.7, "top_p": 0.8, "top_k": 20},
}
GENERATOR_VERSION = 2  # raise when the way rows are written changes: older cached rows are not reused
_SETTINGS = ("path", "thinking", "fields", "system", "rows", "max_new_tokens")


def prompts_of(src: Source, seed: int) -> list[str]:
    files = resolve_files(src.path, src.name)
    rows = read_rows(files, src.name)
    out = []
    for r in rows:
        if "user" in src.fields:
            out.append(src.fields["user"].format(**r))
        else:
            msgs = r.get(src.fields.get("messages", "messages")) or []
            first = next(
                (m.get("content") for m in msgs if isinstance(m, dict) and m.get("role") == "user"), None
            )
            if first:
                out.append(str(first))
    if not out:
        raise CalibrationError(
            f"calibration source {src.name}: no prompts in {src.path}",
            hint='give rows with a user message, or fields = {user = "{question}"}',
        )
    idx = np.random.default_rng(seed).permutation(len(out))
    return [out[int(i)] for i in idx[: src.rows]]


def cache_key(src: Source, model_fingerprint: str, seed: int) -> str:
    files = resolve_files(src.path, src.name)
    settings = {k: v for k, v in asdict(src).items() if k in _SETTINGS}
    blob = {
        "model": model_fingerprint,
        "prompts": [hashlib.sha256(f.read_bytes()).hexdigest() for f in files],
        "settings": settings,
        "sampling": SAMPLING[bool(src.thinking)],
        "seed": seed,
        "generator": GENERATOR_VERSION,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:20]


def split_answer(text: str) -> tuple[str, str]:
    """Generated text -> (reasoning, answer): what is inside ``<think>...</think>`` and after it."""
    if "</think>" in text:
        head, tail = text.split("</think>", 1)
        return head.split("<think>", 1)[-1].strip(), tail.strip()
    return "", text.replace("<think>", "").strip()


def generated_rows(
    src: Source, model_dir: Path, *, cache_dir: Path | None = None, seed: int = 0
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from ..checkpoint import fingerprint
    from ..io import cache_root

    prompts = prompts_of(src, seed)
    key = cache_key(src, fingerprint(model_dir), seed)
    cache = (cache_dir or cache_root()) / "calib-generated" / f"{src.name}-{key}.jsonl"
    rows = _read_cache(cache)[: len(prompts)]
    seconds = 0.0
    if len(rows) < len(prompts):
        seconds = _write_rows(src, model_dir, prompts, rows, cache, seed)
    note = {"generated": len(rows), "of": len(prompts), "seconds": round(seconds, 1), "cache": key}
    if len(rows) < len(prompts):
        log.warning(
            "calibration source %s: the model wrote %d of %d conversations in its %.0f s; the rest is "
            "written by the next run (resumed from %s)",
            src.name, len(rows), len(prompts), src.max_seconds, cache,
        )  # fmt: skip
    if not rows:
        raise CalibrationError(
            f"calibration source {src.name}: the model wrote nothing within max_seconds = {src.max_seconds}",
            hint="raise max_seconds in the mix, or run on a faster device",
        )
    return rows, note


def _read_cache(cache: Path) -> list[dict[str, Any]]:
    """The rows of a cache file, up to a line a killed run left half-written (then cut off)."""
    if not cache.is_file():
        return []
    rows, good = [], 0
    with open(cache, encoding="utf-8") as fh:
        for line in fh:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
            good += len(line.encode("utf-8"))
    if good < cache.stat().st_size:
        with open(cache, "r+b") as fh:
            fh.truncate(good)
    return rows


def _write_rows(
    src: Source, model_dir: Path, prompts: list[str], rows: list[dict], cache: Path, seed: int
) -> float:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="auto").to(device).eval()
    max_len = int(getattr(model.config, "max_position_embeddings", 0) or 0)
    end_ids = [i for i in {tok.convert_tokens_to_ids("<|im_end|>"), tok.eos_token_id} if isinstance(i, int)]
    cache.parent.mkdir(parents=True, exist_ok=True)
    with open(cache, "a", encoding="utf-8") as fh:
        for i in range(len(rows), len(prompts)):
            if time.perf_counter() - t0 > src.max_seconds:
                break
            user = {"role": "user", "content": prompts[i]}
            messages = ([{"role": "system", "content": src.system}] if src.system else []) + [user]
            text = tok.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True, enable_thinking=bool(src.thinking)
            )
            ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"].to(device)
            if max_len and ids.shape[1] > max_len - 16:  # a prompt as long as the context: its end
                ids = ids[:, -(max_len - 16) :]
            room = max_len - ids.shape[1] if max_len else src.max_new_tokens  # stay in the context
            torch.manual_seed(seed * 1_000_003 + i)
            with torch.inference_mode():
                out = model.generate(
                    ids,
                    do_sample=True,
                    max_new_tokens=min(src.max_new_tokens, room),
                    eos_token_id=end_ids,
                    pad_token_id=end_ids[0],
                    **SAMPLING[bool(src.thinking)],
                )
            reasoning, answer = split_answer(tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True))
            reply: dict[str, Any] = {"role": "assistant", "content": answer}
            if reasoning:
                reply["reasoning_content"] = reasoning
            row = {"messages": [user, reply]}  # the source's system prompt is added when rendered
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            fh.flush()
            rows.append(row)
    return time.perf_counter() - t0
