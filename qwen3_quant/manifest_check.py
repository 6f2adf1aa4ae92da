"""Structural checks of what qwen3-quant reads back from disk: artifact manifests and build state
files. A wrong type, a negative or absurd size, a malformed sha256 or a path leading out of the
folder is refused in one line naming the entry, before any of it is used."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import ManifestError
from .io import safe_name, safe_relpath

MAX_FILE_BYTES = 1 << 50  # 1 PiB: far above any checkpoint, far below what would overflow sums
_SHA256 = re.compile(r"[0-9a-f]{64}")
_HINT = "the manifest was edited or damaged; restore it or quantise again"
_STATE_HINT = "the state file was edited or damaged; delete the cell's entry (or the file) and rerun"


def read_checked(f: Path, check: Callable[[Any, str], dict[str, Any]], *, hint: str) -> dict[str, Any]:
    """The JSON file ``f`` passed through ``check`` (check_manifest, check_state); JSON that does not
    parse is one line with ``hint``."""
    try:
        d = json.loads(Path(f).read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{f} is not valid JSON ({exc})", hint=hint) from exc
    return check(d, str(f))


def _fail(where: str, what: str, hint: str = _HINT) -> ManifestError:
    return ManifestError(f"{where}: {what}", hint=hint)


def _dict(where: str, field: str, v: Any, *, optional: bool = False, hint: str = _HINT) -> dict:
    if v is None and optional:
        return {}
    if not isinstance(v, dict):
        raise _fail(where, f"{field} is a {type(v).__name__}, not a table", hint)
    return v


def _str(where: str, field: str, v: Any, *, optional: bool = False, hint: str = _HINT) -> None:
    if v is None and optional:
        return
    if not isinstance(v, str):
        raise _fail(where, f"{field} is a {type(v).__name__}, not a string", hint)


def check_size(where: str, field: str, v: Any, hint: str = _HINT) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise _fail(where, f"{field} is {v!r}, not a size in bytes", hint)
    if not 0 <= v <= MAX_FILE_BYTES:
        raise _fail(where, f"{field} is {v}, not a size in bytes (0 to 1 PiB)", hint)
    return v


def check_sha256(where: str, field: str, v: Any, hint: str = _HINT) -> str:
    if not isinstance(v, str) or not _SHA256.fullmatch(v):
        raise _fail(where, f"{field} is {str(v)[:80]!r}, not a sha256 (64 lowercase hex digits)", hint)
    return v


def check_manifest(d: Any, where: str = "manifest") -> dict[str, Any]:
    """``d`` if it is shaped as a manifest qwen3-quant writes; :class:`ManifestError` (or
    :class:`UnsafePathError` for a file name leading out of the folder) otherwise."""
    d = _dict(where, "the manifest", d)
    _str(where, "name", d.get("name"))
    safe_name(d["name"], what=f"{where}: name")
    _str(where, "format", d.get("format"))
    schema = d.get("schema", 1)
    if isinstance(schema, bool) or not isinstance(schema, int):
        raise _fail(where, f"schema is {schema!r}, not a number")
    _dict(where, "source", d.get("source"), optional=True)
    for name, rec in _dict(where, "files", d.get("files"), optional=True).items():
        safe_relpath(name, what=f"{where}: files entry")
        rec = _dict(where, f"files[{name!r}]", rec)
        check_size(where, f"files[{name!r}].size", rec.get("size"))
        check_sha256(where, f"files[{name!r}].sha256", rec.get("sha256"))
    for vname, v in _dict(where, "variants", d.get("variants"), optional=True).items():
        safe_name(vname, what=f"{where}: variant name")
        v = _dict(where, f"variants[{vname!r}]", v)
        files = v.get("files")
        if not isinstance(files, list):
            raise _fail(where, f"variants[{vname!r}].files is a {type(files).__name__}, not a list")
        for f in files:
            safe_relpath(f, what=f"{where}: variants[{vname!r}].files entry")
        for key in ("recipe", "key", "libraries", "provenance", "details"):
            _dict(where, f"variants[{vname!r}].{key}", v.get(key), optional=True)
        key = v.get("key") or {}
        if "settings" in key:
            _str(where, f"variants[{vname!r}].key.format", key.get("format"))
            _str(where, f"variants[{vname!r}].key.variant", key.get("variant"))
            _dict(where, f"variants[{vname!r}].key.settings", key.get("settings"))
        prov = v.get("provenance") or {}
        for k in ("kind", "command", "build_file", "cell"):
            _str(where, f"variants[{vname!r}].provenance.{k}", prov.get(k), optional=True)
        _dict(where, f"variants[{vname!r}].provenance.quantised_on", prov.get("quantised_on"), optional=True)
        val = _dict(where, f"variants[{vname!r}].validation", v.get("validation"), optional=True)
        _dict(where, f"variants[{vname!r}].validation.gates", val.get("gates"), optional=True)
        _dict(where, f"variants[{vname!r}].validation.result", val.get("result"), optional=True)
        for f, sha in _dict(
            where, f"variants[{vname!r}].validation.files_sha256", val.get("files_sha256"), optional=True
        ).items():
            safe_relpath(f, what=f"{where}: variants[{vname!r}].validation.files_sha256 entry")
            check_sha256(where, f"variants[{vname!r}].validation.files_sha256[{f!r}]", sha)
    return d


def check_state(d: Any, where: str = "state file") -> dict[str, Any]:
    """``d`` if it is shaped as a build state file (``{"cells": {id: entry}}``)."""
    d = _dict(where, "the state", d, hint=_STATE_HINT)
    for cid, e in _dict(where, "cells", d.get("cells"), hint=_STATE_HINT).items():
        e = _dict(where, f"cells[{cid!r}]", e, hint=_STATE_HINT)
        for key in ("status", "inputs", "artifact_dir", "error", "updated"):
            _str(where, f"cells[{cid!r}].{key}", e.get(key), optional=True, hint=_STATE_HINT)
        variants = e.get("variants")
        if variants is not None and (
            not isinstance(variants, list) or not all(isinstance(x, str) for x in variants)
        ):
            raise _fail(where, f"cells[{cid!r}].variants is not a list of names", _STATE_HINT)
        results = e.get("results")
        if results is not None and (
            not isinstance(results, list) or not all(isinstance(x, dict) for x in results)
        ):
            raise _fail(where, f"cells[{cid!r}].results is not a list of tables", _STATE_HINT)
    return d
