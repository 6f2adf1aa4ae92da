"""Publishing to a local folder: the files (copied and re-hashed, as copy-on-write clones where the
filesystem has them; hard links only when asked) plus the generated card, eval.json, manifest and
SHA256SUMS, written under a temporary name and renamed when complete.

A published folder does not change when the artifact it came from changes, unless it was published
with ``hard_link=True`` (then both names share the same bytes)."""

from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ArtifactExistsError, PublishError, UsageError
from ..formats.base import Progress, no_progress
from ..io import atomic_output, copy_file_hashed, ensure_free_space, path_inside
from .bundle import CHECKSUMS, Bundle, PublishFile

log = logging.getLogger(__name__)
_NO_LINK = (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES)


@dataclass
class LocalOutcome:
    path: Path
    linked: list[str] = field(default_factory=list)  # hard links (hard_link=True only)
    copied: list[str] = field(default_factory=list)  # copies and copy-on-write clones
    cloned: list[str] = field(default_factory=list)  # the copies that are copy-on-write clones
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


def _copy_verified(f: PublishFile, out: Path, on_bytes) -> str:
    sha, how = copy_file_hashed(f.source, out, on_bytes)
    if sha != f.sha256:
        raise PublishError(
            f"{f.path} changed while it was being copied (sha256 differs from the manifest)",
            hint="make sure nothing writes to the artifact folder, then rerun",
        )
    return how


def _can_link(src_dir: Path, dest_parent: Path) -> bool:
    try:
        return os.stat(src_dir).st_dev == os.stat(dest_parent).st_dev
    except OSError:
        return False


def publish_local(
    bundle: Bundle,
    dest: Path,
    *,
    overwrite: bool = False,
    hard_link: bool = False,
    progress: Progress = no_progress,
) -> LocalOutcome:
    """Write ``bundle`` to the folder ``dest``. Files are copies (or copy-on-write clones);
    ``hard_link`` links them instead where the filesystem allows, so that the publish takes no
    space but changes whenever the artifact's files are changed in place."""
    dest = Path(dest).expanduser()
    dest = dest.parent.resolve() / dest.name  # a symlink at dest is replaced, never written through
    src = bundle.artifact_dir.resolve()
    if _inside(dest.resolve(), src) or _inside(src, dest.resolve()):
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
    link = hard_link and _can_link(src, dest.parent)
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
            target = path_inside(tmp, f.path, what=f"{bundle.name}: published file")
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
            if _copy_verified(f, target, advance) == "reflink":
                out.cloned.append(f.path)
            out.copied.append(f.path)
    log.info(
        "published %s to %s: %d hard-linked, %d copied (%d as copy-on-write clones), %d generated",
        bundle.name,
        dest,
        len(out.linked),
        len(out.copied),
        len(out.cloned),
        len(out.written),
    )
    return out
