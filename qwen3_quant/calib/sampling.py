"""Turning a mix into token samples: each source's share of the samples, each sample a random
passage (text) or randomly drawn rows packed up to the sequence length (rows)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .material import Material
from .mix import CalibMix
from .render import render_row

_CHARS_PER_TOKEN = 6  # generous: a passage is cut long, then truncated to seq_len tokens
_MAX_ROWS_PER_SAMPLE = 64


@dataclass
class CalibSet:
    mix: str
    seq_len: int
    samples: list[list[int]]
    texts: list[str]
    source_of: list[str]
    licenses: dict[str, str] = field(default_factory=dict)  # source -> licence, where the mix says
    notes: dict[str, dict[str, Any]] = field(default_factory=dict)  # source -> what reading it did

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
        per: dict[str, dict[str, Any]] = {}
        for src, s in zip(self.source_of, self.samples, strict=True):
            d = per.setdefault(src, {"samples": 0, "tokens": 0})
            d["samples"] += 1
            d["tokens"] += len(s)
        for src, note in self.notes.items():
            per.setdefault(src, {"samples": 0, "tokens": 0}).update(note)
        out: dict[str, Any] = {
            "mix": self.mix,
            "samples": len(self.samples),
            "seq_len": self.seq_len,
            "tokens": self.n_tokens,
            "sha256": self.sha256,
            "sources": per,
        }
        if self.licenses:
            out["licenses"] = dict(self.licenses)
        return out


def _text_sample(m: Material, rng: np.random.Generator, seq_len: int) -> str:
    span = seq_len * _CHARS_PER_TOKEN
    start = int(rng.integers(0, max(1, len(m.text) - span)))
    nl = m.text.find("\n", start)
    start = nl + 1 if 0 <= nl < start + span // 2 else start
    return m.text[start : start + span]


def _packed_rows(m: Material, rng: np.random.Generator, tok, seq_len: int) -> str:
    """Rows drawn at random and joined until the sample holds ``seq_len`` tokens."""
    sep = "\n\n" if m.src.kind == "jsonl" or "text" in m.src.fields else ""
    pieces: list[str] = []
    n = 0
    for _ in range(_MAX_ROWS_PER_SAMPLE):
        piece = render_row(m.src, m.rows[int(rng.integers(0, len(m.rows)))], tok)
        if piece.strip():
            pieces.append(piece)
            n += len(tok(piece, add_special_tokens=False)["input_ids"])
        if n >= seq_len:
            break
    return sep.join(pieces)


def build_calibration(
    mix: CalibMix,
    tok,
    *,
    samples: int,
    seq_len: int,
    model_dir: Path | None = None,
    cache_dir: Path | None = None,
) -> CalibSet:
    """Every source must be readable: one that is not raises ``CalibrationError`` naming it."""
    loaded = [Material(s, model_dir, cache_dir, seed=mix.seed) for s in mix.sources]
    counts = allocate(samples, [m.src.share for m in loaded])
    rng = np.random.default_rng(mix.seed)
    out_ids, texts, src_of = [], [], []
    for m, n in zip(loaded, counts, strict=True):
        for _ in range(n):
            text = (
                _text_sample(m, rng, seq_len) if m.src.kind == "text" else _packed_rows(m, rng, tok, seq_len)
            )
            ids = tok(text, add_special_tokens=False)["input_ids"][:seq_len]
            if len(ids) < 2:
                continue
            out_ids.append(list(ids))
            texts.append(text)
            src_of.append(m.src.name)
    licenses = {m.src.name: m.src.license for m in loaded if m.src.license}
    notes = {m.src.name: m.note for m in loaded if m.note}
    return CalibSet(mix.name, seq_len, out_ids, texts, src_of, licenses, notes)


def allocate(total: int, shares: list[float]) -> list[int]:
    """Largest-remainder split of ``total`` samples by ``shares``."""
    s = np.asarray(shares, dtype=float)
    exact = total * s / s.sum()
    base = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - base), kind="stable")[: total - base.sum()]:
        base[i] += 1
    return base.tolist()
