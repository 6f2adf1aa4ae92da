"""The fixed perplexity protocol.

1. The text is read as UTF-8 with universal newlines (CRLF becomes LF).
2. The model's tokenizer encodes the whole text once, with no special tokens added.
3. The token stream is cut into non-overlapping windows of ``ctx`` tokens (the last one may be
   shorter); ``ctx`` defaults to 2048 and is capped by the model's context.
4. Each window is scored on its own, from an empty cache: every token after the window's first is
   scored given all earlier tokens of the window. The number of scored tokens and windows is
   reported. A window shorter than 2 tokens is dropped.
5. ``max_tokens`` keeps only the first ``max_tokens`` tokens of the stream (default
   ``options.DEFAULT_MAX_TOKENS``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

PROTOCOL_VERSION = 1
DEFAULT_CTX = 2048


@dataclass(frozen=True)
class Window:
    start: int
    end: int

    @property
    def scored(self) -> int:
        return self.end - self.start - 1


def make_windows(n_tokens: int, ctx: int) -> list[Window]:
    if ctx < 2:
        raise ValueError("ctx must be at least 2")
    out = []
    for s in range(0, n_tokens, ctx):
        e = min(s + ctx, n_tokens)
        if e - s >= 2:
            out.append(Window(s, e))
    return out


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def effective_ctx(requested: int | None, model_max: int) -> int:
    return min(requested or DEFAULT_CTX, model_max)
