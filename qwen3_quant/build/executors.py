"""Where cells run: local worker processes bounded by job count and memory, or a Ray cluster.

Cells writing into the same artifact folder (same model and format) run one after another;
different groups run side by side. Every cell runs in a fresh process (``python -m
qwen3_quant.build.worker``), so a crash or a kill loses only that cell and memory is returned.

A cell that quantises on a GPU (its plan row's ``device`` is ``cuda:N``) holds one GPU while it
runs: the local executor runs at most one such cell per GPU, pinning it with
``CUDA_VISIBLE_DEVICES``, while CPU cells run beside them; Ray is asked for ``num_gpus=1``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from .run import PlanRow
from .spec import BuildSpec, cells_by_group
from .state import load_state, update_cell

log = logging.getLogger(__name__)
OnEvent = Callable[[str, str], None]  # (cell id, "start" | status)


def _worker_cmd(build: str, out: str, cell_id: str, force: bool, device: str | None = None) -> list[str]:
    """The command that runs one cell; built where it runs (a Ray node has its own interpreter)."""
    cmd = [
        sys.executable,
        "-m",
        "qwen3_quant.build.worker",
        "--build",
        build,
        "--out",
        out,
        "--cell",
        cell_id,
    ]
    return cmd + (["--force"] if force else []) + (["--device", device] if device else [])


def pick_gpu(device: str, free: set[int]) -> int | None:
    """The GPU a cell planned for ``device`` (``cuda:N``, or ``cpu``) may start on now: ``None``
    for a CPU cell; -1 when it must wait. A cell whose build file names a GPU (``cuda:1``) waits
    for that one; one that said ``auto`` / ``cuda`` (planned as ``cuda:0``) takes any free GPU."""
    if not device.startswith("cuda"):
        return None
    return min(free) if free else -1


def gpu_env(index: int, pinned: bool, base: dict[str, str] | None = None) -> dict[str, str]:
    """The worker's environment for GPU ``index`` (counted among the GPUs this process sees): only
    that GPU visible, so the cell's ``auto`` / ``cuda`` resolves to it; a cell that names its GPU
    (``cuda:N``) keeps the visible set, so that its index still means the same GPU."""
    from ..device import Device, visible_devices

    env = dict(os.environ if base is None else base)
    if not pinned:
        env["CUDA_VISIBLE_DEVICES"] = visible_devices(Device("cuda", index), env.get("CUDA_VISIBLE_DEVICES"))
    return env


def _gpu_count() -> int:
    from ..device import probe_cuda

    return probe_cuda(with_memory=False).device_count


def run_local(
    spec: BuildSpec,
    rows: list[PlanRow],
    *,
    jobs: int,
    force: bool = False,
    on_event: OnEvent | None = None,
    launch: Callable[[list[str], dict[str, str] | None], Any] | None = None,
    gpus: int | None = None,
) -> None:
    """Run the rows' cells as worker processes: at most ``jobs`` at once, only while the sum of
    their estimated peak memory fits in the memory available when the build started, and at most
    one GPU cell per GPU (``gpus``: how many; asked of torch when a row needs one). ``launch``
    starts a worker (``subprocess.Popen`` by default; tests pass fakes)."""
    launch = launch or (lambda cmd, env: subprocess.Popen(cmd, env=env))
    budget = int(psutil.virtual_memory().available * 0.9)
    peak = {r.cell.id: r.peak_bytes or 0 for r in rows}
    device = {r.cell.id: r.device for r in rows}
    if gpus is None:
        gpus = _gpu_count() if any(d != "cpu" for d in device.values()) else 0
    free_gpus = set(range(gpus))
    holds: dict[str, int] = {}
    queues = [list(g) for g in cells_by_group([r.cell for r in rows]).values()]
    running: dict[str, tuple[Any, list]] = {}
    while queues or running:
        in_use = sum(peak[c] for c in running)
        for q in list(queues):
            if len(running) >= jobs or any(q is r[1] for r in running.values()):
                continue
            cell = q[0]
            if running and in_use + peak[cell.id] > budget:
                continue  # wait for memory; a lone cell always starts
            pinned = ":" in cell.device
            want = {int(cell.device.split(":")[1])} & free_gpus if pinned else free_gpus
            gpu = pick_gpu(device[cell.id], want) if gpus else None
            if gpu == -1:
                continue  # wait for a GPU
            q.pop(0)
            if not q:
                queues.remove(q)
            env = None
            if gpu is not None:
                free_gpus.discard(gpu)
                holds[cell.id] = gpu
                env = gpu_env(gpu, pinned)
            proc = launch(_worker_cmd(spec.source, str(spec.out), cell.id, force, spec.device_override), env)
            running[cell.id] = (proc, q)
            in_use += peak[cell.id]
            if on_event:
                on_event(cell.id, "start")
        for cid, (proc, _q) in list(running.items()):
            if proc.poll() is not None:
                del running[cid]
                if cid in holds:
                    free_gpus.add(holds.pop(cid))
                status = load_state(spec.state_dir)["cells"].get(cid, {}).get("status", "error")
                if proc.returncode != 0 and status == "running":
                    update_cell(
                        spec.state_dir,
                        cid,
                        {"status": "error", "error": f"worker exited with code {proc.returncode}"},
                    )
                    status = "error"
                if on_event:
                    on_event(cid, status)
        time.sleep(0.2)


def run_ray(
    spec: BuildSpec,
    rows: list[PlanRow],
    *,
    address: str | None,
    force: bool = False,
    on_event: OnEvent | None = None,
) -> None:
    """Run cells as Ray tasks, one task per artifact folder's cells in order, each task asking Ray
    for the memory its largest cell needs. The build's ``out`` folder must be on storage every
    node sees (a shared filesystem), as artifacts and state are written there."""
    from ..errors import require

    ray = require("ray", "ray")
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    try:

        @ray.remote(num_cpus=1)  # GPU groups ask for num_gpus=1 below; Ray sets CUDA_VISIBLE_DEVICES
        def run_group(build_path: str, out: str, cell_ids: list[str], force: bool, device) -> list[str]:
            for cid in cell_ids:
                subprocess.run(_worker_cmd(build_path, out, cid, force, device), check=False)
            return cell_ids

        peak = {r.cell.id: r.peak_bytes or 0 for r in rows}
        on_gpu = {r.cell.id for r in rows if r.device != "cpu"}
        refs = []
        for cells in cells_by_group([r.cell for r in rows]).values():
            ids = [c.id for c in cells]
            mem = max(peak[i] for i in ids)
            opts: dict[str, Any] = {"memory": mem} if mem else {}
            if on_gpu & set(ids):
                opts["num_gpus"] = 1
            refs.append(
                run_group.options(**opts).remote(
                    spec.source, str(Path(spec.out).resolve()), ids, force, spec.device_override
                )
            )
            if on_event:
                for i in ids:
                    on_event(i, "start")
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ids in ray.get(done):
                states = load_state(spec.state_dir)["cells"]
                for i in ids:
                    if on_event:
                        on_event(i, states.get(i, {}).get("status", "error"))
    finally:
        if started_here:
            ray.shutdown()
