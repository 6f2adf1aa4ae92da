"""Calibration mixes: named, deterministic samples of text and chat for GPTQ, AWQ and GGUF imatrix.

A mix is a TOML file (``calib/<name>.toml`` in the project, or any path) listing sources with
shares, a sample count, a sequence length and a seed. Sources:

- ``text``: UTF-8 files (globs; ``shared:`` prefix = the shared data folder, ``builtin:pydoc`` =
  Python's own topic help); random passages cut at line starts.
- ``jsonl-chat``: JSON-lines rows rendered as conversations through the model's own chat
  template, with thinking on (reasoning in ``<think>``) or off: question/answer rows
  (``fields = {user = "{question}", assistant = "{answer}"}``) or rows holding a ``messages``
  list (roles, content, optional ``reasoning_content``).
- ``jsonl``: JSON-lines rows whose fields are joined (e.g. code prompts and solutions), or one
  text field (``fields = {text = "text"}``).
- ``hf-dataset``: a Hub dataset through the ``datasets`` library (online, ``pip install
  'qwen3-quant[datasets]'``); its rows are read like ``jsonl-chat`` rows (``thinking`` on/off,
  ``messages`` or question/answer fields) or, with ``fields = {text = "..."}``, as plain text.

Sampling depends only on the mix, the files and the tokenizer: the same inputs give the same
tokens, and ``CalibSet.sha256`` identifies them. Sources that cannot be read here (no shared
data, offline) are skipped with a warning and their share goes to the others; with nothing left,
the built-in text is used. What happened is recorded in ``CalibSet.summary()``.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import json
import logging
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import Qwen3QuantError, UsageError
from .textdata import builtin_text, read_text, shared_data_dir, strip_gutenberg

log = logging.getLogger(__name__)

MIX_DIRS = [
    Path(__file__).resolve().parent.parent / "calib",
    Path(__file__).resolve().parent / "assets" / "calib",
]
KINDS = ("text", "jsonl-chat", "jsonl", "hf-dataset")
_CHARS_PER_TOKEN = 6  # generous: a passage is cut long, then truncated to seq_len tokens


@dataclass(frozen=True)
class Source:
    name: str
    kind: str
    share: float
    path: str = ""
    gutenberg: bool = False
    thinking: bool | None = None
    fields: dict[str, str] = field(default_factory=dict)
    system: str = ""
    dataset: str = ""
    config: str = ""
    split: str = "train"


@dataclass(frozen=True)
class CalibMix:
    name: str
    description: str
    samples: int
    seq_len: int
    seed: int
    sources: tuple[Source, ...]
    origin: str = ""

    def build(
        self, tokenizer_dir: str | Path, *, samples: int | None = None, seq_len: int | None = None
    ) -> CalibSet:
        """Render and tokenise the mix with the tokenizer (and chat template) in ``tokenizer_dir``."""
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(tokenizer_dir)
        tok.model_max_length = 1 << 30  # samples are truncated to seq_len here, not by the tokenizer
        return build_calibration(self, tok, samples=samples or self.samples, seq_len=seq_len or self.seq_len)


@dataclass
class CalibSet:
    mix: str
    seq_len: int
    samples: list[list[int]]
    texts: list[str]
    source_of: list[str]
    skipped: list[str] = field(default_factory=list)
    fallback: bool = False

    @property
    def n_tokens(self) -> int:
        return sum(len(s) for s in self.samples)

    @property
    def sha256(self) -> str:
        h = hashlib.sha256()
        for s in self.samples:
            h.update(np.asarray(s, dtype=np.int64).tobytes())
            h.update(b"\x00")
        return h.hexdigest()

    def summary(self) -> dict[str, Any]:
        per: dict[str, dict[str, int]] = {}
        for src, s in zip(self.source_of, self.samples, strict=True):
            d = per.setdefault(src, {"samples": 0, "tokens": 0})
            d["samples"] += 1
            d["tokens"] += len(s)
        return {
            "mix": self.mix,
            "samples": len(self.samples),
            "seq_len": self.seq_len,
            "tokens": self.n_tokens,
            "sha256": self.sha256,
            "sources": per,
            "skipped_sources": self.skipped,
            "fallback": self.fallback,
        }


def list_mixes() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for d in MIX_DIRS:
        for f in sorted(d.glob("*.toml")):
            out.setdefault(f.stem, f)
    return out


def load_mix(name_or_path: str | Path | None = None) -> CalibMix:
    spec = str(name_or_path or "default")
    p = Path(spec)
    if not (p.suffix == ".toml" and p.is_file()):
        mixes = list_mixes()
        if spec not in mixes:
            raise UsageError(
                f"unknown calibration mix '{spec}'",
                hint="use one of " + ", ".join(mixes) + " or a path to a .toml mix",
            )
        p = mixes[spec]
    try:
        data = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{p}: not valid TOML ({exc})", hint="fix the mix file") from exc
    return parse_mix(data, origin=str(p))


def parse_mix(data: dict[str, Any], origin: str = "") -> CalibMix:
    where = origin or "calibration mix"
    try:
        sources = []
        for s in data["source"]:
            if s["kind"] not in KINDS:
                raise UsageError(
                    f"{where}: source {s.get('name')} has unknown kind {s['kind']}",
                    hint="kinds: " + ", ".join(KINDS),
                )
            sources.append(
                Source(
                    name=s["name"],
                    kind=s["kind"],
                    share=float(s["share"]),
                    path=s.get("path", ""),
                    gutenberg=bool(s.get("gutenberg", False)),
                    thinking=s.get("thinking"),
                    fields=dict(s.get("fields", {})),
                    system=s.get("system", ""),
                    dataset=s.get("dataset", ""),
                    config=s.get("config", ""),
                    split=s.get("split", "train"),
                )
            )
        mix = CalibMix(
            name=data["name"],
            description=data.get("description", ""),
            samples=int(data["samples"]),
            seq_len=int(data["seq_len"]),
            seed=int(data.get("seed", 0)),
            sources=tuple(sources),
            origin=origin,
        )
    except KeyError as exc:
        raise UsageError(
            f"{where} lacks {exc}", hint="see calib/default.toml for the fields a mix needs"
        ) from exc
    if mix.samples < 1 or mix.seq_len < 8 or not sources or any(s.share <= 0 for s in sources):
        raise UsageError(
            f"{where}: samples, seq_len and every share must be positive", hint="fix the mix file"
        )
    return mix


# --- sources -------------------------------------------------------------------------------------


def _resolve_files(pattern: str) -> list[Path]:
    if pattern.startswith("shared:"):
        root = shared_data_dir(required=False)
        if root is None:
            return []
        pattern = str(root / pattern.removeprefix("shared:"))
    return [Path(f) for f in sorted(glob.glob(str(Path(pattern).expanduser())))]


def _read_rows(files: list[Path]) -> list[dict]:
    rows = []
    for f in files:
        opener = gzip.open if f.suffix == ".gz" else open
        with opener(f, "rt", encoding="utf-8") as fh:
            rows += [json.loads(line) for line in fh if line.strip()]
    return rows


def _split_reasoning(answer: str) -> tuple[str, str]:
    """GSM8K style: worked reasoning, then ``#### final``."""
    if "####" in answer:
        reasoning, final = answer.rsplit("####", 1)
        return re.sub(r"<<[^>]*>>", "", reasoning).strip(), final.strip()
    return "", answer.strip()


