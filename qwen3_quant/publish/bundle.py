"""What a publish holds: the artifact's files checked against its manifest, the validation status of
each variant, and the generated files (model card, eval.json, a cleaned manifest, SHA256SUMS).

Nothing here uploads or writes outside memory; the targets (``local``, ``hub``) take a
:class:`Bundle` and put it somewhere.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..artifact import MANIFEST, FileRecord, Manifest, verify_files
from ..errors import PublishError, UsageError, ValidationFailedError
from ..formats.base import Progress, no_progress
from ..io import human_bytes, path_inside
from .scrub import public_text, scrub, shorten_home

log = logging.getLogger(__name__)

CARD = "README.md"
EVAL_JSON = "eval.json"
CHECKSUMS = "SHA256SUMS"
GENERATED = (CARD, EVAL_JSON, MANIFEST, CHECKSUMS)
EVAL_SCHEMA = 1


@dataclass(frozen=True)
class PublishFile:
    """One file of a publish: from the artifact folder (``source``) or generated (``data``)."""

    path: str  # relative path in the published folder / repo, POSIX separators
    size: int
    sha256: str
    source: Path | None = None
    data: bytes | None = None
    variant: str | None = None  # None: shared by all variants, or generated

    @property
    def generated(self) -> bool:
        return self.data is not None


@dataclass(frozen=True)
class VariantStatus:
    name: str
    passed: bool
    problems: tuple[str, ...] = ()  # why it did not pass: failed gates, load error, no validation
    cause: str = ""  # "": passed; else missing | changed | error | gates (what the hint suggests)

    def describe(self) -> str:
        return f"{self.name} ({'; '.join(self.problems)})" if self.problems else self.name


@dataclass
class Bundle:
    artifact_dir: Path
    manifest: Manifest
    variants: list[str]
    files: list[PublishFile] = field(default_factory=list)
    statuses: list[VariantStatus] = field(default_factory=list)
    forced: list[str] = field(default_factory=list)  # failures published anyway with --force
    card: str = ""

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def payload(self) -> list[PublishFile]:
        return [f for f in self.files if not f.generated]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def fingerprint(self) -> str:
        """Identity of this publish: the sha256 of its SHA256SUMS."""
        return next(f.sha256 for f in self.files if f.path == CHECKSUMS)

    def file(self, path: str) -> PublishFile:
        return next(f for f in self.files if f.path == path)


def select_variants(manifest: Manifest, names: list[str] | tuple[str, ...] | None) -> list[str]:
    have = list(manifest.variants)
    if not have:
        raise PublishError(f"{manifest.name} has no variants in its {MANIFEST}", hint="quantise it first")
    if not names:
        return have
    lower = {v.lower(): v for v in have}
    out = []
    for n in names:
        if n.lower() not in lower:
            raise UsageError(f"{manifest.name} has no variant '{n}'", hint="variants: " + ", ".join(have))
        if lower[n.lower()] not in out:
            out.append(lower[n.lower()])
    return out


def _gate_problem(g: dict[str, Any]) -> str:
    if g.get("error"):
        return f"{'did not load' if g.get('name') == 'loads' else 'evaluation failed'}: {g['error']}"
    op = "<" if str(g.get("name", "")).startswith("min_") else ">"
    return f"{g.get('name')} {g.get('value', float('nan')):.4g} {op} {g.get('limit', float('nan')):.4g}"


def validation_status(manifest: Manifest, variant: str) -> VariantStatus:
    val = manifest.variants[variant].validation
    if val is None:
        return VariantStatus(variant, False, ("not validated",), "missing")
    changed = [
        f
        for f, sha in val.files_sha256.items()
        if (rec := manifest.files.get(f)) is None or rec.sha256 != sha
    ]
    if changed:  # the validation measured other bytes than the manifest now records (another run's)
        return VariantStatus(
            variant, False, (f"validated a different {changed[0]} than the one recorded",), "changed"
        )
    if val.passed:
        return VariantStatus(variant, True)
    if val.error:
        return VariantStatus(variant, False, (f"validation error: {val.error}",), "error")
    gates = [g for g in (val.result or {}).get("gates") or [] if not g.get("passed")]
    cause = "error" if gates and all(g.get("error") for g in gates) else "gates"
    return VariantStatus(variant, False, tuple(map(_gate_problem, gates)) or ("validation failed",), cause)


# what to do about a variant that did not pass, by cause
_HINTS = {
    "missing": "validate it first (`qwen3-quant quantize` with --validate records the result)",
    "changed": "validate the files now in the folder (rerun the `qwen3-quant quantize` command)",
    "error": "fix what the validation error names, then rerun the `qwen3-quant quantize` command to "
    "validate again",
    "gates": "quantise again with more bits or a better recipe",
}


def check_validation(
    manifest: Manifest, variants: list[str], force: bool
) -> tuple[list[VariantStatus], list[str]]:
    """Refuse variants whose validation failed or is missing, unless ``force``.

    Returns every variant's status and the failures that ``force`` lets through.
    """
    statuses = [validation_status(manifest, v) for v in variants]
    bad = [s for s in statuses if not s.passed]
    if bad and not force:
        passing = [s.name for s in statuses if s.passed]
        if passing:
            hint = "publish only the variants that passed with " + " ".join(f"--variant {p}" for p in passing)
        else:
            hint = "; ".join(dict.fromkeys(_HINTS[s.cause] for s in bad))
        hint += ", or pass --force to publish anyway (the card will say so)"
        raise ValidationFailedError(
            f"refusing to publish {manifest.name}: " + ", ".join(s.describe() for s in bad), hint=hint
        )
    for s in bad:
        log.warning("publishing %s although it did not pass validation (--force)", s.describe())
    return statuses, [s.describe() for s in bad]


def payload_paths(manifest: Manifest, variants: list[str]) -> list[tuple[str, str | None]]:
    """``(path, variant)`` of the files to publish: the chosen variants' files and the shared ones
    (files in the manifest that belong to no variant: config, tokenizer)."""
    out: list[tuple[str, str | None]] = []
    for name in variants:
        for f in manifest.variants[name].files:
            if f not in manifest.files:
                raise PublishError(
                    f"{manifest.name}: {f} (variant {name}) has no size and sha256 in {MANIFEST}",
                    hint="re-quantise the variant so that its files are recorded",
                )
            out.append((f, name))
    out += [(f, None) for f in manifest.shared_files]
    clash = sorted({f for f, _ in out} & set(GENERATED))
    if clash:
        raise PublishError(
            f"{manifest.name}: {clash[0]} is an artifact file and would clash with the generated one",
            hint="rename the file in the artifact",
        )
    return out


def _mismatch(folder: Path, meta: FileRecord | None, path: str) -> str:
    p = folder / path
    if meta is None:
        return "is not in the manifest"
    if not p.is_file():
        return "is missing"
    size = p.stat().st_size
    if size != meta.size:
        return f"is {size} bytes, the manifest recorded {meta.size}"
    return "has a different sha256 from the one recorded at quantisation"


def verify_payload(
    folder: Path, manifest: Manifest, paths: list[str], progress: Progress = no_progress
) -> None:
    """Check every file's size and sha256 against the manifest; one line naming the first bad file."""
    total = manifest.bytes_of(paths)
    done = 0
    progress("verify sha256", 0, total)
    for p in paths:
        if verify_files(folder, manifest, [p]):
            raise PublishError(
                f"refusing to publish {manifest.name}: {p} {_mismatch(folder, manifest.files.get(p), p)}",
                hint="the file changed after quantisation; restore it or quantise again",
            )
        done += manifest.files[p].size
        progress("verify sha256", done, total)
    log.info("verified %d files (%s) against %s", len(paths), human_bytes(total), MANIFEST)


