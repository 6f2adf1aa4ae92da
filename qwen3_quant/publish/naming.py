"""Names on the publishing side: Hub repo ids and publish targets ``hf://ORG/NAME`` or a folder.
Artifact (and so repo) names come from each format's ``artifact_name`` (``Qwen3-8B-GGUF``,
``Qwen3-8B-AWQ``, ``Qwen3-8B-GPTQ-Int4``, ``Qwen3-8B-ONNX-int4``); file names from the formats.

Pure string functions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError

HF_SCHEME = "hf://"

_REPO_PART = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")


def model_short_name(name: str) -> str:
    """``Qwen/Qwen3-8B`` -> ``Qwen3-8B``; a plain name is returned as is."""
    return name.strip().rstrip("/").split("/")[-1]


def validate_repo_id(repo_id: str) -> str:
    """``ORG/NAME`` as the Hub accepts it, or a one-line :class:`UsageError`."""
    parts = repo_id.strip().split("/")
    ok = (
        len(parts) == 2
        and all(_REPO_PART.match(p) for p in parts)
        and len(parts[1]) <= 96
        and not any(".." in p or "--" in p for p in parts)
        and not parts[1].endswith(".git")
    )
    if not ok:
        raise UsageError(
            f"bad Hub repo id '{repo_id}'",
            hint="write hf://ORG/NAME with letters, digits, '-', '_' and '.', e.g. hf://my-org/Qwen3-8B-GGUF",
        )
    return "/".join(parts)


@dataclass(frozen=True)
class Target:
    """Where a publish goes: a Hub repo (``repo_id``) or a local folder (``path``)."""

    repo_id: str | None = None
    path: Path | None = None

    @property
    def is_hub(self) -> bool:
        return self.repo_id is not None

    def __str__(self) -> str:
        return f"{HF_SCHEME}{self.repo_id}" if self.repo_id else str(self.path)


def parse_target(to: str | Path) -> Target:
    """``hf://ORG/NAME`` -> a Hub target; anything else is a local folder."""
    if isinstance(to, Path):
        return Target(path=to.expanduser())
    s = str(to).strip()
    if not s:
        raise UsageError("empty publish target", hint="pass --to hf://ORG/NAME or --to FOLDER")
    if s.lower().startswith(HF_SCHEME):
        return Target(repo_id=validate_repo_id(s[len(HF_SCHEME) :].strip("/")))
    if "://" in s:
        raise UsageError(f"unknown publish target '{s}'", hint="pass --to hf://ORG/NAME or --to FOLDER")
    return Target(path=Path(s).expanduser())
