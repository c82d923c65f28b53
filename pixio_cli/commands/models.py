"""``pixio models``: the model ids pixio knows, what each is for, whether it is here; ``pixio models download
ID`` fetches one ahead of time (afterwards it works offline)."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(help="List the known model ids (pixio models), or fetch one ahead of time (pixio models download "
                       "ID).", invoke_without_command=True)


def _rows() -> list[dict]:
    """One row per known id: id, kind, what it is for, where it comes from, and the local file if any."""
    from .. import model_ids as m

    rows = []
    for name, file in m.BUNDLED.items():
        rows.append({"id": name, "kind": "encoder", "for": "extract, curate, training (bundled toy, t16)",
                     "source": "bundled", "path": m.WEIGHTS_DIR / file})
    for name, (repo, file, size) in m.HUB_MODELS.items():
        rows.append({"id": name, "kind": "encoder", "for": f"official Pixio {size}", "source": f"hub {repo}",
                     "path": m.cached(repo, file)})
    for name, file in m.BUNDLED_HEADS.items():
        task = "depth" if name.startswith("depth") else "segment"
        rows.append({"id": name, "kind": f"{task} head", "for": f"pixio {task} (bundled toy)", "source": "bundled",
                     "path": m.WEIGHTS_DIR / file})
    for name, file in m.BUNDLED_POINTMAPS.items():
        rows.append({"id": name, "kind": "point-map model", "for": "recon3d (bundled toy, one kitchen)",
                     "source": "bundled", "path": m.WEIGHTS_DIR / file})
    for name, (repo, files) in m.POINTMAP_MODELS.items():
        rows.append({"id": name, "kind": "point-map model", "for": "recon3d, depth (MapAnything on Pixio-H, metric)",
                     "source": f"hub {repo}", "path": m.cached(repo, files)})
    return rows


@app.callback()
def models(ctx: typer.Context,
           json_out: Annotated[bool, typer.Option("--json", help="One JSON object per model on stdout.")] = False
           ) -> None:
    """The known model ids: kind, what each is for, where it comes from, and whether it is here (bundled, or in
    the Hugging Face cache) with its size."""
    if ctx.invoked_subcommand is not None:
        return
    import json

    rows = _rows()
    for row in rows:
        here = row["path"] is not None and row["path"].exists()
        size = f"{row['path'].stat().st_size / 2**20:.1f} MB" if here else "-"
        if json_out:
            typer.echo(json.dumps({**row, "path": str(row["path"]) if here else None, "here": here}))
        else:
            row["here"], row["size"] = ("yes" if here else "no"), size
    if json_out:
        return
    cols = [("id", "id"), ("kind", "kind"), ("for", "for"), ("here", "here"), ("size", "size"), ("source", "source")]
    width = {k: max(len(title), *(len(str(r[k])) for r in rows)) for k, title in cols}
    typer.echo("  ".join(title.ljust(width[k]) for k, title in cols).rstrip())
    for r in rows:
        typer.echo("  ".join(str(r[k]).ljust(width[k]) for k, _ in cols).rstrip())


@app.command("download")
def download(model_id: Annotated[str, typer.Argument(metavar="ID", help="A hub model id (see pixio models).")]) -> None:
    """Fetch a public model into the Hugging Face cache now (with progress), so later runs work offline."""
    from .. import model_ids as m
    from ..errors import UsageError

    if model_id in m.BUNDLED or model_id in m.BUNDLED_HEADS or model_id in m.BUNDLED_POINTMAPS:
        typer.echo(f"{model_id} is bundled in the package: nothing to download", err=True)
        return
    if model_id not in m.HUB_MODELS and model_id not in m.POINTMAP_MODELS:
        known = ", ".join([*m.HUB_MODELS, *m.POINTMAP_MODELS])
        raise UsageError(f"no public model {model_id!r} (hub ids: {known})")
    path = m.resolve(model_id)
    typer.echo(f"{model_id}: {path} ({path.stat().st_size / 2**20:.1f} MB)", err=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="models", short_help='List the known model ids, or download one ahead of time.')
