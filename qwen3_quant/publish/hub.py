"""Publishing to the Hugging Face Hub through huggingface_hub.

The upload is a series of commits within the Hub's limits (no file over 50 GB, a bounded number of
files and bytes per commit), weights first and the model card last, so that a repo with a card is
complete. It resumes: files already on the target revision with the same sha256 (LFS oid) or git
blob id are skipped, blobs uploaded before an interruption are not sent again (the LFS batch API
reports them present), and a state file in the cache remembers the commits made and the pull
request being filled. The token is passed to huggingface_hub and nowhere else.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import PublishError, UsageError
from ..formats.base import Progress, no_progress
from ..io import atomic_write_json, human_bytes
from .bundle import CARD, Bundle, PublishFile
from .scrub import scrub

log = logging.getLogger(__name__)

GB = 1000**3
STATE_SCHEMA = 1
_GIT_SHA1_MAX_BYTES = 64 * 1000**2  # compare regular (non-LFS) remote files by git blob id up to this size


@dataclass(frozen=True)
class HubLimits:
    """The Hub refuses files over 50 GB; commits are kept small enough that an interruption loses
    little and the commit endpoint never times out."""

    max_file_bytes: int = 50 * GB
    max_files_per_commit: int = 50
    max_bytes_per_commit: int = 20 * GB


@dataclass
class CommitRecord:
    index: int  # 1-based
    files: list[str]
    bytes: int
    message: str = ""
    oid: str | None = None
    url: str | None = None

    @classmethod
    def planned(cls, name: str, group: list, index: int, of: int) -> CommitRecord:
        """Commit ``index`` of ``of`` of an upload of ``name``: its files, size and message."""
        return cls(
            index, [f.path for f in group], sum(f.size for f in group), commit_message(name, group, index, of)
        )


@dataclass
class HubOutcome:
    repo_id: str
    revision: str  # where the files went: a branch or refs/pr/N
    url: str
    commits: list[CommitRecord] = field(default_factory=list)
    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already on the Hub with the same content
    pr_url: str | None = None
    created_repo: bool = False
    created_branch: bool = False


# ---------------------------------------------------------------------------- planning (no network)


def check_file_sizes(bundle: Bundle, limits: HubLimits) -> None:
    for f in bundle.files:
        if f.size > limits.max_file_bytes:
            raise PublishError(
                f"{f.path} is {human_bytes(f.size)}; the Hub refuses files over {human_bytes(limits.max_file_bytes)}",
                hint="split it: quantise again with --max-shard-size 45G (GGUF writes llama.cpp split files)",
            )


def plan_commits(files: list[PublishFile], limits: HubLimits) -> list[list[PublishFile]]:
    """Group files into commits: shared files, then each variant's files, packed within the limits;
    the generated files (card, eval.json, manifest, checksums) always form the last commit."""
    payload = [f for f in files if not f.generated]
    payload.sort(key=lambda f: f.variant is not None)  # stable: shared files first, variants in order
    groups: list[list[PublishFile]] = []
    cur: list[PublishFile] = []
    cur_bytes = 0
    for f in payload:
        if cur and (
            len(cur) >= limits.max_files_per_commit or cur_bytes + f.size > limits.max_bytes_per_commit
        ):
            groups.append(cur)
            cur, cur_bytes = [], 0
        cur.append(f)
        cur_bytes += f.size
    if cur:
        groups.append(cur)
    generated = [f for f in files if f.generated]  # a handful of small files: one commit, whatever the limits
    if generated:
        groups.append(generated)
    return groups


_CONFIG_AND_TOKENIZER = (
    "config",
    "generation_config",
    "tokenizer",
    "special_tokens",
    "vocab",
    "merges",
    "chat_template",
)


def _shared_label(path: str) -> str:
    """What a shared (no variant's) file is, for a commit message."""
    stem = path.rsplit("/", 1)[-1].split(".", 1)[0]
    return "config and tokenizer" if stem.startswith(_CONFIG_AND_TOKENIZER) else path


def commit_message(bundle_name: str, group: list[PublishFile], index: int, count: int) -> str:
    """``Upload NAME (i/n): Q4_K_M, Q8_0, ...``: what the commit holds, by variant; shared files
    named by what they are (config and tokenizer, else the file); generated files together."""
    variants = []
    for f in group:
        label = f.variant or ("model card and checksums" if f.generated else _shared_label(f.path))
        if label not in variants:
            variants.append(label)
    return f"Upload {bundle_name} ({index}/{count}): {', '.join(variants)}"


# ---------------------------------------------------------------------------- token and endpoint


def hub_endpoint() -> str:
    """``HF_ENDPOINT`` as set now (huggingface_hub reads it once, at import), else its default."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def resolve_token(token: str | None) -> str:
    """The token given, else HF_TOKEN, else the huggingface_hub login. Never logged."""
    if token:
        return token
    from huggingface_hub import get_token

    found = get_token()
    if not found:
        raise PublishError(
            "no Hugging Face token: publishing to the Hub needs one with write access",
            hint="set HF_TOKEN or run `hf auth login`",
        )
    return found


# ---------------------------------------------------------------------------- resume state


def state_path(endpoint: str, repo_id: str, revision: str, create_pr: bool) -> Path:
    from ..io import cache_root

    key = hashlib.sha256(f"{endpoint}|{repo_id}|{revision}|{int(create_pr)}".encode()).hexdigest()[:16]
    return cache_root() / "publish" / f"{repo_id.replace('/', '--')}-{key}.json"


def _load_state(path: Path) -> dict[str, Any]:
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


# ---------------------------------------------------------------------------- remote comparison


@dataclass(frozen=True)
class RemoteFile:
    size: int
    sha256: str | None  # LFS / Xet files
    git_oid: str | None  # regular files


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_on_remote(f: PublishFile, remote: dict[str, RemoteFile]) -> bool:
    r = remote.get(f.path)
    if r is None or r.size != f.size:
        return False
    if r.sha256:
        return r.sha256 == f.sha256
    if r.git_oid and f.size <= _GIT_SHA1_MAX_BYTES:
        data = f.data if f.data is not None else f.source.read_bytes()
        return git_blob_id(data) == r.git_oid
    return False


class _Hub:
    """The huggingface_hub calls one publish makes, with errors turned into one-line messages."""

    def __init__(self, repo_id: str, token: str, endpoint: str):
        from huggingface_hub import HfApi

        from .. import __version__

        self.repo_id = repo_id
        self.endpoint = endpoint
        self._token = token
        self.api = HfApi(
            endpoint=endpoint, token=token, library_name="qwen3-quant", library_version=__version__
        )

    def error(self, exc: BaseException, what: str) -> PublishError:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        detail = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        detail = scrub(detail, [self._token])
        hint = "check the network and rerun the same command to resume"
        if status == 401:
            hint = "the token was refused: set a valid HF_TOKEN or run `hf auth login`"
        elif status == 403:
            hint = f"the token cannot write to {self.repo_id}: use a token with write access to it"
        elif status == 404:
            hint = f"check the repo id {self.repo_id} and that the token can see it"
        code = f"HTTP {status}" if status else exc.__class__.__name__
        return PublishError(f"{what} ({code}: {detail})", hint=hint)

    def ensure_repo(self, private: bool) -> bool:
        """Create the repo when missing; refuse to put a --private publish into a public repo."""
        from huggingface_hub.errors import RepositoryNotFoundError

        try:
            info = self.api.repo_info(self.repo_id)
        except RepositoryNotFoundError:
            info = None
        except Exception as exc:
            raise self.error(exc, f"could not look up {self.repo_id}") from exc
        if info is not None:
            if private and info.private is False:
                raise UsageError(
                    f"hf://{self.repo_id} exists and is public; --private cannot make it private",
                    hint="make the repo private on the Hub first, or drop --private",
                )
            return False
        try:
            self.api.create_repo(self.repo_id, private=private or None, exist_ok=True)
        except Exception as exc:
            raise self.error(exc, f"could not create {self.repo_id}") from exc
        log.info("created hf://%s%s", self.repo_id, " (private)" if private else "")
        return True

    def ensure_branch(self, branch: str) -> bool:
        try:
            if self.api.revision_exists(self.repo_id, branch):
                return False
            self.api.create_branch(self.repo_id, branch=branch, exist_ok=True)
        except Exception as exc:
            raise self.error(exc, f"could not create branch {branch}") from exc
        log.info("created branch %s of %s", branch, self.repo_id)
        return True

    def pr_is_open(self, num: int) -> bool:
        try:
            d = self.api.get_discussion_details(self.repo_id, num)
        except Exception as exc:
            log.info("pull request #%d of %s is not usable (%s); opening a new one", num, self.repo_id, exc)
            return False
        return d.is_pull_request and d.status in ("open", "draft")

    def check_card(self, card: str) -> None:
        """Have the Hub check the card's metadata before any upload (it refuses the commit otherwise)."""
        validate = getattr(self.api, "_validate_yaml", None)
        if validate is None:  # the commit of the card validates it anyway
            return
        try:
            validate(card, repo_type="model")
        except ValueError as exc:
            reasons = "; ".join(x.strip("- ") for x in str(exc).splitlines()[1:] if x.strip()) or str(exc)
            raise PublishError(
                f"the Hub refuses the model card's metadata: {scrub(reasons, [self._token])}",
                hint="report this as a qwen3-quant bug; nothing was uploaded",
            ) from exc
        except Exception as exc:
            raise self.error(exc, "could not check the model card") from exc

    def remote_files(self, revision: str) -> dict[str, RemoteFile]:
        from huggingface_hub.errors import RevisionNotFoundError
        from huggingface_hub.hf_api import RepoFile

        try:
            entries = list(self.api.list_repo_tree(self.repo_id, recursive=True, revision=revision))
        except RevisionNotFoundError:
            return {}
        except Exception as exc:
            raise self.error(exc, f"could not list {self.repo_id}@{revision}") from exc
        from ..io import safe_relpath

        return {
            safe_relpath(e.path, what=f"the Hub's listing of {self.repo_id}@{revision}"): RemoteFile(
                e.size, e.lfs.sha256 if e.lfs else None, e.blob_id
            )
            for e in entries
            if isinstance(e, RepoFile)
        }

    def commit(
        self, group: list[PublishFile], *, message: str, description: str, revision: str, create_pr: bool
    ):
        from huggingface_hub import CommitOperationAdd

        ops = []
        for f in group:
            op = CommitOperationAdd(
                path_in_repo=f.path, path_or_fileobj=f.data if f.generated else str(f.source)
            )
            op.upload_info.sha256 = bytes.fromhex(f.sha256)  # verified against the manifest already
            ops.append(op)
        return self.api.create_commit(
            self.repo_id,
            ops,
            commit_message=message,
            commit_description=description,
            revision=revision,
            create_pr=create_pr,
        )


def publish_hub(
    bundle: Bundle,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    token: str | None = None,
    limits: HubLimits | None = None,
    progress: Progress = no_progress,
) -> HubOutcome:
    from huggingface_hub import constants

    limits = limits or HubLimits()
    check_file_sizes(bundle, limits)
    if constants.is_offline_mode():
        raise PublishError(
            "HF_HUB_OFFLINE is set: cannot publish to the Hub",
            hint="unset HF_HUB_OFFLINE or publish with --to FOLDER",
        )
    endpoint = hub_endpoint()
    hub = _Hub(repo_id, resolve_token(token), endpoint)
    base = revision or constants.DEFAULT_REVISION
    out = HubOutcome(repo_id, base, f"{endpoint}/{repo_id}")
    out.created_repo = hub.ensure_repo(private)
    if revision and revision != constants.DEFAULT_REVISION:
        out.created_branch = hub.ensure_branch(revision)

    spath = state_path(endpoint, repo_id, base, create_pr)
    state = _load_state(spath)
    if state.get("fingerprint") != bundle.fingerprint:
        if state.get("pr_num") and not state.get("complete"):
            log.warning("an unfinished pull request #%s for an earlier publish stays open", state["pr_num"])
        state = {
            "schema": STATE_SCHEMA,
            "endpoint": endpoint,
            "repo_id": repo_id,
            "revision": base,
            "create_pr": create_pr,
            "fingerprint": bundle.fingerprint,
            "pr_num": None,
            "commits": [],
        }
    pr_num = state.get("pr_num")
    if pr_num and not hub.pr_is_open(pr_num):
        pr_num = state["pr_num"] = None
    target = f"refs/pr/{pr_num}" if pr_num else base
    if pr_num:
        out.pr_url = f"{endpoint}/{repo_id}/discussions/{pr_num}"
        log.info("resuming pull request #%d of %s", pr_num, repo_id)

    remote = hub.remote_files(target)
    extra = sorted(set(remote) - {f.path for f in bundle.files} - {".gitattributes"})
    if extra:
        log.warning(
            "%d files on %s@%s are not part of this publish and stay there: %s",
            len(extra),
            repo_id,
            target,
            ", ".join(extra[:5]) + (" ..." if len(extra) > 5 else ""),
        )
    todo = [f for f in bundle.files if not is_on_remote(f, remote)]
    todo_paths = {f.path for f in todo}
    out.skipped = [f.path for f in bundle.files if f.path not in todo_paths]
    if out.skipped:
        log.info(
            "%d files are already on %s@%s with the same content; skipping them",
            len(out.skipped),
            repo_id,
            target,
        )
    if not todo:
        log.info("hf://%s@%s already holds this publish; nothing to upload", repo_id, target)
        state["complete"] = True
        atomic_write_json(spath, state)
        out.revision = target
        return out

    if any(f.path == CARD for f in todo):
        hub.check_card(bundle.card)
    groups = plan_commits(todo, limits)
    total = sum(f.size for f in todo)
    done = 0
    progress("upload", 0, total)
    from .. import __version__

    for i, group in enumerate(groups, 1):
        rec = CommitRecord.planned(bundle.name, group, i, len(groups))
        msg = rec.message
        desc = f"Published with qwen3-quant {__version__}; commit {i} of {len(groups)} of this upload."
        open_pr = create_pr and pr_num is None
        log.info("%s (%d files, %s)", msg, len(group), human_bytes(sum(f.size for f in group)))
        try:
            info = hub.commit(group, message=msg, description=desc, revision=target, create_pr=open_pr)
        except Exception as exc:
            err = hub.error(exc, f"upload to hf://{repo_id} stopped at commit {i}/{len(groups)}")
            if err.hint and err.hint.startswith("check the network"):
                on_hub = len(out.skipped) + len(out.uploaded)
                err.hint = "rerun the same command to resume" + (
                    f"; the {on_hub} files already on the Hub are skipped" if on_hub else ""
                )
            raise err from exc
        if open_pr:
            pr_num = info.pr_num
            if pr_num is None:
                raise PublishError(
                    f"the Hub did not open a pull request on {repo_id}", hint="rerun without --create-pr"
                )
            target = f"refs/pr/{pr_num}"
            out.pr_url = info.pr_url
            state["pr_num"] = pr_num
        rec.oid, rec.url = info.oid, info.commit_url
        out.commits.append(rec)
        out.uploaded += rec.files
        state["commits"].append({**rec.__dict__, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        atomic_write_json(spath, state)
        done += rec.bytes
        progress("upload", done, total)
    state["complete"] = True
    atomic_write_json(spath, state)
    out.revision = target
    return out
