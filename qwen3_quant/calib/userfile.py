"""``--calib FILE``: a user's own ``.txt`` or ``.jsonl`` file as a one-source mix, with the same
sampling, chat rendering and recipe records as a named mix. Checked when it is named (before any
heavy work): unreadable, empty and wrongly shaped files fail in one line."""

from __future__ import annotations

from pathlib import Path

from ..errors import CalibrationError
from .material import check_messages, read_file_text, read_rows
from .mix import DEFAULT_SAMPLES, DEFAULT_SEQ_LEN, CalibMix, Source

_ROW_HINT = 'give rows like {"text": "..."} or {"messages": [{"role": "user", "content": "..."}, ...]}'


def user_file_mix(path: Path) -> CalibMix:
    if not path.is_file():
        raise CalibrationError(
            f"calibration file {path} not found", hint="give an existing .txt or .jsonl file"
        )
    name = path.name
    if ".jsonl" in path.suffixes:
        rows = read_rows([path], name)
        if not rows:
            raise CalibrationError(f"calibration file {path} has no rows", hint=_ROW_HINT)
        if all("messages" in r for r in rows):
            check_messages(rows, "messages", f"calibration file {path}")
            src = Source(name, "jsonl-chat", 1.0, str(path), thinking=True)
        elif all(isinstance(r.get("text"), str) for r in rows):
            src = Source(name, "jsonl", 1.0, str(path), fields={"text": "text"})
        else:
            bad = next(
                i for i, r in enumerate(rows, 1) if "messages" not in r and not isinstance(r.get("text"), str)
            )
            fields = ", ".join(sorted(rows[bad - 1])) or "none"
            raise CalibrationError(
                f"calibration file {path}: row {bad} has neither a 'text' string nor 'messages' "
                f"(its fields: {fields}), and every row needs the same one",
                hint=_ROW_HINT,
            )
    else:
        if not read_file_text(path, name).strip():
            raise CalibrationError(f"calibration file {path} is empty", hint="give a file with text in it")
        src = Source(name, "text", 1.0, str(path))
    return CalibMix(
        name=name,
        description=f"user file {path.name}",
        samples=DEFAULT_SAMPLES,
        seq_len=DEFAULT_SEQ_LEN,
        seed=0,
        sources=(src,),
        origin=str(path),
    )
