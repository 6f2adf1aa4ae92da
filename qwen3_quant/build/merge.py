"""Merging the outputs of a CI matrix (one job per cell, each with its own ``--out``) into one
build folder, variant by variant.

Each job's folder holds ``artifacts/<name>/`` and ``build/state.json``. For every cell a job
reports as done, the variants it made are copied into ``OUT/artifacts/<name>/`` with their files,
each checked against the job's manifest, and added to that folder's manifest; the cell's state
entry is then recorded with its new folder. Several GGUF types of one model made by separate jobs
so end up in one artifact folder, as a single machine would have made them.

A variant or file already in ``OUT`` with different contents is a conflict: that cell is refused
(recorded as an error naming the file), and the others go on. Nothing is read or written outside
the job folders and ``OUT/artifacts``: names come from the state files and manifests, which are
checked (:mod:`qwen3_quant.manifest_check`) before use.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..artifact import MANIFEST, Manifest, manifest_lock, verify_files
from ..errors import MergeConflictError, MissingFileError, Qwen3QuantError
from ..io import PARTIAL_SUFFIX, copy_file_hashed, path_inside, remove_path, safe_name
from .spec import BuildSpec, Cell
from .state import DONE, STATE_FILE, load_state

log = logging.getLogger(__name__)


@dataclass
class MergeOutcome:
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)  # cell id -> merged state entry
    copied: list[str] = field(default_factory=list)  # artifact files copied into OUT
    refused: dict[str, str] = field(default_factory=dict)  # cell id -> why


def state_dir_of(path: Path) -> Path:
    """A job's state folder from what the user named: the job's ``--out``, its ``build/`` folder or
    its ``state.json``."""
    path = Path(path)
    if path.name == STATE_FILE:
        return path.parent
    if (path / "build" / STATE_FILE).is_file():
        return path / "build"
    return path


def merge_jobs(spec: BuildSpec, job_dirs: list[Path], cells: list[Cell]) -> MergeOutcome:
    """Merge the jobs' artifacts and state entries for ``cells`` into ``spec.out``."""
    wanted = {c.id for c in cells}
    out = MergeOutcome()
    newest: dict[str, tuple[str, dict[str, Any], Path]] = {}
    for d in job_dirs:
        sdir = state_dir_of(d)
        if not (sdir / STATE_FILE).is_file():
            raise MissingFileError(
                f"{d} holds no {STATE_FILE} (nor build/{STATE_FILE})",
                hint="pass each CI job's --out folder as it was uploaded",
            )
        for cid, entry in load_state(sdir)["cells"].items():
            if cid not in wanted:
                continue
            stamp = entry.get("updated") or ""
            if cid not in newest or stamp > newest[cid][0]:
                newest[cid] = (stamp, entry, sdir.parent / "artifacts")
    for cid, (_, entry, job_artifacts) in newest.items():
        try:
            out.entries[cid] = _merge_cell(spec, cid, entry, job_artifacts, out)
        except Qwen3QuantError as exc:
            log.error("%s: not merged: %s", cid, exc.one_line())
            out.refused[cid] = exc.one_line()
            out.entries[cid] = {**entry, "status": "error", "error": f"not merged: {exc.one_line()}"}
            out.entries[cid].pop("artifact_dir", None)
    return out


def _merge_cell(
    spec: BuildSpec, cid: str, entry: dict[str, Any], job_artifacts: Path, out: MergeOutcome
) -> dict[str, Any]:
    if entry.get("status") not in DONE or not entry.get("artifact_dir"):
        return dict(entry)  # an error or a skip: nothing to copy
    what = f"{cid}: artifact_dir"
    name = safe_name(Path(entry["artifact_dir"]).name, what=what)
    src = path_inside(job_artifacts, name, what=what)
    dest = path_inside(spec.artifacts_dir, name, what=what)
    if src.resolve() != dest.resolve():
        out.copied += merge_variants(src, dest, list(entry.get("variants") or []))
    return {**entry, "artifact_dir": str(dest)}


