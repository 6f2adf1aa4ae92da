"""The reference runner: transformers, fp32 compute, on the CPU or a CUDA device."""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import RuntimeLoadError
from .runner import GenerationTiming, Runner

log = logging.getLogger(__name__)

LOGIT_BLOCK = 256  # positions whose logits are made at once by logits_blocks


def check_loading_info(path: Path, info: dict) -> None:
    """Fail on any missing or unexpected weight: a model with silently re-initialised weights
    still gives finite logits, so this is the only reliable signal at load time."""
    missing = sorted(info.get("missing_keys") or [])
    unexpected = sorted(info.get("unexpected_keys") or [])
    mismatched = list(info.get("mismatched_keys") or [])
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (first {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (first {unexpected[0]})")
        if mismatched:
            parts.append(f"{len(mismatched)} with mismatched shapes")
        raise RuntimeLoadError(
            f"{path.name}: weights did not load cleanly: " + "; ".join(parts),
            hint="the runtime would run this model with randomly initialised weights",
        )


class TransformersRunner(Runner):
    runtime = "transformers"
    compute_dtype = "float32"
    cuda_compute_dtype = "float32"  # the reference stays fp32 on a GPU too

    def __init__(self, path: Path, *, ctx: int, threads: int | None = None, device=None):
        super().__init__(path, ctx=ctx, threads=threads, device=device)
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.model = self._load()
        self.model.eval()
        self.backend = self.backend or f"{self.dtype} on {self.device.torch}"

    @property
    def dtype(self) -> str:
        return self.cuda_compute_dtype if self.device.is_cuda else self.compute_dtype

    def load_kwargs(self) -> dict:
        """``from_pretrained`` arguments that place the model: nothing on the CPU (its default),
        the whole model on the one CUDA device otherwise."""
        kw = {"dtype": getattr(self.torch, self.dtype)}
        if self.device.is_cuda:
            kw["device_map"] = {"": self.device.torch}
        return kw

    def _ids(self, ids: Sequence[int]):
        t = self.torch
        return t.tensor([list(ids)], dtype=t.long, device=self.device.torch)

    def _load(self):
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        try:
            model, info = AutoModelForCausalLM.from_pretrained(
                self.path, output_loading_info=True, **self.load_kwargs()
            )
        except (OSError, ValueError, RuntimeError) as exc:
            raise RuntimeLoadError(
                f"transformers could not load {self.path}: {exc}".splitlines()[0],
                hint="check the folder with `qwen3-quant check`",
            ) from exc
        check_loading_info(self.path, info)
        # transformers >= 5.2x names the KV cache argument `cache`; older releases `past_key_values`
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        return model

    @property
    def max_context(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048))

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        t = self.torch
        with t.inference_mode():
            out = self.model(input_ids=self._ids(ids), use_cache=False)
        return out.logits[0].float().cpu().numpy()

    def logits_blocks(self, ids: Sequence[int]):
        """The decoder's hidden states for the window, then the output head ``LOGIT_BLOCK`` positions
        at a time: one window x vocabulary array (1.2 GB in fp32 at 2,048 tokens of Qwen3) is never
        made. Same numbers as :meth:`logits` (the head is a plain linear layer on the final norm's output)."""
        t = self.torch
        decoder, head = self.model.get_decoder(), self.model.get_output_embeddings()
        with t.inference_mode():
            hidden = decoder(input_ids=self._ids(ids), use_cache=False).last_hidden_state[0]
        for start in range(0, hidden.shape[0], LOGIT_BLOCK):
            with t.inference_mode():
                block = head(hidden[start : start + LOGIT_BLOCK]).float().cpu().numpy()
            yield start, block

    def generate(self, prompt_ids: Sequence[int], new_tokens: int) -> GenerationTiming:
        t = self.torch
        produced: list[int] = []
        with t.inference_mode():
            t0 = time.perf_counter()
            out = self.model(input_ids=self._ids(prompt_ids), use_cache=True)
            nxt = int(out.logits[0, -1].argmax())
            t1 = time.perf_counter()
            produced.append(nxt)
            past = _returned_cache(out)
            for _ in range(new_tokens - 1):
                out = self.model(input_ids=self._ids([nxt]), use_cache=True, **{self._cache_kw: past})
                past = _returned_cache(out)
                nxt = int(out.logits[0, -1].argmax())
                produced.append(nxt)
            t2 = time.perf_counter()
        return GenerationTiming(len(prompt_ids), len(produced), t1 - t0, t2 - t1, tuple(produced))

    def close(self) -> None:
        self.model = None


def _returned_cache(out):
    return getattr(out, "cache", None) or getattr(out, "past_key_values", None)
