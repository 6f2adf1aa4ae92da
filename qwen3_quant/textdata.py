"""Locating and reading text: the shared data folder, Gutenberg files, and the offline built-in text."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .errors import MissingFileError

log = logging.getLogger(__name__)

DATA_ENV = "QWEN3_QUANT_DATA"
_START_MARK = "*** START OF"
_END_MARK = "*** END OF"


def shared_data_dir(required: bool = True) -> Path | None:
    """The folder with the public data sets (wikitext-2, Gutenberg corpus, UDHR, GSM8K, HumanEval).

    Looked up in ``$QWEN3_QUANT_DATA``, then ``shared/data`` beside or above the project checkout.
    """
    candidates: list[Path] = []
    if os.environ.get(DATA_ENV):
        candidates.append(Path(os.environ[DATA_ENV]))
    here = Path(__file__).resolve().parent
    for parent in [here, *here.parents][:5]:
        candidates += [parent / "shared" / "data", parent.parent / "shared" / "data"]
    for c in candidates:
        if (c / "README.md").is_file() or (c / "corpus-en").is_dir():
            return c
    if required:
        raise MissingFileError(
            "the shared data folder (shared/data) was not found",
            hint=f"set {DATA_ENV}=/path/to/shared/data",
        )
    return None


def read_text(path: str | Path) -> str:
    """Read a UTF-8 text file with universal newlines (CRLF becomes LF) and without a BOM."""
    p = Path(path)
    if not p.is_file():
        raise MissingFileError(f"text file not found: {p}", hint="pass an existing UTF-8 text file")
    try:
        with open(p, encoding="utf-8-sig", newline=None) as fh:
            return fh.read()
    except UnicodeDecodeError as exc:
        raise MissingFileError(f"{p} is not UTF-8 text ({exc.reason})", hint="convert it to UTF-8") from exc


def strip_gutenberg(text: str) -> str:
    """Cut a Project Gutenberg file down to the book between its START and END markers."""
    start = text.find(_START_MARK)
    start = text.find("\n", start) + 1 if start >= 0 else 0
    end = text.find(_END_MARK, start)
    if end < 0:
        end = len(text)
    return text[start:end].strip() + "\n"


def gutenberg_books(data_dir: Path | None = None) -> dict[str, str]:
    """All Gutenberg books of the shared corpus, stripped of headers and footers, keyed by file stem."""
    d = (data_dir or shared_data_dir()) / "corpus-en" / "gutenberg"
    files = sorted(d.glob("*.txt"))
    if not files:
        raise MissingFileError(
            f"no Gutenberg books under {d}", hint=f"set {DATA_ENV} to the shared data folder"
        )
    return {f.stem: strip_gutenberg(read_text(f)) for f in files}


def builtin_text(max_chars: int | None = None) -> str:
    """Offline default evaluation text: the topic help that ships with Python (``pydoc_data.topics``)."""
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[k].strip() for k in sorted(topics))
    return text[:max_chars] if max_chars else text


def builtin_text_name() -> str:
    return "builtin:pydoc"


def load_eval_text(spec: str | Path | None) -> tuple[str, str]:
    """Resolve an evaluation text spec to ``(name, text)``.

    ``None`` or ``"builtin:pydoc"`` is Python's own topic help; ``"wikitext2"`` is the shared
    wikitext-2 raw test file when present; anything else is a path to a UTF-8 file.
    """
    if spec is None or str(spec) == builtin_text_name():
        return builtin_text_name(), builtin_text()
    if str(spec) in ("wikitext2", "wikitext-2"):
        d = shared_data_dir()
        return "wikitext-2-raw-test", read_text(d / "wikitext-2-raw" / "wiki.test.raw")
    p = Path(spec)
    return p.name, read_text(p)
