"""llama.cpp's own quantiser, ``llama_model_quantize``, called through llama-cpp-python with the
importance matrix passed in memory (``llama_model_quantize_params.imatrix``, a C array of
``{name, data, size}``), as ``llama-quantize --imatrix`` does after loading its file.
"""

from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path

import numpy as np

from ...errors import DiskFullError, Qwen3QuantError
from ...io import free_bytes, human_bytes
from .imatrix import Imatrix
from .llama import captured_log, last_error, lib
from .types import FILE_TYPES

log = logging.getLogger(__name__)


class QuantizeError(Qwen3QuantError):
    """llama.cpp's quantiser failed."""


def _kv_overrides(L, values: dict[str, str | int]):
    arr = (L.llama_model_kv_override * (len(values) + 1))()
    for o, (key, val) in zip(arr, values.items(), strict=False):
        o.key = key.encode()[:127]
        if isinstance(val, bool):
            o.tag, o.value.val_bool = L.LLAMA_KV_OVERRIDE_TYPE_BOOL, val
        elif isinstance(val, int):
            o.tag, o.value.val_i64 = L.LLAMA_KV_OVERRIDE_TYPE_INT, val
        else:
            o.tag, o.value.val_str = L.LLAMA_KV_OVERRIDE_TYPE_STR, str(val).encode()[:127]
    return arr  # the zeroed last entry (key "") ends the list


def _type_overrides(L, tensor_types: dict[str, str]):
    """llama.cpp's NULL-terminated ``{pattern, ggml_type}`` array, one exact-name pattern per tensor."""
    import gguf

    from .autotype import override_pattern

    arr = (L.llama_model_tensor_override * (len(tensor_types) + 1))()
    for slot, (name, gtype) in zip(arr, sorted(tensor_types.items()), strict=False):
        slot.pattern = override_pattern(name).encode()
        slot.type = int(gguf.GGMLQuantizationType[gtype])
    return arr


def _imatrix_array(L, im: Imatrix):
    """The C array llama.cpp reads, and the numpy buffers it points into (keep both alive)."""
    keep: list[np.ndarray] = []
    arr = (L.llama_model_imatrix_data * (len(im.entries) + 1))()
    for slot, name in zip(arr, sorted(im.entries), strict=False):
        values = np.ascontiguousarray(im.values(name), dtype=np.float32)
        keep.append(values)
        slot.name = name.encode()
        slot.data = values.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        slot.size = values.size
    return arr, keep  # the zeroed last entry (name NULL) ends the list


def imatrix_metadata(im: Imatrix, file_name: str) -> dict[str, str | int]:
    """The keys ``llama-quantize`` records about the importance matrix it used."""
    return {
        "quantize.imatrix.file": file_name,
        "quantize.imatrix.dataset": ",".join(im.datasets),
        "quantize.imatrix.entries_count": len(im.entries),
        "quantize.imatrix.chunks_count": im.chunk_count,
    }


def quantize_gguf(
    src: Path,
    dst: Path,
    ftype: str,
    *,
    imatrix: Imatrix | None = None,
    metadata: dict[str, str | int] | None = None,
    threads: int | None = None,
    pure: bool = False,
    tensor_types: dict[str, str] | None = None,
) -> None:
    """Quantise the F16/BF16/F32 GGUF ``src`` to ``dst`` with llama.cpp's per-tensor type mix for
    ``ftype``; ``pure``: ``ftype``'s default type for every quantisable tensor; ``tensor_types``:
    a ggml type for each named tensor (llama.cpp's ``tt_overrides``, as ``llama-quantize --tensor-type``)."""
    L = lib()
    params = L.llama_model_quantize_default_params()
    params.ftype = FILE_TYPES[ftype][0]
    params.nthread = threads or os.cpu_count() or 1
    params.pure = pure
    keep = []
    if tensor_types:
        tt = _type_overrides(L, tensor_types)
        params.tt_overrides = ctypes.cast(tt, ctypes.POINTER(L.llama_model_tensor_override))
        keep.append(tt)
    if imatrix is not None:
        arr, bufs = _imatrix_array(L, imatrix)
        params.imatrix = ctypes.cast(arr, ctypes.POINTER(L.llama_model_imatrix_data))
        keep += [arr, bufs]
    if metadata:
        kv = _kv_overrides(L, metadata)
        params.kv_overrides = ctypes.cast(kv, ctypes.POINTER(L.llama_model_kv_override))
        keep.append(kv)
    with captured_log() as lines:
        rc = L.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        free = free_bytes(dst.parent)
        if free < max(64 << 20, src.stat().st_size // 8):
            raise DiskFullError(
                f"the disk filled up while writing {dst.name} ({human_bytes(free)} free)",
                hint="free some space and rerun; finished types are kept",
            )
        raise QuantizeError(
            f"llama.cpp could not quantise {src.name} to {ftype}: {last_error(lines)}",
            hint="see the log with -vv",
        )
    del keep
