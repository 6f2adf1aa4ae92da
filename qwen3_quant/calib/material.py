"""Reading a source's material: text, or rows (plain text, question/answer, or conversations).

Anything that cannot be used raises ``CalibrationError`` naming the source and the fix: a calibration
set never silently becomes something else.
"""

from __future__ import annotations

import glob
import gzip
import json
from pathlib import Path
from typing import Any

from ..errors import CalibrationError, Qwen3QuantError, require
from ..textdata import builtin_text, shared_data_dir, strip_gutenberg
from .mix import PACKAGED_DATA, Source


def resolve_files(pattern: str, source: str) -> list[Path]:
    if pattern.startswith("packaged:"):
        pattern = str(PACKAGED_DATA / pattern.removeprefix("packaged:"))
    elif pattern.startswith("shared:"):
        root = shared_data_dir(required=False)
        if root is None:
            raise CalibrationError(
                f"calibration source {source}: {pattern} is in the shared test-data folder, not found here",
                hint="set QWEN3_QUANT_DATA to shared/data, or use a mix that ships with the package "
                "(qwen3-quant calib list)",
            )
        pattern = str(root / pattern.removeprefix("shared:"))
    files = [Path(f) for f in sorted(glob.glob(str(Path(pattern).expanduser())))]
    if not files:
        raise CalibrationError(
            f"calibration source {source}: no file matches {pattern}", hint="check the path in the mix"
        )
    return files


def _open_text(f: Path):
    return gzip.open(f, "rt", encoding="utf-8-sig") if f.suffix == ".gz" else open(f, encoding="utf-8-sig")


def read_file_text(f: Path, source: str) -> str:
    try:
        with _open_text(f) as fh:
            return fh.read()
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise CalibrationError(
            f"calibration source {source}: cannot read {f} ({exc})", hint="give a readable UTF-8 text file"
        ) from exc


def read_rows(files: list[Path], source: str) -> list[dict[str, Any]]:
    rows = []
    for f in files:
        for i, line in enumerate(read_file_text(f, source).splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CalibrationError(
                    f"calibration source {source}: {f} line {i} is not JSON ({exc.msg})",
                    hint="one JSON object per line",
                ) from exc
            if not isinstance(row, dict):
                raise CalibrationError(
                    f"calibration source {source}: {f} line {i} is not a JSON object",
                    hint='rows like {"text": "..."} or {"messages": [{"role": "user", "content": "..."}]}',
                )
            rows.append(row)
    return rows


def check_messages(rows: list[dict], key: str, where: str) -> None:
    for i, row in enumerate(rows, 1):
        msgs = row.get(key)
        ok = isinstance(msgs, list) and msgs and all(isinstance(m, dict) and "role" in m for m in msgs)
        if not ok:
            raise CalibrationError(
                f"{where}: row {i} has no '{key}' list of {{role, content}} messages",
                hint='rows like {"messages": [{"role": "user", "content": "Hi"}, '
                '{"role": "assistant", "content": "Hello"}]}',
            )


def check_fields(src: Source, rows: list[dict]) -> None:
    """Rows must have what the source's fields name (checked on every row for messages, on the
    first row for formatted and text fields)."""
    f, where = src.fields, f"calibration source {src.name}"
    if src.kind == "generate":
        return  # prompts are checked when they are read; written rows are ours
    if "text" in f:
        if not isinstance(rows[0].get(f["text"]), str):
            raise CalibrationError(
                f"{where}: row 1 has no '{f['text']}' text (its fields: {', '.join(sorted(rows[0]))})",
                hint='set fields = {text = "<column>"} to the column that holds the text',
            )
    elif "user" in f and src.kind != "jsonl":
        try:
            f["user"].format(**rows[0]), f.get("assistant", "{answer}").format(**rows[0])
        except (KeyError, IndexError) as exc:
            raise CalibrationError(
                f"{where}: row 1 has no field {exc} (its fields: {', '.join(sorted(rows[0]))})",
                hint='name the row\'s columns in fields = {user = "{...}", assistant = "{...}"}',
            ) from exc
    elif src.kind in ("jsonl-chat", "hf-dataset"):
        check_messages(rows, f.get("messages", "messages"), where)


class Material:
    """A source's text (sampled at random offsets) or rows (sampled and packed)."""

    def __init__(
        self, src: Source, model_dir: Path | None = None, cache_dir: Path | None = None, seed: int = 0
    ):
        self.src = src
        self.text = ""
        self.rows: list[dict] = []
        self.note: dict[str, Any] = {}  # what reading it did (e.g. generated rows and seconds)
        if src.kind == "text":
            if src.path == "builtin:pydoc":
                self.text = builtin_text()
            else:
                docs = [read_file_text(f, src.name) for f in resolve_files(src.path, src.name)]
                self.text = "\n\n".join(strip_gutenberg(d) if src.gutenberg else d for d in docs)
        elif src.kind in ("jsonl", "jsonl-chat"):
            self.rows = read_rows(resolve_files(src.path, src.name), src.name)
        elif src.kind == "hf-dataset":
            self.rows = read_hub_rows(src)
        elif src.kind == "generate":
            from .generate import generated_rows

            if model_dir is None:
                raise CalibrationError(
                    f"calibration source {src.name} is written by the model, and no model was given",
                    hint="build the mix with a model folder",
                )
            self.rows, self.note = generated_rows(src, model_dir, cache_dir=cache_dir, seed=seed)
        if not (self.text.strip() or self.rows):
            raise CalibrationError(
                f"calibration source {src.name}: {src.describe() or src.kind} has no text",
                hint="give a file with text in it",
            )
        if self.rows:
            check_fields(src, self.rows)


def read_hub_rows(src: Source) -> list[dict]:
    """The first ``max_rows`` rows of a Hub dataset split, streamed (nothing else is downloaded)."""
    datasets = require("datasets", "datasets")
    try:
        ds = datasets.load_dataset(src.dataset, src.config or None, split=src.split, streaming=True)
        rows = [dict(r) for _, r in zip(range(src.max_rows), ds, strict=False)]
    except Qwen3QuantError:
        raise
    except Exception as exc:  # offline, unknown dataset, gated, no such split: all one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CalibrationError(
            f"calibration source {src.name}: Hub dataset {src.dataset} cannot be read "
            f"({type(exc).__name__}: {first[:200]})",
            hint="go online (HF_HUB_OFFLINE unset, network reachable), or use the packaged mix "
            "--calib default",
        ) from exc
    return rows