class _Loaded:
    """A source's material, ready to sample from."""

    def __init__(self, src: Source):
        self.src = src
        self.text = ""
        self.rows: list[dict] = []
        if src.kind == "text":
            if src.path == "builtin:pydoc":
                self.text = builtin_text()
            else:
                files = _resolve_files(src.path)
                docs = [read_text(f) for f in files]
                self.text = "\n\n".join(strip_gutenberg(d) if src.gutenberg else d for d in docs)
        elif src.kind in ("jsonl", "jsonl-chat"):
            self.rows = _read_rows(_resolve_files(src.path))
        elif src.kind == "hf-dataset":
            from .errors import require

            datasets = require("datasets", "datasets")
            ds = datasets.load_dataset(src.dataset, src.config or None, split=src.split)
            self.rows = [dict(r) for r in ds]

    @property
    def empty(self) -> bool:
        return not (self.text.strip() or self.rows)

    def sample(self, rng: np.random.Generator, tok, seq_len: int) -> str:
        if self.src.kind == "text":
            span = seq_len * _CHARS_PER_TOKEN
            start = int(rng.integers(0, max(1, len(self.text) - span)))
            nl = self.text.find("\n", start)
            start = nl + 1 if 0 <= nl < start + span // 2 else start
            return self.text[start : start + span]
        row = self.rows[int(rng.integers(0, len(self.rows)))]
        f = self.src.fields
        if "text" in f:  # rows of plain text (a jsonl file or a Hub text dataset)
            return str(row.get(f["text"], ""))
        if self.src.kind == "jsonl":
            keys = f.get("join", "").split(",") if f.get("join") else list(row)
            return "".join(str(row.get(k.strip(), "")) for k in keys)
        if isinstance(row.get(f.get("messages", "messages")), list):
            return self._render_messages(row[f.get("messages", "messages")], tok)
        user = f.get("user", "{question}").format(**row)
        answer = f.get("assistant", "{answer}").format(**row)
        reasoning, final = _split_reasoning(answer)
        if not reasoning:
            content = answer
        elif self.src.thinking:
            content = final
        else:  # no thinking: the worked answer stays, outside <think>
            content = f"{reasoning}\n\nThe answer is {final}."
        msg: dict[str, str] = {"role": "assistant", "content": content}
        if self.src.thinking and reasoning:
            msg["reasoning_content"] = reasoning
        messages = ([{"role": "system", "content": self.src.system}] if self.src.system else []) + [
            {"role": "user", "content": user},
            msg,
        ]
        if getattr(tok, "chat_template", None):
            return tok.apply_chat_template(messages, tokenize=False, enable_thinking=bool(self.src.thinking))
        return f"{user}\n{content}\n"

    def _render_messages(self, raw: list, tok) -> str:
        """Rows that already are conversations (``{"role", "content"[, "reasoning_content"]}``);
        with thinking off, reasoning is dropped and the template renders the non-thinking form."""
        messages = [{"role": "system", "content": self.src.system}] if self.src.system else []
        for m in raw:
            msg = {"role": str(m.get("role", "user")), "content": str(m.get("content") or "")}
            if self.src.thinking and m.get("reasoning_content"):
                msg["reasoning_content"] = str(m["reasoning_content"])
            messages.append(msg)
        if getattr(tok, "chat_template", None):
            return tok.apply_chat_template(messages, tokenize=False, enable_thinking=bool(self.src.thinking))
        return "\n".join(m["content"] for m in messages) + "\n"


