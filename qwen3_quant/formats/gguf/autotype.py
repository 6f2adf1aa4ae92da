"""Size-matched mixed precision: a llama.cpp type per tensor, chosen from measured sensitivity under
a byte budget (``--type auto:4.5bpw``).

1. Each candidate type (Q2_K ... Q8_0) is applied to every block tensor at once by llama.cpp's own
   quantiser with the importance matrix (``pure``), and each tensor's error is measured against the
   float conversion, weighted by the importance matrix: ``sum_c imatrix[c] * sum_r (W - Q(W))[r, c]^2``,
   the expected squared error of that tensor's output over the calibration activations. Each
   tensor's errors are then scaled to KL divergence: llama.cpp runs the model with that tensor
   alone at the lowest candidate (the rest at Q8_0) on a few calibration windows.
2. The budget minus what the fixed tensors take (norms, router, embeddings, output head) is shared
   among the block tensors by a multiple-choice knapsack solved exactly by dynamic programming over
   the budget (``allocate``). ``auto:<type>``: the budget is that type's file and the fixed tensors
   take exactly the types llama.cpp gives them there (read back from the file), so the block
   tensors share what they share in ``<type>``. ``auto:<bits>bpw``: bits per weight over every
   tensor, the fixed tensors at Q4_K_M's types (``FIXED_FROM``).
3. llama.cpp quantises the file with one type override per tensor (``tt_overrides``), so the file is
   an ordinary GGUF that stock llama.cpp loads; the recipe records every tensor's type and the budget.

Pure selection and error maths here (unit-tested on toy numbers); llama.cpp calls in ``quantizer``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# the types a block tensor may get, and a llama.cpp file type whose default type it is
CANDIDATES: dict[str, str] = {
    "Q2_K": "Q2_K",
    "Q3_K": "Q3_K_M",
    "Q4_K": "Q4_K_M",
    "Q5_K": "Q5_K_M",
    "Q6_K": "Q6_K",
    "Q8_0": "Q8_0",
}
MIN_BPW, MAX_BPW = 2.5, 8.5
# auto:<bits>bpw: the file type whose rules give the tensors the allocator does not choose
# (embeddings, output head); auto:<type> takes <type>'s own
FIXED_FROM = "Q4_K_M"
_AUTO = re.compile(
    r"^\s*AUTO\s*[:\-_]\s*(?:(?P<bpw>\d+(?:\.\d+)?)\s*(?:BPW)?|(?P<type>[A-Z0-9_]+))\s*$", re.IGNORECASE
)


def parse_auto(name: str) -> float | str | None:
    """The budget of an automatic type: ``auto:4.5bpw`` / ``AUTO-4.5BPW`` / ``auto:4.5`` -> 4.5 bits per
    weight; ``auto:Q4_K_M`` -> ``"Q4_K_M"`` (the size of that type's file); anything else -> None."""
    m = _AUTO.match(str(name))
    if not m:
        return None
    if m.group("bpw"):
        return float(m.group("bpw"))
    return m.group("type").upper()


def auto_name(budget: float | str) -> str:
    """The canonical type name (file names, manifest): ``AUTO_4.5BPW`` or ``AUTO_Q4_K_M``."""
    return f"AUTO_{budget:g}BPW" if isinstance(budget, float) else f"AUTO_{budget}"


def check_auto(name: str) -> str:
    """Validate an automatic type request and return its canonical name (raises UsageError)."""
    from ...errors import UsageError
    from .types import FILE_TYPES, UNQUANTISED

    budget = parse_auto(name)
    if isinstance(budget, float) and not MIN_BPW <= budget <= MAX_BPW:
        raise UsageError(
            f"--type {name}: {budget:g} bits per weight is outside {MIN_BPW:g}-{MAX_BPW:g}",
            hint="e.g. --type auto:4.5bpw, or auto:Q4_K_M for the size of Q4_K_M",
        )
    if isinstance(budget, str) and (budget not in FILE_TYPES or budget in UNQUANTISED):
        raise UsageError(
            f"--type {name}: {budget} is not a quantised llama.cpp type",
            hint="e.g. auto:Q4_K_M (the size of Q4_K_M) or auto:4.5bpw",
        )
    return auto_name(budget)


def is_auto(name: str) -> bool:
    return parse_auto(name) is not None


@dataclass(frozen=True)
class Option:
    ggml_type: str
    nbytes: int
    error: float


def weighted_error(w, q, importance) -> float:
    """``sum_c importance[c] * sum_r (w - q)[r, c]^2`` for a 2-D ``[rows, cols]`` or stacked
    ``[experts, rows, cols]`` tensor; importance ``[cols]`` or ``[experts, cols]`` (ones when None)."""
    import numpy as np

    d2 = np.square(w.astype(np.float64) - q.astype(np.float64))
    per_col = d2.sum(axis=-2)  # [cols] or [experts, cols]
    if importance is None:
        return float(per_col.sum())
    imp = np.asarray(importance, dtype=np.float64).reshape(per_col.shape)
    return float((per_col * imp).sum())


def _useful(options: Sequence[Option]) -> list[Option]:
    """Options by size, without those that are bigger and not better than a smaller one."""
    out: list[Option] = []
    for o in sorted(options, key=lambda o: (o.nbytes, o.error)):
        if not out or o.error < out[-1].error:
            out.append(o)
    return out


def allocate(
    options: Mapping[str, Sequence[Option]], budget: int, *, resolution: int = 1 << 16
) -> dict[str, Option]:
    """One option per tensor, total bytes <= ``budget``, least total error: an exact multiple-choice
    knapsack by dynamic programming over the budget in ``resolution`` steps (each tensor's bytes
    rounded up to a step, so the choice always fits), then the bytes that rounding left are spent
    on the upgrades that still fit, most error saved per byte first.

    Every option of a tensor takes part, not only those on its (bytes, error) convex hull: with
    few, large tensors (a MoE's stacked experts) the hull's jumps would leave much of the budget
    unspent."""
    import numpy as np

    names = list(options)
    opts = {n: _useful(options[n]) for n in names}
    smallest = sum(o[0].nbytes for o in opts.values())
    if smallest > budget:
        raise ValueError(f"the budget ({budget} bytes) is below the smallest choice ({smallest} bytes)")
    unit = max(1, -(-budget // resolution))
    steps = budget // unit
    best = np.zeros(steps + 1)  # least error of the tensors so far within c steps
    picks = np.zeros((len(names), steps + 1), dtype=np.int16)
    for t, n in enumerate(names):
        new = np.full(steps + 1, np.inf)
        for k, o in enumerate(opts[n]):
            c = -(-o.nbytes // unit)
            if c > steps:
                continue
            cand = np.full(steps + 1, np.inf)
            cand[c:] = best[: steps + 1 - c] + o.error
            better = cand < new
            new[better] = cand[better]
            picks[t, better] = k
        best = new
    if not np.isfinite(best[steps]):  # rounding up made the smallest choice not fit: take it as is
        pick = {n: 0 for n in names}
    else:
        pick, c = {}, steps
        for t in range(len(names) - 1, -1, -1):
            k = int(picks[t, c])
            pick[names[t]] = k
            c -= -(-opts[names[t]][k].nbytes // unit)
    used = sum(opts[n][k].nbytes for n, k in pick.items())
    while True:  # spend what rounding left
        ups = [
            ((o.error - opts[n][pick[n]].error) / (o.nbytes - opts[n][pick[n]].nbytes), n, k)
            for n in names
            for k, o in enumerate(opts[n])
            if k > pick[n] and used + o.nbytes - opts[n][pick[n]].nbytes <= budget
        ]
        if not ups:
            break
        _, n, k = min(ups)
        used += opts[n][k].nbytes - opts[n][pick[n]].nbytes
        pick[n] = k
    return {n: opts[n][k] for n, k in pick.items()}


def budget_bytes(bpw: float, total_numel: int) -> int:
    """Bytes of tensor data that ``bpw`` bits per weight allow over ``total_numel`` weights."""
    return int(math.floor(bpw * total_numel / 8))


def override_pattern(tensor_name: str) -> str:
    """A regular expression matching exactly one tensor name (llama.cpp uses ``std::regex_search``)."""
    return "^" + re.escape(tensor_name) + "$"


@dataclass(frozen=True)
class AutoPlan:
    """What ``--type auto:Nbpw`` chose: a type per tensor, the budget and the predicted error."""

    target: float | str
    bpw: float
    budget_bytes: int
    tensor_types: dict[str, str]  # every quantised tensor of the file -> ggml type
    chosen: dict[str, str]  # the block tensors the allocator chose for
    data_bytes: int
    errors: dict[str, dict[str, float]]  # block tensor -> type -> importance-weighted error
    ftype: str  # the llama.cpp file type written in the header (the most used candidate's)
    sensitivity: str = "importance-weighted squared error per tensor and candidate type"
    fixed_from: str = FIXED_FROM  # the llama.cpp type whose rules gave the tensors not chosen

    def recipe(self) -> dict:
        counts: dict[str, int] = {}
        for t in self.chosen.values():
            counts[t] = counts.get(t, 0) + 1
        return {
            "auto_target": self.target,
            "auto_bpw": round(self.bpw, 4),
            "auto_budget_bytes": self.budget_bytes,
            "auto_data_bytes": self.data_bytes,
            "auto_sensitivity": self.sensitivity,
            "auto_candidates": list(CANDIDATES),
            "auto_chosen_counts": dict(sorted(counts.items())),
            "auto_fixed_types_from": self.fixed_from,
            "auto_tensor_types": dict(sorted(self.tensor_types.items())),
        }


def spread_windows(samples: Sequence[Sequence[int]], n: int, length: int) -> list[list[int]]:
    """``n`` calibration samples spread evenly over the set, each cut to ``length`` tokens. A
    calibration set lists each source's samples together, so the first few would all be one
    source (the mix's prose); spread, every source with a share of at least 1/n is in."""
    if n >= len(samples):
        picked = range(len(samples))
    else:
        picked = sorted({round(i * (len(samples) - 1) / max(1, n - 1)) for i in range(n)})
    return [list(samples[i][:length]) for i in picked]


def _tensors(path):
    import gguf

    return {t.name: t for t in gguf.GGUFReader(str(path)).tensors}


def _dequant(t):
    import gguf
    import numpy as np

    return gguf.quants.dequantize(np.asarray(t.data), t.tensor_type)


def _is_choosable(name: str, t) -> bool:
    return name.startswith("blk.") and len(t.shape) >= 2 and "ffn_gate_inp" not in name


def _log_softmax(x):
    import numpy as np

    x = x.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def mean_kld(ref_logp, logits) -> float:
    """Mean over positions of KL(ref || q), full vocabulary (ref given as log-probabilities)."""
    import numpy as np

    q = _log_softmax(logits)
    return float((np.exp(ref_logp) * (ref_logp - q)).sum(-1).mean())


def _window_logits(path, windows, threads):
    import numpy as np

    from .runner import LlamaCppRunner

    with LlamaCppRunner(path, ctx=max(len(w) for w in windows), threads=threads) as r:
        return np.concatenate([r.logits(w) for w in windows])


def measure_gains(base, imatrix, names, errors, windows, scratch, *, threads=None, progress=None):
    """KL divergence per unit of weighted error, per tensor: each tensor alone at the lowest
    candidate type (every other one at Q8_0), its KLD over ``windows`` (token id lists) above the
    all-Q8_0 file's, divided by its weighted error at that type. Measured in llama.cpp."""
    from .quantizer import quantize_gguf

    ref = _log_softmax(_window_logits(base, windows, threads))
    low = next(iter(CANDIDATES))
    every = list(names)

    def kld_with(overrides: dict[str, str]) -> float:
        out = scratch / "auto-gain.gguf"
        quantize_gguf(base, out, "Q8_0", imatrix=imatrix, threads=threads, tensor_types=overrides)
        try:
            return mean_kld(ref, _window_logits(out, windows, threads))
        finally:
            out.unlink()

    floor = kld_with({n: "Q8_0" for n in every})
    gains = {}
    for i, name in enumerate(every):
        if progress:
            progress("measuring KL divergence per tensor", i, len(every))
        if low not in errors[name] or errors[name][low] <= 0:
            gains[name] = 1.0
            continue
        k = kld_with({**{n: "Q8_0" for n in every}, name: low})
        gains[name] = max(k - floor, 0.0) / errors[name][low]
    return gains


@dataclass
class Sensitivity:
    """What one measurement found, reusable for every budget of the same run: per block tensor
    and candidate type its bytes and (KL-scaled) error, and the fixed tensors' types and bytes."""

    total_numel: int
    sizes: dict[str, dict[str, int]]
    errors: dict[str, dict[str, float]]
    fixed: dict[str, tuple[str, int]]
    description: str

    def to_json(self, key: dict) -> dict:
        """A record for a later run (kept under ``.work``), valid for the inputs named in ``key``."""
        return {"key": key, "candidates": list(CANDIDATES), "fixed_from": FIXED_FROM, **self.__dict__}

    @classmethod
    def from_json(cls, data: dict, key: dict) -> Sensitivity | None:
        """The measurement in ``data`` if it was made from the inputs in ``key`` with the same
        candidate types; None otherwise (measure again)."""
        if (data.get("key"), data.get("candidates"), data.get("fixed_from")) != (
            key,
            list(CANDIDATES),
            FIXED_FROM,
        ):
            return None
        fixed = {n: (t, int(b)) for n, (t, b) in data["fixed"].items()}
        return cls(int(data["total_numel"]), data["sizes"], data["errors"], fixed, data["description"])


def measure_sensitivity(
    base, imatrix, scratch, *, threads: int | None = None, progress=None, kld_windows=None
) -> Sensitivity:
    """Every block tensor's error at each candidate type (llama.cpp quantises the whole model to
    each, one file at a time), scaled to KL divergence over ``kld_windows`` when given.

    ``base`` is the float GGUF conversion, ``imatrix`` the run's importance matrix, ``scratch`` a
    folder for one candidate file at a time (removed after it is measured)."""
    import gguf
    import numpy as np

    from .quantizer import quantize_gguf

    base_t = _tensors(base)
    total_numel = sum(int(np.prod([int(x) for x in t.shape])) for t in base_t.values())
    choosable = [n for n, t in base_t.items() if _is_choosable(n, t)]
    errors: dict[str, dict[str, float]] = {n: {} for n in choosable}
    sizes: dict[str, dict[str, int]] = {n: {} for n in choosable}
    steps = [*CANDIDATES, FIXED_FROM]
    fixed: dict[str, tuple[str, int]] = {}
    for i, cand in enumerate(steps):
        if progress:
            progress("measuring tensor sensitivity", i, len(steps))
        out = scratch / f"auto-{cand}.gguf"
        is_fixed_pass = i == len(CANDIDATES)
        quantize_gguf(base, out, FIXED_FROM if is_fixed_pass else CANDIDATES[cand], imatrix=imatrix,
                      threads=threads, pure=not is_fixed_pass)  # fmt: skip
        q_t = _tensors(out)
        for name, t in q_t.items():
            qtype = gguf.GGMLQuantizationType(t.tensor_type).name
            if is_fixed_pass:
                if name not in errors:
                    fixed[name] = (qtype, int(t.n_bytes))
                continue
            if name not in errors:
                continue
            if qtype != cand:  # llama.cpp fell back (rows not a multiple of the block): not an option
                continue
            w = _dequant(base_t[name])
            imp = imatrix.values(name) if name in imatrix.entries else None
            errors[name][cand] = weighted_error(w, _dequant(t), imp)
            sizes[name][cand] = int(t.n_bytes)
        del q_t
        out.unlink()
    if progress:
        progress("measuring tensor sensitivity", len(steps), len(steps))
    description = "importance-weighted squared error per tensor and candidate type"
    if kld_windows:  # weighted error -> predicted KL divergence, per tensor, measured in llama.cpp
        gains = measure_gains(base, imatrix, choosable, errors, kld_windows, scratch, threads=threads,
                              progress=progress)  # fmt: skip
        errors = {n: {c: e * gains[n] for c, e in errs.items()} for n, errs in errors.items()}
        description += (
            ", scaled per tensor to KL divergence measured in llama.cpp with that tensor alone at "
            f"{next(iter(CANDIDATES))} ({sum(len(w) for w in kld_windows)} calibration tokens)"
        )
    return Sensitivity(total_numel, sizes, errors, fixed, description)


def named_budget(
    tensors: Mapping[str, tuple[str, int]], chosen_by_mix
) -> tuple[int, dict[str, tuple[str, int]]]:
    """``auto:<type>``'s budget and fixed tensors from that type's own file (``tensors``: every
    tensor's ggml type and bytes): all its tensor data, and the type and bytes llama.cpp gave each
    tensor the mix does not choose (embeddings, output head, norms, routers)."""
    chosen_by_mix = set(chosen_by_mix)
    return sum(b for _, b in tensors.values()), {n: tb for n, tb in tensors.items() if n not in chosen_by_mix}


def choose(
    sens: Sensitivity,
    target: float | str,
    budget: int,
    fixed: Mapping[str, tuple[str, int]] | None = None,
) -> AutoPlan:
    """The types for one budget (bytes of tensor data) from a measurement. ``fixed``: the types
    and bytes of the tensors the mix does not choose (``auto:<type>``: that type's, from
    ``named_budget``); None: the measurement's, Q4_K_M's rules (``auto:<bits>bpw``)."""
    from ...errors import UsageError

    fixed_from = FIXED_FROM if fixed is None else str(target)
    fixed = sens.fixed if fixed is None else fixed
    fixed_bytes = sum(b for _, b in fixed.values())
    options = {
        n: [Option(c, sens.sizes[n][c], e) for c, e in errs.items()] for n, errs in sens.errors.items()
    }
    smallest = fixed_bytes + sum(min(o.nbytes for o in opts) for opts in options.values())
    if budget < smallest:
        need = 8 * smallest / sens.total_numel
        raise UsageError(
            f"--type {auto_name(target)}: {8 * budget / sens.total_numel:.2f} bits per weight is below the "
            f"smallest mix for this model ({need:.2f}: every block tensor at {next(iter(CANDIDATES))}, "
            f"embeddings and output head at {fixed_from}'s types)",
            hint=f"ask for at least auto:{math.ceil(need * 10) / 10:g}bpw",
        )
    chosen = allocate(options, budget - fixed_bytes)
    types = {n: t for n, (t, _) in fixed.items() if t not in ("F32", "F16", "BF16")}
    types.update({n: o.ggml_type for n, o in chosen.items()})
    counts: dict[str, int] = {}
    for o in chosen.values():
        counts[o.ggml_type] = counts.get(o.ggml_type, 0) + o.nbytes
    ftype = CANDIDATES[max(counts, key=counts.get)] if counts else FIXED_FROM
    return AutoPlan(
        target=target,
        bpw=8 * budget / sens.total_numel,
        budget_bytes=budget,
        tensor_types=types,
        chosen={n: o.ggml_type for n, o in chosen.items()},
        data_bytes=fixed_bytes + sum(o.nbytes for o in chosen.values()),
        errors=sens.errors,
        ftype=ftype,
        sensitivity=sens.description,
        fixed_from=fixed_from,
    )


def budget_of(
    base, imatrix, target: float | str, scratch, sens: Sensitivity, *, threads=None
) -> tuple[int, dict[str, tuple[str, int]] | None]:
    """Bytes of tensor data and the fixed tensors' types and bytes: ``target`` bits per weight over
    all tensors (fixed: None, the measurement's), or what the named llama.cpp file type quantised
    from ``base`` with ``imatrix`` has (``named_budget``)."""
    import gguf

    from .quantizer import quantize_gguf

    if not isinstance(target, str):
        return budget_bytes(target, sens.total_numel), None
    out = scratch / f"auto-budget-{target}.gguf"
    quantize_gguf(base, out, target, imatrix=imatrix, threads=threads)
    try:
        written = {
            n: (gguf.GGMLQuantizationType(t.tensor_type).name, int(t.n_bytes))
            for n, t in _tensors(out).items()
        }
    finally:
        out.unlink()
    return named_budget(written, sens.errors)


def plan_auto(
    base,
    imatrix,
    target: float | str,
    scratch,
    *,
    threads: int | None = None,
    progress=None,
    kld_windows: list[list[int]] | None = None,
    sensitivity: Sensitivity | None = None,
) -> AutoPlan:
    """Measure (unless ``sensitivity`` is given) and choose for one budget: ``target`` bits per
    weight over all tensors, or the name of a llama.cpp file type whose tensor data is the budget."""
    sens = sensitivity or measure_sensitivity(
        base, imatrix, scratch, threads=threads, progress=progress, kld_windows=kld_windows
    )
    budget, fixed = budget_of(base, imatrix, target, scratch, sens, threads=threads)
    return choose(sens, target, budget, fixed)
