"""AWQ on Qwen3-MoE: keep the routers' logits.

AWQ scales each input channel of the experts' gate/up projections by ``s`` and folds ``1 / s``
into the ``post_attention_layernorm`` weight before them. The router (``mlp.gate``) reads the same
normalised input, so unless it is scaled by ``s`` too, its logits change and tokens go to other
experts. GPTQModel 7.6 leaves the router as it was (measured on Qwen3-Micro-MoE: the effective
router matrix off by 14-39% in three of four layers, KL divergence 3.8 times plain round-to-nearest).
:func:`restore_router_inputs` scales each router by ``norm_source / norm_artifact``, which gives
back the source model's router logits exactly (up to float16 rounding).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...catalog.architecture import ArchShape
from ...checkpoint import read_safetensors_header
from ...errors import Qwen3QuantError

TOLERANCE = 1e-3  # above float16 rounding of the norm (about 5e-4 relative)


class RouterRepairError(Qwen3QuantError):
    """A router cannot be made to see the input it was trained on."""


def rescaled_router(router, norm_source, norm_artifact):
    """``router * norm_source / norm_artifact`` per input channel (torch tensors, float32 result)."""
    import torch

    ns, na = norm_source.float(), norm_artifact.float()
    lost = (na == 0) & (ns != 0)
    if bool(lost.any()):
        raise RouterRepairError(
            f"{int(lost.sum())} channel(s) of a post-attention norm were scaled to zero",
            hint="the AWQ scales are degenerate; quantise with GPTQ instead",
        )
    s = torch.where(na == 0, torch.ones_like(na), ns / torch.where(na == 0, torch.ones_like(na), na))
    return router.float() * s[None, :]


def router_error(router, norm, router_source, norm_source) -> float:
    """Relative error of the effective router matrix ``router * norm`` against the source's."""
    want = router_source.float() * norm_source.float()[None, :]
    got = router.float() * norm.float()[None, :]
    return float((got - want).norm() / want.norm().clamp_min(1e-30))


def _locations(folder: Path) -> dict[str, Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return {k: folder / v for k, v in json.loads(index.read_text())["weight_map"].items()}
    from safetensors import safe_open

    out = {}
    for shard in sorted(folder.glob("*.safetensors")):
        with safe_open(str(shard), "pt") as fh:
            out.update({k: shard for k in fh.keys()})  # noqa: SIM118 - safe_open is not a mapping
    return out


def _get(where: dict[str, Path], name: str):
    from safetensors import safe_open

    with safe_open(str(where[name]), "pt") as fh:
        return fh.get_tensor(name)


def write_tensor_in_place(shard: Path, name: str, tensor) -> None:
    """Overwrite tensor ``name`` of a safetensors shard with ``tensor`` (same dtype and shape),
    without reading or rewriting the rest of the shard."""
    header, start = read_safetensors_header(shard)
    m = header[name]
    data = tensor.contiguous().numpy().tobytes()
    b0, b1 = m["data_offsets"]
    if m["dtype"] != "F16" or list(tensor.shape) != list(m["shape"]) or len(data) != b1 - b0:
        raise RouterRepairError(
            f"{name} in {shard.name} is {m['dtype']} {m['shape']}, not float16 {list(tensor.shape)}"
        )
    with open(shard, "r+b") as fh:
        fh.seek(start + b0)
        fh.write(data)


def restore_router_inputs(folder: Path, source: Path, arch: ArchShape) -> dict[str, Any]:
    """Rescale the routers of ``folder`` (a saved AWQ checkpoint, float16) whose norm AWQ changed."""
    import torch

    folder, source = Path(folder), Path(source)
    art, src = _locations(folder), _locations(source)
    new: dict[str, torch.Tensor] = {}
    worst = 0.0
    for i in range(arch.num_hidden_layers):
        if not arch.layer_is_sparse(i):
            continue
        norm_name, gate_name = (
            f"model.layers.{i}.post_attention_layernorm.weight",
            f"model.layers.{i}.mlp.gate.weight",
        )
        na, ns, gs = _get(art, norm_name), _get(src, norm_name), _get(src, gate_name)
        if router_error(_get(art, gate_name), na, gs, ns) <= TOLERANCE:
            continue
        g = rescaled_router(gs, ns, na).to(torch.float16)
        worst = max(worst, router_error(g, na, gs, ns))
        new[gate_name] = g
    if worst > 10 * TOLERANCE:
        raise RouterRepairError(
            f"a rescaled router is still {worst:.2%} off the source's", hint="quantise this model with GPTQ"
        )
    for name, g in new.items():  # float16 over float16 of the same shape: the bytes in place
        write_tensor_in_place(art[name], name, g)
    layers = sorted(int(n.split(".")[2]) for n in new)
    return {"routers_rescaled_layers": layers, "router_max_rel_error": round(worst, 6)}
