"""The model card (README.md): YAML front matter as the Hub expects for quantised models, then
what the artifact is, its recipe, the measured validation, the files, how to run it, and the command
that reproduces it. Everything comes from the artifact manifest; nothing is invented here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from ..artifact import Manifest
from ..eval.metric_table import gated_metric, metric
from ..formats.base import UsageContext
from ..io import human_bytes
from .bundle import CHECKSUMS, EVAL_JSON, Bundle, VariantStatus, base_model_of
from .scrub import public_text, scrub
from .usage import usage_section

log = logging.getLogger(__name__)


def format_info(fmt: str) -> tuple[str, str, str]:
    """What an artifact of ``fmt`` is, its Hub library_name, and the runtime that validates it
    (a plain transformers checkpoint for formats the registry does not know)."""
    from ..formats import FORMATS, get_format

    if fmt not in FORMATS:
        return "safetensors checkpoint for transformers", "transformers", "transformers"
    f = get_format(fmt)
    return f.card_description, f.hub_library, f.runtimes[0].display


# rows every format's recipe may have; formats add their own (QuantFormat.recipe_labels)
_RECIPE_LABELS = {
    "bits": "Bits",
    "quantizer": "Quantiser",
    "calibration": "Calibration",
    "dtype": "Data type",
}


def recipe_labels(fmt: str) -> dict[str, str]:
    from ..formats import FORMATS, get_format

    return {**_RECIPE_LABELS, **(dict(get_format(fmt).recipe_labels) if fmt in FORMATS else {})}


@dataclass
class CardContext:
    bundle: Bundle
    repo_id: str | None  # None: a local publish
    config: dict[str, Any] | None = None  # the artifact's config.json, when it has one
    extra_tags: list[str] = field(default_factory=list)


def license_info(manifest: Manifest) -> dict[str, str]:
    """Front-matter licence fields: the Qwen3 models' Apache-2.0 with a link to their LICENSE file;
    ``other`` (pointing at the base model) for sources the catalog does not know."""
    from .. import catalog

    src = manifest.source
    for key in (src.get("hub_id"), src.get("name")):
        hit = catalog.lookup(key) if key else None
        if hit:
            entry, is_base = hit
            hub = src.get("hub_id") or (entry.base_hub_id if is_base else entry.hub_id)
            return {
                "license": entry.license,
                "license_link": f"https://huggingface.co/{hub}/blob/main/LICENSE",
            }
    if src.get("name") and catalog.bundled_lookup(src["name"]):
        return {"license": "apache-2.0"}
    log.warning(
        "%s: unknown base model licence; the card says 'other' and points at the base model", manifest.name
    )
    out = {"license": "other", "license_name": "base-model-license"}
    if src.get("hub_id"):
        out["license_link"] = f"https://huggingface.co/{src['hub_id']}"
    return out


def is_moe(manifest: Manifest, config: dict[str, Any] | None) -> bool:
    from .. import catalog

    if config and "moe" in str((config.get("text_config") or config).get("model_type", "")):
        return True
    src = manifest.source
    hit = catalog.lookup(src.get("hub_id") or src.get("name") or "")
    return bool(hit and hit[0].arch.num_experts)


def _recipes(bundle: Bundle) -> dict[str, dict[str, Any]]:
    return {v: bundle.manifest.variants[v].recipe for v in bundle.variants}


def front_matter(ctx: CardContext, lic: dict[str, str] | None = None) -> dict[str, Any]:
    from ..formats import FORMATS, get_format

    b = ctx.bundle
    fmt = b.manifest.format
    recipes = _recipes(b)
    tags = ["qwen3", fmt]
    if is_moe(b.manifest, ctx.config):
        tags.append("qwen3_moe")
    for r in recipes.values():
        if r.get("bits") is not None and f"{r['bits']}-bit" not in tags:
            tags.append(f"{r['bits']}-bit")
    if fmt in FORMATS:
        tags += [t for t in get_format(fmt).card_tags(recipes) if t not in tags]
    tags += ["quantized", "qwen3-quant"]
    if b.forced:
        tags.append("validation-failed")
    tags += [t for t in ctx.extra_tags if t not in tags]
    base = base_model_of(b.manifest)
    meta: dict[str, Any] = {}
    if ctx.repo_id and "/" not in base:
        # the Hub wants a Hub model id here; a local model's name stays in the card's text
        log.warning("%s has no Hub id; the card's metadata names no base_model", base)
    else:
        meta.update(base_model=base, base_model_relation="quantized")
    meta.update(
        {
            **(lic or license_info(b.manifest)),
            "pipeline_tag": "text-generation",
            "library_name": format_info(fmt)[1],
            "tags": tags,
        }
    )
    return meta


def render_front_matter(meta: dict[str, Any]) -> str:
    import yaml

    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000) + "---\n"


def _recipe_value(v: Any) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k} {_recipe_value(x)}" for k, x in v.items() if x is not None)
    if isinstance(v, (list, tuple)):
        return ", ".join(_recipe_value(x) for x in v)
    if isinstance(v, bool):
        return "yes" if v else "no"
    if v is None:
        return "-"
    return public_text(str(v))


def recipe_section(b: Bundle) -> str:
    recipes = _recipes(b)
    labels = recipe_labels(b.manifest.format)
    keys: list[str] = []
    for r in recipes.values():
        keys += [k for k in r if k not in keys]
    head = "| | " + " | ".join(b.variants) + " |\n|---|" + "---|" * len(b.variants) + "\n"
    rows = ""
    for k in keys:
        label = labels.get(k, k.replace("_", " ").capitalize())
        rows += f"| {label} | " + " | ".join(_recipe_value(recipes[v].get(k)) for v in b.variants) + " |\n"
    tool = b.manifest.tool
    libs: dict[str, str] = {}
    for v in b.variants:
        libs.update(b.manifest.variants[v].libraries)
    lib_line = ", ".join(f"{k} {ver}" for k, ver in sorted(libs.items())) or "-"
    return (
        "## Recipe\n\n"
        + head
        + rows
        + f"\nMade with {tool.get('name', 'qwen3-quant')} {tool.get('version', '')} ({lib_line}).\n"
    )


def _gate_cell(s: VariantStatus, validated: bool) -> str:
    if s.passed:
        return "pass"
    return "**FAIL**: " + "; ".join(s.problems) if validated else "**not validated**"


# the validation table's metric columns, as the metric table declares them
CARD_METRICS = (
    "perplexity",
    "base_perplexity",
    "ppl_increase_pct",
    "kld_mean",
    "kld_p99",
    "top1_agreement",
    "prefill_tps",
    "decode_tps",
    "peak_rss_bytes",
)
_CARD_HEADS = {
    "perplexity": "PPL",
    "base_perplexity": "Base PPL",
    "ppl_increase_pct": "PPL change",
    "top1_agreement": "Top-1 agree",
    "prefill_tps": "Prefill tok/s",
    "decode_tps": "Decode tok/s",
    "peak_rss_bytes": "Peak RSS",
}


def _measured_note(r: dict[str, Any]) -> str:
    """How a variant was measured, from what its result records (missing facts are left out)."""
    if not r:
        return ""
    has = {k: r[k] for k in r if r[k] is not None and r[k] != ""}
    runtime = (
        str(has["runtime"]) + (f" ({has['backend']})" if "backend" in has else "") if "runtime" in has else ""
    )
    where = ", validated on ".join(p for p in (runtime, str(has.get("hardware", ""))) if p)
    text = []
    if "text" in has:
        text.append(f"text `{has['text']}`")
    if "tokens_scored" in has:
        text.append(
            f"{has['tokens_scored']} tokens scored" + (f" in windows of {has['ctx']}" if "ctx" in has else "")
        )
    speed = []
    if "prompt_tokens" in has:
        speed.append(f"{has['prompt_tokens']}-token prompt")
    if "decode_tokens" in has:
        speed.append(f"{has['decode_tokens']} generated tokens")
    parts = [p for p in (where, ", ".join(text), "speed: " + ", ".join(speed) if speed else "") if p]
    return public_text("; ".join(parts))


def validation_section(b: Bundle) -> str:
    rows = []
    notes: list[str] = []
    for s in b.statuses:
        val = b.manifest.variants[s.name].validation
        r = (val.result if val else None) or {}
        size = sum(f.size for f in b.payload if f.variant == s.name)
        cells = [metric(k).format(r.get(k), unit=True) for k in CARD_METRICS]
        rows.append(
            f"| {s.name} | {human_bytes(size)} | "
            + " | ".join(cells)
            + f" | {_gate_cell(s, val is not None)} |"
        )
        note = _measured_note(r)
        if note and note not in notes:
            notes.append(note)
    gate_rows = []
    for s in b.statuses:
        val = b.manifest.variants[s.name].validation
        for g in ((val.result if val else None) or {}).get("gates") or []:
            m = gated_metric(g["name"])
            op = "<=" if m.better == "lower" else ">="
            gate_rows.append(
                f"| {s.name} | {g['name']} | {m.format(g.get('value'), unit=True)} | "
                f"{op} {m.format(g.get('limit'), unit=True)} | {'pass' if g.get('passed') else '**FAIL**'} |"
            )
        if val and val.error:
            gate_rows.append(f"| {s.name} | runs in its runtime | - | - | **FAIL**: {scrub(val.error)} |")
    heads = " | ".join(_CARD_HEADS.get(k, metric(k).label) for k in CARD_METRICS)
    out = (
        "## Validation\n\n"
        "Every variant was loaded in the runtime that serves it and compared with the unquantised model "
        "on the same text: perplexity, KL divergence of the next-token distributions (top-k, per token), "
        "agreement of the most likely token, prefill and decode throughput, peak memory.\n\n"
        f"| Variant | Size | {heads} | Gates |\n|"
        + "---|" * (len(CARD_METRICS) + 3)
        + "\n"
        + "\n".join(rows)
        + "\n\n"
    )
    if notes:
        out += "Measured with " + "; ".join(notes) + ".\n\n"
    if gate_rows:
        out += (
            "| Variant | Gate | Value | Limit | Result |\n|---|---|---|---|---|\n"
            + "\n".join(gate_rows)
            + "\n\n"
        )
    out += f"The same numbers as data: [`{EVAL_JSON}`]({EVAL_JSON}).\n"
    return out


def files_section(b: Bundle) -> str:
    rows = [
        f"| `{f.path}` | {f.variant or 'shared'} | {human_bytes(f.size)} | `{f.sha256}` |" for f in b.payload
    ]
    return (
        "## Files\n\n| File | Variant | Size | SHA256 |\n|---|---|---|---|\n"
        + "\n".join(rows)
        + f"\n\nCheck a download with `sha256sum -c {CHECKSUMS}` (it lists every file of this publish"
        " but itself).\n"
    )


def reproduce_section(b: Bundle) -> str:
    from ..formats import FORMATS, get_format

    fmt = b.manifest.format
    install = (
        f"pip install 'qwen3-quant[{get_format(fmt).extra}]'" if fmt in FORMATS else "pip install qwen3-quant"
    )
    groups: dict[tuple[str, str, str], list[str]] = {}
    for v in b.variants:
        prov = b.manifest.variants[v].provenance
        key = (prov.language, public_text(prov.command), _made_by(prov)) if prov else ("", "", "")
        groups.setdefault(key, []).append(v)
    parts = ["## Reproduce\n"]
    where = _quantised_on(b)
    if where:
        parts.append(where)
    for (lang, cmd, made_by), variants in groups.items():
        label = ", ".join(variants)
        if not cmd:
            parts.append(f"{label}: the manifest recorded no command.\n")
        elif lang == "python":
            parts.append(f"{label}{made_by}:\n\n```sh\n{install}\n```\n\n```python\n{cmd}\n```\n")
        else:
            parts.append(f"{label}{made_by}:\n\n```sh\n{install}\n{cmd}\n```\n")
    return "\n".join(parts)


def _quantised_on(b: Bundle) -> str:
    """``Quantised on NVIDIA H100 (cuda:0, driver 550.54, CUDA 12.8, 80 GiB).`` per device used."""
    from ..device import describe_facts

    by_device: dict[str, list[str]] = {}
    for v in b.variants:
        prov = b.manifest.variants[v].provenance
        if prov and prov.quantised_on:
            by_device.setdefault(describe_facts(prov.quantised_on), []).append(v)
    if not by_device:
        return ""
    if len(by_device) == 1:
        return f"Quantised on {next(iter(by_device))}.\n"
    return "".join(f"Quantised on {d}: {', '.join(vs)}.\n" for d, vs in by_device.items())


def _made_by(prov) -> str:
    if prov.kind != "build":
        return ""
    return f" (made by the build cell `{public_text(prov.cell or '')}` of `{public_text(prov.build_file or '')}`)"


def forced_warning(b: Bundle) -> str:
    if not b.forced:
        return ""
    items = "\n".join(f"> - {scrub(f)}" for f in b.forced)
    return (
        "> [!WARNING]\n"
        "> **Published with `--force` although validation did not pass.** These variants failed or were "
        "not validated:\n>\n"
        + items
        + "\n>\n> Treat them as untested; the numbers below say how far off they are.\n\n"
    )


def _runtime_of(m: Manifest, variant: str) -> str | None:
    val = m.variants[variant].validation
    return ((val.result if val else None) or {}).get("runtime")


def render_card(ctx: CardContext) -> str:
    b = ctx.bundle
    m = b.manifest
    lic = license_info(m)
    what, _, runtime = format_info(m.format)
    base = base_model_of(m)
    base_link = f"[{base}](https://huggingface.co/{base})" if "/" in base else f"`{base}`"
    variants = ", ".join(f"`{v}`" for v in b.variants)
    validated = ", ".join(sorted({_runtime_of(m, v) or runtime for v in b.variants}))
    name = ctx.repo_id.split("/")[-1] if ctx.repo_id else b.name
    usage = usage_section(
        UsageContext(
            fmt=m.format,
            name=name,
            repo_id=ctx.repo_id,
            variant_files={v: list(m.variants[v].files) for v in b.variants},
            files=[f.path for f in b.payload],
            validated_in=validated,
            moe=is_moe(m, ctx.config),
        )
    )
    intro = (
        f"# {name}\n\n"
        f"{what} of {base_link}: {len(b.variants)} variant{'s' if len(b.variants) != 1 else ''} ({variants}), "
        f"{human_bytes(sum(f.size for f in b.payload))} in all. Made and validated with "
        f"[qwen3-quant](https://pypi.org/project/qwen3-quant/) {m.tool.get('version', '')}: "
        f"each variant was measured in {validated} against the unquantised model "
        "before publishing, and only variants that pass their gates are published"
        + (" (this publish overrode that with `--force`, see below)" if b.forced else "")
        + ".\n\n"
    )
    licence = "## Licence\n\n" + (
        f"{lic['license']}, as the base model ([licence]({lic['license_link']})).\n"
        if lic.get("license_link") and lic["license"] != "other"
        else f"{lic['license']}: the base model's licence applies.\n"
    )
    return "\n".join(
        [
            render_front_matter(front_matter(ctx, lic)),
            intro + forced_warning(b),
            validation_section(b),
            recipe_section(b),
            files_section(b),
            usage,
            reproduce_section(b),
            licence,
        ]
    )
