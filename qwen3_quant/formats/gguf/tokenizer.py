"""The tokenizer as GGUF metadata: byte-level BPE tokens, types, merges, special ids, chat template.

Read straight from ``tokenizer.json`` (or ``vocab.json`` + ``merges.txt``), without transformers,
and laid out as llama.cpp's own converter does for Qwen: model ``gpt2``, pre-tokenizer ``qwen2``,
added tokens CONTROL when special (or shaped like ``<|...|>``) and USER_DEFINED otherwise, and the
vocabulary padded with ``[PADn]`` UNUSED entries up to the embedding rows.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from ...errors import CheckpointError

log = logging.getLogger(__name__)

# gguf.TokenType values
NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5
# the split pattern of Qwen2/Qwen3's tokenizer.json, which llama.cpp implements as pre-tokenizer "qwen2"
QWEN2_PATTERN = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"


@dataclass
class Vocab:
    tokens: list[str]
    types: list[int]
    merges: list[str]
    n_real: int  # tokens the tokenizer defines; the rest pads up to the embedding rows
    bos_id: int | None
    eos_id: int | None
    pad_id: int | None
    chat_template: str | None
    pre: str = "qwen2"


def _load_json(p: Path) -> dict:
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"{p} is not readable JSON ({exc})", hint="re-download the tokenizer files"
        ) from exc


def _looks_special(text: str) -> bool:
    return text.startswith("<|") and text.endswith("|>")


def _split_patterns(node) -> list[str]:
    if isinstance(node, list):
        return [p for n in node for p in _split_patterns(n)]
    if not isinstance(node, dict):
        return []
    found = (
        [node["pattern"]["Regex"]]
        if isinstance(node.get("pattern"), dict) and "Regex" in node["pattern"]
        else []
    )
    return found + [p for v in node.values() if isinstance(v, (dict, list)) for p in _split_patterns(v)]


def _from_tokenizer_json(p: Path) -> tuple[dict[str, int], list[str], list[dict]]:
    tj = _load_json(p)
    model = tj.get("model") or {}
    if model.get("type") != "BPE":
        raise CheckpointError(
            f"{p.name}: tokenizer model is {model.get('type')}, not BPE",
            hint="Qwen3 uses a byte-level BPE tokenizer; use the tokenizer files of a Qwen3 model",
        )
    if "ByteLevel" not in json.dumps(tj.get("pre_tokenizer")):
        raise CheckpointError(
            f"{p.name}: the BPE tokenizer is not byte-level", hint="use the tokenizer files of a Qwen3 model"
        )
    if QWEN2_PATTERN not in _split_patterns(tj.get("pre_tokenizer")):
        log.warning(
            "%s: the pre-tokenizer split pattern is not Qwen2's; llama.cpp will split text the qwen2 way", p
        )
    merges = []
    for m in model.get("merges") or []:
        parts = m if isinstance(m, list) else m.split(" ")
        if len(parts) != 2 or any(" " in x for x in parts):
            raise CheckpointError(
                f"{p.name}: unexpected BPE merge {m!r}", hint="use a byte-level BPE tokenizer"
            )
        merges.append(f"{parts[0]} {parts[1]}")
    return dict(model.get("vocab") or {}), merges, list(tj.get("added_tokens") or [])


def _from_vocab_files(folder: Path, tok_cfg: dict) -> tuple[dict[str, int], list[str], list[dict]]:
    vocab = _load_json(folder / "vocab.json")
    lines = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
    merges = [ln for ln in lines if ln and not ln.startswith("#version")]
    added = [
        {"id": int(i), "content": d["content"], "special": bool(d.get("special"))}
        for i, d in (tok_cfg.get("added_tokens_decoder") or {}).items()
    ]
    return vocab, merges, added


def _token_id(value, ids: dict[str, int]) -> int | None:
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, dict):
        value = value.get("content")
    if isinstance(value, str):
        return ids.get(value)
    return int(value) if value is not None else None


def load_vocab(folder: Path, n_rows: int) -> Vocab:
    """Read the tokenizer of a checkpoint folder as llama.cpp wants it, padded to ``n_rows`` tokens."""
    folder = Path(folder)
    cfg_file = folder / "tokenizer_config.json"
    tok_cfg = _load_json(cfg_file) if cfg_file.is_file() else {}
    if (folder / "tokenizer.json").is_file():
        vocab, merges, added = _from_tokenizer_json(folder / "tokenizer.json")
    elif (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        vocab, merges, added = _from_vocab_files(folder, tok_cfg)
    else:
        raise CheckpointError(
            f"{folder} has no tokenizer (tokenizer.json, or vocab.json and merges.txt)",
            hint="copy the tokenizer files of the source model into the folder",
        )
    ids = dict(vocab)
    special: dict[int, bool] = {}
    for t in added:
        ids[t["content"]] = int(t["id"])
        special[int(t["id"])] = bool(t.get("special"))
    by_id = {i: tok for tok, i in ids.items()}
    n_real = max(by_id) + 1 if by_id else 0
    if n_real > n_rows:
        raise CheckpointError(
            f"{folder.name}: the tokenizer has {n_real} tokens, the embedding only {n_rows} rows",
            hint="the tokenizer does not belong to this model",
        )
    tokens, types = [], []
    for i in range(n_rows):
        tok = by_id.get(i)
        if tok is None:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
        elif i in special:
            tokens.append(tok)
            types.append(CONTROL if special[i] or _looks_special(tok) else USER_DEFINED)
        else:
            tokens.append(tok)
            types.append(NORMAL)
    gen_file = folder / "generation_config.json"
    gen = _load_json(gen_file) if gen_file.is_file() else {}
    model_cfg = _load_json(folder / "config.json") if (folder / "config.json").is_file() else {}

    def pick(key: str) -> int | None:
        for src in (gen, model_cfg):
            if src.get(f"{key}_token_id") is not None:
                return _token_id(src[f"{key}_token_id"], ids)
        return _token_id(tok_cfg.get(f"{key}_token"), ids)

    template = tok_cfg.get("chat_template")
    jinja = folder / "chat_template.jinja"
    if template is None and jinja.is_file():
        template = jinja.read_text(encoding="utf-8")
    if isinstance(template, list):  # named templates: keep the default one
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    return Vocab(tokens, types, merges, n_real, pick("bos"), pick("eos"), pick("pad"), template)


def add_tokenizer_metadata(w, vocab: Vocab) -> None:
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(vocab.pre)
    w.add_token_list(vocab.tokens)
    w.add_token_types(vocab.types)
    w.add_token_merges(vocab.merges)
    for tid, add in ((vocab.bos_id, w.add_bos_token_id), (vocab.eos_id, w.add_eos_token_id)):
        if tid is not None:
            add(tid)
    if vocab.pad_id is not None:
        w.add_pad_token_id(vocab.pad_id)
    w.add_add_bos_token(False)
    if vocab.chat_template:
        w.add_chat_template(vocab.chat_template)
