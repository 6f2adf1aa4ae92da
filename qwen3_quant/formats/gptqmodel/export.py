"""Turning GPTQModel's saved folder into a checkpoint that transformers, vLLM and SGLang load.

- ``config.json`` is the source model's own (so that every runtime reads the hyper-parameters it
  already reads for the unquantised model) plus GPTQModel's ``quantization_config``; float16, as
  Qwen's GPTQ and AWQ releases (vLLM's non-Marlin GPTQ / AWQ kernels take float16 only).
- tokenizer, chat template, generation config and license are the source's files, byte for byte
  (GPTQModel's tokenizer wrapper rewrites pad tokens and sampling defaults).
- every float tensor is stored as float16.
- Qwen3-MoE routers see the input they were trained on (:mod:`.routers`: AWQ rescales the norm
  before them).
- the tensor layout is checked: each linear layer of the architecture packed with the expected
  shapes; embeddings, ``lm_head``, norms (including q_norm / k_norm) and the MoE routers kept as
  plain weights.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from ...catalog.architecture import LINEAR_ROLES, ArchShape, iter_tensors
from ...checkpoint import read_safetensors_header
from ...errors import Qwen3QuantError
from ...io import atomic_write_json
from .routers import restore_router_inputs

FROM_SOURCE = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
)
DROPPED = ("quant_log.csv",)  # summarised in the manifest instead
FP16_MAX = 65504.0


class ArtifactLayoutError(Qwen3QuantError):
    """The saved checkpoint does not have the tensors the architecture and recipe imply."""


def router_modules(arch: ArchShape) -> list[str]:
    return [f"model.layers.{i}.mlp.gate" for i in range(arch.num_hidden_layers) if arch.layer_is_sparse(i)]


def build_config(source_cfg: dict, quant_cfg: dict, *, method: str, arch: ArchShape) -> dict:
    cfg = dict(source_cfg)
    qc = dict(quant_cfg)
    if method == "awq" and arch.is_moe:
        # vLLM's and transformers' AWQ loaders would otherwise treat the routers as AWQ layers;
        # full names, since their check is a substring match ("mlp.gate" is in "mlp.gate_proj")
        qc["modules_to_not_convert"] = router_modules(arch)
    cfg["quantization_config"] = qc
    keys = [k for k in ("torch_dtype", "dtype") if k in cfg] or ["torch_dtype"]
    for k in keys:
        cfg[k] = "float16"
    if isinstance(cfg.get("text_config"), dict):
        for k in ("torch_dtype", "dtype"):
            if k in cfg["text_config"]:
                cfg["text_config"][k] = "float16"
    return cfg


def expected_quantized(arch: ArchShape, method: str, bits: int, group: int) -> dict[str, tuple]:
    """Tensor name -> (dtype, shape) of a GPTQ (v1) or AWQ (GEMM) checkpoint of ``arch``."""
    out: dict[str, tuple] = {}

    def packed(n: int) -> int:  # int32 words holding n values of `bits` bits (3 bits: a bit stream)
        return n * bits // 32

    for t in iter_tensors(arch):
        if t.role in LINEAR_ROLES:
            base = t.name.removesuffix(".weight")
            n_out, n_in = t.shape
            groups = n_in // group
            if method == "awq":
                out[base + ".qweight"] = ("I32", (n_in, packed(n_out)))
            else:
                out[base + ".qweight"] = ("I32", (packed(n_in), n_out))
                out[base + ".g_idx"] = ("I32", (n_in,))
            out[base + ".qzeros"] = ("I32", (groups, packed(n_out)))
            out[base + ".scales"] = ("F16", (groups, n_out))
        else:
            out[t.name] = ("F16", t.shape)
    return out


def layout_problems(
    have: dict[str, tuple[str, tuple]], arch: ArchShape, method: str, bits: int, group: int
) -> list[str]:
    """What is wrong with a saved checkpoint's tensors (name -> (dtype, shape)); empty when right."""
    want = expected_quantized(arch, method, bits, group)
    problems = []
    for name, (dtype, shape) in want.items():
        if name not in have:
            if not (name == "lm_head.weight" and arch.tie_word_embeddings):
                problems.append(f"{name} is missing")
        elif have[name][0] != dtype or tuple(have[name][1]) != tuple(shape):
            got = f"{have[name][0]} {list(have[name][1])}"
            problems.append(f"{name} is {got}, expected {dtype} {list(shape)}")
    for name in have:
        if name not in want:
            what = (
                "quantised" if name.endswith((".qweight", ".qzeros", ".scales", ".g_idx")) else "unexpected"
            )
            problems.append(f"{name} is {what} (not a linear layer of the architecture)")
    return problems


def read_tensor_table(folder: Path) -> dict[str, tuple[str, tuple]]:
    table = {}
    for shard in sorted(Path(folder).glob("*.safetensors")):
        header, _ = read_safetensors_header(shard)
        for name, meta in header.items():
            if name != "__metadata__":
                table[name] = (meta["dtype"], tuple(meta["shape"]))
    return table


