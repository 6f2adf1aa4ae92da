"""Writing GGUF files tensor by tensor (and in chunks), optionally as llama.cpp splits.

gguf-py's :class:`gguf.GGUFWriter` lays out the header, key/values and tensor infos (and splits them
into ``-0000i-of-0000n.gguf`` shards with the ``split.*`` keys llama.cpp reads); tensor data is then
streamed here in chunks, so no tensor has to be held in memory whole.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import CheckpointError
from .naming import split_names, split_set  # noqa: F401  (split_set is read from here too)

COPY_CHUNK = 64 * 1024 * 1024


class GGUFStream:
    """Declare tensors, then write their data in order, chunk by chunk."""

    def __init__(self, path: Path, arch: str, *, max_shard_size: int = 0):
        import gguf

        self.gguf = gguf
        self.path = Path(path)
        self.w = gguf.GGUFWriter(self.path, arch, split_max_size=max_shard_size)
        self._order: list[tuple[int, str, int]] = []
        self._pos = 0
        self._left = 0

    def declare(self, name: str, shape: tuple[int, ...], ggml_type: str, nbytes: int) -> None:
        qtype = self.gguf.GGMLQuantizationType[ggml_type]
        self.w.add_tensor_info(name, list(shape), np.dtype(np.float32), nbytes, raw_dtype=qtype)

    @property
    def paths(self) -> list[Path]:
        return split_names(self.path, len(self.w.tensors))

    def begin(self) -> None:
        """Write header, key/values and tensor infos of every shard."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._order = [
            (i, name, ti.nbytes) for i, shard in enumerate(self.w.tensors) for name, ti in shard.items()
        ]
        self.w.write_header_to_file()
        self.w.write_kv_data_to_file()
        self.w.write_ti_data_to_file()
        for fout in self.w.fout:
            self.w.write_padding(fout, fout.tell())
        self._pos = 0
        self._left = self._order[0][2] if self._order else 0

    def write(self, data: np.ndarray | bytes) -> None:
        """Append bytes to the current tensor; moves on to the next one when it is complete."""
        buf = memoryview(data).cast("B") if not isinstance(data, bytes) else memoryview(data)
        while len(buf):
            if self._pos >= len(self._order):
                raise ValueError("more tensor data than the declared tensors hold")
            shard, name, _ = self._order[self._pos]
            n = min(len(buf), self._left)
            self.w.fout[shard].write(buf[:n])
            buf = buf[n:]
            self._left -= n
            if self._left == 0:
                self.w.write_padding(self.w.fout[shard], self._order[self._pos][2])
                self._pos += 1
                self._left = self._order[self._pos][2] if self._pos < len(self._order) else 0

    def finish(self) -> list[Path]:
        if self._pos != len(self._order):
            name = self._order[self._pos][1]
            raise ValueError(f"tensor {name} and {len(self._order) - self._pos - 1} more were not written")
        for fout in self.w.fout:
            fout.flush()
            os.fsync(fout.fileno())
        self.w.close()
        return self.paths

    def abort(self) -> None:
        self.w.close()


# --- reading headers fast (gguf-py's reader builds a Python object per vocabulary string) --------

GGUF_MAGIC = 0x46554747
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
SPLIT_KEYS = ("split.no", "split.count", "split.tensors.count")


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # numpy order
    ggml_type: str
    offset: int  # absolute position of the data in the file
    nbytes: int


@dataclass
class GGUFHeader:
    path: Path
    kv: dict[str, Any]  # scalars and strings; arrays only when asked for (else their length)
    kv_raw: dict[str, bytes]  # each key/value entry as stored, for copying
    tensors: list[TensorInfo]
    data_offset: int
    alignment: int

    @property
    def data_end(self) -> int:
        return max((t.offset + t.nbytes for t in self.tensors), default=self.data_offset)


class _Buf:
    """A growing window on the start of a file, parsed with struct."""

    def __init__(self, fh):
        self.fh, self.data, self.pos = fh, b"", 0

    def need(self, n: int) -> None:
        while self.pos + n > len(self.data):
            more = self.fh.read(max(n, 8 << 20))
            if not more:
                raise ValueError("file ends inside its header")
            self.data += more

    def unpack(self, fmt: str):
        size = struct.calcsize("<" + fmt)
        self.need(size)
        out = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return out[0] if len(out) == 1 else out

    def string(self) -> str:
        n = self.unpack("Q")
        self.need(n)
        raw = self.data[self.pos : self.pos + n]
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def value(self, vtype: int, keep_array: bool):
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype != _ARRAY:
            raise ValueError(f"unknown value type {vtype}")
        sub, n = self.unpack("I"), self.unpack("Q")
        if sub in _SCALARS and not keep_array:
            size = struct.calcsize(_SCALARS[sub]) * n
            self.need(size)
            self.pos += size
            return n
        items = [self.value(sub, keep_array) for _ in range(n)]
        return items if keep_array else n


