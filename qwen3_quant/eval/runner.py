"""The runner interface every runtime implements, and finding the runner of a runtime: the
reference runtime (transformers, for unquantised checkpoints) and the runtimes the formats declare."""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from ..errors import MissingFileError, UsageError
from ..formats.base import Runtime

if TYPE_CHECKING:
    from ..device import Device

REFERENCE = Runtime(
    "transformers", "qwen3_quant.eval.transformers_runner:TransformersRunner", "transformers (fp32)"
)


@dataclass(frozen=True)
class GenerationTiming:
    prompt_tokens: int
    new_tokens: int
    prefill_seconds: float
    decode_seconds: float  # for new_tokens - 1 decode steps after the token the prefill produced
    tokens: tuple[int, ...]

    @property
    def prefill_tps(self) -> float:
        return self.prompt_tokens / self.prefill_seconds if self.prefill_seconds > 0 else float("nan")

    @property
    def decode_tps(self) -> float:
        steps = self.new_tokens - 1
        return steps / self.decode_seconds if steps > 0 and self.decode_seconds > 0 else float("nan")


class Runner(ABC):
    """Loads one artifact in its runtime. ``logits`` scores one window from an empty cache;
    ``generate`` decodes greedily with the runtime's KV cache and times prefill and decode.

    ``device`` is where to compute (the CPU when ``None``). A runner that cannot use the device it
    was given (a llama.cpp built without GPU support, onnxruntime without its CUDA provider) runs on
    the CPU and says so in :attr:`backend`, which names what actually computed."""

    runtime: ClassVar[str]

    def __init__(self, path: Path, *, ctx: int, threads: int | None = None, device: Device | None = None):
        from ..device import CPU

        self.path = Path(path)
        self.ctx = ctx
        self.threads = threads
        self.device = device or CPU
        self.backend = ""  # e.g. "MarlinQuantLinear on cuda:0", "CUDAExecutionProvider"

    @property
    @abstractmethod
    def max_context(self) -> int: ...

    @abstractmethod
    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """float32 ``[len(ids), n_vocab_rows]``."""

    def logits_blocks(self, ids: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        """The window's logits a block of positions at a time: ``(first position, [n, vocab])``,
        each block valid until the next is asked for. A runtime that can hand out logits in
        blocks overrides this so that no window x vocabulary array is held; by default one block."""
        yield 0, self.logits(ids)

    @abstractmethod
    def generate(self, prompt_ids: Sequence[int], new_tokens: int) -> GenerationTiming: ...

    def tokenize(self, text: str) -> list[int]:
        raise NotImplementedError(f"{self.runtime} runner has no tokenizer of its own")

    @staticmethod
    def tokenize_with_json(folder: Path, text: str) -> list[int]:
        """Token ids of ``text`` from the folder's tokenizer.json (for runtimes with no tokenizer)."""
        tok = folder / "tokenizer.json"
        if not tok.is_file():
            raise NotImplementedError(f"{folder.name} has no tokenizer.json")
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(tok)).encode(text, add_special_tokens=False).ids

    def close(self) -> None:
        return None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def runtimes() -> dict[str, Runtime]:
    """Every runtime by name: the reference and those the registered formats declare."""
    from ..formats import all_formats

    out = {REFERENCE.name: REFERENCE}
    for f in all_formats():
        out.update({r.name: r for r in f.runtimes})
    return out


def detect_runtime(path: Path) -> str:
    """Which runtime serves an artifact without a manifest: the first format that recognises it,
    else the reference runtime for a model folder."""
    from ..formats import all_formats

    p = Path(path)
    if not p.exists():
        raise MissingFileError(
            f"artifact not found: {p}", hint="pass a model folder, a .gguf file or an artifact folder"
        )
    for f in all_formats():
        runtime = f.recognises(p)
        if runtime:
            return runtime
    if p.is_file():
        raise UsageError(
            f"cannot tell which runtime serves {p.name}", hint="pass a .gguf file or a model folder"
        )
    if (p / "config.json").is_file():
        return REFERENCE.name
    raise UsageError(
        f"{p} is neither a model folder nor an artifact",
        hint="pass a folder with config.json, an ONNX folder or a .gguf file",
    )


def runner_class(runtime: str) -> type[Runner]:
    known = runtimes()
    if runtime not in known:
        raise UsageError(f"unknown runtime '{runtime}'", hint="one of: " + ", ".join(known))
    module, attr = known[runtime].runner.split(":")
    return getattr(importlib.import_module(module), attr)


def open_runner(
    path: Path,
    *,
    ctx: int,
    threads: int | None = None,
    runtime: str | None = None,
    device: Device | None = None,
) -> Runner:
    runtime = runtime or detect_runtime(path)
    return runner_class(runtime)(Path(path), ctx=ctx, threads=threads, device=device)
