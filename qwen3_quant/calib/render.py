"""One row -> the text the model sees: plain text, joined fields, or a conversation rendered
through the model's own chat template (thinking on or off, tools and tool calls included)."""

from __future__ import annotations

import re
from typing import Any

from .mix import Source


def split_reasoning(answer: str) -> tuple[str, str]:
    """GSM8K style: worked reasoning, then ``#### final``."""
    if "####" in answer:
        reasoning, final = answer.rsplit("####", 1)
        return re.sub(r"<<[^>]*>>", "", reasoning).strip(), final.strip()
    return "", answer.strip()


def render_row(src: Source, row: dict[str, Any], tok) -> str:
    f = src.fields
    if "text" in f:  # rows of plain text (a jsonl file or a Hub text dataset)
        return str(row.get(f["text"], ""))
    if src.kind == "jsonl":
        keys = f.get("join", "").split(",") if f.get("join") else list(row)
        return "".join(str(row.get(k.strip(), "")) for k in keys)
    if "user" in f and src.kind != "generate":
        return render_messages(src, qa_messages(src, row), None, tok)
    key = f.get("messages", "messages")
    return render_messages(src, list(row[key]), row.get(f.get("tools", "tools")) or None, tok)


def qa_messages(src: Source, row: dict[str, Any]) -> list[dict[str, Any]]:
    """A question/answer row as a conversation; a ``#### final`` answer's working is the reasoning."""
    user = src.fields["user"].format(**row)
    reasoning, final = split_reasoning(src.fields.get("assistant", "{answer}").format(**row))
    if not reasoning:
        return [{"role": "user", "content": user}, {"role": "assistant", "content": final}]
    return [
        {"role": "user", "content": user},
        {"role": "assistant", "content": f"The answer is {final}.", "reasoning_content": reasoning},
    ]


def _message(src: Source, m: dict[str, Any], inline: bool) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": str(m.get("role", "user")), "content": str(m.get("content") or "")}
    reasoning = str(m.get("reasoning_content") or "")
    if reasoning and src.thinking:
        msg["reasoning_content"] = reasoning
    elif reasoning and inline:  # thinking off: the working stays, as part of the answer
        msg["content"] = f"{reasoning}\n\n{msg['content']}".strip()
    if m.get("tool_calls"):
        msg["tool_calls"] = m["tool_calls"]
    return msg


def render_messages(src: Source, raw: list[dict[str, Any]], tools: list | None, tok) -> str:
    """With thinking off, reasoning is dropped (or kept in the answer with ``inline_reasoning``, as
    question/answer rows always do) and the template renders the non-thinking form."""
    inline = src.inline_reasoning or ("user" in src.fields and src.kind != "generate")
    messages = [{"role": "system", "content": src.system}] if src.system else []
    messages += [_message(src, m, inline) for m in raw]
    if getattr(tok, "chat_template", None):
        kw: dict[str, Any] = {"tools": tools} if tools else {}
        return tok.apply_chat_template(messages, tokenize=False, enable_thinking=bool(src.thinking), **kw)
    return "\n".join(m["content"] for m in messages) + "\n"
