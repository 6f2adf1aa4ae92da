from __future__ import annotations

import click


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.option("--format", "formats", multiple=True, help="Only these formats' estimates (repeatable).")
def models(as_json: bool, formats: tuple[str, ...]) -> None:
    """The eight Qwen3 models with shapes and parameter counts computed from them, and the estimated
    size, quantisation memory and validation memory of each format and type."""
    from ..eval.options import DEFAULT_MAX_TOKENS
    from ..eval.protocol import DEFAULT_CTX
    from ..models_table import estimate_rows, model_rows
    from .console import console, print_json, print_table, short_bytes

    rows = model_rows()
    est = estimate_rows(list(formats) or None)
    if as_json:
        print_json({"models": rows, "estimates": est})
        return
    from rich.table import Table

    from ..catalog.architecture import human_count

    t = Table(title="Qwen3 models", title_justify="left")
    for col in (
        "model",
        "type",
        "layers",
        "hidden",
        "heads/kv",
        "head_dim",
        "ffn",
        "experts",
        "params",
        "active",
        "context",
    ):
        t.add_column(col, justify="left" if col in ("model", "type") else "right", no_wrap=True)
    for r in rows:
        experts = (
            f"{r['experts']}x{r['expert_intermediate_size']} top{r['experts_per_token']}"
            if r["experts"]
            else "-"
        )
        ctxs = f"{r['native_context'] // 1024}K" + (
            f"/{r['yarn_context'] // 1024}K" if r["yarn_context"] else ""
        )
        t.add_row(
            r["name"],
            "MoE" if r["experts"] else "dense" + (" tied" if r["tied_embeddings"] else ""),
            str(r["layers"]),
            str(r["hidden_size"]),
            f"{r['attention_heads']}/{r['kv_heads']}",
            str(r["head_dim"]),
            str(r["intermediate_size"]),
            experts,
            human_count(r["params_total"]),
            human_count(r["params_active"]),
            ctxs,
        )
    con = console()
    print_table(t)
    names = [r["name"] for r in rows]
    for key, title in (
        ("artifact_bytes", "Estimated artifact size"),
        ("quantise_peak_bytes", "Estimated peak memory to quantise"),
        ("gpu_peak_bytes", "Estimated peak GPU memory to quantise with --device cuda"),
        (
            "validate_peak_bytes",
            "Estimated peak memory to validate (reference a layer at a time, then the runtime)",
        ),
    ):
        s = Table(title=title, title_justify="left")
        s.add_column("format / type", no_wrap=True)
        for n in names:
            s.add_column(n.removeprefix("Qwen3-"), justify="right")
        cells: dict[tuple[str, str], dict[str, int]] = {}
        for r in est:
            cells.setdefault((r["format"], r["type"]), {})[r["model"]] = r[key]
        for (f, ty), by_model in cells.items():
            if not any(by_model.values()):
                continue  # e.g. GGUF Q8_0 and ONNX quantise on the CPU: no GPU memory
            s.add_row(f"{f} {ty}", *[short_bytes(by_model[n]) for n in names])
        print_table(s)
    con.print(
        "Sizes: G = 1e9 bytes, from tensor shapes and each type's bits per weight, including the tensors "
        "each format keeps at higher precision. GPU memory: what quantising on CUDA needs on the GPU "
        "(one decoder layer at a time with its calibration activations; the rest stays in host memory). "
        "Validation: the default "
        f"{DEFAULT_MAX_TOKENS:,} tokens in windows of {DEFAULT_CTX:,}; see docs/memory.md.",
        style="dim",
    )