_FLOATS = ("F32", "BF16", "F64")
_ROWS_BYTES = 64 << 20  # float32 bytes of a tensor converted at once


def _float16_shard(shard: Path, header: dict, start: int) -> tuple[int, int]:
    """Rewrite one shard with its float tensors in float16, a tensor (and a slice of its rows)
    at a time: memory is one slice, not the shard. Returns (tensors converted, values clamped)."""
    import struct

    import torch
    from safetensors import safe_open

    names = sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])
    out_header: dict[str, Any] = {"__metadata__": header.get("__metadata__") or {"format": "pt"}}
    offset = 0
    for k in names:
        m = header[k]
        n_bytes = m["data_offsets"][1] - m["data_offsets"][0]
        dtype = m["dtype"]
        if dtype in _FLOATS:
            n_bytes = n_bytes // {"F32": 4, "BF16": 2, "F64": 8}[dtype] * 2
            dtype = "F16"
        out_header[k] = {"dtype": dtype, "shape": m["shape"], "data_offsets": [offset, offset + n_bytes]}
        offset += n_bytes
    raw = json.dumps(out_header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    converted = clamped = 0
    tmp = shard.with_name(shard.name + ".tmp")
    with safe_open(str(shard), "pt") as fh, open(tmp, "wb") as out, open(shard, "rb") as src:
        out.write(struct.pack("<Q", len(raw)) + raw)
        for k in names:
            m = header[k]
            if m["dtype"] not in _FLOATS:  # copied as they are
                b0, b1 = m["data_offsets"]
                src.seek(start + b0)
                for pos in range(b0, b1, _ROWS_BYTES):
                    out.write(src.read(min(_ROWS_BYTES, b1 - pos)))
                continue
            converted += 1
            sl = fh.get_slice(k)
            shape = m["shape"]
            rows = shape[0] if shape else 1
            per_row = max(1, int(torch.tensor(shape[1:]).prod()) if len(shape) > 1 else 1)
            step = max(1, _ROWS_BYTES // (4 * per_row))
            for r in range(0, rows, step):
                t = (sl[r : r + step] if shape else fh.get_tensor(k)).float()
                clamped += int((t.abs() > FP16_MAX).sum())
                out.write(t.clamp(-FP16_MAX, FP16_MAX).half().contiguous().numpy().tobytes())
                del t
    os.replace(tmp, shard)
    return converted, clamped


def to_float16(folder: Path) -> dict[str, int]:
    """Rewrite every shard with its float tensors in float16 (values beyond float16's range are
    clamped and counted), streaming: one slice of one tensor in memory at a time."""
    converted = clamped = 0
    for shard in sorted(Path(folder).glob("*.safetensors")):
        header, start = read_safetensors_header(shard)
        if all(m["dtype"] not in _FLOATS for k, m in header.items() if k != "__metadata__"):
            continue
        c, n = _float16_shard(shard, header, start)
        converted += c
        clamped += n
    index = Path(folder) / "model.safetensors.index.json"
    if index.is_file():
        idx = json.loads(index.read_text())
        total = 0
        for shard in sorted(Path(folder).glob("*.safetensors")):
            header, start = read_safetensors_header(shard)
            total += shard.stat().st_size - start
        idx.setdefault("metadata", {})["total_size"] = total
        atomic_write_json(index, idx)
    return {"converted_tensors": converted, "clamped_values": clamped}


def finalize_checkpoint(
    folder: Path, source: Path, arch: ArchShape, *, method: str, bits: int, group: int
) -> dict[str, Any]:
    folder, source = Path(folder), Path(source)
    saved = json.loads((folder / "config.json").read_text())
    qc = saved.get("quantization_config")
    if not qc:
        raise ArtifactLayoutError(
            f"GPTQModel wrote no quantization_config in {folder.name}/config.json",
            hint="rerun with -v and look at the GPTQModel log",
        )
    source_cfg = json.loads((source / "config.json").read_text())
    cfg = build_config(source_cfg, qc, method=method, arch=arch)
    atomic_write_json(folder / "config.json", cfg)
    atomic_write_json(folder / "quantize_config.json", cfg["quantization_config"])
    for name in FROM_SOURCE + DROPPED:
        (folder / name).unlink(missing_ok=True)
        if name in FROM_SOURCE and (source / name).is_file():
            shutil.copy2(source / name, folder / name)
    for lic in [*source.glob("LICENSE*"), *source.glob("NOTICE*")]:
        shutil.copy2(lic, folder / lic.name)
    dtype_info = to_float16(folder)
    if arch.is_moe:
        dtype_info.update(restore_router_inputs(folder, source, arch))
    problems = layout_problems(read_tensor_table(folder), arch, method, bits, group)
    if problems:
        raise ArtifactLayoutError(
            f"{folder.name}: {len(problems)} tensor(s) not as expected, first: {problems[0]}",
            hint="the quantiser did not produce a standard checkpoint; nothing was kept",
        )
    return {"dtype": "float16", **dtype_info}
