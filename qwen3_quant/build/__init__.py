"""The models x formats matrix as a resumable build: ``build()`` plans, runs, reports, publishes."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..artifact import host_description
from ..formats.base import Progress, no_progress
from ..io import check_writable
from .executors import OnEvent, run_local, run_ray
from .report import report_rows, write_report
from .run import BuildOutcome, PlanRow, eval_options, plan, run_cell
from .spec import BuildSpec, Cell, load_build, select
from .state import artifact_folder, load_state, update_cell

__all__ = [
    "build",
    "plan",
    "load_build",
    "BuildSpec",
    "Cell",
    "PlanRow",
    "github_matrix",
    "collect",
    "select_models",
    "BuildOutcome",
]
log = logging.getLogger(__name__)
EXECUTORS = ("local", "ray")


def build(
    path: str | Path | None = None,
    *,
    out: str | Path | None = None,
    cells: list[str] | None = None,
    models: list[str] | None = None,
    executor: str = "local",
    jobs: int | None = None,
    address: str | None = None,
    force: bool = False,
    publish: bool = True,
    on_event: OnEvent | None = None,
    progress: Progress = no_progress,
    device: str | None = None,
) -> BuildOutcome:
    """Run a build file (default: the bundled offline demo). Cells whose inputs are unchanged and
    whose files verify are skipped; one cell's failure is recorded and the others go on.

    With ``cells`` the named cells run in this process (one CI job per cell), reporting to
    ``progress``; publishing and the report are then left to :func:`collect`. Otherwise each cell
    runs in a worker process that prints its own progress lines, named after the cell. ``models``
    restricts the build to those models. ``device`` overrides the build file's for every cell.
    """
    from ..errors import UsageError

    if executor not in EXECUTORS:
        raise UsageError(f"unknown executor '{executor}'", hint="use local or ray")
    spec = load_build(path, out=out, device=device)
    check_writable(spec.out, what="build output folder")
    from ..validate import check_eval_inputs

    check_eval_inputs(eval_options(spec))  # once, not in every cell after it has quantised
    selected = select(select_models(spec.cells(), models), cells)
    rows = plan(spec, selected)
    skipped = {r.cell.id: r.reason for r in rows if r.status == "skip"}
    for cid, reason in skipped.items():
        update_cell(spec.state_dir, cid, {"status": "skipped", "error": reason})
    todo = [r for r in rows if r.status in ("todo", "changed") or (force and r.status == "done")]
    if cells:
        for r in todo:
            if on_event:
                on_event(r.cell.id, "start")
            entry = run_cell(spec, r.cell, force=force, progress=progress)
            if on_event:
                on_event(r.cell.id, entry.get("status", "error"))
    elif executor == "ray" and todo:
        run_ray(spec, todo, address=address, force=force, on_event=on_event)
    elif todo:
        run_local(spec, todo, jobs=jobs or spec.jobs, force=force, on_event=on_event)
    states = load_state(spec.state_dir)["cells"]
    entries = {
        r.cell.id: states.get(r.cell.id, {"status": "error", "error": "no result"})
        for r in rows
        if r.status != "skip"
    }
    if cells:  # one cell of a CI matrix: the collect job reports and publishes
        return BuildOutcome(entries, skipped)
    return _finish(spec, entries, skipped, publish)


def _finish(
    spec: BuildSpec, entries: dict[str, dict[str, Any]], skipped: dict[str, str], publish: bool
) -> BuildOutcome:
    """Report a whole build, then publish what passed. A state entry naming an artifact folder
    outside ``OUT/artifacts`` is reported as an error, never read."""
    from ..errors import Qwen3QuantError

    for cid, e in entries.items():
        try:
            artifact_folder(spec, e)
        except Qwen3QuantError as exc:
            entries[cid] = {k: v for k, v in e.items() if k != "artifact_dir"}
            entries[cid].update(status="error", error=exc.one_line())
    outcome = BuildOutcome(entries, skipped)
    outcome.report_dir = _report(spec, entries, skipped)
    if publish and spec.publish.get("to"):
        outcome.published = publish_passed(spec, entries)
    return outcome


def _report(spec: BuildSpec, entries: dict[str, dict[str, Any]], skipped: dict[str, str]) -> Path:
    rows = report_rows(entries, skipped)
    n_pass = sum(1 for e in entries.values() if e.get("status") == "passed")
    summary = (
        f"{len(entries) + len(skipped)} cells: {n_pass} passed, "
        f"{sum(1 for e in entries.values() if e.get('status') == 'failed')} failed gates, "
        f"{sum(1 for e in entries.values() if e.get('status') == 'error')} errors, {len(skipped)} skipped."
    )
    from ..eval.options import EvalOptions

    meta = {
        "summary": summary,
        "hardware": host_description(),
        "build": spec.source,
        "eval": EvalOptions.from_mapping(spec.eval).describe(),
    }
    out = spec.out / "report"
    write_report(out, rows, title=f"qwen3-quant build: {spec.name}", meta=meta)
    return out


def publish_passed(spec: BuildSpec, entries: dict[str, dict[str, Any]]) -> list[str]:
    """Publish every artifact folder's passed variants to the build's target."""
    from ..publish import publish

    target = str(spec.publish["to"])
    folders: dict[Path, list[str]] = {}
    for e in entries.values():
        if e.get("status") == "passed" and e.get("artifact_dir"):
            folder = artifact_folder(spec, e)  # checked: a folder of OUT/artifacts
            folders.setdefault(folder, []).extend(e.get("variants") or [])  # type: ignore[arg-type]
    done = []
    for folder, variants in folders.items():
        dest = f"{target.rstrip('/')}/{folder.name}"
        try:
            publish(
                folder,
                dest,
                variants=sorted(set(variants)),
                private=bool(spec.publish.get("private")),
                overwrite=True,
            )
            done.append(dest)
        except Exception as exc:  # one refused publish must not hide the others
            log.error("publishing %s failed: %s", folder.name, exc)
    return done


def github_matrix(
    path: str | Path | None = None, *, out: str | Path | None = None, models: list[str] | None = None
) -> dict[str, Any]:
    """Every cell of the build as a GitHub Actions matrix (``strategy.matrix: ${{ fromJSON(...) }}``),
    each with its needs and the runner it goes to (``runs_on``, from the build's ``[runners]``).

    Raises :class:`UsageError` naming the cells no runner can take, so that a workflow stops
    before any job starts. Cells the format refuses are left out (no machine can make them)."""
    from ..errors import UsageError

    spec = load_build(path, out=out)
    include, homeless = [], []
    for r in plan(spec, select_models(spec.cells(), models)):
        if not r.buildable:
            log.warning("%s is left out of the matrix: %s", r.cell.id, r.reason)
            continue
        c = r.cell
        if r.runner is None:
            homeless.append(f"{c.id} ({r.needs.describe() if r.needs else 'needs unknown'})")
            continue
        include.append(
            {
                "cell": c.id,
                "model": c.model,
                "model_slug": slug(c.model),
                "format": c.format,
                "axis_value": c.axis_value,
                "slug": slug(c.id),
                "est_seconds": round(r.seconds or 0),
                "needs": r.needs.to_dict() if r.needs else None,
                "runs_on": r.runner.label,
                "device": c.device,
                "gpu": r.device != "cpu",
            }
        )
    if homeless:
        labels = ", ".join(
            f"{x.label} ({x.ram_bytes / 1e9:.0f} GB RAM, {x.disk_bytes / 1e9:.0f} GB disk)"
            for x in spec.runners
        )
        raise UsageError(
            f"{len(homeless)} cells fit no runner of the build file ({labels}): " + "; ".join(homeless),
            hint="add a [runners.LABEL] table with the RAM, disk and hours they need, or leave those models out",
        )
    return {"include": include}


def slug(text: str) -> str:
    """A cell id or model name as an artifact name: ``Qwen3-8B--gguf--Q4_K_M``."""
    return text.replace("/", "--").replace(":", "-")


def select_models(cells: list[Cell], models: list[str] | None) -> list[Cell]:
    """The cells of ``models`` (all when none are named); :class:`UsageError` for a model the
    build does not have."""
    from ..errors import UsageError

    if not models:
        return cells
    have = {c.model for c in cells}
    for m in models:
        if m not in have:
            raise UsageError(f"no model {m} in this build", hint="models: " + ", ".join(sorted(have)))
    return [c for c in cells if c.model in models]


def collect(
    path: str | Path | None = None,
    *,
    out: str | Path | None = None,
    states: list[Path] = (),
    models: list[str] | None = None,
    publish: bool = True,
) -> BuildOutcome:
    """After a matrix of CI jobs: merge their outputs (``states``: each job's ``--out`` folder,
    its ``build/`` folder or its ``state.json``) into this build's ``out`` variant by variant,
    then write the report and publish what passed. With ``models`` only those models' cells are
    collected (one collect job per model keeps each job's download small)."""
    from .merge import merge_jobs

    spec = load_build(path, out=out)
    cells = select_models(spec.cells(), models)
    merged = merge_jobs(spec, [Path(s) for s in states], cells)
    for cid, entry in merged.entries.items():
        update_cell(spec.state_dir, cid, entry)
    st = load_state(spec.state_dir)["cells"]
    entries = {c.id: st[c.id] for c in cells if c.id in st and st[c.id].get("status") != "skipped"}
    skipped = {c.id: st[c.id].get("error", "") for c in cells if st.get(c.id, {}).get("status") == "skipped"}
    for c in cells:
        if c.id not in st:
            entries[c.id] = {"status": "error", "error": "no CI job reported this cell"}
    return _finish(spec, entries, skipped, publish)


def dump_plan(rows: list[PlanRow]) -> str:
    return json.dumps(
        [
            {
                "cell": r.cell.id,
                "status": r.status,
                "artifact_bytes": r.artifact_bytes,
                "peak_bytes": r.peak_bytes,
                "gpu_peak_bytes": r.gpu_peak_bytes,
                "device": r.device,
                "seconds": r.seconds,
                "reason": r.reason,
                "needs": r.needs.to_dict() if r.needs else None,
                "runner": r.runner.label if r.runner else None,
            }
            for r in rows
        ],
        indent=2,
    )


__all__ += ["run_cell", "dump_plan", "EXECUTORS"]
