"""``publish()``: put a validated artifact folder on the Hub (``hf://ORG/NAME``) or in a local folder,
with a generated model card, ``eval.json`` and ``SHA256SUMS``.

Before anything is written or leaves the machine, every file's size and sha256 are checked against
the manifest written at quantisation time, and variants whose validation failed or is missing are
refused (``force=True`` publishes them anyway and the card says so prominently).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..artifact import MANIFEST, Manifest
from ..errors import UsageError
from ..formats.base import Progress, no_progress
from ..io import finite_json
from .bundle import (
    CARD,
    CHECKSUMS,
    EVAL_JSON,
    Bundle,
    PublishFile,
    base_model_of,
    check_validation,
    checksums_text,
    eval_document,
    generated_file,
    payload_paths,
    published_manifest,
    select_variants,
    source_file,
    verify_payload,
)
from .hub import CommitRecord, HubLimits, check_file_sizes, plan_commits
from .naming import Target, parse_target

__all__ = ["publish", "PublishResult", "PublishFile", "CommitRecord", "HubLimits", "build_bundle"]

log = logging.getLogger(__name__)


@dataclass
class PublishResult:
    artifact_dir: Path
    target: str  # hf://ORG/NAME or a folder
    dry_run: bool
    variants: list[str]
    files: list[PublishFile]  # everything published: the artifact's files and the generated ones
    card: str
    forced: list[str] = field(default_factory=list)  # failures published with force=True
    commits: list[CommitRecord] = field(default_factory=list)  # made, or planned by a dry run
    uploaded: list[str] = field(default_factory=list)  # files sent to the Hub / written to the folder
    skipped: list[str] = field(default_factory=list)  # already there with the same content
    url: str | None = None
    revision: str | None = None
    pr_url: str | None = None
    unchanged: bool = False  # the target already held exactly this publish

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {
            "artifact_dir": str(self.artifact_dir),
            "target": self.target,
            "dry_run": self.dry_run,
            "variants": self.variants,
            "files": [
                {
                    "path": f.path,
                    "size": f.size,
                    "sha256": f.sha256,
                    "variant": f.variant,
                    "generated": f.generated,
                }
                for f in self.files
            ],
            "forced": self.forced,
            "commits": [c.__dict__ for c in self.commits],
            "uploaded": self.uploaded,
            "skipped": self.skipped,
            "url": self.url,
            "revision": self.revision,
            "pr_url": self.pr_url,
            "unchanged": self.unchanged,
        }


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(finite_json(obj), indent=2, default=str, allow_nan=False) + "\n").encode()


def _check_options(
    target: Target,
    private: bool,
    revision: str | None,
    create_pr: bool,
    overwrite: bool,
    hard_link: bool = False,
) -> None:
    if not target.is_hub:
        for flag, given in (("--private", private), ("--revision", revision), ("--create-pr", create_pr)):
            if given:
                raise UsageError(
                    f"{flag} applies to Hub targets only", hint="publish with --to hf://ORG/NAME"
                )
    elif overwrite:
        raise UsageError(
            "--overwrite applies to folder targets only",
            hint="a Hub publish adds commits; use --revision BRANCH or --create-pr to keep main untouched",
        )
    if target.is_hub and hard_link:
        raise UsageError("--hard-link applies to folder targets only", hint="drop --hard-link")
    if revision is not None and (not revision.strip() or revision.startswith("refs/pr/")):
        raise UsageError(
            f"bad --revision '{revision}'", hint="name a branch; use --create-pr for a pull request"
        )


def build_bundle(
    artifact_dir: str | Path,
    *,
    repo_id: str | None = None,
    variants: Sequence[str] | None = None,
    force: bool = False,
    keep_source_path: bool = True,
    limits: HubLimits | None = None,
    progress: Progress = no_progress,
) -> Bundle:
    """Check the artifact (validation, then every file's sha256) and generate the card, eval.json,
    the published manifest and SHA256SUMS. ``repo_id`` names the Hub repo the card's snippets load."""
    from .card import CardContext, render_card

    folder = Path(artifact_dir)
    manifest = Manifest.read(folder)
    names = select_variants(manifest, list(variants or []))
    paths = payload_paths(manifest, names)
    files = [source_file(folder, manifest, p, v) for p, v in paths]  # each path checked to stay inside
    statuses, forced = check_validation(manifest, names, force)
    bundle = Bundle(folder, manifest, names, statuses=statuses, forced=forced)
    bundle.files = files
    if limits is not None:
        check_file_sizes(bundle, limits)  # before hours of hashing
    verify_payload(folder, manifest, [p for p, _ in paths], progress)

    config = json.loads((folder / "config.json").read_text()) if "config.json" in manifest.files else None
    bundle.card = render_card(CardContext(bundle, repo_id, config))
    generated = [
        generated_file(CARD, bundle.card.encode()),
        generated_file(EVAL_JSON, _json_bytes(eval_document(bundle, base_model_of(manifest)))),
        generated_file(MANIFEST, _json_bytes(published_manifest(bundle, keep_source_path=keep_source_path))),
    ]
    generated.append(generated_file(CHECKSUMS, checksums_text(bundle.payload + generated).encode()))
    bundle.files += generated
    return bundle


def publish(
    artifact_dir: str | Path,
    to: str | Path,
    *,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    dry_run: bool = False,
    force: bool = False,
    overwrite: bool = False,
    hard_link: bool = False,
    variants: Sequence[str] | None = None,
    token: str | None = None,
    limits: HubLimits | None = None,
    progress: Progress = no_progress,
) -> PublishResult:
    """Publish ``artifact_dir`` to ``to`` (``hf://ORG/NAME`` or a folder).

    Refuses (one-line errors, before anything is written or uploaded): a file whose size or sha256
    differs from the manifest; a variant whose validation failed or is missing, unless ``force``;
    a Hub file over 50 GB; an existing different folder without ``overwrite``. ``dry_run`` does the
    checks and returns the plan (files, commits, card) without writing or uploading. ``variants``
    publishes a subset. A folder publish copies the files (copy-on-write clones where the
    filesystem has them), so it does not change when the artifact does; ``hard_link`` links them
    instead (no space taken; the two folders then share their bytes). The token (``token``, else HF_TOKEN, else the huggingface_hub login) is
    used for the upload only.
    """
    target = parse_target(to)
    _check_options(target, private, revision, create_pr, overwrite, hard_link)
    hub_limits = (limits or HubLimits()) if target.is_hub else None
    tok = None
    if target.is_hub and not dry_run:
        from .hub import resolve_token

        tok = resolve_token(token)  # fail before hashing, not after
    if not target.is_hub and not dry_run:
        from ..io import check_writable

        check_writable(target.path.parent, what="publish target's parent folder")
    bundle = build_bundle(
        artifact_dir,
        repo_id=target.repo_id,
        variants=variants,
        force=force,
        keep_source_path=not target.is_hub,
        limits=hub_limits,
        progress=progress,
    )
    result = PublishResult(
        artifact_dir=Path(artifact_dir),
        target=str(target),
        dry_run=dry_run,
        variants=bundle.variants,
        files=bundle.files,
        card=bundle.card,
        forced=bundle.forced,
    )
    if dry_run:
        if target.is_hub:
            groups = plan_commits(bundle.files, hub_limits)
            result.commits = [
                CommitRecord.planned(bundle.name, g, i, len(groups)) for i, g in enumerate(groups, 1)
            ]
            result.revision = revision or "main"
        log.info("dry run: nothing was written or uploaded")
        return result
    if target.is_hub:
        from .hub import publish_hub

        out = publish_hub(
            bundle,
            target.repo_id,
            private=private,
            revision=revision,
            create_pr=create_pr,
            token=tok,
            limits=hub_limits,
            progress=progress,
        )
        result.commits, result.uploaded, result.skipped = out.commits, out.uploaded, out.skipped
        result.url, result.revision, result.pr_url = out.url, out.revision, out.pr_url
        result.unchanged = not out.commits
        return result
    from .local import publish_local

    lo = publish_local(bundle, target.path, overwrite=overwrite, hard_link=hard_link, progress=progress)
    result.url = str(lo.path)
    result.unchanged = lo.unchanged
    result.uploaded = [] if lo.unchanged else lo.linked + lo.copied + lo.written
    result.skipped = [f.path for f in bundle.files] if lo.unchanged else []
    return result
