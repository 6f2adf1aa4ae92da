"""Safe file output: temporary names renamed when complete, free-space checks, checksums."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import ArtifactExistsError, DiskFullError, NotWritableError

log = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} TB"


def free_bytes(path: Path) -> int:
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def ensure_free_space(
    path: Path, needed: int, *, what: str = "write the output", margin: float = 1.05
) -> None:
    """Raise :class:`DiskFullError` before heavy work when ``path``'s disk cannot hold ``needed`` bytes."""
    free = free_bytes(path)
    if free < needed * margin:
        raise DiskFullError(
            f"not enough disk space to {what}: needs about {human_bytes(needed)}, {human_bytes(free)} free at {path}",
            hint="free some space or choose another output folder",
        )


def check_writable(folder: Path, *, what: str = "output folder") -> None:
    """Raise :class:`NotWritableError` (one line) unless files can be created in ``folder``.

    ``folder`` need not exist: its nearest existing ancestor must be a folder in which a file can
    be created (probed with a temporary file, so read-only mounts and permissions are both seen,
    whoever runs it). Nothing is left behind.
    """
    folder = Path(folder).expanduser()
    top = p = folder.absolute()
    while not p.exists() and p != p.parent:
        if p.is_symlink():  # a dangling link: mkdir would fail on it
            raise NotWritableError(
                f"cannot write the {what} {folder}: {p} is a broken symbolic link",
                hint="remove the link or choose another folder",
            )
        p = p.parent
    if not p.is_dir():
        where = "is a file" if p == top else f"is under {p}, which is a file"
        raise NotWritableError(f"cannot write the {what} {folder}: it {where}", hint="choose a folder path")
    try:
        fd, probe = tempfile.mkstemp(prefix=".qwen3-quant-write-check.", dir=p)
    except OSError as exc:
        why = {
            errno.EROFS: "is on a read-only file system",
            errno.EACCES: "is not writable (permission denied)",
            errno.EPERM: "is not writable (operation not permitted)",
            errno.ENOSPC: "is on a full disk",
            errno.EDQUOT: "is on a disk over its quota",
        }.get(exc.errno or 0, f"is not writable ({exc.strerror or exc})")
        place = p if p == top else f"{p} (where {folder} would be created)"
        raise NotWritableError(
            f"cannot write the {what}: {place} {why}", hint="choose a writable folder"
        ) from exc
    os.close(fd)
    os.unlink(probe)


@contextlib.contextmanager
def disk_errors(path: Path) -> Iterator[None]:
    """Turn ENOSPC / EDQUOT raised while writing into a one-line :class:`DiskFullError`."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(
                f"the disk filled up while writing {path}",
                hint="free some space and rerun; the unfinished output was not kept",
            ) from exc
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=PARTIAL_SUFFIX, dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; published files are readable
        with disk_errors(path), os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once: os.umask can only be read by setting it


def _umask() -> int:
    return _UMASK


def make_readable(folder: Path) -> None:
    """Give every file under ``folder`` the permissions a new file gets (safetensors writes 0600)."""
    mode = 0o666 & ~_umask()
    for f in Path(folder).rglob("*"):
        if f.is_file() and not f.is_symlink():
            os.chmod(f, mode)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def finite_json(obj: Any) -> Any:
    """``obj`` with NaN and infinities as ``None``, for JSON that strict parsers (jq, JSON.parse)
    accept."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_json(v) for v in obj]
    return obj


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def cache_root() -> Path:
    """Where qwen3-quant keeps reusable work (reference log-probs, upload state, datasets)."""
    return Path(os.environ.get("QWEN3_QUANT_CACHE", Path.home() / ".cache" / "qwen3-quant"))


def partial_path(final: Path) -> Path:
    final = Path(final)
    return final.with_name(final.name + PARTIAL_SUFFIX)


def check_overwrite(final: Path, overwrite: bool) -> None:
    if Path(final).exists() and not overwrite:
        raise ArtifactExistsError(f"{final} already exists", hint="pass --overwrite to replace it")


@contextlib.contextmanager
def atomic_output(final: Path, *, overwrite: bool = False, keep_partial: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling path (file or folder) to write; rename it to ``final`` on success.

    A failure leaves ``final`` untouched. With ``keep_partial`` the temporary output survives a
    failure so that a rerun can resume from it; otherwise it is removed, and so is one that a killed
    run left behind.
    """
    final = Path(final)
    check_overwrite(final, overwrite)
    tmp = partial_path(final)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    if not keep_partial and tmp.exists():
        log.info("removing %s left by an interrupted run", tmp)
        remove_path(tmp)
    try:
        with disk_errors(final):
            yield tmp
    except BaseException:
        if not keep_partial:
            remove_path(tmp)
        raise
    if final.exists():
        remove_path(final)
    os.replace(tmp, final)


def remove_path(p: Path) -> None:
    p = Path(p)
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def sha256_file(path: Path, chunk: int = 8 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def file_lock(lock_file: Path, *, blocking: bool = True) -> Iterator[None]:
    """An exclusive advisory lock held across processes while the block runs; without ``blocking``,
    :class:`BlockingIOError` when another process holds it."""
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
