"""The ``pixio`` command line. Errors become one-line messages here, and only here."""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated, Optional

import click
import typer

from . import __version__
from .errors import PixioError

app = typer.Typer(
    name="pixio",
    help="Pixio vision encoder toolkit: pretrain, curate, extract, depth, segment, recon3d.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"pixio {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[Optional[bool], typer.Option(
        "--version", callback=_version, is_eager=True, help="Show the version and exit.")] = None,
) -> None:
    """Pixio vision encoder toolkit."""


def _register() -> None:
    # Each command module owns its registration; the order here is the order in --help.
    from .commands import curate, depth, evaluate, extract, pretrain, recon3d, segment, train

    for module in (pretrain, curate, extract, depth, segment, recon3d, train, evaluate):
        module.register(app)


_register()


# Options whose value may be left out (``--pca`` alone means "beside the outputs").
_OPTIONAL_VALUE = {"--pca"}


def _fill_optional_values(argv: list[str]) -> list[str]:
    """Give a bare optional-value option an empty value, so it never swallows the next flag."""
    out = []
    for i, tok in enumerate(argv):
        out.append(tok)
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if tok in _OPTIONAL_VALUE and (nxt is None or (nxt.startswith("-") and nxt != "-")):
            out.append("")
    return out


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app, turning known errors into one line and an exit code."""
    logging.basicConfig(level=logging.INFO, format="pixio: %(message)s", stream=sys.stderr)
    args = _fill_optional_values(list(sys.argv[1:] if argv is None else argv))
    try:
        code = app(args=args, prog_name="pixio", standalone_mode=False)
    except click.ClickException as e:  # bad flags: click's own one-line message
        e.show()
        sys.exit(e.exit_code)
    except PixioError as e:
        typer.echo(f"pixio: error: {e}", err=True)
        sys.exit(e.exit_code)
    except (KeyboardInterrupt, click.exceptions.Abort):
        code = 130
    except Exception as e:  # a bug, not bad input: still one line unless asked for more
        if os.environ.get("PIXIO_DEBUG"):
            raise
        typer.echo(f"pixio: internal error: {type(e).__name__}: {e} (set PIXIO_DEBUG=1 for the traceback)", err=True)
        sys.exit(3)
    if code == 130:  # Typer turns Ctrl-C inside a command into exit code 130
        typer.echo("pixio: interrupted; finished outputs are kept, rerun the same command to resume", err=True)
    sys.exit(code if isinstance(code, int) else 0)
