import errno

import pytest

from qwen3_quant import io
from qwen3_quant.errors import ArtifactExistsError, DiskFullError


def test_atomic_output_renames_on_success(tmp_path):
    final = tmp_path / "out.bin"
    with io.atomic_output(final) as tmp:
        tmp.write_bytes(b"data")
        assert not final.exists()
    assert final.read_bytes() == b"data" and not io.partial_path(final).exists()


def test_atomic_output_keeps_nothing_on_failure(tmp_path):
    final = tmp_path / "dir"
    with pytest.raises(RuntimeError), io.atomic_output(final) as tmp:
        tmp.mkdir()
        (tmp / "half").write_bytes(b"x")
        raise RuntimeError("killed")
    assert not final.exists() and not io.partial_path(final).exists()


def test_atomic_output_keep_partial_for_resume(tmp_path):
    final = tmp_path / "dir"
    with pytest.raises(RuntimeError), io.atomic_output(final, keep_partial=True) as tmp:
        tmp.mkdir()
        raise RuntimeError("killed")
    assert io.partial_path(final).is_dir() and not final.exists()


def test_no_overwrite_without_flag(tmp_path):
    final = tmp_path / "a.txt"
    final.write_text("good")
    with pytest.raises(ArtifactExistsError, match="--overwrite"), io.atomic_output(final):
        pass
    with io.atomic_output(final, overwrite=True) as tmp:
        tmp.write_text("new")
    assert final.read_text() == "new"


def test_free_space_check(tmp_path, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(100, 90, 10))
    with pytest.raises(DiskFullError, match="needs about 1.00 KB, 10 B free"):
        io.ensure_free_space(tmp_path, 1000)
    io.ensure_free_space(tmp_path, 5)


def test_enospc_becomes_disk_full(tmp_path):
    final = tmp_path / "x"
    with pytest.raises(DiskFullError, match="disk filled up"), io.atomic_output(final):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert not final.exists() and not io.partial_path(final).exists()


def test_atomic_write_json_and_sha(tmp_path):
    p = tmp_path / "m.json"
    io.atomic_write_json(p, {"a": 1})
    assert p.read_text().strip().startswith("{")
    assert len(io.sha256_file(p)) == 64
    assert io.human_bytes(5.03e9) == "5.03 GB"


def test_copy_file_hashed_makes_an_independent_copy_and_never_writes_through_a_link(tmp_path):
    import hashlib

    from qwen3_quant.io import copy_file_hashed

    src = tmp_path / "src.bin"
    src.write_bytes(b"weights" * 1000)
    seen = []
    sha, how = copy_file_hashed(src, tmp_path / "dst.bin", seen.append)
    assert sha == hashlib.sha256(src.read_bytes()).hexdigest() and how in ("reflink", "copy")
    assert sum(seen) == 7000
    with open(src, "r+b") as fh:  # a change to the source in place does not reach the copy
        fh.write(b"CHANGED")
    assert (tmp_path / "dst.bin").read_bytes() == b"weights" * 1000
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    (tmp_path / "link").symlink_to(victim)
    with pytest.raises(FileExistsError):
        copy_file_hashed(src, tmp_path / "link")
    assert victim.read_bytes() == b"keep"
