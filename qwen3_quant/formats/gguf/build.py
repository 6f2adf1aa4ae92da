"""One GGUF run: convert once, compute the importance matrix once, quantise each type, publish.

Artifact folder ``<model>-GGUF``::

    Qwen3-8B-Q4_K_M.gguf, Qwen3-8B-Q8_0.gguf, ...   one variant per type (or -0000i-of-0000n splits)
    Qwen3-8B.imatrix.gguf                          the importance matrix, when a type used one
    qwen3_quant.json                               the manifest
    .work/                                         build intermediates, never published:
        Qwen3-8B-BF16.gguf (+ .json)               the float conversion every type is quantised from
        tmp-*/                                     files being written (removed when a run starts)
        publish-<TYPE>.json                        journal of a variant being moved into place

Every file is written under ``.work/`` and moved into the folder when complete, then recorded in
the manifest with its sha256, so a killed run leaves no half-written file under a final name and a
rerun redoes only what is missing: the conversion, the importance matrix and each type are kept
when present and intact.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from ...artifact import Manifest, VariantKey, decide_variant, record_variant
from ...checkpoint import CheckpointInfo
from ...errors import ArtifactExistsError, UsageError
from ...io import (
    atomic_write_bytes,
    atomic_write_json,
    disk_errors,
    ensure_free_space,
    file_lock,
    path_inside,
    remove_path,
)
from ..base import Progress, no_progress
from .autotype import measure_sensitivity, parse_auto, plan_auto, spread_windows
from .config import GGUFConfig, nominal_bits
from .gguf_io import read_header, resplit
from .imatrix import Imatrix
from .metadata import describe
from .naming import gguf_file_name, imatrix_file_name
from .types import FILE_TYPES, UNQUANTISED, estimate_file_size
from .writer import base_type_for, convert

log = logging.getLogger(__name__)
WORK = ".work"
CONVERTER = "qwen3-quant streaming safetensors -> GGUF"
# automatic mixes: the calibration windows their per-tensor KL divergence is measured on
KLD_WINDOWS, KLD_WINDOW = 16, 256


class GGUFBuild:
    def __init__(
        self,
        source,
        info: CheckpointInfo,
        config: GGUFConfig,
        out_dir: Path,
        *,
        overwrite: bool = False,
        progress: Progress = no_progress,
        provenance=None,
        device=None,
    ):
        self.source, self.info, self.cfg = source, info, config
        self.device = device  # where the importance matrix is computed (the CPU when None)
        self.out = Path(out_dir)
        self.work = self.out / WORK
        self.overwrite, self.progress, self.provenance = overwrite, progress, provenance
        self.stem = str(source.name)
        self.src = source.manifest_record()
        self.base_type = base_type_for(info)
        self.desc = describe(source, info)
        self._calib = None
        self._imatrix: Imatrix | None = None
        self._sensitivity = None  # automatic mixes: measured once, for every budget of the run

    # --- names ---------------------------------------------------------------------------------

    def file_for(self, ftype: str) -> str:
        return gguf_file_name(self.stem, ftype)

    @property
    def imatrix_name(self) -> str:
        return imatrix_file_name(self.stem)

    @property
    def base_path(self) -> Path:
        return self.work / self.file_for(self.base_type)

    def key(self, ftype: str) -> VariantKey:
        """What a type's file depends on: the type, and the importance matrix's calibration
        (named by mix and sample count, so that deciding needs no tokenisation)."""
        settings: dict[str, Any] = {"type": ftype, "imatrix": False, "calib": None, "calib_samples": None}
        if self.cfg.uses_imatrix(ftype):
            from ...calib import load_mix

            mix = load_mix(self.cfg.calib)  # names the mix and its sample count the same way every run
            settings.update(imatrix=True, calib=mix.name, calib_samples=self.cfg.calib_samples or mix.samples)
        return VariantKey("gguf", ftype, self.src["fingerprint"], settings)

    # --- the run -------------------------------------------------------------------------------

    def run(self) -> list[str]:
        self.out.mkdir(parents=True, exist_ok=True)
        self.work.mkdir(exist_ok=True)
        with self._locked():
            for tmp in self.work.glob("tmp-*"):
                remove_path(tmp)
            self._finish_journals()
            todo = self._plan()
            for ftype in self.cfg.types:
                if ftype not in todo:
                    log.info("%s: kept (present and intact)", self.file_for(ftype))
            for i, ftype in enumerate(t for t in self.cfg.types if t in todo):
                self.progress("GGUF types", i, len(todo))
                self._build(ftype)
            self.progress("GGUF types", len(todo), len(todo))
        return list(self.cfg.types)

    @contextlib.contextmanager
    def _locked(self):
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(file_lock(self.work / ".lock", blocking=False))
            except BlockingIOError as exc:
                raise UsageError(
                    f"another qwen3-quant run is writing {self.out}", hint="wait for it to finish"
                ) from exc
            yield

    def _plan(self) -> set[str]:
        """The types to (re)build; raises when that would replace a good file without --overwrite."""
        from . import FORMAT

        return {
            ftype
            for ftype in self.cfg.types
            if decide_variant(
                self.out,
                self.key(ftype),
                overwrite=self.overwrite,
                shares_folder=FORMAT.shares_folder,
                rebuild_damaged=FORMAT.rebuild_damaged,
                expected_files=[self.file_for(ftype)],
            )
        }

    @contextlib.contextmanager
    def _scratch(self, name: str):
        """A scratch folder under .work/ for one piece of work, removed afterwards (and by the next
        run if this one is killed)."""
        tmp = self.work / f"tmp-{name}"
        tmp.mkdir(exist_ok=True)
        try:
            yield tmp
        finally:
            remove_path(tmp)

    def _build(self, ftype: str) -> None:
        with self._scratch(ftype) as tmp:
            self._build_in(ftype, tmp)

    def _build_in(self, ftype: str, tmp: Path) -> None:
        target = tmp / self.file_for(ftype)
        ensure_free_space(self.work, estimate_file_size(self.info.arch, ftype), what=f"write {target.name}")
        recipe: dict[str, Any] = {"bits": nominal_bits(ftype), "type": ftype}
        if ftype in FILE_TYPES:
            recipe["ftype"] = FILE_TYPES[ftype][0]
        with disk_errors(target):
            if ftype in UNQUANTISED and ftype != self.base_type:
                files = convert(
                    self.info, self.desc, target, out_type=ftype,
                    max_shard_size=self.cfg.max_shard_size, progress=self.progress,
                )  # fmt: skip
                recipe["converter"] = CONVERTER
            elif ftype == self.base_type:
                files = self._from_base(target)
                recipe["converter"] = CONVERTER
            else:
                files = self._quantize(ftype, target, recipe)
        recipe["max_shard_size"] = self.cfg.max_shard_size
        recipe.update(_tensor_summary(files))
        self._publish(ftype, files, recipe)

    def _from_base(self, target: Path) -> list[Path]:
        base = self.ensure_base()
        if base.stat().st_size <= self.cfg.max_shard_size:
            try:
                os.link(base, target)
            except OSError:
                shutil.copyfile(base, target)
            return [target]
        return resplit(base, target, self.cfg.max_shard_size)

    def _quantize(self, ftype: str, target: Path, recipe: dict[str, Any]) -> list[Path]:
        from .llama import version
        from .quantizer import imatrix_metadata, quantize_gguf

        base = self.ensure_base()
        im = self.ensure_imatrix() if self.cfg.uses_imatrix(ftype) else None
        single = target.with_name("single-" + target.name)
        meta = imatrix_metadata(im, self.imatrix_name) if im else None
        budget = parse_auto(ftype)
        if budget is not None:  # an automatic mix: measure, choose, then one override per tensor
            if self._sensitivity is None:  # measured once, for every automatic type (kept in .work)
                self._sensitivity = self._auto_sensitivity(base, im, target.parent)
            plan = plan_auto(base, im, budget, target.parent, sensitivity=self._sensitivity)
            quantize_gguf(base, single, plan.ftype, imatrix=im, metadata=meta, tensor_types=plan.tensor_types)
            recipe.update(plan.recipe(), ftype=FILE_TYPES[plan.ftype][0])
        else:
            quantize_gguf(base, single, ftype, imatrix=im, metadata=meta)
        recipe["base"] = {"type": self.base_type, "converter": CONVERTER}
        recipe["quantizer"] = f"llama.cpp llama_model_quantize (llama-cpp-python {version()})"
        recipe["imatrix"] = im is not None
        recipe["imatrix_file"] = self.imatrix_name if im else None
        recipe["calibration"] = self._calib.summary() if im else None
        if im is not None and self.info.arch.is_moe:  # experts no calibration token reached get ones
            recipe["imatrix_expert_coverage"] = round(min(im.coverage().values()), 4)
        if single.stat().st_size <= self.cfg.max_shard_size:
            os.replace(single, target)
            return [target]
        files = resplit(single, target, self.cfg.max_shard_size)
        single.unlink()
        return files

    # --- shared intermediates ------------------------------------------------------------------

    def ensure_base(self) -> Path:
        """The float conversion all types are quantised from, made once and kept under .work/."""
        side = self.base_path.with_suffix(".json")
        want = {"type": self.base_type, "fingerprint": self.src["fingerprint"]}
        if self.base_path.is_file() and side.is_file():
            meta = json.loads(side.read_text())
            if {k: meta.get(k) for k in want} == want and meta.get("size") == self.base_path.stat().st_size:
                return self.base_path
        ensure_free_space(
            self.work,
            estimate_file_size(self.info.arch, self.base_type),
            what=f"write the {self.base_type} conversion",
        )
        with self._scratch("base") as tmp:
            with disk_errors(self.base_path):
                (written,) = convert(self.info, self.desc, tmp / self.base_path.name, out_type=self.base_type,
                                     progress=self.progress)  # fmt: skip
            os.replace(written, self.base_path)
            atomic_write_json(side, {**want, "size": self.base_path.stat().st_size})
        return self.base_path

    def calibration(self):
        if self._calib is None:
            from ...calib import load_mix

            self._calib = load_mix(self.cfg.calib).build(self.info.path, samples=self.cfg.calib_samples)
        return self._calib

    def _auto_sensitivity(self, base: Path, im: Imatrix, scratch: Path):
        """The automatic mixes' measurement: read back from ``.work`` when it was made from the
        same conversion, importance matrix and windows (a later run or a resumed one), else
        measured and kept there."""
        import hashlib

        from .autotype import Sensitivity

        windows = spread_windows(self.calibration().samples, KLD_WINDOWS, KLD_WINDOW)
        key = {
            "source.fingerprint": self.src["fingerprint"],
            "base": self.base_type,
            "calibration.sha256": self.calibration().sha256,
            "windows.sha256": hashlib.sha256(json.dumps(windows).encode()).hexdigest(),
        }
        path = self.work / "auto-sensitivity.json"
        if path.is_file():
            try:
                kept = Sensitivity.from_json(json.loads(path.read_text()), key)
            except (ValueError, KeyError, TypeError):
                kept = None  # unreadable: measure again
            if kept is not None:
                return kept
        sens = measure_sensitivity(base, im, scratch, progress=self.progress, kld_windows=windows)
        atomic_write_json(path, sens.to_json(key))
        return sens

    def ensure_imatrix(self) -> Imatrix:
        """The importance matrix for this run's calibration, computed once and kept in the folder."""
        if self._imatrix is not None:
            return self._imatrix
        cs = self.calibration()
        want = {"calibration.sha256": cs.sha256, "source.fingerprint": self.src["fingerprint"]}
        path = self.out / self.imatrix_name
        if path.is_file():
            old = Imatrix.load(path)
            if {k: old.meta.get(k) for k in want} == want:
                self._imatrix = old
                return old
            users = self._imatrix_users()
            if users and not self.overwrite:
                raise ArtifactExistsError(
                    f"{path.name} was computed from other calibration data than this run asks for "
                    f"(used by {', '.join(users)})",
                    hint="use the same --calib and --calib-samples, or pass --overwrite",
                )
            if users:
                log.warning(
                    "replacing %s: %s were quantised with the previous one", path.name, ", ".join(users)
                )
        from .imatrix import collect_imatrix

        im = collect_imatrix(self.info, cs.samples, progress=self.progress, device=self.device)
        im.datasets = [cs.mix]
        im.meta = {**want, "calibration.mix": cs.mix, "calibration.tokens": str(cs.n_tokens)}
        with self._scratch("imatrix") as tmp:
            with disk_errors(path):
                im.save(tmp / path.name)
            os.replace(tmp / path.name, path)
        self._imatrix = im
        return im

    def _imatrix_users(self) -> list[str]:
        m = Manifest.read_or_none(self.out)
        return [v for v, r in (m.variants.items() if m else ()) if r.recipe.get("imatrix_file")]

    # --- publishing ----------------------------------------------------------------------------

    def _publish(self, ftype: str, files: list[Path], recipe: dict[str, Any]) -> None:
        """Move finished files into the folder and record them; a journal makes this resumable."""
        journal = self.work / f"publish-{ftype}.json"
        shared = [self.imatrix_name] if recipe.get("imatrix_file") else []
        shared += self._write_ollama_files()
        entries = [{"name": f.name, "size": f.stat().st_size} for f in files]
        atomic_write_json(journal, {"variant": ftype, "files": entries, "shared": shared, "recipe": recipe})
        m = Manifest.read_or_none(self.out)
        old = m.variants.get(ftype) if m else None
        for f in reversed(files):  # the first split last: llama.cpp opens a split model by it
            os.replace(f, self.out / f.name)
        self._record(ftype, [e["name"] for e in entries], shared, recipe)
        for stale in set(old.files if old else []) - {e["name"] for e in entries}:
            remove_path(path_inside(self.out, stale, what=f"{self.out.name}: file of {ftype}"))
        journal.unlink()

    def _write_ollama_files(self) -> list[str]:
        """The Hub's Ollama integration reads these beside the GGUF files (see :mod:`.ollama`)."""
        from .ollama import ollama_files

        files = ollama_files(self.info.path)
        for name, data in files.items():
            atomic_write_bytes(self.out / name, data)
        return list(files)

    def _record(self, ftype: str, files: list[str], shared: list[str], recipe: dict[str, Any]) -> None:
        from . import FORMAT  # the artifact's name comes from the model and format, not the folder

        record_variant(
            self.out,
            name=FORMAT.artifact_name(self.source.name, self.cfg),
            fmt="gguf",
            source=self.src,
            variant=ftype,
            files=files,
            recipe=recipe,
            key=self.key(ftype),
            shared_files=shared,
            provenance=self.provenance,
        )

    def _finish_journals(self) -> None:
        """Complete (or undo) a publication a killed run left half done."""
        for journal in self.work.glob("publish-*.json"):
            j = json.loads(journal.read_text())
            for e in j["files"]:  # names read back from disk: they must stay in the folder
                path_inside(self.out, e["name"], what=str(journal))
            done = all(
                (self.out / e["name"]).is_file() and (self.out / e["name"]).stat().st_size == e["size"]
                for e in j["files"]
            )
            if done:
                self._record(j["variant"], [e["name"] for e in j["files"]], j["shared"], j["recipe"])
                log.info("%s: finished recording it after an interrupted run", j["variant"])
            else:  # some files were moved into place, not all: none of them is a complete variant
                for e in j["files"]:
                    remove_path(self.out / e["name"])
            journal.unlink()


def _tensor_summary(files: list[Path]) -> dict[str, Any]:
    """Per-ggml-type tensor counts and the effective bits per weight of the files written."""
    types: Counter[str] = Counter()
    numel = nbytes = 0
    for f in files:
        for t in read_header(f).tensors:
            types[t.ggml_type] += 1
            numel += math.prod(t.shape)
            nbytes += t.nbytes
    return {
        "files": len(files),
        "bytes": sum(f.stat().st_size for f in files),
        "tensor_types": dict(sorted(types.items())),
        "bits_per_weight": round(8 * nbytes / numel, 3) if numel else None,
    }
