"""A small Hugging Face Hub for tests: a threaded HTTP server on 127.0.0.1 that answers the API calls
huggingface_hub makes to create a repo, a branch or a pull request and to upload files through the
preupload / LFS batch / commit protocol (not Xet: set ``HF_HUB_DISABLE_XET=1``), with failures to
inject (an HTTP 500 or a dropped connection on a chosen request).

Point huggingface_hub at it with ``HF_ENDPOINT=hub.url`` (or ``HfApi(endpoint=hub.url)``).
Every request is recorded so tests can check what was sent.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

LFS_EXTENSIONS = (".gguf", ".safetensors", ".onnx", ".data", ".bin")
_MAX_BODY = 256 * 1024 * 1024


@dataclass(frozen=True)
class Blob:
    size: int
    sha256: str
    git_oid: str
    lfs: bool
    content: bytes | None = None  # regular files only; LFS content lives in FakeHub.lfs


@dataclass
class Commit:
    oid: str
    message: str
    files: dict[str, Blob]


@dataclass
class Repo:
    repo_id: str
    private: bool
    # branch or refs/pr/N -> its commits, oldest first
    refs: dict[str, list[Commit]] = field(default_factory=dict)
    prs: dict[int, dict[str, Any]] = field(default_factory=dict)

    def head(self, ref: str) -> Commit | None:
        commits = self.refs.get(ref)
        return commits[-1] if commits else None


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str  # with query string
    headers: dict[str, str]
    body: bytes


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    """``with FakeHub(token) as hub: ...`` serves on ``hub.url`` until the block ends."""

    def __init__(
        self, token: str, *, lfs_extensions: tuple[str, ...] = LFS_EXTENSIONS, timeout: float = 10.0
    ):
        self.token = token
        self.lfs_extensions = lfs_extensions
        self.timeout = timeout
        self.repos: dict[str, Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.puts: Counter[str] = Counter()  # LFS uploads received per oid (including failed ones)
        self.requests: list[Recorded] = []
        self.unexpected: list[str] = []
        self.validated_yaml: list[dict[str, Any]] = []
        self._failures: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._n = 0

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> FakeHub:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        Handler.timeout = self.timeout
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the hub first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # ------------------------------------------------------------------ test controls
    def fail(self, method: str, path_regex: str, action: str = "500", times: int = 1, skip: int = 0) -> None:
        """Make ``times`` requests matching ``method`` and ``path_regex`` fail, after letting ``skip``
        of them through: ``"500"`` answers HTTP 500, ``"drop"`` closes the connection unanswered."""
        assert action in ("500", "drop")
        with self._lock:
            self._failures.append(
                {
                    "method": method,
                    "re": re.compile(path_regex),
                    "action": action,
                    "left": times,
                    "skip": skip,
                }
            )

    def files(self, repo_id: str, ref: str = "main") -> dict[str, Blob]:
        head = self.repos[repo_id].head(ref)
        return dict(head.files) if head else {}

    def content(self, repo_id: str, path: str, ref: str = "main") -> bytes:
        b = self.files(repo_id, ref)[path]
        return self.lfs[b.sha256] if b.lfs else b.content

    def commits(self, repo_id: str, ref: str = "main") -> list[Commit]:
        return list(self.repos[repo_id].refs.get(ref, []))

    def set_pr_status(self, repo_id: str, num: int, status: str) -> None:
        self.repos[repo_id].prs[num]["status"] = status

    # ------------------------------------------------------------------ helpers used by the handler
    def _take_failure(self, method: str, path: str) -> str | None:
        with self._lock:
            for f in self._failures:
                if f["left"] > 0 and f["method"] == method and f["re"].search(path):
                    if f["skip"] > 0:
                        f["skip"] -= 1
                        continue
                    f["left"] -= 1
                    return f["action"]
        return None

    def _new_oid(self) -> str:
        self._n += 1
        return hashlib.sha1(f"commit-{self._n}-{time.time_ns()}".encode()).hexdigest()

    def _blob(self, path: str, data: bytes) -> Blob:
        sha = hashlib.sha256(data).hexdigest()
        return Blob(len(data), sha, git_blob_id(data), False, data)

    def _is_lfs(self, path: str, size: int) -> bool:
        return path.endswith(self.lfs_extensions) or size > 10_000_000


def _split(path: str) -> list[str]:
    return [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output quiet
        return None

    # ------------------------------------------------------------------ plumbing
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            for _ in range(1_000_000):  # bounded: at most this many chunks
                size = int(self.rfile.readline().strip().split(b";")[0] or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                out += self.rfile.read(size)
                self.rfile.readline()
                if len(out) > _MAX_BODY:
                    break
            return out
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(min(n, _MAX_BODY)) if n else b""

    def _send(self, status: int, obj: Any = None, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(obj if obj is not None else {}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, code: str | None = None) -> None:
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, {"error": message}, headers)

    def _handle(self, method: str) -> None:
        hub = self.hub
        body = self._body()
        url = urlsplit(self.path)
        with hub._lock:
            hub.requests.append(
                Recorded(method, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            )
        action = hub._take_failure(method, url.path)
        if action == "drop":
            self.close_connection = True
            return
        if action == "500":
            self._error(500, "injected server error")
            return
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        parts = _split(url.path)
        if parts[:1] == ["_lfs"]:
            return self._lfs_put(parts[1], body)
        if parts == ["api", "agent-harnesses"]:  # huggingface_hub's user-agent telemetry, unauthenticated
            return self._send(200, {"standardEnvVars": [], "harnesses": {}})
        if self.headers.get("Authorization") != f"Bearer {hub.token}":
            return self._error(401, "Invalid credentials in Authorization header")
        try:
            return self._route(method, parts, query, body)
        except (KeyError, ValueError, IndexError) as exc:
            with hub._lock:
                hub.unexpected.append(f"{method} {self.path}: {exc!r}")
            return self._error(400, f"bad request: {exc}")

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    # ------------------------------------------------------------------ routes
    def _route(self, method: str, parts: list[str], query: dict[str, str], body: bytes) -> None:
        hub = self.hub
        if method == "POST" and parts == ["api", "repos", "create"]:
            return self._create_repo(json.loads(body))
        if method == "POST" and parts == ["api", "validate-yaml"]:
            return self._validate_yaml(json.loads(body))
        if len(parts) >= 2 and parts[1].endswith(".git") and parts[2:] == ["info", "lfs", "objects", "batch"]:
            repo_id = f"{parts[0]}/{parts[1][:-4]}"
            return self._lfs_batch(repo_id, json.loads(body)) if repo_id in hub.repos else self._no_repo()
        if parts[:2] != ["api", "models"] or len(parts) < 4:
            with hub._lock:
                hub.unexpected.append(f"{method} {self.path}")
            return self._error(404, "not found")
        repo_id = f"{parts[2]}/{parts[3]}"
        repo = hub.repos.get(repo_id)
        if repo is None:
            return self._no_repo()
        rest = parts[4:]
        if method == "GET" and not rest:
            return self._repo_info(repo, "main")
        if method == "GET" and rest[0] == "revision":
            return self._repo_info(repo, "/".join(rest[1:]))
        if method == "GET" and rest[0] == "tree":
            return self._tree(repo, rest[1], query)
        if method == "POST" and rest[0] == "branch":
            return self._create_branch(repo, "/".join(rest[1:]), json.loads(body or b"{}"))
        if method == "POST" and rest[0] == "preupload":
            return self._preupload(repo, "/".join(rest[1:]), json.loads(body))
        if method == "POST" and rest[0] == "commit":
            return self._commit(repo, "/".join(rest[1:]), query, body)
        if method == "GET" and rest[0] == "discussions":
            return self._discussion(repo, int(rest[1]))
        with hub._lock:
            hub.unexpected.append(f"{method} {self.path}")
        return self._error(404, "not found")

    def _no_repo(self) -> None:
        self._error(404, "Repository not found", "RepoNotFound")

    def _create_repo(self, payload: dict[str, Any]) -> None:
        hub = self.hub
        repo_id = f"{payload['organization']}/{payload['name']}"
        with hub._lock:
            if repo_id in hub.repos:
                return self._error(409, "You already created this model repo")
            attrs = hub._blob(".gitattributes", b"*.gguf filter=lfs diff=lfs merge=lfs -text\n")
            repo = Repo(repo_id, payload.get("visibility") == "private" or bool(payload.get("private")))
            repo.refs["main"] = [Commit(hub._new_oid(), "initial commit", {".gitattributes": attrs})]
            hub.repos[repo_id] = repo
        self._send(200, {"url": f"{hub.url}/{repo_id}", "name": repo_id, "id": repo_id})

    def _repo_info(self, repo: Repo, ref: str) -> None:
        head = repo.head(ref)
        if head is None:
            return self._error(404, f"Invalid rev id: {ref}", "RevisionNotFound")
        self._send(
            200,
            {
                "id": repo.repo_id,
                "sha": head.oid,
                "private": repo.private,
                "siblings": [{"rfilename": p} for p in head.files],
            },
        )

    def _tree(self, repo: Repo, ref: str, query: dict[str, str]) -> None:
        head = repo.head(ref)
        if head is None:
            return self._error(404, f"Invalid rev id: {ref}", "RevisionNotFound")
        out = []
        for path, b in sorted(head.files.items()):
            entry: dict[str, Any] = {"type": "file", "path": path, "size": b.size, "oid": b.git_oid}
            if b.lfs:
                entry["lfs"] = {"oid": b.sha256, "size": b.size, "pointerSize": 134}
            out.append(entry)
        self._send(200, out)

    def _create_branch(self, repo: Repo, branch: str, payload: dict[str, Any]) -> None:
        with self.hub._lock:
            if branch in repo.refs:
                return self._error(409, "Reference already exists")
            start = repo.head(payload.get("startingPoint") or "main")
            repo.refs[branch] = [Commit(start.oid, start.message, dict(start.files))]
        self._send(200, {})

    def _validate_yaml(self, payload: dict[str, Any]) -> None:
        import yaml

        content = payload.get("content", "")
        m = re.match(r"^---\n(.*?)\n---\n", content, re.S)
        try:
            meta = yaml.safe_load(m.group(1)) if m else None
        except yaml.YAMLError as exc:
            return self._send(400, {"errors": [{"message": f"invalid YAML: {exc}"}], "warnings": []})
        if not isinstance(meta, dict):
            return self._send(400, {"errors": [{"message": "no YAML metadata"}], "warnings": []})
        base = meta.get("base_model")
        if base is not None and not (isinstance(base, str) and re.match(r"^[\w.-]+/[\w.-]+$", base)):
            message = f'"base_model" with value "{base}" is not a valid model id'
            return self._send(400, {"errors": [{"message": message}], "warnings": []})
        with self.hub._lock:
            self.hub.validated_yaml.append(meta)
        self._send(200, {"errors": [], "warnings": []})

    def _preupload(self, repo: Repo, ref: str, payload: dict[str, Any]) -> None:
        head = repo.head(ref)
        if head is None:
            return self._error(404, f"Invalid rev id: {ref}", "RevisionNotFound")
        files = []
        for f in payload["files"]:
            lfs = self.hub._is_lfs(f["path"], f["size"])
            old = head.files.get(f["path"])
            oid = (old.sha256 if old.lfs else old.git_oid) if old else None
            files.append(
                {
                    "path": f["path"],
                    "uploadMode": "lfs" if lfs else "regular",
                    "shouldIgnore": False,
                    "oid": oid,
                }
            )
        self._send(200, {"files": files})

    def _lfs_batch(self, repo_id: str, payload: dict[str, Any]) -> None:
        objects = []
        for o in payload["objects"]:
            entry = {"oid": o["oid"], "size": o["size"]}
            if o["oid"] not in self.hub.lfs:
                entry["actions"] = {"upload": {"href": f"{self.hub.url}/_lfs/{o['oid']}"}}
            objects.append(entry)
        self._send(200, {"transfer": "basic", "objects": objects})

    def _lfs_put(self, oid: str, body: bytes) -> None:
        hub = self.hub
        with hub._lock:
            hub.puts[oid] += 1
        if hashlib.sha256(body).hexdigest() != oid:
            return self._error(400, "sha256 of the uploaded content does not match the oid")
        with hub._lock:
            hub.lfs[oid] = body
        self._send(200, {})

    def _commit(self, repo: Repo, ref: str, query: dict[str, str], body: bytes) -> None:
        hub = self.hub
        lines = [json.loads(x) for x in body.splitlines() if x.strip()]
        header = next(x["value"] for x in lines if x["key"] == "header")
        with hub._lock:
            head = repo.head(ref)
            if head is None:
                return self._error(404, f"Invalid rev id: {ref}", "RevisionNotFound")
            files = dict(head.files)
            for x in lines:
                v = x["value"]
                if x["key"] == "file":
                    files[v["path"]] = hub._blob(v["path"], base64.b64decode(v["content"]))
                elif x["key"] == "lfsFile":
                    data = hub.lfs.get(v["oid"])
                    if data is None:
                        return self._error(422, f"LFS object {v['oid']} was never uploaded")
                    files[v["path"]] = Blob(len(data), v["oid"], git_blob_id(data), True)
                elif x["key"] in ("deletedFile", "deletedFolder"):
                    files = {
                        p: b
                        for p, b in files.items()
                        if p != v["path"] and not p.startswith(v["path"].rstrip("/") + "/")
                    }
            commit = Commit(hub._new_oid(), header["summary"], files)
            pr_url = None
            if query.get("create_pr") in ("1", "true", "True"):
                num = max([0, *repo.prs]) + 1
                repo.prs[num] = {"status": "open", "base": ref, "title": header["summary"]}
                repo.refs[f"refs/pr/{num}"] = [commit]
                pr_url = f"{hub.url}/{repo.repo_id}/discussions/{num}"
            else:
                repo.refs[ref].append(commit)
        self._send(
            200,
            {
                "commitUrl": f"{hub.url}/{repo.repo_id}/commit/{commit.oid}",
                "commitOid": commit.oid,
                "pullRequestUrl": pr_url,
            },
        )

    def _discussion(self, repo: Repo, num: int) -> None:
        pr = repo.prs.get(num)
        if pr is None:
            return self._error(404, "Discussion not found")
        self._send(
            200,
            {
                "title": pr["title"],
                "num": num,
                "author": {"name": "tester"},
                "createdAt": "2025-01-01T00:00:00.000Z",
                "status": pr["status"],
                "repo": {"name": repo.repo_id, "type": "model"},
                "isPullRequest": True,
                "events": [],
                "changes": {"base": f"refs/heads/{pr['base']}"},
                "filesWithConflicts": [],
            },
        )
