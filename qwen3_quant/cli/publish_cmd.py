from __future__ import annotations

from pathlib import Path

import click


class _Progress:
    """A rich bar for the local phases (sha256 checks, writing a folder) on a terminal, plain
    time-stamped lines elsewhere; plain lines for the upload, where huggingface_hub draws its own
    per-file bars."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._prog = None
        self._update = None
        self._last = -1.0

    def __call__(self, desc: str, done: float, total: float) -> None:
        from ..io import human_bytes
        from .console import err_console, progress_reporter

        if desc == "upload":
            self.close()
            if done > self._last and done > 0:
                err_console().print(f"committed {human_bytes(done)} of {human_bytes(total)}", style="dim")
            self._last = done
            return
        if self._prog is None:
            self._prog, self._update = progress_reporter(self.label)
            self._prog.__enter__()
        self._update(desc, done, total)

    def close(self) -> None:
        if self._prog is not None:
            self._prog.__exit__(None, None, None)
            self._prog = None


@click.command("publish")
@click.argument("artifact_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--to",
    "to",
    required=True,
    metavar="hf://ORG/NAME|FOLDER",
    help="A Hub repo (hf://ORG/NAME) or a local folder.",
)
@click.option(
    "--private", is_flag=True, help="Hub: create the repo private (an existing public repo is refused)."
)
@click.option(
    "--revision", metavar="BRANCH", help="Hub: upload to this branch (created from main when missing)."
)
@click.option(
    "--create-pr", is_flag=True, help="Hub: open a pull request instead of committing to the branch."
)
@click.option(
    "--dry-run", is_flag=True, help="Check everything and show the files, commits and card; upload nothing."
)
@click.option(
    "--force",
    is_flag=True,
    help="Publish variants whose validation failed or is missing; the card says so prominently.",
)
@click.option("--overwrite", is_flag=True, help="Folder target: replace an existing different publish.")
@click.option(
    "--hard-link",
    is_flag=True,
    help="Folder target: hard-link the files instead of copying them (no space taken, but the "
    "publish then changes whenever the artifact's files are changed in place).",
)
@click.option(
    "--variant", "variants", multiple=True, metavar="NAME", help="Publish only this variant (repeatable)."
)
@click.option(
    "--show-card/--no-show-card", default=None, help="Print the model card (default: with --dry-run)."
)
@click.option(
    "--json-out", type=click.Path(dir_okay=False, path_type=Path), help="Write the result as JSON here."
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Print the result as JSON on stdout (on failure too: {"ok": false, "error": ...}).',
)
def publish(
    artifact_dir: Path,
    to: str,
    private: bool,
    revision: str | None,
    create_pr: bool,
    dry_run: bool,
    force: bool,
    overwrite: bool,
    hard_link: bool,
    variants: tuple[str, ...],
    show_card: bool | None,
    json_out: Path | None,
    as_json: bool,
) -> None:
    """Publish ARTIFACT_DIR (an artifact folder written by `qwen3-quant quantize`) with a generated
    model card, eval.json and SHA256SUMS. Every file's sha256 is checked against the manifest and
    variants that failed validation are refused first. The Hub token comes from HF_TOKEN or
    `hf auth login`; rerun the same command to resume an interrupted upload."""
    from ..io import human_bytes
    from ..publish import publish as run
    from .console import check_json_out, console, json_errors, print_json, print_table, write_json

    progress = _Progress(artifact_dir.name)
    with json_errors(as_json):
        check_json_out(json_out)
        try:
            res = run(
                artifact_dir,
                to,
                private=private,
                revision=revision,
                create_pr=create_pr,
                dry_run=dry_run,
                force=force,
                overwrite=overwrite,
                hard_link=hard_link,
                variants=variants,
                progress=progress,
            )
        finally:
            progress.close()
    if json_out:
        write_json(json_out, {"ok": True, **res.to_dict(), "card": res.card})
    if as_json:
        print_json({"ok": True, **res.to_dict(), "card": res.card})
        return
    con = console()
    if dry_run:
        from rich.table import Table

        t = Table(
            title=f"{res.target}: {len(res.files)} files, {human_bytes(res.total_bytes)}",
            title_justify="left",
        )
        for col in ("File", "Variant", "Size", "SHA256"):
            t.add_column(col)
        for f in res.files:
            t.add_row(
                f.path,
                f.variant or ("generated" if f.generated else "shared"),
                human_bytes(f.size),
                f.sha256[:16],
            )
        print_table(t)
        for c in res.commits:
            con.print(
                f"commit {c.index}: {c.message} ({len(c.files)} files, {human_bytes(c.bytes)})", markup=False
            )
    if show_card or (show_card is None and dry_run):
        click.echo("\n" + res.card)
    if dry_run:
        con.print("[bold]dry run[/bold]: nothing was written or uploaded")
    elif res.unchanged:
        con.print(f"{res.target} already holds this publish; nothing to do", markup=False)
    else:
        where = f"{res.target}" + (f" ({res.revision})" if res.revision else "")
        n = f"{len(res.uploaded)} files" + (f" in {len(res.commits)} commits" if res.commits else "")
        skipped = f", {len(res.skipped)} already there" if res.skipped else ""
        con.print(f"published {artifact_dir.name} to {where}: {n}{skipped}", markup=False)
        if res.pr_url:
            con.print(f"pull request: {res.pr_url}", markup=False)
        elif res.url:
            con.print(res.url, markup=False)
