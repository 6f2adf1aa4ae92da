"""Running a build: plan the cells, run those whose inputs changed, record each one, report."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from ..errors import Qwen3QuantError
from ..eval.options import EvalOptions
from ..formats import get_format
from ..formats.base import Progress, no_progress
from ..provenance import Provenance
from ..working_set import validation_estimate
from .resources import CellNeeds, Runner, cell_needs, route
from .spec import BuildSpec, Cell
from .state import cell_is_current, inputs_hash, load_state, update_cell

log = logging.getLogger(__name__)


@dataclass
class PlanRow:
    cell: Cell
    inputs: str
    status: str  # done | todo | changed | skip
    artifact_bytes: int | None = None
    peak_bytes: int | None = None
    seconds: float | None = None
    reason: str = ""
    previous: dict[str, Any] = field(default_factory=dict)
    needs: CellNeeds | None = None  # None: unknown (a model the catalog does not describe)
    runner: Runner | None = None  # the build's smallest runner that fits; None: none does
    buildable: bool = True  # False: no machine can make it (the format refuses the options)
    gpu_peak_bytes: int | None = None  # when the cell quantises on a GPU
    device: str = "cpu"  # where it will quantise, as resolved for the plan: cpu, cuda:0


def _arch_of(model: str):
    """The model's shapes, from the catalog or a local config.json (``None`` for a Hub id)."""
    import json

    from ..catalog.architecture import ArchShape
    from ..sources import locate_model

    try:
        ref = locate_model(model)
    except Qwen3QuantError:
        return None
    if ref.entry is not None:
        return ref.entry.arch
    if ref.path is not None and (ref.path / "config.json").is_file():
        return ArchShape.from_config(json.loads((ref.path / "config.json").read_text()))
    return None


def _cell_device(cell: Cell, fmt, cuda) -> tuple[str, str]:
    """Where a cell would quantise (``cpu``, ``cuda:N``) and why it cannot, if it cannot (a CUDA
    device it names is not there: its validation would need it even where quantising does not)."""
    from ..device import resolve_device

    if cell.device == "cpu" or (cell.device == "auto" and not fmt.gpu_quantise):
        return "cpu", ""
    try:
        where = resolve_device(cell.device, cuda()).torch
    except Qwen3QuantError as exc:
        return "cpu", exc.one_line()
    return (where if fmt.gpu_quantise else "cpu"), ""


def plan(spec: BuildSpec, cells: list[Cell] | None = None, cuda=None) -> list[PlanRow]:
    """Every cell with its estimates, needs, runner and status on this machine: ``done``, ``todo``,
    ``changed``, or ``skip`` (the format refuses it, or this machine lacks the memory, the disk,
    the GPU (memory) its ``device`` asks for, or the libraries; what is already running here is not
    counted against the disk). ``cuda`` is what torch reports
    (:class:`~qwen3_quant.device.CudaReport`), asked of torch only when a cell may use a GPU.
    A cell whose build file says ``device = "cuda"`` needs a runner with its GPU memory estimate."""
    from dataclasses import replace

    from ..device import probe_cuda
    from ..io import free_bytes

    state = load_state(spec.state_dir)["cells"]
    mem = psutil.virtual_memory().total
    disk = free_bytes(spec.out)
    seen: dict[str, Any] = {}

    def report():
        if "cuda" not in seen:
            seen["cuda"] = cuda if cuda is not None else probe_cuda()
        return seen["cuda"]

    rows = []
    for cell in cells or spec.cells():
        inputs = inputs_hash(spec, cell)
        entry = state.get(cell.id)
        row = PlanRow(cell, inputs, "todo", previous=entry or {})
        arch = _arch_of(cell.model)
        fmt = get_format(cell.format)
        if arch is not None:
            try:
                variant = fmt.variants(fmt.parse_options(cell.option_dict()))[0]
                est = fmt.estimate(arch, variant)
                # a cell quantises, then validates in the same process
                validate = validation_estimate(fmt, arch, variant, eval_options(spec))
                row.artifact_bytes, row.peak_bytes = (
                    est.artifact_bytes,
                    max(est.quantise_peak_bytes, validate),
                )
                row.gpu_peak_bytes = est.gpu_peak_bytes
            except Qwen3QuantError as exc:
                row.status, row.reason, row.buildable = "skip", exc.one_line(), False
            from ..catalog.architecture import param_counts

            row.seconds = max(fmt.min_seconds, param_counts(arch).total / 1e9 * fmt.seconds_per_billion)
            if row.buildable:
                row.needs = cell_needs(
                    fmt,
                    arch,
                    row.peak_bytes or 0,
                    row.artifact_bytes or 0,
                    row.seconds,
                    downloads=not Path(cell.model).expanduser().is_dir(),
                )
                if cell.device.startswith("cuda") and fmt.gpu_quantise and row.gpu_peak_bytes:
                    row.needs = replace(row.needs, gpu_bytes=max(row.needs.gpu_bytes, row.gpu_peak_bytes))
        row.runner = route(row.needs, spec.runners) if row.buildable else None
        device_problem = ""
        if row.status != "skip":
            row.device, device_problem = _cell_device(cell, fmt, report)
            if row.device == "cpu":
                row.gpu_peak_bytes = None
        if row.status != "skip":
            if cell_is_current(spec, entry, inputs):
                row.status = "done"
            elif entry and entry.get("inputs") not in (None, inputs):
                row.status, row.reason = "changed", "inputs changed since the last run"
            vram = _vram_of(report(), row.device) if row.device != "cpu" else None
            if device_problem and row.status != "done":
                row.status, row.reason = "skip", device_problem
            elif row.peak_bytes and row.peak_bytes > mem and row.status != "done":
                row.status = "skip"
                row.reason = f"needs about {row.peak_bytes / 1e9:.0f} GB of memory, this machine has {mem / 1e9:.0f} GB"
            elif row.gpu_peak_bytes and vram and row.gpu_peak_bytes > vram and row.status != "done":
                row.status = "skip"
                row.reason = (
                    f"needs about {row.gpu_peak_bytes / 1e9:.0f} GB of GPU memory, "
                    f"{row.device} has {vram / 1e9:.0f} GB"
                )
            elif row.needs and row.needs.disk_bytes > disk and row.status != "done":
                row.status = "skip"
                row.reason = (
                    f"needs about {row.needs.disk_bytes / 1e9:.0f} GB of disk, "
                    f"{disk / 1e9:.0f} GB free at {spec.out}"
                )
            elif row.needs and row.needs.gpu_bytes and row.status != "done" and not _has_gpu():
                row.status, row.reason = "skip", "needs a CUDA GPU, this machine has none"
            elif not fmt.available() and row.status != "done":
                row.status, row.reason = (
                    "skip",
                    f"the {fmt.name} libraries are not installed (extra [{fmt.extra}])",
                )
        rows.append(row)
    return rows


