"""The models x formats matrix as a resumable build: ``build()`` plans, runs, reports, publishes."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..artifact import host_description
from .executors import OnEvent, run_local, run_ray
from .report import report_rows, write_report
from .run import BuildOutcome, PlanRow, plan, run_cell
from .spec import BuildSpec, Cell, load_build, select
from .state import load_state, merge_states, update_cell

__all__ = [
    "build",
    "plan",
    "load_build",
    "BuildSpec",
    "Cell",
    "PlanRow",
    "github_matrix",
    "collect",
    "BuildOutcome",
]
log = logging.getLogger(__name__)
EXECUTORS = ("local", "ray")


def build(
    path: str | Path | None = None,
    *,
    out: str | Path | None = None,
    cells: list[str] | None = None,
    executor: str = "local",
    jobs: int | None = None,
    address: str | None = None,
    force: bool = False,
    publish: bool = True,
    on_event: OnEvent | None = None,
    device: str | None = None,
) -> BuildOutcome:
    """Run a build file (default: the bundled offline demo). Cells whose inputs are unchanged and
    whose files verify are skipped; one cell's failure is recorded and the others go on.

    With ``cells`` the named cells run in this process (one CI job per cell); publishing and the
    report are then left to :func:`collect`. ``device`` overrides the build file's for every cell.
    """
    from ..errors import UsageError

    if executor not in EXECUTORS:
        raise UsageError(f"unknown executor '{executor}'", hint="use local or ray")
    spec = load_build(path, out=out, device=device)
    selected = select(spec.cells(), cells)
    rows = plan(spec, selected)
    skipped = {r.cell.id: r.reason for r in rows if r.status == "skip"}
    for cid, reason in skipped.items():
        update_cell(spec.state_dir, cid, {"status": "skipped", "error": reason})
    todo = [r for r in rows if r.status in ("todo", "changed") or (force and r.status == "done")]
    if cells:
        for r in todo:
            if on_event:
                on_event(r.cell.id, "start")
            entry = run_cell(spec, r.cell, force=force)
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
    """Report a whole build, then publish what passed."""
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
    folders: dict[str, list[str]] = {}
    for e in entries.values():
        if e.get("status") == "passed" and e.get("artifact_dir"):
            folders.setdefault(e["artifact_dir"], []).extend(e.get("variants") or [])
    done = []
    for folder, variants in folders.items():
        name = Path(folder).name
        dest = f"{target.rstrip('/')}/{name}"
        try:
            publish(
                Path(folder),
                dest,
                variants=sorted(set(variants)),
                private=bool(spec.publish.get("private")),
                overwrite=True,
            )
            done.append(dest)
        except Exception as exc:  # one refused publish must not hide the others
            log.error("publishing %s failed: %s", name, exc)
    return done


def github_matrix(path: str | Path | None = None, *, out: str | Path | None = None) -> dict[str, Any]:
    """The build's cells as a GitHub Actions matrix (``strategy.matrix: ${{ fromJSON(...) }}``)."""
    spec = load_build(path, out=out)
    include = []
    for r in plan(spec):
        if r.status == "skip":
            continue
        c = r.cell
        include.append(
            {
                "cell": c.id,
                "model": c.model,
                "format": c.format,
                "axis_value": c.axis_value,
                "slug": c.id.replace("/", "--"),
                "est_seconds": round(r.seconds or 0),
                "device": c.device,
                "gpu": r.device != "cpu",
                **({"runner": c.runner} if c.runner else {}),
            }
        )
    return {"include": include}


def collect(
    path: str | Path | None = None,
    *,
    out: str | Path | None = None,
    states: list[Path] = (),
    publish: bool = True,
) -> BuildOutcome:
    """After a matrix of CI jobs: merge their state files, write the report, publish what passed."""
    spec = load_build(path, out=out)
    merge_states(spec.state_dir, [Path(s) for s in states])
    st = load_state(spec.state_dir)["cells"]
    cells = spec.cells()
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
            }
            for r in rows
        ],
        indent=2,
    )


__all__ += ["run_cell", "dump_plan", "EXECUTORS"]
