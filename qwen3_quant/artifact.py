"""The artifact manifest, ``qwen3_quant.json``, written beside every artifact's files, read and
written through typed records.

An artifact folder is shaped like the Hub repo it will be published as (``Qwen3-8B-GGUF``,
``Qwen3-8B-GPTQ-Int4``). It holds one or more *variants* (GGUF types; one for the other
formats), each with its files, its recipe (what it is, for readers and cards), its key (what makes
two runs produce the same variant), its provenance and its validation result. The manifest
records the sha256 of every file at quantisation time; publishing checks them again.

:func:`decide_variant` is the one keep-or-rebuild rule every format follows.
"""

from __future__ import annotations

import contextlib
import json
import logging
import platform
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from .errors import ArtifactExistsError, MissingFileError
from .io import atomic_write_json, file_lock, path_inside, sha256_file
from .provenance import Provenance

log = logging.getLogger(__name__)

MANIFEST = "qwen3_quant.json"
SCHEMA = 2  # 2: typed variant keys and provenance (schema 1 manifests read, their keys never match)
KEY_SCHEMA = 1
BASE_LIBRARIES = ("torch", "transformers", "safetensors", "tokenizers", "huggingface_hub")


def tool_version() -> str:
    try:
        return metadata.version("qwen3-quant")
    except metadata.PackageNotFoundError:
        from . import __version__

        return __version__


def library_versions(names: tuple[str, ...] | None = None) -> dict[str, str]:
    """Installed versions of ``names`` (default: the base libraries and every format's)."""
    if names is None:
        from .formats import all_formats

        names = BASE_LIBRARIES + tuple(lib for f in all_formats() for lib in f.libraries)
    out = {}
    for n in dict.fromkeys(names):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[n] = metadata.version(n)
    return out


def host_description() -> str:
    import os

    return f"{platform.machine()} CPU, {os.cpu_count()} threads, {platform.system()}"


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# --- typed records ------------------------------------------------------------------------------


@dataclass(frozen=True)
class VariantKey:
    """What makes two runs produce the same variant. A format chooses ``settings`` (the options and
    calibration identity that change its files); the source checkpoint always counts."""

    format: str
    variant: str
    source_fingerprint: str | None
    settings: dict[str, Any]
    schema: int = KEY_SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "format": self.format,
            "variant": self.variant,
            "source_fingerprint": self.source_fingerprint,
            "settings": dict(self.settings),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> VariantKey | None:
        if not d or "settings" not in d:
            return None
        # a JSON round trip makes tuples lists: compare what was written with what is wanted alike
        settings = json.loads(json.dumps(d["settings"], default=str))
        return cls(d["format"], d["variant"], d.get("source_fingerprint"), settings, int(d.get("schema", 1)))

    def normalised(self) -> VariantKey:
        return VariantKey.from_dict(self.to_dict())  # type: ignore[return-value]

    def differences(self, wanted: VariantKey) -> list[str]:
        """What this (recorded) key has that ``wanted`` does not: ``block_size 32, not 64``."""
        mine, theirs = self.normalised(), wanted.normalised()
        out = []
        if mine.schema != theirs.schema:
            out.append(f"recipe key schema {mine.schema}, not {theirs.schema}")
        for k in sorted(set(mine.settings) | set(theirs.settings)):
            if mine.settings.get(k) != theirs.settings.get(k):
                out.append(f"{k} {mine.settings.get(k)}, not {theirs.settings.get(k)}")
        return out


@dataclass(frozen=True)
class FileRecord:
    size: int
    sha256: str


@dataclass
class ValidationRecord:
    """The outcome of validating one variant: the gates it was held to, the measured result (an
    ``EvalResult`` as a dict) or the error that stopped it, and the sha256 of the files measured."""

    passed: bool
    gates: dict[str, float | None]
    result: dict[str, Any] | None = None
    error: str | None = None
    files_sha256: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"passed": self.passed, "gates": self.gates}
        if self.result is not None:
            out["result"] = self.result
        if self.error is not None:
            out["error"] = self.error
        if self.files_sha256:
            out["files_sha256"] = self.files_sha256
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> ValidationRecord | None:
        if not d:
            return None
        return cls(
            bool(d.get("passed")),
            dict(d.get("gates") or {}),
            d.get("result"),
            d.get("error"),
            dict(d.get("files_sha256") or {}),
        )


