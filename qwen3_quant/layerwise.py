"""Running an unquantised Qwen3 / Qwen3-MoE checkpoint one decoder layer at a time.

The model is a transformers skeleton on the meta device (no weights). The token embeddings are
gathered a slice of rows at a time, then each decoder layer's weights are read from the
safetensors shards (lazily, ``safe_open``), every sequence's hidden states go through it, and the
layer is dropped before the next is read; the output head is applied a slice of vocabulary rows
at a time by the caller (:meth:`LayerwiseModel.head_slices`). Memory is one layer plus the
sequences' hidden states, not the model. The importance matrix and the validation reference run
on it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from .checkpoint import CheckpointInfo
from .working_set import HEAD_SLICE_ROWS

DTYPES = ("auto", "float32", "bfloat16")


class CheckpointTensors:
    """Reads tensors (or row ranges of them) from the safetensors shards, one at a time."""

    def __init__(self, info: CheckpointInfo):
        self.info = info
        self.where = {name: info.path / meta.shard for name, meta in info.tensors.items()}

    def get(self, name: str):
        from safetensors import safe_open

        with safe_open(self.where[name], framework="pt") as f:
            return f.get_tensor(name)

    def rows(self, name: str, start: int, stop: int):
        """Rows ``start:stop`` of a 2-D tensor, reading only those bytes."""
        from safetensors import safe_open

        with safe_open(self.where[name], framework="pt") as f:
            return f.get_slice(name)[start:stop]

    def n_rows(self, name: str) -> int:
        return self.info.tensors[name].shape[0]

    def layer_state(self, layer, li: int, dtype) -> dict:
        """Layer ``li``'s weights, named and shaped as the transformers ``layer`` module wants them."""
        import torch

        prefix = f"model.layers.{li}."
        state = {}
        for name in self.where:
            if name.startswith(prefix) and ".mlp.experts." not in name:
                state[name[len(prefix) :]] = self.get(name).to(dtype)
        experts = getattr(getattr(layer, "mlp", None), "experts", None)
        if experts is None:
            return state
        e_prefix = prefix + "mlp.experts."
        if hasattr(experts, "gate_up_proj"):  # transformers 5's fused expert module
            if self.info.expert_layout == "fused":
                for k in ("gate_up_proj", "down_proj"):
                    state[f"mlp.experts.{k}"] = self.get(e_prefix + k).to(dtype)
            else:
                n = experts.gate_up_proj.shape[0]
                gate_up = [
                    torch.cat(
                        [
                            self.get(f"{e_prefix}{e}.gate_proj.weight").to(dtype),
                            self.get(f"{e_prefix}{e}.up_proj.weight").to(dtype),
                        ]
                    )
                    for e in range(n)
                ]
                state["mlp.experts.gate_up_proj"] = torch.stack(gate_up)
                del gate_up
                down = [self.get(f"{e_prefix}{e}.down_proj.weight").to(dtype) for e in range(n)]
                state["mlp.experts.down_proj"] = torch.stack(down)
        else:  # one module per expert
            for e in range(len(experts)):
                for k in ("gate_proj", "up_proj", "down_proj"):
                    if self.info.expert_layout == "fused":
                        raise NotImplementedError("fused checkpoint with a per-expert transformers module")
                    state[f"mlp.experts.{e}.{k}.weight"] = self.get(f"{e_prefix}{e}.{k}.weight").to(dtype)
        return state


def release_freed_memory() -> None:
    """Hand memory freed by the last layer back to the system. glibc keeps freed blocks of a few
    MB in its heap, and layers of differently sized tensors fragment it: without this the
    resident set grows by about half a layer per layer (measured). A no-op off glibc."""
    global _malloc_trim
    if _malloc_trim is None:
        import ctypes
        import ctypes.util

        try:
            _malloc_trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim = None


def layer_fits_fp32(layer_params: int, available_bytes: int) -> bool:
    """Whether a layer can compute in fp32: its fp32 weights three times over fit in free memory."""
    return 4 * layer_params * 3 < available_bytes


