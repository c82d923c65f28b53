"""``pixio view``: a reconstruction in the browser (cloud, mesh, cameras with their frames)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import PixioError, UsageError


def view(
    scene: Annotated[Path, typer.Argument(help="The scene's .ply, or the folder `pixio recon3d` wrote it in.",
                                          show_default=False)],
    host: Annotated[str, typer.Option(help="Address to serve on (0.0.0.0: every network this machine is on).")
                    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (the next free one when taken).", min=1, max=65535)] = 8080,
    max_points: Annotated[int, typer.Option(
        "--max-points", help="At most this many points loaded (a random subset beyond).", min=1000)] = 4_000_000,
    browser: Annotated[Optional[bool], typer.Option(
        "--browser/--no-browser", help="Open the system browser (default: when there is a display).",
        show_default=False)] = None,
) -> None:
    """Look at a reconstruction in the browser: the coloured cloud, the mesh (`*_mesh.ply`) when there is
    one, and the cameras of cameras.json or sparse/0 with their frames; turn it with the mouse, click a
    camera to look through it. Serves on 127.0.0.1 until Ctrl-C."""
    show(scene, host=host, port=port, max_points=max_points, browser=browser)


def require_viewer() -> None:
    """A clear error when viser, the optional viewer library, is not installed."""
    import importlib.util

    if importlib.util.find_spec("viser") is None:
        raise PixioError("the viewer needs viser: pip install 'pixio[view]' (or pip install viser)")


def show(scene: Path, *, host: str = "127.0.0.1", port: int = 8080, max_points: int = 4_000_000,
         browser: bool | None = None) -> None:
    """Read the scene at ``scene`` and serve it until Ctrl-C or SIGTERM (also for ``recon3d --view``)."""
    if not host.strip():
        raise UsageError("--host is empty, which would serve on every network this machine is on: give an "
                         "address (127.0.0.1, the default: this machine only; 0.0.0.0: every network)")
    require_viewer()
    from heads.recon.view import has_display, read_scene, serve

    data = read_scene(scene, max_points)

    def say(line: str) -> None:
        typer.echo(f"pixio: {line}", err=True)

    for note in data.notes:
        say(note)
    try:
        serve(data, host, port=port, open_browser=has_display() if browser is None else browser, say=say)
    except KeyboardInterrupt:
        say("viewer stopped")
    except OSError as e:
        raise PixioError(f"cannot serve on {host}:{port}: {e.strerror or e}") from None


def register(app: typer.Typer) -> None:
    app.command(help=view.__doc__, short_help="Look at a reconstruction in the browser.")(view)