@dataclass
class VariantRecord:
    files: list[str]
    recipe: dict[str, Any]  # what the variant is and how it was made, for readers and model cards
    key: VariantKey | None = None
    libraries: dict[str, str] = field(default_factory=dict)
    created: str = ""
    provenance: Provenance | None = None
    validation: ValidationRecord | None = None
    details: dict[str, Any] | None = None  # bulky diagnostics kept in the manifest only

    @property
    def bits(self) -> int | None:
        b = self.recipe.get("bits")
        return int(b) if b is not None else None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "files": list(self.files),
            "recipe": self.recipe,
            "key": self.key.to_dict() if self.key else None,
            "libraries": self.libraries,
            "created": self.created,
            "provenance": self.provenance.to_dict() if self.provenance else None,
            "validation": self.validation.to_dict() if self.validation else None,
        }
        if self.details is not None:
            out["details"] = self.details
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VariantRecord:
        prov = Provenance.from_dict(d.get("provenance"))
        if prov is None and d.get("command"):  # schema 1
            prov = Provenance("cli", str(d["command"]))
        return cls(
            files=list(d.get("files") or []),
            recipe=dict(d.get("recipe") or {}),
            key=VariantKey.from_dict(d.get("key")),
            libraries=dict(d.get("libraries") or {}),
            created=str(d.get("created") or ""),
            provenance=prov,
            validation=ValidationRecord.from_dict(d.get("validation")),
            details=d.get("details"),
        )


@dataclass
class Manifest:
    name: str
    format: str
    source: dict[str, Any]
    variants: dict[str, VariantRecord] = field(default_factory=dict)
    files: dict[str, FileRecord] = field(default_factory=dict)
    tool: dict[str, str] = field(default_factory=lambda: {"name": "qwen3-quant", "version": tool_version()})
    schema: int = SCHEMA

    @classmethod
    def new(cls, name: str, fmt: str, source: dict[str, Any]) -> Manifest:
        return cls(name, fmt, dict(source))

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = MANIFEST) -> Manifest:
        from .manifest_check import check_manifest

        check_manifest(d, where)
        return cls(
            name=d["name"],
            format=d["format"],
            source=dict(d.get("source") or {}),
            variants={k: VariantRecord.from_dict(v) for k, v in (d.get("variants") or {}).items()},
            files={k: FileRecord(int(v["size"]), v["sha256"]) for k, v in (d.get("files") or {}).items()},
            tool=dict(d.get("tool") or {}),
            schema=int(d.get("schema", 1)),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "name": self.name,
            "format": self.format,
            "tool": self.tool,
            "source": self.source,
            "variants": {k: v.to_dict() for k, v in self.variants.items()},
            "files": {k: {"size": f.size, "sha256": f.sha256} for k, f in self.files.items()},
        }

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        return cls.from_dict(load_manifest(folder))

    @classmethod
    def read_or_none(cls, folder: Path) -> Manifest | None:
        d = load_manifest_or_none(folder)
        return cls.from_dict(d) if d else None

    def write(self, folder: Path) -> None:
        atomic_write_json(Path(folder) / MANIFEST, self.to_dict())

    def variant(self, name: str) -> VariantRecord:
        if name not in self.variants:
            raise MissingFileError(
                f"{self.name} has no variant {name}", hint="variants: " + (", ".join(self.variants) or "none")
            )
        return self.variants[name]

    @property
    def shared_files(self) -> list[str]:
        """Files that belong to no variant (config, tokenizer, an importance matrix)."""
        owned = {f for v in self.variants.values() for f in v.files}
        return [f for f in self.files if f not in owned]

    def files_of(self, variant: str, *, with_shared: bool = False) -> list[str]:
        own = list(self.variant(variant).files)
        return own + self.shared_files if with_shared else own

    def bytes_of(self, files: list[str]) -> int:
        return sum(self.files[f].size for f in files if f in self.files)


# --- reading and writing -----------------------------------------------------------------------


def manifest_lock(folder: Path):
    """Serialise read-modify-write of one folder's manifest across processes."""
    return file_lock(Path(folder) / f".{MANIFEST}.lock")


def load_manifest(folder: Path) -> dict[str, Any]:
    """The manifest as the JSON on disk (use :class:`Manifest` to work with it)."""
    f = Path(folder) / MANIFEST
    if not f.is_file():
        raise MissingFileError(
            f"{folder} has no {MANIFEST}", hint="quantise with qwen3-quant to get an artifact folder"
        )
    return _parse(f)


def load_manifest_or_none(folder: Path) -> dict[str, Any] | None:
    f = Path(folder) / MANIFEST
    return _parse(f) if f.is_file() else None


def _parse(f: Path) -> dict[str, Any]:
    """The manifest's JSON, checked for shape (types, sizes, file names inside the folder)."""
    from .manifest_check import check_manifest, read_checked

    return read_checked(f, check_manifest, hint="restore the manifest or quantise again")


