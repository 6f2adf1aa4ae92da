"""Importance matrix: per linear weight and input column, the sum of squared activations and the
number of tokens that produced them, with llama.cpp's semantics.

Collected with transformers forward hooks over the calibration samples. Dense weights (attention
and MLP projections) count every token; a MoE layer's experts are one matrix each and count only
the tokens routed to them, so each expert gets its own slice. Only ``blk.*`` weights are collected,
as llama.cpp's imatrix tool does by default (token embeddings and the output head are left out).

Stored in llama.cpp's GGUF imatrix format (``<name>.in_sum2`` and ``<name>.counts`` tensors,
``imatrix.*`` keys), which ``llama-quantize --imatrix`` reads too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...checkpoint import CheckpointInfo
from ...layerwise import CheckpointTensors
from ..base import Progress, no_progress
from .types import gguf_name

log = logging.getLogger(__name__)

META_PREFIX = "qwen3_quant."


@dataclass
class ImatrixEntry:
    sums: np.ndarray  # float64 [n_mat, n_cols]
    counts: np.ndarray  # int64 [n_mat]

    def add(self, mat: int, x2_sum: np.ndarray, n: int) -> None:
        self.sums[mat] += x2_sum
        self.counts[mat] += n


@dataclass
class Imatrix:
    entries: dict[str, ImatrixEntry] = field(default_factory=dict)
    datasets: list[str] = field(default_factory=list)
    chunk_count: int = 0
    chunk_size: int = 0
    meta: dict[str, str] = field(default_factory=dict)  # what it was computed from (calibration, model)

    def entry(self, name: str, n_mat: int, n_cols: int) -> ImatrixEntry:
        e = self.entries.get(name)
        if e is None:
            e = self.entries[name] = ImatrixEntry(np.zeros((n_mat, n_cols)), np.zeros(n_mat, dtype=np.int64))
        return e

    def values(self, name: str) -> np.ndarray:
        """What llama.cpp's quantiser weights columns by: mean squared activation per matrix and
        column; 1 for a matrix no token reached (an expert never routed to), as llama-quantize does."""
        e = self.entries[name]
        out = np.ones_like(e.sums, dtype=np.float32)
        seen = e.counts > 0
        out[seen] = (e.sums[seen] / e.counts[seen, None]).astype(np.float32)
        return out.reshape(-1)

    def coverage(self) -> dict[str, float]:
        """Share of matrices (experts) each tensor has data for."""
        return {n: float((e.counts > 0).mean()) for n, e in self.entries.items()}

    # --- llama.cpp's GGUF imatrix file ---------------------------------------------------------

    def save(self, path: Path) -> None:
        import gguf

        w = gguf.GGUFWriter(path, "imatrix")
        w.kv_data[0].pop(gguf.Keys.General.ARCHITECTURE, None)  # llama.cpp's imatrix files have none
        w.add_type("imatrix")
        w.add_array("imatrix.datasets", list(self.datasets) or ["unknown"])
        w.add_uint32("imatrix.chunk_count", int(self.chunk_count))
        w.add_uint32("imatrix.chunk_size", int(self.chunk_size))
        for k, v in sorted(self.meta.items()):
            w.add_string(META_PREFIX + k, str(v))
        for name in sorted(self.entries):
            e = self.entries[name]
            w.add_tensor(f"{name}.in_sum2", e.sums.astype(np.float32))
            w.add_tensor(f"{name}.counts", e.counts.astype(np.float32).reshape(-1, 1))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()

    @classmethod
    def load(cls, path: Path) -> Imatrix:
        import gguf

        r = gguf.GGUFReader(path)

        def field_value(key, default=None):
            f = r.fields.get(key)
            return f.contents() if f is not None else default

        im = cls(
            datasets=list(field_value("imatrix.datasets", [])),
            chunk_count=int(field_value("imatrix.chunk_count", 0)),
            chunk_size=int(field_value("imatrix.chunk_size", 0)),
            meta={
                k[len(META_PREFIX) :]: f.contents() for k, f in r.fields.items() if k.startswith(META_PREFIX)
            },
        )
        tensors = {t.name: np.array(t.data) for t in r.tensors}
        for tname, sums in tensors.items():
            if not tname.endswith(".in_sum2"):
                continue
            name = tname[: -len(".in_sum2")]
            counts = tensors[name + ".counts"].reshape(-1)
            im.entries[name] = ImatrixEntry(
                sums.reshape(len(counts), -1).astype(np.float64), np.rint(counts).astype(np.int64)
            )
        return im


# --- collection, one decoder layer at a time --------------------------------------------------


def collect_imatrix(
    info: CheckpointInfo,
    samples: list[list[int]],
    *,
    threads: int | None = None,
    progress: Progress = no_progress,
    device=None,
) -> Imatrix:
    """Run the calibration samples through the unquantised model and accumulate the statistics.

    The model is run one decoder layer at a time: each layer's weights are read from the
    safetensors shards, every sample's hidden states go through it (hooks collect the linear
    inputs), and the layer is dropped before the next is read. Memory is one layer plus the
    samples' hidden states, not the model. Layers compute in fp32 when that fits in free memory
    (exact activations), else in the checkpoint's bf16.

    ``device`` (a :class:`~qwen3_quant.device.Device`, the CPU by default): on CUDA each layer is
    moved to the GPU, the hidden states stay there between layers, the squared sums are taken on
    the GPU in fp32 and accumulated on the host in float64, as on the CPU. fp32 is chosen when the
    layer fits three times in free GPU memory, else bf16.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if threads:
        torch.set_num_threads(threads)
    dev = device.torch if device is not None else "cpu"
    config = AutoConfig.from_pretrained(info.path)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    body = skeleton.model
    rotary = type(body.rotary_emb)(config=skeleton.config).to(dev)
    weights = CheckpointTensors(info)
    hidden = [h.to(dev) for h in _embed(torch, weights, samples)]
    masks = {
        n: torch.full((n, n), float("-inf"), device=dev).triu(1)[None, None]
        for n in {len(s) for s in samples}
    }
    im = Imatrix()
    n_layers = len(body.layers)
    with torch.inference_mode():
        for li in range(n_layers):
            layer = body.layers[li]
            dtype = _layer_dtype(torch, layer, dev)
            state = {k: v.to(dev) for k, v in weights.layer_state(layer, li, dtype).items()}
            layer.load_state_dict(state, strict=True, assign=True)
            del state
            handles = _install_hooks(torch, layer, li, im)
            try:
                for k, h in enumerate(hidden):
                    pos = torch.arange(h.shape[1], device=dev)[None]
                    cos, sin = rotary(h, pos)
                    out = layer(
                        h.to(dtype),
                        attention_mask=masks[h.shape[1]].to(dtype),
                        position_ids=pos,
                        position_embeddings=(cos.to(dtype), sin.to(dtype)),
                    )
                    hidden[k] = (out[0] if isinstance(out, tuple) else out).float()
            finally:
                for hd in handles:
                    hd.remove()
            body.layers[li] = layer.to("meta")  # drop the weights before the next layer is read
            progress("importance matrix (layers)", li + 1, n_layers)
    im.chunk_count = len(samples)
    im.chunk_size = max((len(s) for s in samples), default=0)
    log.info("importance matrix: %d tensors from %d samples", len(im.entries), len(samples))
    return im


