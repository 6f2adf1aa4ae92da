"""The Hub path against a local HTTP server on 127.0.0.1 that answers the calls huggingface_hub makes
(repo, branch, preupload, LFS batch and upload, commit, pull request), with failures injected in the
middle and resumed, refusals that send nothing, and no token anywhere but the Authorization header."""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from qwen3_quant.artifact import load_manifest
from qwen3_quant.errors import PublishError, UsageError, ValidationFailedError
from qwen3_quant.publish import HubLimits, publish
from qwen3_quant.publish.bundle import CARD, CHECKSUMS, EVAL_JSON
from qwen3_quant.publish.hub import state_path
from qwen3_quant.testing.fake_artifacts import make_artifact
from qwen3_quant.testing.fake_hub import FakeHub

ROOT = Path(__file__).resolve().parents[1]
REPO = "test-org/Qwen3-8B-GGUF"


@pytest.fixture
def token() -> str:
    return "hf_" + secrets.token_hex(16)


@pytest.fixture
def hub(token, monkeypatch, cache_dir):
    from huggingface_hub import constants

    with FakeHub(token) as h:
        assert h.url.startswith("http://127.0.0.1:")
        monkeypatch.setenv("HF_ENDPOINT", h.url)
        monkeypatch.setenv("HF_TOKEN", token)
        # plain HTTP/LFS uploads (the fake Hub speaks no Xet); conftest switches the Hub off for other tests
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        yield h
    assert not h.unexpected, h.unexpected


@pytest.fixture
def gguf(tmp_path):
    return make_artifact(tmp_path / "art", "gguf", variants={"Q4_K_M": 4, "Q8_0": 8}, shards={"Q8_0": 2})


def _published(res) -> dict[str, bytes]:
    return {f.path: (f.data if f.generated else f.source.read_bytes()) for f in res.files}


def test_upload_creates_the_repo_and_commits_within_the_limits(hub, gguf, token):
    res = publish(gguf, f"hf://{REPO}", private=True, limits=HubLimits(max_files_per_commit=2))
    assert hub.repos[REPO].private
    files = _published(res)
    assert set(hub.files(REPO)) == {".gitattributes", *files}
    for path, data in files.items():
        assert hub.content(REPO, path) == data
    # 3 weight files in commits of at most 2 files, then the card, eval.json, manifest and checksums
    commits = hub.commits(REPO)[1:]
    assert [len(c) for c in (r.files for r in res.commits)] == [2, 1, 4]
    assert len(commits) == 3 and "model card" in commits[-1].message
    assert set(res.commits[-1].files) == {CARD, EVAL_JSON, "qwen3_quant.json", CHECKSUMS}
    assert hub.validated_yaml[-1]["base_model"] == "Qwen/Qwen3-8B"  # the Hub's YAML check saw the card
    assert res.url == f"{hub.url}/{REPO}" and res.revision == "main"
    assert all(n == 1 for n in hub.puts.values()) and len(hub.puts) == 3
    state = json.loads(state_path(hub.url, REPO, "main", False).read_text())
    assert state["complete"] and [c["oid"] for c in state["commits"]] == [c.oid for c in res.commits]
    assert token not in json.dumps(state)

    again = publish(gguf, f"hf://{REPO}")
    assert again.unchanged and not again.commits and set(again.skipped) == set(files)
    assert len(hub.commits(REPO)) == 4


def test_interrupted_upload_resumes_without_sending_anything_twice(hub, gguf):
    limits = HubLimits(max_files_per_commit=1)
    hub.fail("POST", r"/commit/main$", "drop", skip=1)  # the connection dies during the 2nd commit
    with pytest.raises(PublishError) as err:
        publish(gguf, f"hf://{REPO}", limits=limits)
    line = err.value.one_line()
    assert "stopped at commit 2/4" in line and "rerun the same command to resume" in line
    assert set(hub.files(REPO)) == {".gitattributes", "Qwen3-8B-Q4_K_M.gguf"}
    uploaded_before = dict(hub.puts)
    assert len(uploaded_before) == 2  # the 2nd file's blob reached LFS before its commit failed

    res = publish(gguf, f"hf://{REPO}", limits=limits)
    assert res.skipped == ["Qwen3-8B-Q4_K_M.gguf"]
    assert "Qwen3-8B-Q4_K_M.gguf" not in res.uploaded and len(res.commits) == 3
    assert all(n == 1 for n in hub.puts.values()) and len(hub.puts) == 3  # no blob sent twice
    assert set(hub.files(REPO)) == {".gitattributes", *_published(res)}
    state = json.loads(state_path(hub.url, REPO, "main", False).read_text())
    assert state["complete"] and len(state["commits"]) == 4  # 1 before the interruption, 3 after