def record_variant(
    folder: Path,
    *,
    name: str,
    fmt: str,
    source: dict[str, Any],
    variant: str,
    files: list[str],
    recipe: dict[str, Any],
    key: VariantKey | None = None,
    shared_files: list[str] | tuple[str, ...] = (),
    provenance: Provenance | None = None,
    details: dict[str, Any] | None = None,
) -> Manifest:
    """Add or replace one variant (with the sha256 of its files) in the folder's manifest."""
    folder = Path(folder)
    with manifest_lock(folder):
        m = Manifest.read_or_none(folder) or Manifest.new(name, fmt, source)
        m.source = dict(source)
        m.schema = SCHEMA
        m.tool = {"name": "qwen3-quant", "version": tool_version()}
        for f in [*files, *shared_files]:
            p = path_inside(folder, f, what=f"{folder}: file of {variant}")
            m.files[f] = FileRecord(p.stat().st_size, sha256_file(p))
        m.variants[variant] = VariantRecord(
            files=list(files),
            recipe=recipe,
            key=key,
            libraries=library_versions(),
            created=now(),
            provenance=provenance,
            details=details,
        )
        m.write(folder)
        return m


def record_validation(folder: Path, variant: str, validation: ValidationRecord) -> Manifest:
    folder = Path(folder)
    with manifest_lock(folder):
        m = Manifest.read(folder)
        if variant not in m.variants:
            raise MissingFileError(f"{folder}: no variant {variant} in {MANIFEST}", hint="quantise it first")
        m.variants[variant].validation = validation
        m.write(folder)
        return m


def verify_files(
    folder: Path, manifest: Manifest | dict[str, Any], files: list[str] | None = None
) -> list[str]:
    """Return the files whose size or sha256 differ from the manifest (missing files included)."""
    if isinstance(manifest, dict):
        manifest = Manifest.from_dict(manifest)
    bad = []
    for f in files if files is not None else list(manifest.files):
        rec = manifest.files.get(f)
        p = path_inside(Path(folder), f, what=f"{folder}/{MANIFEST}: file entry")
        if rec is None or not p.is_file() or p.stat().st_size != rec.size or sha256_file(p) != rec.sha256:
            bad.append(f)
    return bad


# --- the keep-or-rebuild rule ------------------------------------------------------------------

FIX = "pass --overwrite to replace it, or choose another folder with -o"


def decide_variant(
    folder: Path,
    wanted: VariantKey,
    *,
    overwrite: bool,
    shares_folder: bool = False,
    rebuild_damaged: bool = False,
    expected_files: list[str] | tuple[str, ...] = (),
) -> bool:
    """Whether to (re)build ``wanted.variant`` in ``folder``: ``False`` keeps an intact variant made
    by the same recipe from the same checkpoint. Anything else already there is replaced only with
    ``overwrite``; otherwise :class:`ArtifactExistsError` says what is there.

    ``shares_folder``: the format keeps several variants in one folder (GGUF types), so a variant
    the folder does not hold yet is added, unless a file not recorded sits under one of its
    ``expected_files`` names. ``rebuild_damaged``: a damaged or incomplete variant is rebuilt
    without ``overwrite`` (its files are the format's own intermediates, not a user's)."""
    folder = Path(folder)
    if overwrite or not folder.exists():
        return True
    m = Manifest.read_or_none(folder)
    rec = m.variants.get(wanted.variant) if m else None
    if rec is None:
        if shares_folder:
            present = [f for f in expected_files if (folder / f).exists()]
            if present:
                raise ArtifactExistsError(
                    f"{folder / present[0]} exists and is not recorded in the manifest", hint=FIX
                )
            return True
        if m is None and not any(folder.iterdir()):
            return True
        held = ", ".join(m.variants) if m and m.variants else "nothing qwen3-quant recorded"
        raise ArtifactExistsError(
            f"{folder} already exists and does not hold {wanted.variant}: it holds no "
            f"{wanted.format.upper()} {wanted.variant} artifact, only {held}",
            hint=FIX,
        )
    if rec.key is None or rec.key.normalised() != wanted.normalised():
        if rec.key is not None and rec.key.source_fingerprint != wanted.source_fingerprint:
            why = "it was made from another checkpoint"
        elif rec.key is None:
            why = "it records no recipe key (made by an older qwen3-quant)"
        else:
            why = "it was built with " + "; ".join(rec.key.differences(wanted))
        raise ArtifactExistsError(f"{folder} does not hold {wanted.variant} of this recipe: {why}", hint=FIX)
    bad = verify_files(folder, m, rec.files)  # type: ignore[arg-type]
    if bad:
        if rebuild_damaged:
            log.warning("%s: %s is damaged or incomplete, rebuilding it", folder.name, bad[0])
            return True
        raise ArtifactExistsError(
            f"{folder} is damaged: {bad[0]} differs from its manifest (changed or missing)",
            hint="pass --overwrite to quantise it again",
        )
    log.info("%s already holds %s, made by this recipe and intact: kept", folder, wanted.variant)
    return False