def _vram_of(report, device: str) -> int | None:
    index = int(device.split(":")[1]) if ":" in device else 0
    return report.total_bytes[index] if index < len(report.total_bytes) else None


def _has_gpu() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def eval_options(spec: BuildSpec) -> EvalOptions:
    """The build's ``[eval]`` table; reference log-probabilities are shared by every cell under
    the build's own cache folder."""
    return EvalOptions.from_mapping(spec.eval, reference_dir=spec.out / "cache" / "reference")


def cell_provenance(spec: BuildSpec, cell: Cell) -> Provenance:
    """What made a cell's artifact: the equivalent ``qwen3-quant quantize`` command (which a user
    can run as written), with the build file and cell named beside it."""
    from ..provenance import quantize_command

    extra: list[str] = []
    for key in ("text", "ctx", "max_tokens"):  # the [eval] settings quantize's validation takes
        if spec.eval.get(key) is not None:
            extra += ["--" + key.replace("_", "-"), str(spec.eval[key])]
    for name, limit in spec.gates.items():
        extra += ["--gate", f"{name}={'off' if limit is None else format(limit, 'g')}"]
    if cell.device != "auto":
        extra += ["--device", cell.device]
    build_file = "" if spec.is_default else spec.source
    return Provenance(
        "build",
        quantize_command(cell.model, cell.format, cell.option_dict(), extra),
        build_file=build_file or "(the bundled demo build)",
        cell=cell.id,
    )


def run_cell(
    spec: BuildSpec, cell: Cell, *, force: bool = False, progress: Progress = no_progress
) -> dict[str, Any]:
    """Quantise and validate one cell, reporting to ``progress``; record and return its state
    entry. Never raises for a cell's own failure: the error is recorded and the build goes on."""
    from ..quantize import quantize

    inputs = inputs_hash(spec, cell)
    previous = load_state(spec.state_dir)["cells"].get(cell.id) or {}
    if not force and cell_is_current(spec, previous, inputs):
        return previous
    changed = bool(previous) and previous.get("inputs") != inputs
    update_cell(
        spec.state_dir, cell.id, {**previous, "status": "running", "inputs": inputs, "pid": os.getpid()}
    )
    t0 = time.time()
    entry: dict[str, Any] = {
        "inputs": inputs,
        "model": cell.model,
        "format": cell.format,
        "axis_value": cell.axis_value,
    }
    try:
        res = quantize(
            cell.model,
            cell.format,
            out_root=spec.artifacts_dir,
            overwrite=force or changed,
            validate=True,
            eval_options=eval_options(spec),
            gate_overrides=spec.gates,
            provenance=cell_provenance(spec, cell),
            device=cell.device,
            progress=progress,
            **cell.option_dict(),
        )
        entry.update(
            artifact_dir=str(res.artifact_dir),
            variants=res.variants,
            status="passed" if res.passed else "failed",
            results=[v.to_dict() for v in res.validations],
        )
    except Qwen3QuantError as exc:
        entry.update(status="error", error=exc.one_line())
        log.error("%s: %s", cell.id, exc.one_line())
    except Exception as exc:  # a crash in one cell must not stop the others
        entry.update(status="error", error=f"{type(exc).__name__}: {exc}".splitlines()[0])
        log.exception("%s crashed", cell.id)
    entry["seconds"] = round(time.time() - t0, 1)
    update_cell(spec.state_dir, cell.id, entry)
    return entry


@dataclass
class BuildOutcome:
    entries: dict[str, dict[str, Any]]
    skipped: dict[str, str]
    report_dir: Path | None = None
    published: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 every cell passed; 3 a gate failed or a cell errored; 4 cells were skipped."""
        if any(e.get("status") != "passed" for e in self.entries.values()):
            return 3
        return 4 if self.skipped else 0