def _oid(folder: Path, name: str) -> str:
    return load_manifest(folder)["files"][name]["sha256"]


def test_transient_errors_are_retried(hub, gguf):
    oid = _oid(gguf, "Qwen3-8B-Q8_0-00002-of-00002.gguf")
    hub.fail("PUT", f"^/_lfs/{oid}$", "500")  # storage answers 500 once for this file
    hub.fail("POST", r"/preupload/", "drop")  # and one API call loses its connection
    res = publish(gguf, f"hf://{REPO}")
    assert set(hub.files(REPO)) == {".gitattributes", *_published(res)}
    puts = [r.path for r in hub.requests if r.method == "PUT"]
    assert len(puts) == 4 and puts.count(f"/_lfs/{oid}") == 2 and len(hub.lfs) == 3


def test_a_file_whose_upload_keeps_failing_stops_the_run_and_resumes(hub, gguf, monkeypatch):
    monkeypatch.setattr("huggingface_hub.utils._http.time.sleep", lambda s: None)  # skip the retry back-off
    victim = "Qwen3-8B-Q8_0-00001-of-00002.gguf"
    oid = _oid(gguf, victim)
    hub.fail("PUT", f"^/_lfs/{oid}$", "drop", times=6)  # the connection drops on every try for this file
    limits = HubLimits(max_files_per_commit=1)
    with pytest.raises(PublishError) as err:
        publish(gguf, f"hf://{REPO}", limits=limits)
    assert "stopped at commit 2/4" in err.value.one_line() and victim in err.value.one_line()
    assert [r.path for r in hub.requests if r.method == "PUT"].count(f"/_lfs/{oid}") == 6
    assert set(hub.files(REPO)) == {".gitattributes", "Qwen3-8B-Q4_K_M.gguf"}

    res = publish(gguf, f"hf://{REPO}", limits=limits)
    assert res.skipped == ["Qwen3-8B-Q4_K_M.gguf"] and victim in res.uploaded
    assert hub.puts[_oid(gguf, "Qwen3-8B-Q4_K_M.gguf")] == 1  # the committed file was not sent again
    assert set(hub.files(REPO)) == {".gitattributes", *_published(res)}


def test_branch_and_pull_request(hub, gguf):
    res = publish(gguf, f"hf://{REPO}", revision="release", variants=["Q4_K_M"])
    assert res.revision == "release"
    assert set(hub.files(REPO, "release")) == {".gitattributes", *_published(res)}
    assert set(hub.files(REPO)) == {".gitattributes"}  # main untouched

    limits = HubLimits(max_files_per_commit=1)
    hub.fail("POST", r"/commit/refs%2Fpr%2F1$", "500")  # the 2nd commit (the 1st into the PR) fails
    with pytest.raises(PublishError, match="stopped at commit 2/4"):
        publish(gguf, f"hf://{REPO}", create_pr=True, limits=limits)
    assert list(hub.repos[REPO].prs) == [1]
    pr = publish(gguf, f"hf://{REPO}", create_pr=True, limits=limits)
    assert list(hub.repos[REPO].prs) == [1]  # the resumed upload filled the same pull request
    assert pr.pr_url == f"{hub.url}/{REPO}/discussions/1" and pr.revision == "refs/pr/1"
    assert set(hub.files(REPO, "refs/pr/1")) == {".gitattributes", *_published(pr)}
    assert set(hub.files(REPO)) == {".gitattributes"}

    hub.set_pr_status(REPO, 1, "merged")  # a finished PR is not reused: a changed publish opens a new one
    publish(gguf, f"hf://{REPO}", create_pr=True, variants=["Q8_0"])
    assert list(hub.repos[REPO].prs) == [1, 2]


def test_private_publish_refuses_an_existing_public_repo(hub, gguf):
    publish(gguf, f"hf://{REPO}", variants=["Q4_K_M"])
    n = len(hub.commits(REPO))
    with pytest.raises(UsageError, match="exists and is public"):
        publish(gguf, f"hf://{REPO}", private=True)
    assert len(hub.commits(REPO)) == n


