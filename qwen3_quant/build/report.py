"""The build report: JSON for machines, Markdown and HTML for people, PNG plots."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

from ..artifact import load_manifest_or_none
from ..io import atomic_write_json, atomic_write_text, human_bytes


def _variant_bytes(artifact_dir: str, variant: str) -> int | None:
    folder = Path(artifact_dir)
    m = load_manifest_or_none(folder) if folder.is_dir() else None
    if not m or variant not in m["variants"]:
        return None
    own = set(m["variants"][variant]["files"])
    if m["format"] != "gguf":  # config, tokenizer and weights together make the artifact
        own |= {
            f
            for f in m["files"]
            if not any(f in v["files"] for n, v in m["variants"].items() if n != variant)
        }
    return sum(m["files"][f]["size"] for f in own if f in m["files"])


def report_rows(entries: dict[str, dict[str, Any]], skipped: dict[str, str]) -> list[dict[str, Any]]:
    rows = []
    for cid, e in entries.items():
        base = {
            "cell": cid,
            "model": e.get("model") or cid.split("/")[0],
            "format": e.get("format") or cid.split("/")[1],
            "status": e.get("status"),
            "error": e.get("error"),
            "artifact_dir": e.get("artifact_dir"),
            "seconds": e.get("seconds"),
        }
        results = e.get("results") or []
        if not results:
            rows.append({**base, "variant": e.get("variant") or cid.split("/")[-1]})
        for r in results:
            rows.append(
                {
                    **base,
                    "variant": r.get("variant") or e.get("variant"),
                    "bytes": _variant_bytes(e["artifact_dir"], r.get("variant"))
                    if e.get("artifact_dir")
                    else None,
                    "perplexity": r.get("perplexity"),
                    "base_perplexity": r.get("base_perplexity"),
                    "ppl_increase_pct": r.get("ppl_increase_pct"),
                    "kld_mean": r.get("kld_mean"),
                    "top1_agreement": r.get("top1_agreement"),
                    "prefill_tps": r.get("prefill_tps"),
                    "decode_tps": r.get("decode_tps"),
                    "peak_rss_bytes": r.get("peak_rss_bytes"),
                    "passed": r.get("passed"),
                    "failed_gates": [g["name"] for g in r.get("gates", []) if not g["passed"]],
                    "hardware": r.get("hardware"),
                    "runtime": r.get("runtime"),
                }
            )
    for cid, reason in skipped.items():
        m, f, v = cid.split("/", 2)
        rows.append(
            {"cell": cid, "model": m, "format": f, "variant": v, "status": "skipped", "error": reason}
        )
    return rows


def _num(v: Any, spec: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, spec)


_COLUMNS = [
    ("cell", "cell", str),
    ("status", "status", str),
    ("size", "bytes", lambda v: human_bytes(v) if v else "-"),
    ("ppl", "perplexity", lambda v: _num(v, ".3f")),
    ("base ppl", "base_perplexity", lambda v: _num(v, ".3f")),
    ("Δppl %", "ppl_increase_pct", lambda v: _num(v, "+.2f")),
    ("KLD", "kld_mean", lambda v: _num(v, ".4f")),
    ("top-1", "top1_agreement", lambda v: _num(v * 100 if v is not None else None, ".1f")),
    ("prefill tok/s", "prefill_tps", lambda v: _num(v, ".1f")),
    ("decode tok/s", "decode_tps", lambda v: _num(v, ".1f")),
    ("peak RSS", "peak_rss_bytes", lambda v: human_bytes(v) if v else "-"),
]


def _table_cells(r: dict[str, Any]) -> list[str]:
    out = [fmt(r.get(key)) if key != "cell" else f"{r['cell']}" for _, key, fmt in _COLUMNS]
    note = r.get("error") or (", ".join(r.get("failed_gates") or []))
    return out + [note or ""]


def write_report(out_dir: Path, rows: list[dict[str, Any]], *, title: str, meta: dict[str, Any]) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "report.json", {"title": title, **meta, "rows": rows})
    plots = write_plots(out_dir, rows)
    heads = [h for h, _, _ in _COLUMNS] + ["notes"]
    md = [
        f"# {title}",
        "",
        f"{meta.get('summary', '')}",
        "",
        "| " + " | ".join(heads) + " |",
        "|" + "---|" * len(heads),
    ]
    md += ["| " + " | ".join(c.replace("|", "/") for c in _table_cells(r)) + " |" for r in rows]
    md += ["", f"Measured on: {meta.get('hardware', '-')}. Evaluation: {meta.get('eval', '-')}.", ""]
    md += [f"![{p.stem}]({p.name})" for p in plots]
    atomic_write_text(out_dir / "report.md", "\n".join(md) + "\n")
    rows_html = "".join(
        f"<tr class='{html.escape(str(r.get('status')))}'>"
        + "".join(f"<td>{html.escape(c)}</td>" for c in _table_cells(r))
        + "</tr>"
        for r in rows
    )
    page = (
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child{text-align:left}"
        "tr.failed td,tr.error td{background:#fdd}tr.skipped td{color:#888}</style>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(meta.get('summary', ''))}</p>"
        "<table><tr>"
        + "".join(f"<th>{html.escape(h)}</th>" for h in heads)
        + "</tr>"
        + rows_html
        + "</table>"
        f"<p>Measured on: {html.escape(str(meta.get('hardware', '-')))}</p>"
        + "".join(f"<p><img src='{p.name}' alt='{p.stem}'></p>" for p in plots)
    )
    atomic_write_text(out_dir / "report.html", page)
    return out_dir / "report.md"


def write_plots(out_dir: Path, rows: list[dict[str, Any]]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r.get("perplexity") is not None and r.get("bytes")]
    paths = []
    if done:
        models = sorted({r["model"] for r in done})
        fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4.2), squeeze=False)
        for ax, model in zip(axes[0], models, strict=True):
            pts = [r for r in done if r["model"] == model]
            for r in pts:
                color = "tab:green" if r.get("passed") else "tab:red"
                ax.scatter(r["bytes"] / 1e6, r["perplexity"], color=color)
                ax.annotate(
                    f"{r['format']} {r['variant']}",
                    (r["bytes"] / 1e6, r["perplexity"]),
                    fontsize=7,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
            base = next((r["base_perplexity"] for r in pts if r.get("base_perplexity")), None)
            if base:
                ax.axhline(base, color="grey", linestyle="--", linewidth=1, label="unquantised")
                ax.legend(fontsize=7)
            ax.set(title=model, xlabel="artifact size (MB)", ylabel="perplexity")
        fig.tight_layout()
        p = out_dir / "size_vs_perplexity.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    speed = [r for r in rows if r.get("decode_tps")]
    if speed:
        labels = [f"{r['model']}\n{r['format']} {r['variant']}" for r in speed]
        fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(speed)), 4.2))
        xs = range(len(speed))
        ax.bar([x - 0.2 for x in xs], [r.get("prefill_tps") or 0 for r in speed], 0.4, label="prefill tok/s")
        ax.bar([x + 0.2 for x in xs], [r["decode_tps"] for r in speed], 0.4, label="decode tok/s")
        ax.set_xticks(list(xs), labels, rotation=60, ha="right", fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel("tokens/s (log)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        p = out_dir / "tokens_per_second.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths
