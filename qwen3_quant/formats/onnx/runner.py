"""The onnxruntime runner: the artifact's decoder graph in a plain onnxruntime session, on the CPU,
or through the CUDA execution provider when the device is a GPU and ``onnxruntime-gpu`` is installed.

The graph takes ``input_ids``, ``attention_mask`` (and ``position_ids`` when it has them) and the
KV cache as ``past_key_values.N.key/value``, and returns ``logits`` for every position with
``present.N.key/value``. ``logits`` runs a window from an empty cache; ``generate`` prefills the
prompt, then feeds each step's present cache back as the next step's past (onnxruntime values, no
copies through numpy). :func:`genai_generate` runs the same folder through onnxruntime-genai.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ...errors import RuntimeLoadError, UsageError, require
from ...eval.runner import GenerationTiming, Runner
from .graph import model_file

_PAST = re.compile(r"^past_key_values\.(\d+)\.(key|value)$")
_NP_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(bfloat16)": None}


def providers_for(device, available: list[str]) -> tuple[list, str]:
    """The session's providers for ``device`` and the backend note: the CUDA provider on the chosen
    GPU (CPU for what it cannot run) when onnxruntime has it, else the CPU with a note saying why."""
    if not device.is_cuda:
        return ["CPUExecutionProvider"], "CPUExecutionProvider"
    if "CUDAExecutionProvider" not in available:
        return (
            ["CPUExecutionProvider"],
            f"CPUExecutionProvider (onnxruntime has no CUDA provider: install onnxruntime-gpu; "
            f"{device.torch} unused)",
        )
    cuda = ("CUDAExecutionProvider", {"device_id": device.index or 0})
    return [cuda, "CPUExecutionProvider"], f"CUDAExecutionProvider on {device.torch}"


class OnnxRuntimeRunner(Runner):
    runtime = "onnxruntime"

    def __init__(self, path: Path, *, ctx: int, threads: int | None = None, device=None):
        super().__init__(path, ctx=ctx, threads=threads, device=device)
        ort = require("onnxruntime", "onnx")
        self.ort = ort
        folder = self.path if self.path.is_dir() else self.path.parent
        self.folder = folder
        try:
            onnx_path = model_file(folder) if self.path.is_dir() else self.path
        except FileNotFoundError as exc:
            raise RuntimeLoadError(str(exc), hint="pass an ONNX artifact folder") from exc
        cfg_path = folder / "genai_config.json"
        self.genai_config = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if threads:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        providers, self.backend = providers_for(self.device, list(ort.get_available_providers()))
        try:
            self.session = ort.InferenceSession(str(onnx_path), so, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise RuntimeLoadError(
                f"onnxruntime could not load {onnx_path.name}: {str(exc).splitlines()[0][:300]}",
                hint="rebuild the artifact with qwen3-quant quantize --format onnx --overwrite",
            ) from exc
        if self.device.is_cuda and self.session.get_providers()[0] != "CUDAExecutionProvider":
            self.backend = (
                "CPUExecutionProvider (the CUDA provider did not load: check the CUDA/cuDNN libraries)"
            )
        self._read_signature()

    def _read_signature(self) -> None:
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        if "input_ids" not in inputs or "logits" not in outputs:
            raise RuntimeLoadError(
                f"{self.folder.name}: the graph has no input_ids input or logits output",
                hint="the onnxruntime runner serves decoder graphs built by qwen3-quant or onnxruntime-genai",
            )
        self.past_names = sorted(
            (n for n in inputs if _PAST.match(n)), key=lambda n: (int(_PAST.match(n)[1]), _PAST.match(n)[2])
        )
        if not self.past_names:
            raise RuntimeLoadError(
                f"{self.folder.name}: the graph has no past_key_values inputs (no KV cache)",
                hint="build it with qwen3-quant quantize --format onnx",
            )
        first = inputs[self.past_names[0]]
        self.kv_dtype = _NP_TYPES.get(first.type)
        if self.kv_dtype is None:
            raise RuntimeLoadError(f"{self.folder.name}: unsupported KV cache type {first.type}")
        dec = self.genai_config.get("model", {}).get("decoder", {})
        self.kv_heads = (
            int(first.shape[1]) if isinstance(first.shape[1], int) else int(dec["num_key_value_heads"])
        )
        self.head_dim = int(first.shape[3]) if isinstance(first.shape[3], int) else int(dec["head_size"])
        self.present_names = [n.replace("past_key_values", "present") for n in self.past_names]
        missing = [n for n in self.present_names if n not in outputs]
        if missing:
            raise RuntimeLoadError(f"{self.folder.name}: the graph has no output {missing[0]}")
        self.has_position_ids = "position_ids" in inputs
        self.has_attention_mask = "attention_mask" in inputs

    @property
    def max_context(self) -> int:
        return int(self.genai_config.get("model", {}).get("context_length") or 2048)

    def _empty_cache(self) -> dict:
        empty = np.zeros((1, self.kv_heads, 0, self.head_dim), dtype=self.kv_dtype)
        return {n: self.ort.OrtValue.ortvalue_from_numpy(empty) for n in self.past_names}

    def _step(self, ids: Sequence[int], past: dict, past_len: int):
        """One forward pass; returns the logits OrtValue and the cache for the next step."""
        ov = self.ort.OrtValue.ortvalue_from_numpy
        n = len(ids)
        total = past_len + n
        if total > self.max_context:
            raise UsageError(
                f"{total} tokens exceed the ONNX model's context of {self.max_context}",
                hint="evaluate with a smaller --ctx",
            )
        feed = {"input_ids": ov(np.asarray([ids], dtype=np.int64))}
        if self.has_attention_mask:
            feed["attention_mask"] = ov(np.ones((1, total), dtype=np.int64))
        if self.has_position_ids:
            feed["position_ids"] = ov(np.arange(past_len, total, dtype=np.int64)[None])
        feed.update(past)
        outs = self.session.run_with_ort_values(["logits", *self.present_names], feed)
        return outs[0], dict(zip(self.past_names, outs[1:], strict=True))

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        out, _ = self._step(list(ids), self._empty_cache(), 0)
        return out.numpy()[0].astype(np.float32, copy=False)

    def generate(self, prompt_ids: Sequence[int], new_tokens: int) -> GenerationTiming:
        produced: list[int] = []
        past_len = len(prompt_ids)
        t0 = time.perf_counter()
        logits, past = self._step(list(prompt_ids), self._empty_cache(), 0)
        nxt = int(logits.numpy()[0, -1].argmax())
        t1 = time.perf_counter()
        produced.append(nxt)
        for _ in range(new_tokens - 1):
            logits, past = self._step([nxt], past, past_len)
            past_len += 1
            nxt = int(logits.numpy()[0, -1].argmax())
            produced.append(nxt)
        t2 = time.perf_counter()
        return GenerationTiming(len(prompt_ids), len(produced), t1 - t0, t2 - t1, tuple(produced))

    def tokenize(self, text: str) -> list[int]:
        return self.tokenize_with_json(self.folder, text)

    def close(self) -> None:
        self.session = None


def genai_generate(folder: Path, prompt_ids: Sequence[int], new_tokens: int) -> list[int]:
    """Greedy decoding of ``new_tokens`` tokens with onnxruntime-genai (its own KV cache handling)."""
    og = require("onnxruntime_genai", "onnx")
    model = og.Model(str(folder))
    params = og.GeneratorParams(model)
    total = len(prompt_ids) + new_tokens
    params.set_search_options(do_sample=False, max_length=total, min_length=total)
    gen = og.Generator(model, params)
    gen.append_tokens(list(prompt_ids))
    out: list[int] = []
    while not gen.is_done() and len(out) < new_tokens:
        gen.generate_next_token()
        out.append(int(gen.get_next_tokens()[0]))
    return out
