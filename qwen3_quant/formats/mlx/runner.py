"""The MLX runner: an MLX artifact loaded by mlx-lm, run by MLX (on the CPU on Linux, on the GPU of
an Apple silicon Mac).

``logits`` runs one window from an empty cache; ``generate`` prefills the prompt into mlx-lm's KV
cache (``make_prompt_cache``) and decodes one token a step from it. MLX evaluates lazily: taking a
token's id (``.item()``) forces the computation, so the timings cover the work.

On the CPU the runner computes in float32: MLX's CPU kernels for quantised matrix products are
about 10x slower with bfloat16 scales than with float32 ones (measured with mlx 0.32), and every
bfloat16 value (scales, biases, norms) is exact in float32, so the quantised weights are the
artifact's own. On a GPU (Metal, CUDA) the model runs in the dtype it was saved in.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ...errors import RuntimeLoadError, UsageError, require
from ...eval.runner import GenerationTiming, Runner


class MLXRunner(Runner):
    runtime = "mlx"
    compute_dtype = "stored"

    def __init__(self, path: Path, *, ctx: int, threads: int | None = None, device=None):
        super().__init__(path, ctx=ctx, threads=threads, device=device)
        self.mx = require("mlx.core", "mlx")
        utils = require("mlx_lm.utils", "mlx")
        self.cache_mod = require("mlx_lm.models.cache", "mlx")
        folder = self.path if self.path.is_dir() else self.path.parent
        self.folder = folder
        if not (folder / "config.json").is_file() or not any(folder.glob("*.safetensors")):
            raise RuntimeLoadError(
                f"{folder} is not an MLX model folder (config.json and safetensors)",
                hint="pass a folder written by qwen3-quant quantize --format mlx",
            )
        try:
            self.model, _ = utils.load_model(folder, lazy=False)
        except (ValueError, TypeError, KeyError, FileNotFoundError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise RuntimeLoadError(
                f"mlx-lm could not load {folder.name}: {first}",
                hint="rebuild it with qwen3-quant quantize --format mlx --overwrite",
            ) from exc
        self.config = json.loads((folder / "config.json").read_text())
        # MLX computes on its own default device (Metal on a Mac, CUDA with mlx[cuda], else the CPU),
        # whatever --device says
        on_cpu = self.mx.default_device() == self.mx.cpu
        if on_cpu:
            self._compute_in_float32()
        self.backend = f"MLX {'CPU (float32)' if on_cpu else str(self.mx.default_device())}"

    def _compute_in_float32(self) -> None:
        from mlx.utils import tree_map

        mx = self.mx
        self.model.update(
            tree_map(
                lambda v: v.astype(mx.float32) if mx.issubdtype(v.dtype, mx.floating) else v,
                self.model.parameters(),
            )
        )
        mx.eval(self.model.parameters())
        self.compute_dtype = "float32"

    @property
    def max_context(self) -> int:
        return int(self.config.get("max_position_embeddings") or 2048)

    def _check(self, total: int) -> None:
        if total > self.max_context:
            raise UsageError(
                f"{total} tokens exceed the MLX model's context of {self.max_context}",
                hint="evaluate with a smaller --ctx",
            )

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        mx = self.mx
        self._check(len(ids))
        out = self.model(mx.array([list(ids)]))
        return np.array(out[0].astype(mx.float32), copy=False)

    def generate(self, prompt_ids: Sequence[int], new_tokens: int) -> GenerationTiming:
        mx = self.mx
        self._check(len(prompt_ids) + new_tokens)
        cache = self.cache_mod.make_prompt_cache(self.model)
        produced: list[int] = []
        t0 = time.perf_counter()
        out = self.model(mx.array([list(prompt_ids)]), cache=cache)
        nxt = int(mx.argmax(out[0, -1]).item())
        t1 = time.perf_counter()
        produced.append(nxt)
        for _ in range(new_tokens - 1):
            out = self.model(mx.array([[nxt]]), cache=cache)
            nxt = int(mx.argmax(out[0, -1]).item())
            produced.append(nxt)
        t2 = time.perf_counter()
        return GenerationTiming(len(prompt_ids), len(produced), t1 - t0, t2 - t1, tuple(produced))

    def tokenize(self, text: str) -> list[int]:
        return self.tokenize_with_json(self.folder, text)

    def close(self) -> None:
        self.model = None
        self.mx.clear_cache()