def _embed(torch, weights: CheckpointTensors, samples: list[list[int]]) -> list:
    table = weights.get("model.embed_tokens.weight")
    out = [table[torch.tensor(s, dtype=torch.long)][None].float() for s in samples]
    del table
    return out


def _layer_dtype(torch, layer, dev: str = "cpu"):
    n = sum(p.numel() for p in layer.parameters())
    if dev == "cpu":
        import psutil

        free = psutil.virtual_memory().available
    else:
        free = torch.cuda.mem_get_info(torch.device(dev))[0]
    return torch.float32 if 4 * n * 3 < free else torch.bfloat16


# HF linear modules under ``model.layers.N.`` -> architecture role (named in GGUF by gguf_name)
LINEAR_MODULES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_o",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def _install_hooks(torch, layer, li: int, im: Imatrix) -> list:
    handles = []
    for path, role in LINEAR_MODULES.items():
        mod = layer.get_submodule(path) if _has(layer, path) else None
        if isinstance(mod, torch.nn.Linear):
            handles.append(mod.register_forward_pre_hook(_dense_hook(im, gguf_name(role, li))))
    experts = layer.get_submodule("mlp.experts") if _has(layer, "mlp.experts") else None
    if experts is not None:
        handles += _expert_hooks(torch, experts, im, li)
    return handles


def _has(module, path: str) -> bool:
    try:
        module.get_submodule(path)
        return True
    except AttributeError:
        return False


def _sq_sum(x) -> np.ndarray:
    x = x.detach().float()
    return (x * x).sum(dim=0).double().cpu().numpy()


def _dense_hook(im: Imatrix, name: str):
    def hook(mod, args):
        x = args[0].reshape(-1, args[0].shape[-1])
        im.entry(name, 1, x.shape[-1]).add(0, _sq_sum(x), x.shape[0])

    return hook


def _expert_hooks(torch, experts, im: Imatrix, li: int) -> list:
    names = {k: gguf_name(f"expert_{k}", li) for k in ("gate", "up", "down")}
    if hasattr(experts, "gate_up_proj"):  # transformers 5: experts fused into 3-D parameters

        def hook(mod, args, kwargs):
            hidden = kwargs.get("hidden_states", args[0] if args else None)
            top_k = kwargs.get("top_k_index", args[1] if len(args) > 1 else None)
            n_exp = mod.gate_up_proj.shape[0]
            m = mod.gate_up_proj.shape[1] // 2
            for e in range(n_exp):
                rows = (top_k == e).any(dim=-1).nonzero().flatten()
                if rows.numel() == 0:
                    continue
                x = hidden[rows]
                sq = _sq_sum(x)
                im.entry(names["gate"], n_exp, x.shape[-1]).add(e, sq, len(rows))
                im.entry(names["up"], n_exp, x.shape[-1]).add(e, sq, len(rows))
                gate_up = torch.nn.functional.linear(x, mod.gate_up_proj[e])
                inner = mod.act_fn(gate_up[:, :m]) * gate_up[:, m:]
                im.entry(names["down"], n_exp, inner.shape[-1]).add(e, _sq_sum(inner), len(rows))

        return [experts.register_forward_pre_hook(hook, with_kwargs=True)]
    # one module per expert (older transformers, or a de-fused model)
    handles = []
    n_exp = len(experts)
    for e, expert in enumerate(experts):
        for k in ("gate", "up", "down"):

            def hook(mod, args, e=e, k=k):
                x = args[0].reshape(-1, args[0].shape[-1])
                if x.shape[0]:
                    im.entry(names[k], n_exp, x.shape[-1]).add(e, _sq_sum(x), x.shape[0])

            handles.append(getattr(expert, f"{k}_proj").register_forward_pre_hook(hook))
    return handles