def merge_variants(src: Path, dest: Path, variants: list[str]) -> list[str]:
    """Copy ``variants`` of the artifact folder ``src`` (with the files every variant shares) into
    ``dest``, adding them to its manifest. Returns the files copied; :class:`MergeConflictError`
    when ``dest`` holds one of them, or a file of the same name, with other contents."""
    from ..formats import FORMATS, get_format

    m_src = Manifest.read(src)
    if not variants:
        raise MergeConflictError(f"{src}: the job reported no variants", hint="rerun that cell")
    for v in variants:
        m_src.variant(v)
    files = list(dict.fromkeys(f for v in variants for f in m_src.variants[v].files))
    shared = m_src.shared_files
    bad = verify_files(src, m_src, files + shared)
    if bad:
        raise MergeConflictError(
            f"{src / bad[0]} differs from its job's {MANIFEST} (changed or missing)",
            hint="rerun that cell; its upload was damaged",
        )
    by_product = m_src.format in FORMATS and not get_format(m_src.format).variant_counts_shared_files
    dest.mkdir(parents=True, exist_ok=True)
    copied: list[str] = []
    with manifest_lock(dest):
        m = Manifest.read_or_none(dest)
        if m is None:
            m = Manifest.new(m_src.name, m_src.format, m_src.source)
            m.tool = dict(m_src.tool)
        _check_same_artifact(m, m_src, dest)
        for v in variants:
            have = m.variants.get(v)
            if have is not None and not _same_variant(m, m_src, v):
                raise MergeConflictError(
                    f"{dest} already holds {v} with other files than {src}",
                    hint="two jobs made the same variant differently; rerun one cell with --force",
                )
        for f in files + shared:
            rec = m_src.files[f]
            target = path_inside(dest, f, what=f"{src / MANIFEST}: file entry")
            mine = m.files.get(f)
            if mine is not None and mine.sha256 != rec.sha256:
                if f in shared and by_product:
                    log.warning(
                        "%s: keeping the %s already merged; %s was made with a different one",
                        dest.name,
                        f,
                        src,
                    )
                    continue
                raise MergeConflictError(
                    f"{dest / f} differs between two jobs (sha256 {mine.sha256[:12]} and {rec.sha256[:12]})",
                    hint="the jobs were made from different inputs; rerun them with the same build file",
                )
            if mine is None and target.exists():
                raise MergeConflictError(
                    f"{target} exists and is not recorded in {dest / MANIFEST}",
                    hint="move it away or collect into an empty --out folder",
                )
            if mine is not None and not verify_files(dest, m, [f]):
                continue  # already merged from another job, intact
            _copy_into(path_inside(src, f, what=f"{src / MANIFEST}: file entry"), target, rec.sha256)
            copied.append(f)
            m.files[f] = rec
        for v in variants:
            m.variants[v] = m_src.variants[v]
        m.write(dest)
    return copied


def _check_same_artifact(m: Manifest, m_src: Manifest, dest: Path) -> None:
    if (m.name, m.format) != (m_src.name, m_src.format):
        raise MergeConflictError(
            f"{dest} holds {m.format} artifact {m.name}, not {m_src.format} {m_src.name}",
            hint="collect into an empty --out folder",
        )
    a, b = m.source.get("fingerprint"), m_src.source.get("fingerprint")
    if a and b and a != b:
        raise MergeConflictError(
            f"{dest}: the jobs quantised different checkpoints of {m.name} (fingerprints {a} and {b})",
            hint="pin the model's revision in the build file and rerun the cells",
        )


def _same_variant(m: Manifest, m_src: Manifest, v: str) -> bool:
    mine, theirs = m.variants[v], m_src.variants[v]
    if mine.files != theirs.files:
        return False
    return all(
        f in m.files and m.files[f].sha256 == m_src.files[f].sha256 for f in theirs.files if f in m_src.files
    )


def _copy_into(src: Path, target: Path, sha256: str) -> None:
    """Copy under a temporary name, check the copy's sha256, rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}{PARTIAL_SUFFIX}")
    remove_path(tmp)
    try:
        got, _ = copy_file_hashed(src, tmp)
        if got != sha256:
            raise MergeConflictError(
                f"{src} changed while it was being copied", hint="make sure nothing writes to it and rerun"
            )
        os.replace(tmp, target)
    except BaseException:
        remove_path(tmp)
        raise
