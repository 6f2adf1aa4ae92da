"""The llama.cpp runner of the evaluation core, on llama-cpp-python's low-level API.

``logits`` decodes one window from an empty KV cache asking llama.cpp for every position's
full-vocabulary logits; ``generate`` decodes greedily with the KV cache, asking only for the last
position's logits (as a chat would), and times prefill and decode apart.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ...errors import RuntimeLoadError, UsageError
from ...eval.runner import GenerationTiming, Runner
from .gguf_io import read_header, split_set
from .llama import captured_log, last_error, lib

KV_TYPES = {"f32": 0, "f16": 1}
ALL_LAYERS = 999  # n_gpu_layers that offloads every layer (llama.cpp caps it at the model's count)


def offload_plan(device, supports_offload: bool) -> tuple[int, str]:
    """``n_gpu_layers`` and the backend note for ``device``: every layer on the GPU when this
    llama-cpp-python was built with GPU support, else none (the note says why)."""
    if not device.is_cuda:
        return 0, "CPU"
    if not supports_offload:
        return 0, f"CPU (this llama-cpp-python has no GPU offload; {device.torch} unused)"
    return ALL_LAYERS, f"all layers offloaded to {device.torch}"


def check_gguf_files(path: Path) -> None:
    """Fail with a clear message on a missing split or a file that is not a complete GGUF, before
    handing it to llama.cpp (whose loader reports such files less clearly)."""
    for f in split_set(path):
        if not f.is_file():
            raise RuntimeLoadError(f"{f.name} is missing", hint="every split of the model must be present")
        try:
            end = read_header(f).data_end
        except (ValueError, KeyError, OSError, UnicodeDecodeError) as exc:
            raise RuntimeLoadError(
                f"{f.name} is not a readable GGUF file ({str(exc).splitlines()[0]})",
                hint="the file is damaged or truncated: quantise it again",
            ) from exc
        if f.stat().st_size < end:
            raise RuntimeLoadError(
                f"{f.name} is truncated ({f.stat().st_size:,} bytes, its tensors need {end:,})",
                hint="quantise it again",
            )


def cpu_has_amx() -> bool:
    try:
        with open("/proc/cpuinfo") as fh:
            return any(line.startswith("flags") and " amx_int8" in line for line in fh)
    except OSError:
        return False


class LlamaCppRunner(Runner):
    runtime = "llama.cpp"

    def __init__(
        self,
        path: Path,
        *,
        ctx: int,
        threads: int | None = None,
        kv_type: str = "f16",
        flash_attn: bool | None = None,
        device=None,
    ):
        """``kv_type="f32"`` is the parity mode: an F32 KV cache and, unless ``flash_attn`` says
        otherwise, no flash attention (llama.cpp's CPU flash attention rounds through F16; with it
        the micro model's logits differ from transformers' by ~1.6e-3, without by ~1.5e-5). By
        default llama.cpp decides (flash attention on where it helps), as its own tools do."""
        super().__init__(path, ctx=ctx, threads=threads, device=device)
        if kv_type not in KV_TYPES:
            raise UsageError(f"unknown KV cache type {kv_type}", hint="use f16 or f32")
        self.L = L = lib()
        self._model = self._ctx = self._batch = None
        check_gguf_files(self.path)
        mparams = L.llama_model_default_params()
        n_gpu, self.backend = offload_plan(self.device, bool(L.llama_supports_gpu_offload()))
        mparams.n_gpu_layers = n_gpu
        if n_gpu:
            mparams.main_gpu = self.device.index or 0
            mparams.split_mode = 0  # LLAMA_SPLIT_MODE_NONE: the one GPU asked for
        if cpu_has_amx():
            # llama.cpp's AMX weight buffers crash (SIGSEGV in ggml_backend_amx_mul_mat) on every
            # quantised GGUF on an AMX machine here: plain CPU buffers instead
            mparams.use_extra_bufts = False
        with captured_log() as lines:
            model = L.llama_model_load_from_file(str(self.path).encode(), mparams)
        if not model:
            raise RuntimeLoadError(
                f"llama.cpp could not load {self.path.name}: {last_error(lines)}",
                hint="the file is damaged or not a model llama.cpp supports",
            )
        self._model = model
        n_threads = threads or os.cpu_count() or 1
        cparams = L.llama_context_default_params()
        cparams.n_ctx = ctx
        cparams.n_batch = ctx
        cparams.n_ubatch = self.ubatch = min(ctx, 512)
        cparams.n_seq_max = 1
        cparams.n_threads = cparams.n_threads_batch = n_threads
        cparams.type_k = cparams.type_v = KV_TYPES[kv_type]
        if flash_attn is None and kv_type == "f32":
            flash_attn = False
        if flash_attn is not None:
            cparams.flash_attn_type = 1 if flash_attn else 0
        cparams.no_perf = True
        with captured_log() as lines:
            self._ctx = L.llama_init_from_model(model, cparams)
        if not self._ctx:
            self.close()
            raise RuntimeLoadError(
                f"llama.cpp could not create a context for {self.path.name}: {last_error(lines)}",
                hint="lower --ctx",
            )
        self._vocab = L.llama_model_get_vocab(model)
        self.n_vocab = int(L.llama_vocab_n_tokens(self._vocab))
        self._batch = L.llama_batch_init(ctx, 0, 1)

    @property
    def max_context(self) -> int:
        return int(self.L.llama_model_n_ctx_train(self._model))

    def meta(self, key: str) -> str | None:
        """A GGUF key/value as llama.cpp read it (``None`` when absent)."""
        import ctypes

        buf = ctypes.create_string_buffer(4096)
        n = self.L.llama_model_meta_val_str(self._model, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", errors="replace") if n >= 0 else None

    def _clear(self) -> None:
        self.L.llama_memory_clear(self.L.llama_get_memory(self._ctx), True)

    def _decode(self, ids: Sequence[int], pos0: int, *, all_logits: bool) -> None:
        b = self._batch
        n = len(ids)
        b.n_tokens = n
        for i, t in enumerate(ids):
            b.token[i] = int(t)
            b.pos[i] = pos0 + i
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = 0
            b.logits[i] = 1 if all_logits or i == n - 1 else 0
        rc = self.L.llama_decode(self._ctx, b)
        if rc != 0:
            raise RuntimeLoadError(f"llama_decode failed ({rc}) on {self.path.name}", hint="lower --ctx")

    def _check_len(self, n: int) -> None:
        if n < 1 or n > self.ctx:
            raise UsageError(f"{n} tokens do not fit the context of {self.ctx}", hint="raise --ctx")

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        self._check_len(len(ids))
        self._clear()
        self._decode(ids, 0, all_logits=True)
        ptr = self.L.llama_get_logits(self._ctx)
        return np.ctypeslib.as_array(ptr, shape=(len(ids), self.n_vocab)).astype(np.float32, copy=True)

    def logits_blocks(self, ids: Sequence[int]):
        """The window decoded a micro-batch at a time (as llama.cpp splits one call anyway), each
        block's logits read in place from llama.cpp's output buffer: no window x vocabulary copy,
        and an output buffer of one micro-batch."""
        self._check_len(len(ids))
        self._clear()
        step = self.ubatch
        for a in range(0, len(ids), step):
            b = min(a + step, len(ids))
            self._decode(ids[a:b], a, all_logits=True)
            ptr = self.L.llama_get_logits(self._ctx)
            yield a, np.ctypeslib.as_array(ptr, shape=(b - a, self.n_vocab))

    def _last_argmax(self) -> int:
        ptr = self.L.llama_get_logits_ith(self._ctx, -1)
        return int(np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).argmax())

    def generate(self, prompt_ids: Sequence[int], new_tokens: int) -> GenerationTiming:
        self._check_len(len(prompt_ids) + new_tokens)
        self._clear()
        t0 = time.perf_counter()
        self._decode(prompt_ids, 0, all_logits=False)
        nxt = self._last_argmax()
        t1 = time.perf_counter()
        produced = [nxt]
        pos = len(prompt_ids)
        for _ in range(new_tokens - 1):
            self._decode([nxt], pos, all_logits=False)
            pos += 1
            nxt = self._last_argmax()
            produced.append(nxt)
        t2 = time.perf_counter()
        return GenerationTiming(len(prompt_ids), len(produced), t1 - t0, t2 - t1, tuple(produced))

    def tokenize(self, text: str, *, parse_special: bool = True) -> list[int]:
        """llama.cpp's tokenisation, special tokens in the text parsed like the HF tokenizer does."""
        data = text.encode("utf-8")
        cap = len(data) + 16
        for _ in range(2):
            buf = (self.L.llama_token * cap)()
            n = self.L.llama_tokenize(self._vocab, data, len(data), buf, cap, False, parse_special)
            if n >= 0:
                return list(buf[:n])
            cap = -n
        raise RuntimeError(f"llama_tokenize failed on {len(data)} bytes")  # pragma: no cover

    def close(self) -> None:
        L = getattr(self, "L", None)
        if L is None:
            return
        if self._batch is not None:
            L.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx:
            L.llama_free(self._ctx)
            self._ctx = None
        if self._model:
            L.llama_model_free(self._model)
            self._model = None

    def __del__(self):
        with contextlib.suppress(Exception):  # at interpreter exit the library may be gone already
            self.close()
