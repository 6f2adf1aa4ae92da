"""Publishing to a local folder: the files (hard-linked when on the same filesystem, copied and
re-hashed otherwise) plus the generated card, eval.json, manifest and SHA256SUMS, written under a
temporary name and renamed when complete."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ArtifactExistsError, PublishError, UsageError
from ..formats.base import Progress, no_progress
from ..io import atomic_output, ensure_free_space
from .bundle import CHECKSUMS, Bundle, PublishFile

log = logging.getLogger(__name__)
_NO_LINK = (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES)


@dataclass
class LocalOutcome:
    path: Path
    linked: list[str] = field(default_factory=list)
    copied: list[str] = field(default_factory=list)
    written: list[str] = field(default_factory=list)  # generated files
    unchanged: bool = False


def _inside(a: Path, b: Path) -> bool:
    return a == b or b in a.parents


def same_publish(dest: Path, bundle: Bundle) -> bool:
    """Whether ``dest`` already holds exactly this publish (same SHA256SUMS, every file present with
    its size)."""
    sums = dest / CHECKSUMS
    if not sums.is_file() or sums.read_bytes() != bundle.file(CHECKSUMS).data:
        return False
    return all((dest / f.path).is_file() and (dest / f.path).stat().st_size == f.size for f in bundle.files)


def _copy_verified(f: PublishFile, out: Path, on_bytes) -> None:
    h = hashlib.sha256()
    with open(f.source, "rb") as src, open(out, "wb") as dst:
        while block := src.read(8 << 20):
            h.update(block)
            dst.write(block)
            on_bytes(len(block))
        dst.flush()
        os.fsync(dst.fileno())
    if h.hexdigest() != f.sha256:
        raise PublishError(
            f"{f.path} changed while it was being copied (sha256 differs from the manifest)",
            hint="make sure nothing writes to the artifact folder, then rerun",
        )


def _can_link(src_dir: Path, dest_parent: Path) -> bool:
    try:
        return os.stat(src_dir).st_dev == os.stat(dest_parent).st_dev
    except OSError:
        return False


def publish_local(
    bundle: Bundle, dest: Path, *, overwrite: bool = False, progress: Progress = no_progress
) -> LocalOutcome:
    dest = Path(dest).expanduser().resolve()
    src = bundle.artifact_dir.resolve()
    if _inside(dest, src) or _inside(src, dest):
        raise UsageError(
            f"the publish folder {dest} overlaps the artifact folder {src}", hint="choose another --to folder"
        )
    out = LocalOutcome(dest)
    if dest.exists():
        if dest.is_dir() and same_publish(dest, bundle):
            log.info("%s already holds this publish; nothing to do", dest)
            out.unchanged = True
            return out
        if not overwrite:
            raise ArtifactExistsError(
                f"{dest} already exists and holds other files than this publish",
                hint="pass --overwrite to replace it, or choose another --to folder",
            )
    dest.parent.mkdir(parents=True, exist_ok=True)
    link = _can_link(src, dest.parent)
    need = sum(f.size for f in bundle.files if f.generated or not link)
    ensure_free_space(dest.parent, need, what=f"publish {bundle.name} to {dest}")
    total = bundle.total_bytes
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        progress("write", done, total)

    progress("write", 0, total)
    with atomic_output(dest, overwrite=True) as tmp:
        tmp.mkdir(parents=True)
        for f in bundle.files:
            target = tmp / f.path
            target.parent.mkdir(parents=True, exist_ok=True)
            if f.generated:
                target.write_bytes(f.data)
                out.written.append(f.path)
                advance(f.size)
                continue
            if link:
                try:
                    os.link(f.source, target)
                    out.linked.append(f.path)
                    advance(f.size)
                    continue
                except OSError as exc:
                    if exc.errno not in _NO_LINK:
                        raise
                    link = False
                    log.info("cannot hard-link into %s (%s); copying", dest, os.strerror(exc.errno))
            _copy_verified(f, target, advance)
            out.copied.append(f.path)
    log.info(
        "published %s to %s: %d linked, %d copied, %d generated",
        bundle.name,
        dest,
        len(out.linked),
        len(out.copied),
        len(out.written),
    )
    return out
