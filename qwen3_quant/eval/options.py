"""Evaluation options and their defaults, written once. Pure Python: the CLI reads the defaults
for its --help without loading the evaluation stack."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

DEFAULT_TEXT = "builtin:pydoc"
DEFAULT_TOPK = 32
# tokens validation scores when none are given: enough for a stable KLD and perplexity, and a CPU
# validation of Qwen3-8B in well under an hour (docs/memory.md has the measured basis)
DEFAULT_MAX_TOKENS = 16384
# the compute type of the reference's decoder layers (hidden states between layers stay fp32)
REFERENCE_DTYPES = ("float32", "bfloat16")
DEFAULT_REFERENCE_DTYPE = "float32"


@dataclass
class EvalOptions:
    text: str | None = None  # builtin:pydoc (default), wikitext2, or a file path
    ctx: int | None = None  # default protocol.DEFAULT_CTX, capped by the model
    max_tokens: int | None = None  # default DEFAULT_MAX_TOKENS
    topk: int = DEFAULT_TOPK
    speed: bool = True
    prompt_tokens: int = 512
    decode_tokens: int = 64
    repeats: int = 3
    threads: int | None = None
    reference_dir: Path | None = None  # where reference log-probabilities are stored (default: the cache)
    isolate: bool = False  # score the artifact in a fresh process (clean peak-memory figure)
    runtime: str | None = None
    device: str | None = None  # auto (default), cpu, cuda, cuda:N: where the runtimes compute
    reference_dtype: str = DEFAULT_REFERENCE_DTYPE

    @classmethod
    def from_mapping(cls, values: dict[str, Any], **extra: Any) -> EvalOptions:
        """Options from a build file's ``[eval]`` table (unknown keys are refused by the caller)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in {**values, **extra}.items() if k in known and v is not None})

    def describe(self) -> str:
        from .protocol import DEFAULT_CTX

        return (
            f"text {self.text or DEFAULT_TEXT}, ctx {self.ctx or DEFAULT_CTX}, max tokens {self.token_budget}"
        )

    @property
    def token_budget(self) -> int:
        """How many tokens of the text are scored at most."""
        return self.max_tokens or DEFAULT_MAX_TOKENS


DEFAULTS = EvalOptions()
