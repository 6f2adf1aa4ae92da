"""Writing GGUF files tensor by tensor (and in chunks), optionally as llama.cpp splits.

gguf-py's :class:`gguf.GGUFWriter` lays out the header, key/values and tensor infos (and splits them
into ``-0000i-of-0000n.gguf`` shards with the ``split.*`` keys llama.cpp reads); tensor data is then
streamed here in chunks, so no tensor has to be held in memory whole.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ...errors import CheckpointError

SPLIT_RE = re.compile(r"^(?P<stem>.+)-(?P<i>\d{5})-of-(?P<n>\d{5})\.gguf$")
COPY_CHUNK = 64 * 1024 * 1024


def shard_names(path: Path, n: int) -> list[Path]:
    """llama.cpp's split naming: ``X.gguf`` -> ``X-00001-of-0000n.gguf`` (one file keeps its name)."""
    if n <= 1:
        return [path]
    return [path.with_name(f"{path.stem}-{i + 1:05d}-of-{n:05d}.gguf") for i in range(n)]


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
        return shard_names(self.path, len(self.w.tensors))

    def begin(self) -> None:
        """Write header, key/values and tensor infos of every shard."""
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


def copy_fields(reader, w) -> None:
    """Copy every key/value of a GGUF file except the file's own bookkeeping and split keys."""
    import gguf

    sk = gguf.Keys.Split
    skip = {
        gguf.Keys.General.ARCHITECTURE,
        sk.LLM_KV_SPLIT_NO,
        sk.LLM_KV_SPLIT_COUNT,
        sk.LLM_KV_SPLIT_TENSORS_COUNT,
    }
    for f in reader.fields.values():
        if f.name.startswith("GGUF.") or f.name in skip:
            continue
        vtype = f.types[0]
        sub = f.types[-1] if vtype == gguf.GGUFValueType.ARRAY and len(f.types) > 1 else None
        w.add_key_value(f.name, f.contents(), vtype, sub_type=sub)


def arch_of(reader) -> str:
    import gguf

    return reader.fields[gguf.Keys.General.ARCHITECTURE].contents()


def resplit(src: Path, dest: Path, max_shard_size: int) -> list[Path]:
    """Rewrite one GGUF file as llama.cpp splits of at most ``max_shard_size`` tensor bytes each."""
    import gguf

    reader = gguf.GGUFReader(src)
    s = GGUFStream(dest, arch_of(reader), max_shard_size=max_shard_size)
    copy_fields(reader, s.w)
    # only offsets are kept: data is read with plain file reads, never through the memory map
    tensors = [(int(t.data_offset), int(t.n_bytes)) for t in reader.tensors]
    for t in reader.tensors:
        s.declare(t.name, tuple(int(d) for d in reversed(t.shape)), t.tensor_type.name, int(t.n_bytes))
    del reader
    try:
        s.begin()
        with open(src, "rb") as fh:
            for offset, nbytes in tensors:
                for chunk in _file_range(fh, offset, nbytes):
                    s.write(chunk)
        return s.finish()
    except BaseException:
        s.abort()
        raise


def _file_range(fh, offset: int, n: int) -> Iterable[bytes]:
    fh.seek(offset)
    while n > 0:
        block = fh.read(min(COPY_CHUNK, n))
        if not block:
            raise CheckpointError(f"{fh.name} is truncated", hint="delete it and rerun")
        n -= len(block)
        yield block


def split_set(first: Path) -> list[Path]:
    """All files of a (possibly split) GGUF model given its first file."""
    m = SPLIT_RE.match(first.name)
    if not m:
        return [first]
    n = int(m.group("n"))
    return shard_names(first.with_name(m.group("stem") + ".gguf"), n)