def read_header(path: Path, *, arrays: bool = False) -> GGUFHeader:
    """Key/values and tensor infos of a GGUF file (raises ValueError on a malformed one)."""
    import gguf

    path = Path(path)
    with open(path, "rb") as fh:
        b = _Buf(fh)
        if b.unpack("I") != GGUF_MAGIC:
            raise ValueError("not a GGUF file (bad magic)")
        version, n_tensors, n_kv = b.unpack("I"), b.unpack("Q"), b.unpack("Q")
        if version not in (2, 3) or n_tensors > 1 << 24 or n_kv > 1 << 20:
            raise ValueError(f"unsupported or corrupt header (version {version})")
        kv: dict[str, Any] = {}
        raw: dict[str, bytes] = {}
        for _ in range(n_kv):
            start = b.pos
            key = b.string()
            kv[key] = b.value(b.unpack("I"), arrays)
            raw[key] = b.data[start : b.pos]
        infos = []
        for _ in range(n_tensors):
            name = b.string()
            dims = [b.unpack("Q") for _ in range(b.unpack("I"))]
            qtype, offset = b.unpack("I"), b.unpack("Q")
            infos.append((name, dims, qtype, offset))
    align = int(kv.get("general.alignment", 32))
    data_offset = -(-b.pos // align) * align
    tensors = []
    for name, dims, qtype, offset in infos:
        t = gguf.GGMLQuantizationType(qtype)
        block, size = gguf.GGML_QUANT_SIZES[t]
        numel = 1
        for d in dims:
            numel *= d
        tensors.append(
            TensorInfo(name, tuple(reversed(dims)), t.name, data_offset + offset, numel // block * size)
        )
    return GGUFHeader(path, kv, raw, tensors, data_offset, align)


def read_tensor_data(*paths: Path) -> dict[str, bytes]:
    """Every tensor's raw bytes by name, over one file or the shards of a split (tests, benchmarks)."""
    out = {}
    for p in paths:
        with open(p, "rb") as fh:
            for t in read_header(p).tensors:
                fh.seek(t.offset)
                out[t.name] = fh.read(t.nbytes)
    return out


# --- re-splitting --------------------------------------------------------------------------------


def _kv_bytes(key: str, fmt: str, vtype: int, value) -> bytes:
    k = key.encode()
    return struct.pack("<Q", len(k)) + k + struct.pack("<I", vtype) + struct.pack("<" + fmt, value)


def _pad(n: int, align: int) -> int:
    return -(-n // align) * align


def plan_shards(sizes: list[int], max_shard_size: int) -> list[list[int]]:
    """Tensor indices per shard: a new shard when the next tensor would pass the limit (gguf-py's rule)."""
    shards: list[list[int]] = [[]]
    total = 0
    for i, n in enumerate(sizes):
        if shards[-1] and total + n > max_shard_size:
            shards.append([])
            total = 0
        shards[-1].append(i)
        total += n
    return shards


def resplit(src: Path, dest: Path, max_shard_size: int) -> list[Path]:
    """Rewrite one GGUF file as llama.cpp splits of at most ``max_shard_size`` tensor bytes each
    (key/values in the first split, ``split.*`` keys in all), copying bytes as they are."""
    h = read_header(src)
    groups = plan_shards([t.nbytes for t in h.tensors], max_shard_size)
    paths = split_names(Path(dest), len(groups))
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    common = {k: v for k, v in h.kv_raw.items() if k == "general.alignment"}
    first = {k: v for k, v in h.kv_raw.items() if k not in SPLIT_KEYS}
    with open(src, "rb") as fin:
        for i, (group, path) in enumerate(zip(groups, paths, strict=True)):
            kv = dict(first) if i == 0 else dict(common)
            if len(groups) > 1:
                kv["split.no"] = _kv_bytes("split.no", "H", 2, i)
                kv["split.count"] = _kv_bytes("split.count", "H", 2, len(groups))
                kv["split.tensors.count"] = _kv_bytes("split.tensors.count", "i", 5, len(h.tensors))
            with open(path, "wb") as out:
                out.write(struct.pack("<IIQQ", GGUF_MAGIC, 3, len(group), len(kv)))
                out.write(b"".join(kv.values()))
                offset = 0
                for ti in group:
                    t = h.tensors[ti]
                    name = t.name.encode()
                    out.write(struct.pack("<Q", len(name)) + name + struct.pack("<I", len(t.shape)))
                    out.write(struct.pack(f"<{len(t.shape)}Q", *reversed(t.shape)))
                    out.write(struct.pack("<IQ", _type_id(t.ggml_type), offset))
                    offset += _pad(t.nbytes, h.alignment)
                out.write(b"\0" * (_pad(out.tell(), h.alignment) - out.tell()))
                for ti in group:
                    t = h.tensors[ti]
                    for chunk in _file_range(fin, t.offset, t.nbytes):
                        out.write(chunk)
                    out.write(b"\0" * (_pad(t.nbytes, h.alignment) - t.nbytes))
                out.flush()
                os.fsync(out.fileno())
    return paths


def _type_id(name: str) -> int:
    import gguf

    return int(gguf.GGMLQuantizationType[name])


def _file_range(fh, offset: int, n: int) -> Iterable[bytes]:
    fh.seek(offset)
    while n > 0:
        block = fh.read(min(COPY_CHUNK, n))
        if not block:
            raise CheckpointError(f"{fh.name} is truncated", hint="delete it and rerun")
        n -= len(block)
        yield block
