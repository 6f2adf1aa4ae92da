"""Safe file output: temporary names renamed when complete, free-space checks, checksums, and paths
from untrusted data (manifests, build and state files, Hub responses) kept inside their folder."""

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

from .errors import ArtifactExistsError, DiskFullError, NotWritableError, UnsafePathError

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


# --- paths read from data ------------------------------------------------------------------------

_PATH_HINT = "the file names in it must stay inside its folder; it was edited or made by another tool"


def _refuse(what: str, name: object, why: str, hint: str) -> UnsafePathError:
    return UnsafePathError(f"{what}: refusing the path {name!r}: {why}", hint=hint)


def safe_relpath(name: object, *, what: str = "path", hint: str = _PATH_HINT) -> str:
    """``name`` if it is a relative POSIX path that stays below its folder, else
    :class:`UnsafePathError` naming it (``..``, an absolute path, a drive, a backslash, an empty
    part, a NUL, a non-string)."""
    if not isinstance(name, str):
        raise _refuse(what, name, f"a {type(name).__name__}, not a file name", hint)
    if not name or "\x00" in name:
        raise _refuse(what, name, "empty or holds a NUL byte", hint)
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise _refuse(what, name, "an absolute path", hint)
    if "\\" in name:
        raise _refuse(what, name, "holds a backslash", hint)
    parts = name.split("/")
    if ".." in parts:
        raise _refuse(what, name, "leads out of its folder (..)", hint)
    if any(p in ("", ".") for p in parts):
        raise _refuse(what, name, "has an empty or '.' part", hint)
    return name


def safe_name(name: object, *, what: str = "name", hint: str = _PATH_HINT) -> str:
    """``name`` if it is one plain path component (a folder or file name), else :class:`UnsafePathError`."""
    safe_relpath(name, what=what, hint=hint)
    if "/" in name:  # type: ignore[operator]
        raise _refuse(what, name, "holds a '/' where one name is expected", hint)
    return name  # type: ignore[return-value]


def is_inside(path: Path, root: Path) -> bool:
    """Whether ``path`` resolves (symlinks followed) to ``root`` or below it."""
    real, top = os.path.realpath(path), os.path.realpath(root)
    return real == top or real.startswith(top.rstrip(os.sep) + os.sep)


def path_inside(root: Path, rel: object, *, what: str = "path", hint: str = _PATH_HINT) -> Path:
    """``root / rel`` after checking that ``rel`` is a safe relative path and that no symlink on
    the way leads out of ``root``; :class:`UnsafePathError` naming the entry otherwise."""
    root = Path(root)
    p = root / safe_relpath(rel, what=what, hint=hint)
    if not is_inside(p, root):
        raise _refuse(what, rel, f"a symlink leads out of {root}", hint)
    return p


# --- copies that never share storage with their source ----------------------------------------------

_FICLONE = 0x40049409  # linux/fs.h: share the blocks copy-on-write (btrfs, XFS, bcachefs, ...)


def _reflink(src_fd: int, dst_fd: int) -> bool:
    try:
        fcntl.ioctl(dst_fd, _FICLONE, src_fd)
    except OSError:
        return False
    return True


def copy_file_hashed(src: Path, dst: Path, on_bytes=None) -> tuple[str, str]:
    """Copy ``src`` to a new file ``dst`` (never through a symlink at ``dst``) and return the
    sha256 of what ``dst`` holds and how it was made: ``"reflink"`` (copy-on-write clone, where the
    filesystem has it: a later change to ``src`` does not reach ``dst``) or ``"copy"``.
    ``on_bytes(n)`` reports progress."""
    h = hashlib.sha256()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    with open(src, "rb") as fin:
        fd = os.open(dst, flags, 0o666)
        with disk_errors(Path(dst)), os.fdopen(fd, "wb") as fout:
            if _reflink(fin.fileno(), fout.fileno()):
                how = "reflink"
                with open(dst, "rb") as back:
                    while block := back.read(8 << 20):
                        h.update(block)
                        if on_bytes:
                            on_bytes(len(block))
            else:
                how = "copy"
                while block := fin.read(8 << 20):
                    h.update(block)
                    fout.write(block)
                    if on_bytes:
                        on_bytes(len(block))
            fout.flush()
            os.fsync(fout.fileno())
    return h.hexdigest(), how


def peak_rss_bytes() -> int:
    """This process's peak resident memory. Linux's VmHWM starts afresh at exec, unlike
    ``ru_maxrss``, which keeps the peak of the process that forked it (a worker started from a
    large parent would report the parent's memory)."""
    try:
        status = Path("/proc/self/status").read_text()
        return int(status.split("VmHWM:")[1].split()[0]) * 1024
    except (OSError, IndexError, ValueError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
