"""Edits and summaries of a built ONNX folder that work on the graph, not on the weights' values.

The weights stay in ``model.onnx.data``; only the graph (kilobytes) is loaded, and the data file is
rewritten by streaming byte ranges when an edit drops a tensor.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"
EMBED_WEIGHT = "model.embed_tokens.weight"
_COPY_CHUNK = 16 << 20


def model_file(folder: Path) -> Path:
    """The decoder graph the folder's genai_config.json names, else its only .onnx file."""
    folder = Path(folder)
    cfg = folder / "genai_config.json"
    if cfg.is_file():
        name = json.loads(cfg.read_text()).get("model", {}).get("decoder", {}).get("filename")
        if name and (folder / name).is_file():
            return folder / name
    found = sorted(folder.glob("*.onnx"))
    if len(found) != 1:
        raise FileNotFoundError(
            f"{folder} holds {len(found)} .onnx files and no genai_config.json naming one"
        )
    return found[0]


def _external(init) -> dict[str, str]:
    return {e.key: e.value for e in init.external_data}


def _set_external(init, location: str, offset: int, length: int) -> None:
    del init.external_data[:]
    for k, v in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = init.external_data.add()
        entry.key, entry.value = k, v


def save_compacted(
    model, path: Path, produced: dict[str, Callable[[], Iterator[bytes]]] | None = None
) -> None:
    """Write ``model`` (loaded without external data) back to ``path`` with a fresh data file holding
    only the byte ranges its initializers reference. Initializers named in ``produced`` get their
    bytes from that generator instead (their proto already says dims and type)."""
    import onnx

    produced = produced or {}
    folder = path.parent
    tmp_data = folder / f".{DATA_FILE}.new"
    pos = 0
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(open(tmp_data, "wb"))
        sources: dict[str, Any] = {}

        def old_bytes(ext: dict[str, str]) -> Iterator[bytes]:
            loc = ext["location"]
            if loc not in sources:
                sources[loc] = stack.enter_context(open(folder / loc, "rb"))
            src = sources[loc]
            src.seek(int(ext.get("offset", 0)))
            left = int(ext["length"])
            while left:
                chunk = src.read(min(left, _COPY_CHUNK))
                if not chunk:
                    raise OSError(f"{loc} is shorter than its graph says")
                left -= len(chunk)
                yield chunk

        for init in model.graph.initializer:
            if init.name in produced:
                chunks = produced[init.name]()
            elif init.data_location == onnx.TensorProto.EXTERNAL:
                chunks = old_bytes(_external(init))
            else:
                continue
            start = pos
            for chunk in chunks:
                out.write(chunk)
                pos += len(chunk)
            init.data_location = onnx.TensorProto.EXTERNAL
            _set_external(init, DATA_FILE, start, pos - start)
    tmp_model = folder / f".{path.name}.new"
    onnx.save_model(model, tmp_model)
    os.replace(tmp_data, folder / DATA_FILE)
    os.replace(tmp_model, path)


