"""Hostile inputs, fuzz-style: every path field of a manifest, build file, state file and Hub listing
given traversal, absolute paths, symlinks leading out, wrong types and absurd sizes. Each is refused
in one line naming the entry, and nothing is written outside the folders the command may write."""

from __future__ import annotations

import hashlib
import json
import os
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from qwen3_quant.artifact import MANIFEST, Manifest, verify_files
from qwen3_quant.build import collect
from qwen3_quant.build.spec import parse_build
from qwen3_quant.errors import ManifestError, Qwen3QuantError, UnsafePathError, UsageError
from qwen3_quant.io import path_inside, safe_name, safe_relpath
from qwen3_quant.publish import publish
from qwen3_quant.testing.fake_artifacts import make_artifact

EVIL = b"not part of any artifact\n"
EVIL_SHA = hashlib.sha256(EVIL).hexdigest()
assert len(EVIL) == 25
ART = "Qwen3-8B-GGUF"
VARIANT_FILE = "Qwen3-8B-Q4_K_M.gguf"


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` (links not followed) with its size and mtime."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def changed(before: dict, after: dict, allowed: list[str]) -> list[str]:
    diff = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    return sorted(k for k in diff if not any(k == a or k.startswith(a + "/") for a in allowed))


@pytest.fixture
def world(tmp_path):
    """``tmp/work/art/<artifact>`` and, beside it, files an attacker would like read or overwritten."""
    work = tmp_path / "work"
    art = make_artifact(work / "art", "gguf", variants={"Q4_K_M": 4, "Q8_0": 8})
    (work / "art" / "evil.txt").write_bytes(EVIL)  # the artifact folder's parent
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.gguf").write_bytes(EVIL)
    return tmp_path, art


def edit_manifest(art: Path, change: Callable[[dict[str, Any]], Any]) -> None:
    d = json.loads((art / MANIFEST).read_text())
    change(d)
    (art / MANIFEST).write_text(json.dumps(d))


def add_file(name: Any, size: Any = 25, sha: Any = EVIL_SHA, variant: str = "Q4_K_M"):
    def change(d):
        d["files"][name] = {"size": size, "sha256": sha}
        d["variants"][variant]["files"].append(name)

    return change


def _set(path: list[Any], value: Any):
    def change(d):
        obj = d
        for k in path[:-1]:
            obj = obj[k]
        obj[path[-1]] = value

    return change


def _absolute(tmp):
    return add_file(str(tmp / "outside" / "secret.gguf"))


def _symlink_file(tmp):
    os.symlink(tmp / "outside" / "secret.gguf", tmp / "work" / "art" / ART / "link.gguf")
    return add_file("link.gguf")


def _symlink_dir(tmp):
    os.symlink(tmp / "outside", tmp / "work" / "art" / ART / "sub")
    return add_file("sub/secret.gguf")


# (case id, change maker, words the one-line refusal must contain)
MANIFEST_CASES: list[tuple[str, Callable[[Path], Any], str]] = [
    ("parent", lambda t: add_file("../evil.txt"), "'../evil.txt'"),
    ("nested-parent", lambda t: add_file("sub/../../evil.txt"), "sub/../../evil.txt"),
    ("absolute", _absolute, "an absolute path"),
    ("backslash", lambda t: add_file("..\\evil.txt"), "backslash"),
    ("dot", lambda t: add_file("./" + VARIANT_FILE), "'.' part"),
    ("empty", lambda t: add_file(""), "empty"),
    ("symlink-file", _symlink_file, "symlink leads out"),
    ("symlink-dir", _symlink_dir, "symlink leads out"),
    ("variant-list-only", lambda t: _set(["variants", "Q8_0", "files"], ["../evil.txt"]), "'../evil.txt'"),
    ("variant-name", lambda t: _set(["variants", "../../x"], {"files": []}), "'../../x'"),
    ("manifest-name", lambda t: _set(["name"], "../../evil"), "'../../evil'"),
    (
        "validated-path",
        lambda t: _set(["variants", "Q4_K_M", "validation", "files_sha256"], {"../evil.txt": EVIL_SHA}),
        "'../evil.txt'",
    ),
    ("negative-size", lambda t: _set(["files", VARIANT_FILE, "size"], -1), "-1, not a size"),
    ("huge-size", lambda t: _set(["files", VARIANT_FILE, "size"], 10**20), "not a size"),
    ("string-size", lambda t: _set(["files", VARIANT_FILE, "size"], "4096"), "not a size"),
    ("bool-size", lambda t: _set(["files", VARIANT_FILE, "size"], True), "not a size"),
    ("int-sha", lambda t: _set(["files", VARIANT_FILE, "sha256"], 12), "not a sha256"),
    ("bad-sha", lambda t: _set(["files", VARIANT_FILE, "sha256"], "zz" * 32), "not a sha256"),
    ("files-list", lambda t: _set(["files"], [VARIANT_FILE]), "files is a list"),
    ("variants-list", lambda t: _set(["variants"], ["Q4_K_M"]), "variants is a list"),
    ("variant-files-str", lambda t: _set(["variants", "Q4_K_M", "files"], VARIANT_FILE), "not a list"),
    ("file-key-int", lambda t: add_file(7), "not a file name"),
    ("name-int", lambda t: _set(["name"], 7), "name is a int"),
    ("validation-str", lambda t: _set(["variants", "Q4_K_M", "validation"], "passed"), "validation is a str"),
    (
        "device-str",
        lambda t: _set(["variants", "Q4_K_M", "provenance", "quantised_on"], "gpu"),
        "quantised_on is a str",
    ),
    (
        "key-no-format",
        lambda t: _set(["variants", "Q4_K_M", "key"], {"settings": {}}),
        "key.format is a NoneType",
    ),
]


@pytest.mark.parametrize("target", ["folder", "hub-dry-run"])
@pytest.mark.parametrize("case,make,words", MANIFEST_CASES, ids=[c[0] for c in MANIFEST_CASES])
def test_publish_refuses_a_hostile_manifest_and_writes_nothing(world, case, make, words, target):
    tmp, art = world
    edit_manifest(art, make(tmp))
    before = snapshot(tmp)
    to = tmp / "pub" / ART if target == "folder" else "hf://org/Qwen3-8B-GGUF"
    with pytest.raises((UnsafePathError, ManifestError)) as err:
        publish(art, to, dry_run=target != "folder")
    line = err.value.one_line()
    assert "\n" not in line and words in line, line
    assert changed(before, snapshot(tmp), allowed=[]) == []


def test_a_manifest_that_is_not_json_or_not_a_table(world):
    tmp, art = world
    for text, words in (("{not json", "not valid JSON"), ("[1, 2]", "is a list, not a table")):
        (art / MANIFEST).write_text(text)
        with pytest.raises(ManifestError, match=words):
            publish(art, tmp / "pub" / ART)
    assert not (tmp / "pub").exists()


def test_verify_and_record_refuse_paths_leading_out(world):
    tmp, art = world
    m = Manifest.read(art)
    with pytest.raises(UnsafePathError, match="'../evil.txt'"):
        verify_files(art, m, ["../evil.txt"])
    for bad in ("../x", "/abs", "a/../../b", "a\\b", "", "a//b", 3, None):
        with pytest.raises(UnsafePathError):
            safe_relpath(bad)
    assert safe_relpath("a/b.gguf") == "a/b.gguf" and safe_name("Qwen3-8B-GGUF") == "Qwen3-8B-GGUF"
    with pytest.raises(UnsafePathError):
        safe_name("a/b")
    os.symlink(tmp / "outside", art / "out")
    with pytest.raises(UnsafePathError, match="symlink leads out"):
        path_inside(art, "out/secret.gguf")
    os.symlink(art / VARIANT_FILE, art / "alias.gguf")  # a link that stays inside is fine
    assert path_inside(art, "alias.gguf") == art / "alias.gguf"


def test_a_published_folder_is_not_written_through_a_symlink(world):
    """A publish writes a fresh temporary folder and renames it: a symlink planted at the
    destination is replaced (with --overwrite), never written through."""
    tmp, art = world
    dest = tmp / "pub" / ART
    dest.parent.mkdir()
    os.symlink(tmp / "outside", dest)
    before = snapshot(tmp / "outside")
    with pytest.raises(Qwen3QuantError):
        publish(art, dest)  # exists: refused without --overwrite
    publish(art, dest, overwrite=True)
    assert snapshot(tmp / "outside") == before
    assert dest.is_dir() and not dest.is_symlink()


def test_the_hub_listing_is_checked(monkeypatch):
    from huggingface_hub.hf_api import RepoFile

    from qwen3_quant.publish.hub import _Hub

    class Api:
        def list_repo_tree(self, *a, **k):
            return [
                RepoFile(path="ok.gguf", size=1, oid="0" * 40),
                RepoFile(path="../x", size=1, oid="0" * 40),
            ]

    hub = _Hub.__new__(_Hub)
    hub.repo_id, hub.api = "org/x", Api()
    with pytest.raises(UnsafePathError, match="the Hub's listing of org/x@main: refusing the path '../x'"):
        hub.remote_files("main")


# --- build files ---------------------------------------------------------------------------------

BUILD_CASES = [
    ({"build": {"models": "Qwen3-8B"}}, "models is not a list"),
    ({"build": {"models": [3]}}, "models is not a list"),
    ({"build": {"models": ["Qwen3-8B"], "out": 5}}, "out is not a string"),
    ({"build": {"models": ["Qwen3-8B"], "jobs": "2"}}, "jobs must be"),
    ({"build": {"models": ["Qwen3-8B"], "jobs": -1}}, "jobs must be"),
    ({"build": ["x"]}, "[build] is not a table"),
    ({"format": "gguf"}, "not a list of [[format]] tables"),
    ({"publish": {"to": 5}}, "to is not a string"),
    ({"runners": 3}, "[runners] is not a table"),
    ({"runners": {}}, "[runners] must be tables"),
    ({"runners": {"ubuntu-latest": {"ram": -5, "disk": "14GB"}}}, "ram is -5, not a size"),
    ({"runners": {"ubuntu-latest": {"ram": "lots", "disk": "14GB"}}}, "ram is 'lots', not a size"),
    ({"runners": {"ubuntu-latest": {"ram": "16GB"}}}, "has no disk"),
    ({"runners": {"bad label!": {"ram": "16GB", "disk": "1GB"}}}, "not a runs-on label"),
    ({"runners": {"x": {"ram": "16GB", "disk": "1GB", "hours": 0}}}, "hours is 0"),
    ({"runners": {"x": {"ram": "16GB", "disk": "1GB", "cpu": 4}}}, "unknown key 'cpu'"),
]


@pytest.mark.parametrize("change,words", BUILD_CASES, ids=[w for _, w in BUILD_CASES])
def test_build_file_wrong_types_are_one_line(change, words):
    data: dict[str, Any] = {"build": {"models": ["Qwen3-8B"]}, "format": [{"name": "gguf"}]}
    for k, v in change.items():
        data[k] = v if not isinstance(v, dict) or k not in data else {**data[k], **v}
    with pytest.raises(UsageError) as err:
        parse_build(data, source="b.toml")
    assert words in err.value.one_line() and "\n" not in err.value.one_line()


# --- state files and CI job folders (collect) ---------------------------------------------------


def _build_file(tmp: Path) -> Path:
    f = tmp / "b.toml"
    f.write_text(
        textwrap.dedent(f"""
        [build]
        models = ["Qwen3-8B"]
        out = "{tmp / "merged"}"
        [[format]]
        name = "gguf"
        types = ["Q4_K_M", "Q8_0"]
        [publish]
        to = "{tmp / "pub"}"
        """)
    )
    return f


def _job(tmp: Path, art_dir: Any, variants: Any = ("Q4_K_M",)) -> Path:
    """A CI job's output folder whose state names ``art_dir`` for the cell Qwen3-8B/gguf/Q4_K_M."""
    job = tmp / "cells" / "job"
    make_artifact(job / "artifacts", "gguf", variants={"Q4_K_M": 4})
    entry = {
        "status": "passed",
        "artifact_dir": art_dir,
        "variants": variants,
        "updated": "2026-01-01T00:00:00Z",
    }
    (job / "build").mkdir(parents=True)
    (job / "build" / "state.json").write_text(json.dumps({"cells": {"Qwen3-8B/gguf/Q4_K_M": entry}}))
    return job


# an artifact_dir is only ever looked up by its last name, under the job's own artifacts/ folder
STATE_CASES: list[tuple[str, Callable[[Path], Any], str]] = [
    ("dotdot", lambda t: "../..", "leads out of its folder"),
    ("elsewhere", lambda t: "../../outside", "cells/job/artifacts/outside has no qwen3_quant.json"),
    ("absolute", lambda t: str(t / "outside"), "cells/job/artifacts/outside has no qwen3_quant.json"),
]


@pytest.mark.parametrize("case,art_dir,words", STATE_CASES, ids=[c[0] for c in STATE_CASES])
def test_collect_refuses_a_hostile_state_entry(tmp_path, case, art_dir, words):
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.gguf").write_bytes(EVIL)
    job = _job(tmp_path, art_dir(tmp_path))
    f = _build_file(tmp_path)
    before = snapshot(tmp_path)
    res = collect(f, states=[job])
    e = res.entries["Qwen3-8B/gguf/Q4_K_M"]
    assert e["status"] == "error" and "\n" not in e["error"], e
    assert not res.published
    assert changed(before, snapshot(tmp_path), allowed=["merged"]) == []
    assert not (tmp_path / "merged" / "artifacts").exists() or not any(
        (tmp_path / "merged" / "artifacts").iterdir()
    )


def test_collect_refuses_a_job_artifact_that_is_a_symlink_out(tmp_path):
    (tmp_path / "outside").mkdir()
    evil = make_artifact(tmp_path / "outside", "gguf", variants={"Q4_K_M": 4})
    job = _job(tmp_path, f"out/artifacts/{ART}")
    import shutil

    shutil.rmtree(job / "artifacts" / ART)
    os.symlink(evil, job / "artifacts" / ART)
    f = _build_file(tmp_path)
    before = snapshot(tmp_path)
    res = collect(f, states=[job])
    e = res.entries["Qwen3-8B/gguf/Q4_K_M"]
    assert e["status"] == "error" and "symlink leads out" in e["error"]
    assert changed(before, snapshot(tmp_path), allowed=["merged"]) == []


@pytest.mark.parametrize(
    "state,words",
    [
        ({"cells": []}, "cells is a list"),
        ({"cells": {"Qwen3-8B/gguf/Q4_K_M": "passed"}}, "is a str, not a table"),
        ({"cells": {"Qwen3-8B/gguf/Q4_K_M": {"artifact_dir": 3}}}, "artifact_dir is a int"),
        ({"cells": {"Qwen3-8B/gguf/Q4_K_M": {"variants": "Q4_K_M"}}}, "variants is not a list"),
        ([], "is a list, not a table"),
    ],
)
def test_collect_refuses_a_state_file_of_the_wrong_shape(tmp_path, state, words):
    job = tmp_path / "job"
    (job / "build").mkdir(parents=True)
    (job / "build" / "state.json").write_text(json.dumps(state))
    with pytest.raises(ManifestError) as err:
        collect(_build_file(tmp_path), states=[job])
    assert words in err.value.one_line()
    assert not (tmp_path / "pub").exists()


def test_a_local_state_entry_outside_the_artifacts_folder_is_never_published(tmp_path):
    """A build's own state naming a folder outside OUT/artifacts: reported as an error, not read."""
    f = _build_file(tmp_path)
    (tmp_path / "outside").mkdir()
    evil = make_artifact(tmp_path / "outside", "gguf", variants={"Q4_K_M": 4})
    state_dir = tmp_path / "merged" / "build"
    state_dir.mkdir(parents=True)
    entry = {"status": "passed", "artifact_dir": str(evil), "variants": ["Q4_K_M"], "updated": "x"}
    (state_dir / "state.json").write_text(json.dumps({"cells": {"Qwen3-8B/gguf/Q4_K_M": entry}}))
    res = collect(f, states=[])
    e = res.entries["Qwen3-8B/gguf/Q4_K_M"]
    assert e["status"] == "error" and "not a folder of" in e["error"]
    assert not res.published and not (tmp_path / "pub").exists()


def test_a_gguf_journal_naming_files_outside_is_refused(tmp_path):
    """The journal a killed GGUF run leaves is read back from disk: a name in it leading out of the
    artifact folder is refused, and the file it names is not deleted."""
    from types import SimpleNamespace

    from qwen3_quant.formats.gguf.build import GGUFBuild

    out = tmp_path / "art" / "Qwen3-8B-GGUF"
    (out / ".work").mkdir(parents=True)
    victim = tmp_path / "art" / "victim.gguf"
    victim.write_bytes(EVIL)
    journal = {
        "variant": "Q8_0",
        "files": [{"name": "../victim.gguf", "size": 1}],
        "shared": [],
        "recipe": {},
    }
    (out / ".work" / "publish-Q8_0.json").write_text(json.dumps(journal))
    with pytest.raises(UnsafePathError, match="'../victim.gguf'"):
        GGUFBuild._finish_journals(SimpleNamespace(out=out, work=out / ".work"))
    assert victim.read_bytes() == EVIL


def test_a_state_entry_outside_the_artifacts_folder_is_never_current(tmp_path):
    from qwen3_quant.build import load_build, plan

    f = _build_file(tmp_path)
    (tmp_path / "outside").mkdir()
    evil = make_artifact(tmp_path / "outside", "gguf", variants={"Q4_K_M": 4})
    spec = load_build(f)
    rows = {r.cell.id: r for r in plan(spec)}
    inputs = rows["Qwen3-8B/gguf/Q4_K_M"].inputs
    entry = {"status": "passed", "inputs": inputs, "artifact_dir": str(evil), "variants": ["Q4_K_M"]}
    spec.state_dir.mkdir(parents=True)
    (spec.state_dir / "state.json").write_text(json.dumps({"cells": {"Qwen3-8B/gguf/Q4_K_M": entry}}))
    assert {r.cell.id: r.status for r in plan(spec)}["Qwen3-8B/gguf/Q4_K_M"] != "done"


def test_validation_and_evaluation_do_not_read_through_a_symlink_out(world):
    from qwen3_quant.eval.evaluate import eval_targets
    from qwen3_quant.validate import measured_files

    tmp, art = world
    (art / VARIANT_FILE).unlink()
    os.symlink(tmp / "outside" / "secret.gguf", art / VARIANT_FILE)
    m = Manifest.read(art)
    with pytest.raises(UnsafePathError, match="symlink leads out"):
        measured_files(art, m, "Q4_K_M")
    with pytest.raises(UnsafePathError, match="symlink leads out"):
        eval_targets(art, "Q4_K_M")
