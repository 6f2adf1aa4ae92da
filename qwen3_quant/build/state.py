"""The build's state: one entry per cell, written atomically after each cell, safe across processes."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from ..artifact import Manifest, tool_version, verify_files
from ..io import atomic_write_json, file_lock
from .spec import BuildSpec, Cell

STATE_FILE = "state.json"
DONE = ("passed", "failed")  # the cell ran to the end; gates decided
# statuses: passed | failed (gates) | error (crashed) | skipped (machine cannot run it) | running


def _locked(state_dir: Path):
    return file_lock(Path(state_dir) / ".state.lock")


def load_state(state_dir: Path) -> dict[str, Any]:
    """The state file in ``state_dir`` (empty when there is none), checked for shape."""
    from ..manifest_check import check_state, read_checked

    f = Path(state_dir) / STATE_FILE
    if not f.is_file():
        return {"cells": {}}
    return read_checked(f, check_state, hint="delete it to rebuild the state, or restore it")


def artifact_folder(spec: BuildSpec, entry: dict[str, Any]) -> Path | None:
    """The artifact folder a state entry names, which must be a folder directly under the build's
    ``artifacts/`` (:class:`UnsafePathError` otherwise); ``None`` when the entry names none."""
    from ..io import path_inside, safe_name

    ad = entry.get("artifact_dir")
    if not ad:
        return None
    name = safe_name(Path(ad).name, what=f"{spec.state_dir / STATE_FILE}: artifact_dir")
    p = path_inside(spec.artifacts_dir, name, what=f"{spec.state_dir / STATE_FILE}: artifact_dir")
    if Path(ad).resolve() != p.resolve():
        from ..errors import UnsafePathError

        raise UnsafePathError(
            f"{spec.state_dir / STATE_FILE}: refusing the path {ad!r}: not a folder of {spec.artifacts_dir}",
            hint="the state file was edited or made for another --out; delete the cell's entry and rerun",
        )
    return p


def update_cell(state_dir: Path, cell_id: str, entry: dict[str, Any]) -> None:
    with _locked(state_dir):
        st = load_state(state_dir)
        st["cells"][cell_id] = {**entry, "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        atomic_write_json(state_dir / STATE_FILE, st)


def model_identity(model: str) -> str:
    """What identifies the source model's content: a local folder's fingerprint, or spec@revision."""
    from ..checkpoint import fingerprint
    from ..errors import Qwen3QuantError
    from ..sources import locate_model

    try:
        ref = locate_model(model)
    except Qwen3QuantError:  # reported when the cell runs
        return f"unknown:{model}"
    return f"local:{fingerprint(ref.path)}" if ref.path is not None else f"hub:{model}"


def inputs_hash(spec: BuildSpec, cell: Cell) -> str:
    from ..calib import load_mix

    calib_id = None
    opts = cell.option_dict()
    if "calib" in opts:
        mix = load_mix(opts["calib"])
        calib_id = hashlib.sha256(Path(mix.origin).read_bytes()).hexdigest()[:16] if mix.origin else mix.name
    body = {
        "cell": cell.id,
        "options": opts,
        "model": model_identity(cell.model),
        "calib": calib_id,
        "eval": spec.eval,
        "gates": spec.gates,
        "tool": tool_version(),
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cell_is_current(spec: BuildSpec, entry: dict[str, Any] | None, inputs: str) -> bool:
    """Done with these inputs and the artifact's files still verify against its manifest."""
    if not entry or entry.get("inputs") != inputs or entry.get("status") not in DONE:
        return False
    from ..errors import UnsafePathError

    try:
        folder = artifact_folder(spec, entry)
    except UnsafePathError:  # moved, or not this build's: redo the cell rather than read elsewhere
        return False
    m = Manifest.read_or_none(folder) if folder is not None and folder.is_dir() else None
    if not m:
        return False
    files = [f for v in entry.get("variants", []) if v in m.variants for f in m.variants[v].files]
    return bool(files) and not verify_files(folder, m, files)