def test_refusals_send_nothing(hub, tmp_path):
    bad = make_artifact(
        tmp_path / "bad", "gguf", variants={"Q4_K_M": 4, "Q2_K": 2}, validation={"Q2_K": "fail"}
    )
    with pytest.raises(ValidationFailedError, match="Q2_K"):
        publish(bad, f"hf://{REPO}")
    big = make_artifact(tmp_path / "big", "gptq")
    with pytest.raises(PublishError) as err:
        publish(big, f"hf://{REPO}", limits=HubLimits(max_file_bytes=4000))
    assert "model.safetensors" in err.value.one_line() and "--max-shard-size" in err.value.one_line()
    dry = publish(bad, f"hf://{REPO}", dry_run=True, force=True)
    assert dry.dry_run and [c.index for c in dry.commits] == [1, 2] and dry.forced
    assert hub.requests == [] and REPO not in hub.repos
    assert HubLimits().max_file_bytes == 50 * 1000**3


def test_a_card_the_hub_refuses_stops_the_publish_before_any_upload(hub, gguf, monkeypatch):
    monkeypatch.setattr(
        "qwen3_quant.publish.card.render_front_matter", lambda meta: "---\nbase_model: [\n---\n"
    )
    with pytest.raises(PublishError, match="refuses the model card's metadata: invalid YAML"):
        publish(gguf, f"hf://{REPO}")
    assert not hub.puts and len(hub.commits(REPO)) == 1  # the repo exists, nothing was committed


def test_token_problems_are_one_line_without_the_token(hub, gguf, token, monkeypatch):
    wrong = "hf_" + secrets.token_hex(16)
    monkeypatch.setenv("HF_TOKEN", wrong)
    with pytest.raises(PublishError) as err:
        publish(gguf, f"hf://{REPO}")
    assert "HTTP 401" in err.value.one_line() and "token was refused" in err.value.one_line()
    assert wrong not in err.value.one_line() and token not in err.value.one_line()

    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    with pytest.raises(PublishError, match="no Hugging Face token"):
        publish(gguf, f"hf://{REPO}")
    assert publish(gguf, f"hf://{REPO}", dry_run=True).commits  # a dry run needs no token
    assert REPO not in hub.repos


def test_no_token_in_logs_at_debug_level(hub, gguf, token, caplog):
    caplog.set_level(logging.DEBUG)
    hub.fail("POST", r"/commit/", "500")
    with pytest.raises(PublishError):
        publish(gguf, f"hf://{REPO}")
    publish(gguf, f"hf://{REPO}")
    assert caplog.records
    for rec in caplog.records:
        assert token not in rec.getMessage() and token not in (rec.exc_text or "")


def _cli(args, env, timeout=120):
    code = "import sys; from qwen3_quant.cli import main; sys.exit(main())"
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def test_cli_upload_resume_and_no_token_in_any_output_or_file(hub, gguf, token, tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_ENDPOINT": hub.url,
        "HF_TOKEN": token,
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_OFFLINE": "0",
        "HF_HOME": str(tmp_path / "hf-home"),
        "HF_DEBUG": "1",  # huggingface_hub logs every request as a curl command
    }
    hub.fail("POST", r"/commit/main$", "500", skip=1)
    args = ["-vv", "publish", str(gguf), "--to", f"hf://{REPO}", "--json-out", str(tmp_path / "out.json")]
    first = _cli(args, env)
    assert first.returncode == 1, first.stdout + first.stderr
    assert "rerun the same command to resume" in first.stderr
    second = _cli(args, env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"published {gguf.name} to hf://{REPO}" in second.stdout
    result = json.loads((tmp_path / "out.json").read_text())
    assert result["skipped"] and result["commits"]
    assert set(hub.files(REPO)) == {".gitattributes", *(f["path"] for f in result["files"])}

    for proc in (first, second):
        assert token not in proc.stdout and token not in proc.stderr
    assert "authorization" in (first.stderr + second.stderr).lower()  # HF_DEBUG did log the headers, masked
    for p in tmp_path.rglob("*"):
        if p.is_file():
            assert token.encode() not in p.read_bytes(), p
    for r in hub.requests:
        assert token not in r.path and token.encode() not in r.body
        leaked = [k for k, v in r.headers.items() if token in v and k != "authorization"]
        assert not leaked, (r.path, leaked)
        if r.path.startswith("/_lfs/"):
            assert "authorization" not in r.headers  # storage uploads never carry the token
