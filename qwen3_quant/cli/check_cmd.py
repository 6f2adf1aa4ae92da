from __future__ import annotations

import click


@click.command("check")
@click.argument("model")
@click.option("--revision", help="Hub revision (branch, tag or commit).")
@click.option(
    "--json", "as_json", is_flag=True, help='Print JSON (on failure too: {"ok": false, "error": ...}).'
)
def check(model: str, revision: str | None, as_json: bool) -> None:
    """Check MODEL before heavy work: Qwen3 config, readable safetensors, tensor names and shapes
    consistent with config.json, tokenizer files parsed."""
    from ..catalog.architecture import human_count, param_counts
    from ..checkpoint import inspect_checkpoint
    from ..sources import resolve_model
    from .console import console, json_errors, print_json

    with json_errors(as_json):
        src = resolve_model(model, revision=revision)
        info = inspect_checkpoint(src.path)

    pc = param_counts(info.arch)
    summary = {
        "model": src.name,
        "path": str(info.path),
        "model_type": info.arch.model_type,
        "params_total": pc.total,
        "params_active": pc.active,
        "tensors": len(info.tensors),
        "shards": [s.name for s in info.shards],
        "dtypes": sorted(info.dtypes),
        "bytes": info.total_bytes,
        "expert_layout": info.expert_layout,
        "tokenizer": info.tokenizer_files,
        "ok": True,
    }
    if as_json:
        print_json(summary)
        return
    console().print(
        f"[green]ok[/green] {src.name}: {info.arch.model_type}, {human_count(pc.total)} parameters"
        f" ({human_count(pc.active)} active), {len(info.tensors)} tensors in {len(info.shards)} shard(s), "
        f"{'/'.join(sorted(info.dtypes))}, tokenizer {', '.join(info.tokenizer_files)}"
    )
