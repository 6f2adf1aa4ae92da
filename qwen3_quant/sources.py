"""Resolving a model argument: a catalog name, a Hub repo id (``org/name[@revision]``) or a local folder."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from . import catalog
from .errors import DownloadError, MissingFileError, UnknownModelError
from .io import ensure_free_space

log = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# what a quantiser needs from a Hub repo: configs, weights, tokenizer, template, license
ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.jinja", "*.model", "LICENSE*", "README.md"]


@dataclass(frozen=True)
class ModelSource:
    spec: str  # what the user asked for
    path: Path  # local folder
    name: str  # short name for artifacts: Qwen3-8B, Qwen3-Micro, my-finetune
    hub_id: str | None = None  # where it came from, for model cards
    revision: str | None = None
    catalog_name: str | None = None
    is_base: bool = False

    @property
    def base_model(self) -> str:
        return self.hub_id or self.name

    def manifest_record(self) -> dict[str, str | None]:
        """What an artifact's manifest says of its source, with the checkpoint's fingerprint."""
        from .checkpoint import fingerprint

        return {
            "spec": self.spec,
            "name": self.name,
            "hub_id": self.hub_id,
            "revision": self.revision,
            "path": str(self.path),
            "fingerprint": fingerprint(self.path),
        }


def _split_revision(spec: str, revision: str | None) -> tuple[str, str | None]:
    if "@" in spec and not Path(spec).exists():
        spec, _, rev = spec.partition("@")
        return spec, revision or rev or None
    return spec, revision


@dataclass(frozen=True)
class ModelRef:
    """Where a model argument points, found without downloading anything."""

    spec: str
    kind: str  # local | bundled | catalog | hub
    path: Path | None = None  # local and bundled folders
    hub_id: str | None = None  # catalog and hub models
    revision: str | None = None
    entry: catalog.ModelEntry | None = None  # catalog models
    is_base: bool = False

    @property
    def is_local(self) -> bool:
        return self.path is not None


def locate_model(spec: str, *, revision: str | None = None) -> ModelRef:
    """What a model argument names: a local folder, a bundled micro model, a catalog name
    (``-Base`` for the base checkpoint) or a Hub repo id with an optional ``@revision``."""
    local = Path(spec).expanduser()
    if local.is_dir():
        return ModelRef(spec, "local", local.resolve(), revision=revision)
    if spec.startswith((".", "/", "~")) or os.sep + os.sep in spec:
        raise MissingFileError(f"model folder not found: {local}", hint="pass an existing checkpoint folder")
    bundled = catalog.bundled_lookup(spec)
    if bundled is not None:
        if not bundled.is_dir():
            raise MissingFileError(
                f"bundled model {spec} is missing from the installation ({bundled})",
                hint="reinstall qwen3-quant from a full checkout",
            )
        return ModelRef(spec, "bundled", bundled)
    name, revision = _split_revision(spec, revision)
    hit = catalog.lookup(name)
    if hit is not None:
        entry, is_base = hit
        hub_id = entry.base_hub_id if is_base else entry.hub_id
        if not hub_id:
            raise UnknownModelError(
                f"{entry.name} has no -Base checkpoint on the Hub", hint=f"use {entry.name}"
            )
        return ModelRef(spec, "catalog", hub_id=hub_id, revision=revision, entry=entry, is_base=is_base)
    if _HUB_ID.match(name):
        return ModelRef(spec, "hub", hub_id=name, revision=revision)
    names = ", ".join(list(catalog.catalog()) + list(catalog.bundled_models()))
    raise UnknownModelError(
        f"unknown model '{spec}'",
        hint=f"use one of {names}, a Hub id such as Qwen/Qwen3-8B, or a local folder",
    )


def resolve_model(
    spec: str, *, revision: str | None = None, cache_dir: str | Path | None = None, download: bool = True
) -> ModelSource:
    """Turn a model argument into a local folder, downloading from the Hub when needed.

    Nothing heavy happens here except the download; call :func:`checkpoint.inspect_checkpoint`
    on ``.path`` to validate the checkpoint.
    """
    ref = locate_model(spec, revision=revision)
    if ref.path is not None:
        return ModelSource(spec, ref.path, ref.path.name, revision=ref.revision)
    assert ref.hub_id is not None
    path = download_snapshot(ref.hub_id, revision=ref.revision, cache_dir=cache_dir, download=download)
    if ref.entry is not None:
        return ModelSource(
            spec, path, ref.hub_id.split("/")[-1], ref.hub_id, ref.revision, ref.entry.name, ref.is_base
        )
    return ModelSource(spec, path, ref.hub_id.split("/")[-1], ref.hub_id, ref.revision)


def download_snapshot(
    repo_id: str, *, revision: str | None, cache_dir: str | Path | None, download: bool = True
) -> Path:
    """Download only the files a quantiser needs; honours HF_HUB_OFFLINE and the local cache."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    env_offline = os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in ("1", "true", "yes", "on")
    offline = not download or env_offline
    try:
        if not offline:
            _check_space_for(repo_id, revision, cache_dir)
        path = snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache_dir,
            allow_patterns=ALLOW_PATTERNS,
            local_files_only=offline,
        )
    except LocalEntryNotFoundError as exc:
        # huggingface_hub raises this offline, and also online when the Hub cannot be reached
        if env_offline:
            why, hint = "HF_HUB_OFFLINE is set", "unset HF_HUB_OFFLINE to download it"
        elif offline:
            why, hint = "downloads are off", "download it once online"
        else:
            why, hint = "the Hub could not be reached", "check the network"
        raise DownloadError(
            f"{repo_id} is not in the local Hugging Face cache and {why}",
            hint=f"{hint}, or pass a local folder",
        ) from exc
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        hint = "check the repo id and revision" if status in (401, 404) else "check the network and retry"
        if status == 401:
            hint = "the repo is private or gated: log in with `hf auth login` or set HF_TOKEN"
        raise DownloadError(f"could not download {repo_id}: HTTP {status}", hint=hint) from exc
    except OSError as exc:
        raise DownloadError(
            f"could not download {repo_id}: {exc.__class__.__name__}",
            hint="check the network, or set HF_HUB_OFFLINE=1 and pass a cached or local model",
        ) from exc
    return Path(path)


def _check_space_for(repo_id: str, revision: str | None, cache_dir: str | Path | None) -> None:
    """Refuse before downloading when the cache's disk cannot hold the weights."""
    try:
        from fnmatch import fnmatch

        from huggingface_hub import HfApi
        from huggingface_hub.constants import HF_HUB_CACHE

        info = HfApi().model_info(repo_id, revision=revision, files_metadata=True)
        need = sum(
            (s.size or 0) for s in info.siblings or [] if any(fnmatch(s.rfilename, p) for p in ALLOW_PATTERNS)
        )
    except Exception as exc:  # the download itself reports network errors properly
        log.debug("could not size %s before download: %s", repo_id, exc)
        return
    ensure_free_space(Path(cache_dir or HF_HUB_CACHE), need, what=f"download {repo_id}")