def build_calibration(mix: CalibMix, tok, *, samples: int, seq_len: int) -> CalibSet:
    loaded, skipped, why_skipped = [], [], []
    for s in mix.sources:
        try:
            ld = _Loaded(s)
        except (Qwen3QuantError, OSError, ValueError, KeyError, ImportError) as exc:
            # a missing file, no `datasets` library, offline for a Hub dataset: recorded as skipped
            why_skipped.append(exc.one_line() if isinstance(exc, Qwen3QuantError) else str(exc))
            skipped.append(s.name)
            continue
        if ld.empty:
            why_skipped.append(f"nothing found at {s.path or s.dataset}")
            skipped.append(s.name)
        else:
            loaded.append(ld)
    fallback = not loaded
    reasons = [f"{name}: {why}" for name, why in zip(skipped, why_skipped, strict=True)]
    if fallback:  # e.g. a machine without the shared data: one line, not one per source
        log.warning(
            "no calibration source of mix %s is readable here (%s); using the built-in text",
            mix.name,
            "; ".join(reasons),
        )
        loaded = [_Loaded(Source("builtin-pydoc", "text", 1.0, "builtin:pydoc"))]
    else:
        for name, why in zip(skipped, why_skipped, strict=True):
            log.warning("calibration source %s skipped: %s", name, why)
    counts = _allocate(samples, [ld.src.share for ld in loaded])
    rng = np.random.default_rng(mix.seed)
    out_ids, texts, src_of = [], [], []
    for ld, n in zip(loaded, counts, strict=True):
        for _ in range(n):
            text = ld.sample(rng, tok, seq_len)
            ids = tok(text, add_special_tokens=False)["input_ids"][:seq_len]
            if len(ids) < 2:
                continue
            out_ids.append(list(ids))
            texts.append(text)
            src_of.append(ld.src.name)
    return CalibSet(mix.name, seq_len, out_ids, texts, src_of, skipped, fallback)


def _allocate(total: int, shares: list[float]) -> list[int]:
    """Largest-remainder split of ``total`` samples by ``shares``."""
    s = np.asarray(shares, dtype=float)
    exact = total * s / s.sum()
    base = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - base), kind="stable")[: total - base.sum()]:
        base[i] += 1
    return base.tolist()
