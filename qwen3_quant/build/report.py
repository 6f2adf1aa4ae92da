"""The build report: JSON for machines, Markdown and HTML for people, PNG plots."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from ..artifact import Manifest
from ..eval.metric_table import TABLE_COLUMNS, metric
from ..io import atomic_write_json, atomic_write_text, human_bytes


def _variant_bytes(artifact_dir: str, variant: str) -> int | None:
    """A variant's size as a user downloads it (with the shared config and tokenizer, unless the
    format's shared files are by-products such as GGUF's importance matrix)."""
    from ..formats import FORMATS, get_format

    folder = Path(artifact_dir)
    m = Manifest.read_or_none(folder) if folder.is_dir() else None
    if not m or variant not in m.variants:
        return None
    shared = m.format not in FORMATS or get_format(m.format).variant_counts_shared_files
    return m.bytes_of(m.files_of(variant, with_shared=shared))


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
            rows.append({**base, "variant": e.get("axis_value") or cid.split("/")[-1]})
        for r in results:
            rows.append(
                {
                    **base,
                    "variant": r.get("variant") or e.get("axis_value"),
                    "bytes": _variant_bytes(e["artifact_dir"], r.get("variant"))
                    if e.get("artifact_dir")
                    else None,
                    **{k: r.get(k) for k in TABLE_COLUMNS},
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


_COLUMNS = [
    ("cell", "cell", str),
    ("status", "status", str),
    ("size", "bytes", lambda v: human_bytes(v) if v else "-"),
    *((metric(k).label, k, metric(k).format) for k in TABLE_COLUMNS),
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

    done = [r for r in rows if r.get("kld_mean") is not None and r.get("bytes")]
    paths = []
    if done:
        kld = metric("kld_mean")
        models = sorted({r["model"] for r in done})
        formats = sorted({r["format"] for r in done})
        markers = dict(zip(formats, "osD^vP*Xph", strict=False))
        fig, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), 4.8), squeeze=False)
        for ax, model in zip(axes[0], models, strict=True):
            pts = sorted((r for r in done if r["model"] == model), key=lambda r: r["bytes"])
            floor = min((r["kld_mean"] for r in pts if r["kld_mean"] > 0), default=1e-6) / 2
            for fmt in formats:
                mine = [r for r in pts if r["format"] == fmt]
                if not mine:
                    continue
                ax.scatter(
                    [r["bytes"] / 1e6 for r in mine],
                    [max(r["kld_mean"], floor) for r in mine],
                    marker=markers.get(fmt, "o"),
                    s=42,
                    label=fmt,
                    edgecolors=["none" if r.get("passed") else "tab:red" for r in mine],
                    linewidths=1.5,
                )
            for i, r in enumerate(pts):  # alternate label offsets so that neighbours do not overlap
                ax.annotate(
                    str(r["variant"]),
                    (r["bytes"] / 1e6, max(r["kld_mean"], floor)),
                    fontsize=8,
                    xytext=(5, 6 if i % 2 == 0 else -11),
                    textcoords="offset points",
                )
            ax.set_yscale("log")
            ax.grid(True, which="both", alpha=0.3)
            ax.set(title=model, xlabel="artifact size (MB)", ylabel=f"{kld.label} vs unquantised (log)")
            ax.legend(fontsize=8, title="format (red edge: failed gates)", title_fontsize=7)
        fig.tight_layout()
        p = out_dir / "size_vs_kld.png"
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
