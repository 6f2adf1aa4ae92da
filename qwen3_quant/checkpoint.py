"""Checking a Qwen3 / Qwen3-MoE checkpoint folder before any heavy work.

Reads config.json and the safetensors headers only (no tensor data), so a 400 GB checkpoint is
checked in well under a second. Every problem raises one :class:`CheckpointError` naming the file
and the fix.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

from .catalog.architecture import MODEL_TYPES, ArchShape, expected_tensors, fused_expert_names
from .errors import CheckpointError, MissingFileError

_MAX_HEADER = 128 * 1024 * 1024
_DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "U32": 4,
    "U16": 2,
}
FLOAT_DTYPES = ("BF16", "F16", "F32")
TOKENIZER_SETS = (("tokenizer.json",), ("vocab.json", "merges.txt"))


@dataclass(frozen=True)
class TensorMeta:
    shape: tuple[int, ...]
    dtype: str
    shard: str


@dataclass
class CheckpointInfo:
    path: Path
    config: dict
    arch: ArchShape
    shards: list[Path]
    tensors: dict[str, TensorMeta]
    tokenizer_files: list[str]
    expert_layout: str = "none"  # none | per-expert | fused
    dtypes: set[str] = field(default_factory=set)

    @property
    def total_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.shards)


def read_safetensors_header(path: Path) -> tuple[dict, int]:
    """Return ``(header, data_start)``; raises CheckpointError for a truncated or corrupt file."""
    size = path.stat().st_size
    fix = "re-download or re-save this file"
    if size < 8:
        raise CheckpointError(f"{path.name} is truncated ({size} bytes)", hint=fix)
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        if n <= 1 or n > _MAX_HEADER or 8 + n > size:
            raise CheckpointError(f"{path.name} has a corrupt or truncated safetensors header", hint=fix)
        raw = fh.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path.name}: safetensors header is not valid JSON ({exc})", hint=fix) from exc
    end = 0
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        try:
            lo, hi = meta["data_offsets"]
            nbytes = _DTYPE_BYTES[meta["dtype"]]
            numel = 1
            for d in meta["shape"]:
                numel *= int(d)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path.name}: bad header entry for tensor {name}", hint=fix) from exc
        if hi - lo != numel * nbytes:
            raise CheckpointError(
                f"{path.name}: tensor {name} has {hi - lo} bytes, its shape needs {numel * nbytes}", hint=fix
            )
        end = max(end, hi)
    if size < 8 + n + end:
        raise CheckpointError(
            f"{path.name} is truncated: {size:,} bytes on disk, its header needs {8 + n + end:,}", hint=fix
        )
    return header, 8 + n


def _load_config(path: Path) -> dict:
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise CheckpointError(
            f"{path} has no config.json", hint="pass the folder of a Hugging Face checkpoint"
        )
    try:
        return json.loads(cfg_file.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(
            f"{cfg_file} is not valid JSON ({exc.msg} at line {exc.lineno})",
            hint="repair or re-download config.json",
        ) from exc


def _shard_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as exc:
            raise CheckpointError(
                f"{index.name} is not a valid safetensors index", hint="re-download it"
            ) from exc
        names = sorted(set(weight_map.values()))
        missing = [n for n in names if not (path / n).is_file()]
        if missing:
            raise CheckpointError(
                f"{index.name} names {len(missing)} missing shard(s), first {missing[0]}",
                hint="download the missing shards",
            )
        return [path / n for n in names]
    shards = sorted(path.glob("*.safetensors"))
    if shards:
        return shards
    if list(path.glob("pytorch_model*.bin")) or list(path.glob("*.pt")):
        raise CheckpointError(
            f"{path} holds PyTorch .bin weights only",
            hint="save the model with safe_serialization=True to get .safetensors",
        )
    raise CheckpointError(f"{path} has no .safetensors weights", hint="pass a folder with model*.safetensors")


def inspect_checkpoint(path: str | Path, *, check_tensors: bool = True) -> CheckpointInfo:
    """Validate an unquantised Qwen3 / Qwen3-MoE checkpoint folder (config, safetensors headers,
    tokenizer files) and describe it."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise MissingFileError(f"model folder not found: {p}", hint="pass an existing checkpoint folder")
    cfg = _load_config(p)
    mt = cfg.get("model_type") or (cfg.get("text_config") or {}).get("model_type")
    if mt not in MODEL_TYPES:
        raise CheckpointError(
            f"{p / 'config.json'}: model_type '{mt}' is not Qwen3",
            hint="qwen3-quant takes model_type qwen3 or qwen3_moe checkpoints",
        )
    if cfg.get("quantization_config"):
        method = cfg["quantization_config"].get("quant_method", "?")
        raise CheckpointError(
            f"{p} is already quantised ({method})", hint="start from the unquantised checkpoint"
        )
    try:
        arch = ArchShape.from_config(cfg)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{p / 'config.json'} lacks or mangles {exc}", hint="repair config.json"
        ) from exc
    shards = _shard_files(p)
    tensors: dict[str, TensorMeta] = {}
    for s in shards:
        header, _ = read_safetensors_header(s)
        for name, meta in header.items():
            if name != "__metadata__":
                tensors[name] = TensorMeta(tuple(int(d) for d in meta["shape"]), meta["dtype"], s.name)
    tok = [f for group in TOKENIZER_SETS for f in group if (p / f).is_file()]
    if not any(all((p / f).is_file() for f in group) for group in TOKENIZER_SETS):
        raise CheckpointError(
            f"{p} has no tokenizer (tokenizer.json, or vocab.json and merges.txt)",
            hint="copy the tokenizer files of the source model into the folder",
        )
    check_tokenizer(p)
    info = CheckpointInfo(p, cfg, arch, shards, tensors, tok, dtypes={t.dtype for t in tensors.values()})
    if check_tensors:
        _check_tensors(info)
    return info


def _read_json(path: Path, fix: str) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"{path} is not UTF-8 text", hint=fix) from exc
    except json.JSONDecodeError as exc:
        raise CheckpointError(
            f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})", hint=fix
        ) from exc


def check_tokenizer(folder: Path) -> None:
    """Parse the tokenizer files a runtime will load: ``tokenizer.json`` (a BPE model with a vocab
    and merges, as Qwen3's is), else ``vocab.json`` + ``merges.txt``; ``tokenizer_config.json``
    when present. A truncated or hand-mangled file raises one :class:`CheckpointError`."""
    fix = "copy the tokenizer files of the source model into the folder again"
    tj = folder / "tokenizer.json"
    if tj.is_file():
        doc = _read_json(tj, fix)
        model = doc.get("model") if isinstance(doc, dict) else None
        if not isinstance(model, dict):
            raise CheckpointError(f"{tj} has no tokenizer model", hint=fix)
        if model.get("type", "BPE") != "BPE":
            raise CheckpointError(
                f"{tj} holds a {model.get('type')} tokenizer, not BPE as Qwen3's is", hint=fix
            )
        vocab, merges = model.get("vocab"), model.get("merges")
        if not isinstance(vocab, dict) or not vocab:
            raise CheckpointError(f"{tj}: the BPE model has no vocab", hint=fix)
        if not isinstance(merges, list) or not merges:
            raise CheckpointError(f"{tj}: the BPE model has no merges", hint=fix)
    elif (folder / "vocab.json").is_file():
        vocab = _read_json(folder / "vocab.json", fix)
        if not isinstance(vocab, dict) or not vocab:
            raise CheckpointError(f"{folder / 'vocab.json'} is not a token -> id map", hint=fix)
    else:
        raise CheckpointError(
            f"{folder} has no tokenizer (tokenizer.json, or vocab.json and merges.txt)", hint=fix
        )
    cfg = folder / "tokenizer_config.json"
    if cfg.is_file() and not isinstance(_read_json(cfg, fix), dict):
        raise CheckpointError(f"{cfg} is not a JSON object", hint=fix)


def _check_tensors(info: CheckpointInfo) -> None:
    a = info.arch
    want = expected_tensors(a)
    have = info.tensors
    if (
        a.is_moe
        and not any(".mlp.experts.0." in n for n in have)
        and any(".mlp.experts.gate_up_proj" in n for n in have)
    ):
        info.expert_layout = "fused"
        want = {n: s for n, s in want.items() if ".mlp.experts." not in n} | fused_expert_names(a)
    elif a.is_moe:
        info.expert_layout = "per-expert"
    optional = {"lm_head.weight"} if a.tie_word_embeddings else set()
    missing = [n for n in want if n not in have and n not in optional]
    if missing:
        raise CheckpointError(
            f"{info.path.name}: {len(missing)} weight(s) that config.json implies are missing, first {missing[0]}",
            hint="the weights do not belong to this config.json, or shards are missing",
        )
    unexpected = [n for n in have if n not in want and not n.endswith("rotary_emb.inv_freq")]
    if unexpected:
        raise CheckpointError(
            f"{info.path.name}: {len(unexpected)} weight(s) that config.json does not describe, first {unexpected[0]}",
            hint="the weights do not belong to this config.json",
        )
    for n, shape in want.items():
        if n in have and have[n].shape != shape:
            raise CheckpointError(
                f"{have[n].shard}: {n} has shape {list(have[n].shape)}, config.json implies {list(shape)}",
                hint="the weights do not belong to this config.json",
            )
    bad = sorted({t.dtype for t in have.values()} - set(FLOAT_DTYPES))
    if bad:
        raise CheckpointError(
            f"{info.path.name}: weights of dtype {bad[0]}",
            hint="qwen3-quant starts from bf16, fp16 or fp32 weights",
        )


def fingerprint(path: str | Path) -> str:
    """A cheap identity of a checkpoint or artifact: config, safetensors headers and file sizes."""
    p = Path(path)
    h = hashlib.sha256()
    files = (
        [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
    )
    for f in files:
        rel = f.name if p.is_file() else str(f.relative_to(p))
        if rel in ("qwen3_quant.json", "README.md") or rel.startswith("eval/"):
            continue
        h.update(rel.encode())
        h.update(str(f.stat().st_size).encode())
        if f.suffix in (".json", ".txt", ".jinja") and f.stat().st_size < 32 * 1024 * 1024:
            h.update(f.read_bytes())
        elif f.suffix == ".safetensors":
            with open(f, "rb") as fh:
                (n,) = struct.unpack("<Q", fh.read(8))
                h.update(fh.read(min(n, _MAX_HEADER)))
        else:
            with open(f, "rb") as fh:  # head and tail of large binaries
                h.update(fh.read(1 << 20))
                fh.seek(max(0, f.stat().st_size - (1 << 20)))
                h.update(fh.read())
    return h.hexdigest()[:16]
