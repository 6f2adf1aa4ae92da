"""The files the Hub's Ollama integration reads beside a GGUF repo's files (``ollama run
hf.co/ORG/REPO:TYPE``), for what the GGUF itself cannot say.

- ``params``: JSON of Ollama parameters: the model's recommended sampling from its own
  ``generation_config.json`` (Qwen3's: temperature 0.6, top-p 0.95, top-k 20, its thinking-mode
  values) and the stop tokens from its own files (the end-of-sequence ids of
  ``generation_config.json`` and the tokenizer's ``eos_token``, as text; the chat template's
  turn-start token).
- ``template``: an Ollama (Go) template, written only when the chat template is not Qwen3's
  ChatML template with its ``enable_thinking`` switch, which the Hub maps to Ollama's own Qwen3
  template; a ChatML template without the switch gets a plain ChatML one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PARAMS, TEMPLATE = "params", "template"
TURN_START, TURN_END = "<|im_start|>", "<|im_end|>"
# generation_config.json key -> Ollama parameter
SAMPLING = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "repetition_penalty": "repeat_penalty",
}
CHATML_TEMPLATE = (
    "{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
    "<|im_start|>assistant\n"
)


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def token_texts(checkpoint: Path) -> dict[int, str]:
    """Special tokens by id, from tokenizer.json and tokenizer_config.json."""
    out: dict[int, str] = {}
    for t in _json(checkpoint / "tokenizer.json").get("added_tokens") or []:
        out[int(t["id"])] = t["content"]
    for i, t in (_json(checkpoint / "tokenizer_config.json").get("added_tokens_decoder") or {}).items():
        out.setdefault(int(i), t["content"] if isinstance(t, dict) else str(t))
    return out


def chat_template(checkpoint: Path) -> str:
    jinja = checkpoint / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    tpl = _json(checkpoint / "tokenizer_config.json").get("chat_template")
    return tpl if isinstance(tpl, str) else ""


def ollama_params(checkpoint: Path) -> dict[str, Any]:
    """Ollama parameters from the checkpoint's own files (empty when it has none to give)."""
    checkpoint = Path(checkpoint)
    gen = _json(checkpoint / "generation_config.json")
    params: dict[str, Any] = {SAMPLING[k]: gen[k] for k in SAMPLING if gen.get(k) is not None}
    texts = token_texts(checkpoint)
    eos = gen.get("eos_token_id")
    eos = (
        eos
        if isinstance(eos, list)
        else [eos]
        if eos is not None
        else [_json(checkpoint / "config.json").get("eos_token_id")]
    )
    stop = [texts[i] for i in eos if isinstance(i, int) and i in texts]
    tok_eos = _json(checkpoint / "tokenizer_config.json").get("eos_token")
    if isinstance(tok_eos, dict):
        tok_eos = tok_eos.get("content")
    if isinstance(tok_eos, str) and tok_eos:
        stop.append(tok_eos)
    if TURN_START in chat_template(checkpoint) and TURN_START in texts.values():
        stop.append(TURN_START)  # a new turn means the answer is over
    if stop:
        params["stop"] = list(dict.fromkeys(stop))
    return params


def ollama_template(checkpoint: Path) -> str | None:
    """An Ollama template when the Hub cannot map the model's chat template to one, else ``None``."""
    tpl = chat_template(Path(checkpoint))
    if TURN_START in tpl and TURN_END in tpl and "enable_thinking" in tpl:
        return None  # Qwen3's template: the Hub gives Ollama's qwen3 template
    if TURN_START in tpl and TURN_END in tpl:
        return CHATML_TEMPLATE
    return None


def ollama_files(checkpoint: Path) -> dict[str, bytes]:
    """``params`` (and ``template`` when needed) for a GGUF repo made from ``checkpoint``."""
    out: dict[str, bytes] = {}
    params = ollama_params(checkpoint)
    if params:
        out[PARAMS] = (json.dumps(params, indent=2) + "\n").encode()
    template = ollama_template(checkpoint)
    if template:
        out[TEMPLATE] = template.encode()
    return out