def quantize_rows(w, bits: int, block: int):
    """Symmetric round-to-nearest per block of ``block`` along each row, stored the way
    GatherBlockQuantized reads uint8 data: ``w ~= (q - 2**(bits-1)) * scale`` with one fp32 scale per
    block, two 4-bit values per byte (low nibble first) for ``bits=4``. The scale is signed so the
    block's largest magnitude lands exactly on the most negative level (the whole range is used)."""
    import numpy as np

    rows, cols = w.shape
    blocks = w.reshape(rows, cols // block, block).astype(np.float32)
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    peak = np.take_along_axis(blocks, np.abs(blocks).argmax(axis=-1)[..., None], axis=-1)[..., 0]
    scale = peak / lo
    safe = np.where(scale == 0, 1.0, scale)[..., None]
    q = (np.clip(np.rint(blocks / safe), lo, hi) - lo).astype(np.uint8).reshape(rows, cols)
    if bits == 4:
        q = q[:, 0::2] | (q[:, 1::2] << 4)
    return q, scale.astype(np.float32)


def _embedding_nodes(g):
    gather = next((n for n in g.node if n.op_type == "Gather" and n.input[0] == EMBED_WEIGHT), None)
    lm = next((n for n in g.node if n.op_type == "MatMulNBits" and n.name.startswith("/lm_head/")), None)
    return gather, lm


def _replace_with_gbq(g, gather, inputs: list[str], bits: int, block: int, new_nodes=()) -> None:
    from onnx import helper

    gbq = helper.make_node(
        "GatherBlockQuantized",
        inputs,
        list(gather.output),
        name="/model/embed_tokens/GatherBlockQuantized",
        domain="com.microsoft",
        bits=bits,
        block_size=block,
        gather_axis=0,
        quantize_axis=1,
    )
    pos = list(g.node).index(gather)
    g.node.remove(gather)
    for i, node in enumerate([*new_nodes, gbq]):
        g.node.insert(pos + i, node)


def share_int8_embedding(folder: Path) -> bool:
    """Make a tied model's embedding read the int8 lm_head matrix (GatherBlockQuantized, 8 bits)
    instead of keeping its own fp32 copy. The builder shares tied embeddings for int4 only.

    Returns whether the graph was changed.
    """
    import onnx
    from onnx import helper, numpy_helper

    path = model_file(folder)
    model = onnx.load(path, load_external_data=False)
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    gather, lm = _embedding_nodes(g)
    if gather is None or lm is None:
        return False
    attrs = {a.name: helper.get_attribute_value(a) for a in lm.attribute}
    n, k, block = attrs["N"], attrs["K"], attrs["block_size"]
    blocks = -(-k // block)
    if attrs.get("bits") != 8 or tuple(inits[EMBED_WEIGHT].dims) != (n, k):
        return False

    new_nodes, inputs = [], []
    for idx, (name, shape) in enumerate(((lm.input[1], [n, blocks * block]), (lm.input[2], [n, blocks]))):
        if list(inits[name].dims) == shape:
            inputs.append(name)
            continue
        shape_name = f"/model/embed_tokens/shape_{idx}"
        g.initializer.append(numpy_helper.from_array(_int64(shape), shape_name))
        out = f"/model/embed_tokens/Reshape_{idx}/output_0"
        new_nodes.append(helper.make_node("Reshape", [name, shape_name], [out], name=out.rsplit("/", 1)[0]))
        inputs.append(out)
    inputs.insert(1, gather.input[1])
    if len(lm.input) > 3 and lm.input[3]:
        zp_shape = "/model/embed_tokens/shape_zp"
        g.initializer.append(numpy_helper.from_array(_int64([n, blocks]), zp_shape))
        out = "/model/embed_tokens/Reshape_zp/output_0"
        new_nodes.append(
            helper.make_node("Reshape", [lm.input[3], zp_shape], [out], name="/model/embed_tokens/Reshape_zp")
        )
        inputs.append(out)
    _replace_with_gbq(g, gather, inputs, 8, block, new_nodes)
    g.initializer.remove(inits[EMBED_WEIGHT])
    save_compacted(model, path)
    return True


def quantize_embedding(folder: Path, bits: int, block: int, rows_per_chunk: int = 8192) -> bool:
    """Store an untied model's fp32 embedding as int4 / int8 blocks read by GatherBlockQuantized,
    streaming it in row chunks (the builder leaves it fp32 for int8 and for its k-quant int4).
    Returns whether the graph changed."""
    import numpy as np
    import onnx

    path = model_file(folder)
    model = onnx.load(path, load_external_data=False)
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    gather, _ = _embedding_nodes(g)
    emb = inits.get(EMBED_WEIGHT)
    if gather is None or emb is None or emb.data_type != onnx.TensorProto.FLOAT:
        return False
    rows, cols = emb.dims
    if cols % block:
        return False
    ext = _external(emb)
    src = folder / ext["location"]
    offset = int(ext.get("offset", 0))

    def chunks(part: int) -> Callable[[], Iterator[bytes]]:
        def gen() -> Iterator[bytes]:
            for r in range(0, rows, rows_per_chunk):
                n = min(rows_per_chunk, rows - r)
                w = np.fromfile(src, dtype=np.float32, count=n * cols, offset=offset + r * cols * 4)
                yield quantize_rows(w.reshape(n, cols), bits, block)[part].tobytes()

        return gen

    qname, sname = f"{EMBED_WEIGHT}_Q{bits}", f"{EMBED_WEIGHT}_scales"
    for name, dtype, dims in (
        (qname, onnx.TensorProto.UINT8, [rows, cols * bits // 8]),
        (sname, onnx.TensorProto.FLOAT, [rows, cols // block]),
    ):
        t = onnx.TensorProto(name=name, data_type=dtype, dims=dims)
        t.data_location = onnx.TensorProto.EXTERNAL
        g.initializer.append(t)
    _replace_with_gbq(g, gather, [qname, gather.input[1], sname], bits, block)
    g.initializer.remove(emb)
    save_compacted(model, path, {qname: chunks(0), sname: chunks(1)})
    return True


def _int64(values):
    import numpy as np

    return np.asarray(values, dtype=np.int64)


def summarise(folder: Path) -> dict[str, Any]:
    """Operator counts and how the weights are stored: enough to tell what really got quantised."""
    import onnx
    from onnx import helper

    model = onnx.load(model_file(folder), load_external_data=False)
    ops = Counter(n.op_type for n in model.graph.node)
    out: dict[str, Any] = {"ops": dict(sorted(ops.items()))}
    for n in model.graph.node:
        if n.op_type in ("MatMulNBits", "QMoE", "GatherBlockQuantized"):
            attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
            key = "expert_weight_bits" if n.op_type == "QMoE" else "bits"
            out.setdefault(f"{n.op_type}_bits", set()).add(int(attrs.get(key, 4)))
            if "block_size" in attrs:
                out.setdefault(f"{n.op_type}_block_size", set()).add(int(attrs["block_size"]))
            if n.op_type == "MatMulNBits":
                out.setdefault("accuracy_level", set()).add(int(attrs.get("accuracy_level", 0)))
    float_weights = {
        i.name
        for i in model.graph.initializer
        if i.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16) and len(i.dims) >= 2
    }
    out["float_matrices"] = sorted(float_weights)
    # nodes that compute with a float weight matrix (a tied fp model's Gather reads a Transpose of one)
    producers = {o: n for n in model.graph.node for o in n.output}
    float_nodes: Counter = Counter()
    for n in model.graph.node:
        ins = [
            producers[i].input[0] if i in producers and producers[i].op_type == "Transpose" else i
            for i in n.input
        ]
        if n.op_type in ("MatMul", "Gather", "MoE") and float_weights.intersection(ins):
            float_nodes[n.op_type] += 1
    out["float_weight_nodes"] = dict(sorted(float_nodes.items()))
    return {k: sorted(v) if isinstance(v, set) else v for k, v in out.items()}


def describe(folder: Path) -> dict[str, str]:
    """One line per kind of operator that holds weights, for the manifest's recipe and the model card:
    ``{"MatMulNBits": "9 x int4, block 32, accuracy level 4", "QMoE": "4 x int4, block 32", ...}``."""
    s = summarise(folder)
    out = {}
    for op in ("MatMulNBits", "QMoE", "GatherBlockQuantized", "MoE", "MatMul", "Gather"):
        n = s["ops"].get(op) if f"{op}_bits" in s else s["float_weight_nodes"].get(op)
        if not n:
            continue
        if f"{op}_bits" in s:
            line = f"{n} x int{'/int'.join(map(str, s[f'{op}_bits']))}"
            line += ", block " + "/".join(map(str, s.get(f"{op}_block_size", [])))
            if op == "MatMulNBits":
                line += ", accuracy level " + "/".join(map(str, s.get("accuracy_level", [])))
        else:
            line = f"{n} (float)"
        out[op] = line
    return out


def has_initializer(folder: Path, name: str) -> bool:
    import onnx

    model = onnx.load(model_file(folder), load_external_data=False)
    return any(i.name == name for i in model.graph.initializer)


def set_cpu_provider(folder: Path) -> None:
    """genai_config.json: run on the CPU (the fp16 graph is built with the builder's CUDA recipe)."""
    path = Path(folder) / "genai_config.json"
    cfg = json.loads(path.read_text())
    cfg["model"]["decoder"].setdefault("session_options", {})["provider_options"] = []
    path.write_text(json.dumps(cfg, indent=4) + "\n")
