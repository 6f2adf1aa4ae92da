"""Publishing to a local folder end to end, and every refusal that happens before anything is written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from qwen3_quant.artifact import (
    MANIFEST,
    Manifest,
    ValidationRecord,
    load_manifest,
    record_validation,
    record_variant,
    verify_files,
)
from qwen3_quant.cli import main
from qwen3_quant.errors import ArtifactExistsError, PublishError, UsageError, ValidationFailedError
from qwen3_quant.publish import build_bundle, publish
from qwen3_quant.publish.bundle import CARD, CHECKSUMS, EVAL_JSON
from qwen3_quant.publish.local import publish_local
from qwen3_quant.testing.fake_artifacts import make_artifact


@pytest.fixture
def gguf(tmp_path):
    return make_artifact(tmp_path / "art", "gguf", variants={"Q4_K_M": 4, "Q8_0": 8}, shards={"Q8_0": 2})


def _listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_local_publish_end_to_end(gguf, tmp_path):
    dest = tmp_path / "pub" / "Qwen3-8B-GGUF"
    res = publish(gguf, dest)
    m = load_manifest(gguf)
    assert _listing(dest) == sorted([*m["files"], CARD, EVAL_JSON, MANIFEST, CHECKSUMS])
    assert not list(dest.parent.glob("*.partial"))
    # the weights are copies (or copy-on-write clones), never hard links to the artifact's files
    for f in m["files"]:
        assert os.stat(dest / f).st_ino != os.stat(gguf / f).st_ino
    if shutil.which("sha256sum"):
        out = subprocess.run(
            ["sha256sum", "-c", CHECKSUMS], cwd=dest, capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stdout + out.stderr
    # the published folder is itself an artifact folder whose files check out
    pub = load_manifest(dest)
    assert verify_files(dest, pub) == [] and set(pub["variants"]) == {"Q4_K_M", "Q8_0"}
    assert pub["source"]["path"]  # kept for a local publish: eval can still find the base model
    assert (dest / CARD).read_text() == res.card
    assert set(res.uploaded) == {f.path for f in res.files} and not res.unchanged
    # a second run finds the same publish and leaves it alone
    before = {p: os.stat(dest / p).st_mtime_ns for p in _listing(dest)}
    again = publish(gguf, dest)
    assert again.unchanged and again.uploaded == []
    assert before == {p: os.stat(dest / p).st_mtime_ns for p in _listing(dest)}


def test_published_folder_does_not_change_when_the_artifact_is_edited_in_place(gguf, tmp_path):
    dest = tmp_path / "pub"
    publish(gguf, dest)
    victim = "Qwen3-8B-Q4_K_M.gguf"
    before = (dest / victim).read_bytes()
    with open(gguf / victim, "r+b") as fh:  # edit in place: a hard link would carry this over
        fh.seek(5)
        fh.write(b"CORRUPTED")
    assert (dest / victim).read_bytes() == before
    if shutil.which("sha256sum"):
        out = subprocess.run(["sha256sum", "-c", CHECKSUMS], cwd=dest, capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr


def test_hard_links_only_when_asked(gguf, tmp_path):
    dest = tmp_path / "linked"
    res = publish(gguf, dest, hard_link=True)
    for f in load_manifest(gguf)["files"]:
        assert os.stat(dest / f).st_ino == os.stat(gguf / f).st_ino
    assert set(res.uploaded) == {f.path for f in res.files}
    with pytest.raises(UsageError, match="--hard-link applies to folder targets only"):
        publish(gguf, "hf://org/x", hard_link=True, dry_run=True)
    r = CliRunner().invoke(main, ["publish", "--help"])
    assert "--hard-link" in r.output


def test_copies_and_rehashes_across_filesystems(gguf, tmp_path, monkeypatch):
    monkeypatch.setattr("qwen3_quant.publish.local._can_link", lambda *a: False)
    dest = tmp_path / "copy"
    publish(gguf, dest, hard_link=True)  # asked for links, but the filesystems differ: copies
    for f in load_manifest(gguf)["files"]:
        assert os.stat(dest / f).st_ino != os.stat(gguf / f).st_ino
        assert (dest / f).read_bytes() == (gguf / f).read_bytes()

    # a file that changes between the check and the copy is caught by the copy's own hash
    bundle = build_bundle(gguf, repo_id=None)
    victim = gguf / "Qwen3-8B-Q4_K_M.gguf"
    data = bytearray(victim.read_bytes())
    data[10] ^= 0xFF
    victim.write_bytes(bytes(data))
    dest2 = tmp_path / "copy2"
    with pytest.raises(PublishError, match="Qwen3-8B-Q4_K_M.gguf changed while it was being copied"):
        publish_local(bundle, dest2)
    assert not dest2.exists() and not list(tmp_path.glob("copy2*"))


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_refuses_a_file_that_differs_from_the_manifest(gguf, tmp_path, damage):
    victim = gguf / "Qwen3-8B-Q8_0-00002-of-00002.gguf"
    if damage == "flip":
        data = bytearray(victim.read_bytes())
        data[-1] ^= 0x01
        victim.write_bytes(bytes(data))
    elif damage == "truncate":
        victim.write_bytes(victim.read_bytes()[:-7])
    else:
        victim.unlink()
    dest = tmp_path / "pub"
    with pytest.raises(PublishError) as err:
        publish(gguf, dest)
    line = err.value.one_line()
    assert "\n" not in line and "Qwen3-8B-Q8_0-00002-of-00002.gguf" in line
    assert {"flip": "different sha256", "truncate": "is 4089 bytes", "delete": "is missing"}[damage] in line
    assert not dest.exists()


def test_refuses_failed_or_missing_validation_unless_forced(tmp_path):
    art = make_artifact(
        tmp_path / "art",
        "gguf",
        variants={"Q4_K_M": 4, "Q2_K": 2, "Q3_K_M": 3},
        validation={"Q2_K": "fail", "Q3_K_M": None},
    )
    dest = tmp_path / "pub"
    with pytest.raises(ValidationFailedError) as err:
        publish(art, dest)
    msg = err.value.one_line()
    assert (
        "Q2_K (" in msg and "Q3_K_M (not validated)" in msg and "--variant Q4_K_M" in msg and "--force" in msg
    )
    assert not dest.exists()

    ok = publish(art, tmp_path / "subset", variants=["Q4_K_M"])
    assert ok.variants == ["Q4_K_M"] and not ok.forced
    assert not (tmp_path / "subset" / "Qwen3-8B-Q2_K.gguf").exists()

    forced = publish(art, dest, force=True)
    assert len(forced.forced) == 2
    card = (dest / CARD).read_text()
    assert "Published with `--force`" in card and "Q3_K_M (not validated)" in card
    assert json.loads((dest / EVAL_JSON).read_text())["forced"] is True


def test_overwrite_and_overlap_rules(gguf, tmp_path):
    dest = tmp_path / "pub"
    publish(gguf, dest, variants=["Q4_K_M"])
    with pytest.raises(ArtifactExistsError) as err:
        publish(gguf, dest, variants=["Q8_0"])
    assert "already exists" in err.value.one_line() and "--overwrite" in err.value.one_line()
    assert (dest / "Qwen3-8B-Q4_K_M.gguf").exists()  # untouched
    publish(gguf, dest, variants=["Q8_0"], overwrite=True)
    assert (
        not (dest / "Qwen3-8B-Q4_K_M.gguf").exists() and (dest / "Qwen3-8B-Q8_0-00001-of-00002.gguf").exists()
    )
    with pytest.raises(UsageError, match="overlaps"):
        publish(gguf, gguf / "published")
    with pytest.raises(UsageError, match="Hub targets only"):
        publish(gguf, tmp_path / "x", private=True)
    with pytest.raises(UsageError, match="folder targets only"):
        publish(gguf, "hf://org/Qwen3-8B-GGUF", overwrite=True, dry_run=True)


def test_dry_run_writes_nothing(gguf, tmp_path):
    dest = tmp_path / "pub"
    res = publish(gguf, dest, dry_run=True)
    assert res.dry_run and not dest.exists() and res.card.startswith("---\n")
    assert {f.path for f in res.files} >= {CARD, EVAL_JSON, CHECKSUMS}


def test_cli_publish_to_a_folder(gguf, tmp_path):
    runner = CliRunner()
    dest = tmp_path / "cli-pub"
    out_json = tmp_path / "result.json"
    r = runner.invoke(main, ["publish", str(gguf), "--to", str(dest), "--json-out", str(out_json)])
    assert r.exit_code == 0, r.output
    assert "published Qwen3-8B-GGUF" in r.output
    assert json.loads(out_json.read_text())["target"] == str(dest)
    r = runner.invoke(main, ["publish", str(gguf), "--to", str(dest), "--private"])
    assert r.exit_code == 2 and "--private applies to Hub targets only" in r.output

    bad = make_artifact(tmp_path / "bad", "awq", validation={"W4g128": "fail"})
    r = runner.invoke(main, ["publish", str(bad), "--to", str(tmp_path / "bad-pub")])
    assert r.exit_code == 3 and "refusing to publish Qwen3-8B-AWQ" in r.output
    assert not (tmp_path / "bad-pub").exists()


def test_refuses_a_validation_of_other_bytes_than_the_file_published(tmp_path):
    """Two runs on one folder: run A validated its file, run B (--overwrite) replaced the file and
    recorded it, then A's validation landed. The validation names the sha256 it measured, so
    publish sees that it vouches for A's bytes, not for the file it would upload."""
    art = make_artifact(tmp_path / "art", "gguf", variants={"Q4_K_M": 4})
    m = Manifest.read(art)
    a_validation = m.variants["Q4_K_M"].validation
    assert a_validation.files_sha256 == {"Qwen3-8B-Q4_K_M.gguf": m.files["Qwen3-8B-Q4_K_M.gguf"].sha256}
    (art / "Qwen3-8B-Q4_K_M.gguf").write_bytes(b"run B's weights" * 100)  # run B
    rec = m.variants["Q4_K_M"]
    record_variant(
        art, name=m.name, fmt="gguf", source=m.source, variant="Q4_K_M", files=rec.files, recipe=rec.recipe
    )
    record_validation(art, "Q4_K_M", a_validation)  # run A finishes last
    with pytest.raises(ValidationFailedError) as err:
        publish(art, tmp_path / "pub")
    line = err.value.one_line()
    assert "validated a different Qwen3-8B-Q4_K_M.gguf than the one recorded" in line
    assert "validate the files now in the folder" in line and not (tmp_path / "pub").exists()
    # a validation that names no hashes cannot vouch for the file either
    record_validation(art, "Q4_K_M", ValidationRecord(True, a_validation.gates, a_validation.result))
    with pytest.raises(ValidationFailedError, match="does not name the sha256 of Qwen3-8B-Q4_K_M.gguf"):
        publish(art, tmp_path / "pub")


def test_a_published_manifest_keeps_the_device_facts_readable(tmp_path):
    from qwen3_quant.provenance import Provenance

    art = make_artifact(tmp_path / "art", "gguf", variants={"Q8_0": 8})
    m = Manifest.read(art)
    m.variants["Q8_0"].provenance = Provenance("cli", "qwen3-quant quantize M", quantised_on={"name": "cpu"})
    m.write(art)
    publish(art, tmp_path / "pub")
    prov = Manifest.read(tmp_path / "pub").variants["Q8_0"].provenance
    assert prov.quantised_on == {"name": "cpu"} and prov.command == "qwen3-quant quantize M"