def _clean_result(result: dict[str, Any], base_model: str) -> dict[str, Any]:
    """An EvalResult dict without this machine's paths."""
    out = dict(result)
    if out.get("artifact"):
        out["artifact"] = Path(out["artifact"]).name
    if out.get("base"):
        out["base"] = base_model
    return out


def eval_document(bundle: Bundle, base_model: str) -> dict[str, Any]:
    """The validation table as data (``eval.json``)."""
    m = bundle.manifest
    variants = {}
    for s in bundle.statuses:
        rec = m.variants[s.name]
        val = rec.validation
        variants[s.name] = {
            "passed": s.passed,
            "problems": list(s.problems),
            "gates": val.gates if val else None,
            "result": _clean_result(val.result, base_model) if val and val.result else None,
            "error": scrub(val.error if val else None),
            "files": list(rec.files),
        }
    return {
        "schema": EVAL_SCHEMA,
        "name": m.name,
        "format": m.format,
        "base_model": base_model,
        "tool": m.tool,
        "forced": bool(bundle.forced),
        "forced_failures": list(bundle.forced),
        "variants": variants,
    }


def published_manifest(bundle: Bundle, *, keep_source_path: bool) -> dict[str, Any]:
    """The artifact manifest restricted to what is published, commands scrubbed, and without the
    local source path when the publish leaves the machine."""
    base = base_model_of(bundle.manifest)
    m = json.loads(json.dumps(bundle.manifest.to_dict()))
    m["variants"] = {k: v for k, v in m["variants"].items() if k in bundle.variants}
    keep = {f.path for f in bundle.payload}
    m["files"] = {k: v for k, v in m["files"].items() if k in keep}
    for v in m["variants"].values():
        if v.get("provenance"):
            v["provenance"] = {
                k: x if isinstance(x, dict) else public_text(str(x)) for k, x in v["provenance"].items()
            }  # quantised_on stays a record: device facts hold no secrets or paths
        val = v.get("validation") or {}
        if val.get("result"):
            val["result"] = _clean_result(val["result"], base)
        if val.get("error"):
            val["error"] = scrub(val["error"])
    if not keep_source_path:
        src = m["source"]
        m["source"] = {**src, "path": None, "spec": shorten_home(src["spec"]) if src.get("spec") else None}
    return m


def base_model_of(manifest: Manifest) -> str:
    """The card's ``base_model``: the source's Hub id, else its name (local models)."""
    src = manifest.source
    return src.get("hub_id") or src.get("name") or manifest.name


def generated_file(path: str, data: bytes) -> PublishFile:
    return PublishFile(path=path, size=len(data), sha256=hashlib.sha256(data).hexdigest(), data=data)


def checksums_text(files: list[PublishFile]) -> str:
    """``sha256sum -c`` format, sorted by path."""
    return "".join(f"{f.sha256}  {f.path}\n" for f in sorted(files, key=lambda f: f.path))


def source_file(folder: Path, manifest: Manifest, path: str, variant: str | None) -> PublishFile:
    meta = manifest.files[path]
    src = path_inside(folder, path, what=f"{manifest.name}/{MANIFEST}: file entry")
    return PublishFile(path, meta.size, meta.sha256, source=src, variant=variant)