class LayerwiseModel:
    """A Qwen3 checkpoint run a decoder layer at a time over a list of sequences.

    ``dtype`` is the layers' compute type: ``float32``, ``bfloat16``, or ``auto`` (fp32 when the
    layer fits in free memory three times over, else bf16). Hidden states between layers are
    always float32 on the host. ``device`` is where each layer computes.
    """

    def __init__(self, info: CheckpointInfo, *, dtype: str = "auto", device: str = "cpu"):
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM
        from transformers.utils import logging as hf_logging

        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, not {dtype!r}")
        hf_logging.disable_progress_bar()
        self.torch = torch
        self.info = info
        self.device = torch.device(device)
        self.dtype = dtype
        self.tensors = CheckpointTensors(info)
        self.config = AutoConfig.from_pretrained(info.path)
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(self.config, attn_implementation="sdpa")
        self.body = skeleton.model
        self.rotary = type(self.body.rotary_emb)(config=skeleton.config)
        self.head_name = (
            "model.embed_tokens.weight" if "lm_head.weight" not in info.tensors else "lm_head.weight"
        )
        self.layer_dtypes: list[str] = []

    @property
    def n_layers(self) -> int:
        return len(self.body.layers)

    def _layer_dtype(self, layer):
        t = self.torch
        if self.dtype != "auto":
            return getattr(t, self.dtype)
        import psutil

        n = sum(p.numel() for p in layer.parameters())
        return t.float32 if layer_fits_fp32(n, psutil.virtual_memory().available) else t.bfloat16

    def embed(self, sequences: list[list[int]], *, slice_rows: int = HEAD_SLICE_ROWS) -> list:
        """Each sequence's token embeddings, float32 ``[1, len, hidden]``, reading the embedding
        table a slice of rows at a time."""
        t = self.torch
        name = "model.embed_tokens.weight"
        ids = [t.as_tensor(s, dtype=t.long) for s in sequences]
        hidden = self.info.arch.hidden_size
        out = [t.zeros((1, len(s), hidden), dtype=t.float32) for s in sequences]
        for start in range(0, self.tensors.n_rows(name), slice_rows):
            stop = min(start + slice_rows, self.tensors.n_rows(name))
            wanted = [((i >= start) & (i < stop)).nonzero().flatten() for i in ids]
            if not any(len(w) for w in wanted):
                continue
            rows = self.tensors.rows(name, start, stop).float()
            for o, i, w in zip(out, ids, wanted, strict=True):
                if len(w):
                    o[0, w] = rows[i[w] - start]
        return out

    def run_layers(
        self,
        hidden: list,
        *,
        on_layer: Callable[[Any, int], Callable[[], None] | None] | None = None,
        progress: Callable[[str, int, int], None] | None = None,
        label: str = "decoder layers",
    ) -> list:
        """Pass every sequence's hidden states through every decoder layer, in place.

        ``on_layer(layer, index)`` runs after a layer's weights are loaded and before it runs
        (hooks go in here); what it returns is called after the layer has run.
        """
        t = self.torch
        masks = {n: t.full((n, n), float("-inf")).triu(1)[None, None] for n in {h.shape[1] for h in hidden}}
        with t.inference_mode():
            for li in range(self.n_layers):
                layer = self.body.layers[li]
                dtype = self._layer_dtype(layer)
                self.layer_dtypes.append(str(dtype).removeprefix("torch."))
                layer.load_state_dict(self.tensors.layer_state(layer, li, dtype), strict=True, assign=True)
                layer.to(self.device)
                done = on_layer(layer, li) if on_layer else None
                try:
                    for k, h in enumerate(hidden):
                        n = h.shape[1]
                        pos = t.arange(n)[None]
                        cos, sin = self.rotary(h, pos)
                        out = layer(
                            h.to(self.device, dtype),
                            attention_mask=masks[n].to(self.device, dtype),
                            position_ids=pos.to(self.device),
                            position_embeddings=(cos.to(self.device, dtype), sin.to(self.device, dtype)),
                        )
                        hidden[k] = (out[0] if isinstance(out, tuple) else out).to("cpu", t.float32)
                        del out
                finally:
                    if done:
                        done()
                self.body.layers[li] = layer.to("meta")  # drop the weights before the next layer is read
                del layer
                release_freed_memory()
                if progress:
                    progress(label, li + 1, self.n_layers)
        return hidden

    def final_norm(self, hidden: list) -> list:
        """The model's final RMS norm over each sequence's last hidden states (float32)."""
        t = self.torch
        norm = self.body.norm
        norm.load_state_dict({"weight": self.tensors.get("model.norm.weight").float()}, assign=True)
        with t.inference_mode():
            return [norm(h) for h in hidden]

    def head_slices(self, slice_rows: int = HEAD_SLICE_ROWS) -> Iterator[tuple[int, Any]]:
        """The output head (``lm_head``, or the tied embeddings) as ``(first row, float32 rows)``."""
        n = self.tensors.n_rows(self.head_name)
        for start in range(0, n, slice_rows):
            yield start, self.tensors.rows(self.head_name, start, min(start + slice_rows, n)).float()
