"""The ``pixio`` command line. Errors become one-line messages here, and only here.

Importing this module and building the app imports no torch, timm, OpenCV,
Open3D or huggingface_hub: each command imports what it needs when it runs, so
``pixio --help`` and every usage error answer at once (a test keeps it so).
"""

from __future__ import annotations

import math

import logging
import os
import sys
from typing import Annotated, Optional

import typer

from . import __version__
from .errors import PixioError
from .interrupts import sigterm_as_interrupt

app = typer.Typer(
    name="pixio",
    help="Pixio vision encoder toolkit: pretrain, distill, curate, extract, depth, segment, recon3d, train, evaluate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: flags read as flags, and no rich import on every start
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    add_completion=True,  # pixio --install-completion (bash, zsh, fish, PowerShell)
)

# The exception classes of the click that typer uses (its own vendored copy in recent versions).
_ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
_ClickUsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
_Abort = typer.Abort


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


_METAVARS = {"str": "TEXT", "path": "PATH", "int": "N", "int range": "N", "float": "X", "float range": "X"}


def _plain_metavars() -> None:
    """Help that names values as people write them (``PATH``, ``N``, ``a|b``) instead of typer's own
    ``<path>``, ``<int range>``, ``<a|b>``, and a required argument as ``INPUT...`` rather than in braces.
    Options with a metavar of their own keep it. (The click typer vendors: pinned below 0.29 in pyproject.)"""
    from typer import core

    base = core.TyperOption.__mro__[1]  # the vendored click Option

    def option_metavar(self, ctx, *args, **kwargs):
        var = base.make_metavar(self, ctx, *args, **kwargs)
        bare = var.removesuffix("...")
        if bare.startswith("<") and bare.endswith(">"):
            inner = bare[1:-1]
            var = _METAVARS.get(inner, inner) + ("..." if var.endswith("...") else "")
        return var

    def argument_metavar(self, ctx, *, usage: bool = False):
        var = self.metavar or (self.name or "").upper()
        return var if self.required or not usage else f"[{var}]"

    core.TyperOption.make_metavar = option_metavar
    core.TyperArgument.make_metavar = argument_metavar


PANELS = ["Options", "Inputs", "Model", "Cameras", "Depth", "Fusion and mesh", "Processing", "Outputs", "Performance",
          "Help", "Advanced"]  # help panels in this order wherever a command has them


def _panelled_help() -> None:
    """Options grouped under the headings their commands give them (typer's ``rich_help_panel``, which its
    plain help ignores), in the order they first appear; the Advanced panel lists its options by name only,
    unless ``--help-all`` asked for them in full."""
    from typer import core

    from .options import ADVANCED

    plain = core.TyperCommand.format_options

    def record(option, ctx) -> tuple[str, str]:
        """An option's help line, a flag pair shortened (``--[no-]fusion ... [default: on]``), number ranges
        left to the error a value outside them gets."""
        import re

        name, text = option.get_help_record(ctx)
        text = re.sub(r"\s*\[(?:[-0-9.e]+<=)?x(?:[<>]=?[-0-9.e]+)?\]", "", text)
        text = re.sub(r"; (?:[-0-9.e]+<=)?x(?:[<>]=?[-0-9.e]+)?\]", "]", text)
        if option.is_flag and option.secondary_opts and len(option.opts) == 1:
            flag = option.opts[0].removeprefix("--")
            if option.secondary_opts == [f"--no-{flag}"]:
                name = f"--[no-]{flag}"
                text = text.replace(f"[default: {flag}]", "[default: on]").replace(
                    f"[default: no-{flag}]", "[default: off]")
        return name, text

    def format_options(self, ctx, formatter):
        params = [p for p in self.get_params(ctx) if p.get_help_record(ctx) is not None]
        if not any(getattr(p, "rich_help_panel", None) for p in params):
            return plain(self, ctx, formatter)
        args = [p.get_help_record(ctx) for p in params if p.param_type_name == "argument"]
        if args:
            with formatter.section("Arguments"):
                formatter.write_dl(args)
        panels: dict[str, list] = {}
        for p in params:
            if p.param_type_name == "option":
                own = "Help" if p.name in ("help", "help_all") else "Options"  # the command's own options
                panels.setdefault(getattr(p, "rich_help_panel", None) or own, []).append(p)
        # the usual order; a panel it does not name comes before Help (sorted() keeps first-appearance order)
        for name in sorted(panels, key=lambda n: PANELS.index(n) if n in PANELS else PANELS.index("Help") - 0.5):
            options = panels[name]
            if name == ADVANCED and not ctx.meta.get("pixio_help_all"):
                with formatter.section(f"{name} (--help-all explains them)"):
                    lines, width = [""], (formatter.width or 80) - formatter.current_indent
                    for o in options:  # broken between names, never inside one
                        word = o.opts[0] + ("," if o is not options[-1] else "")
                        lines[-1:] = ([lines[-1] + " " + word] if len(lines[-1]) + len(word) < width
                                      else [lines[-1], word])
                    formatter.write("".join(" " * formatter.current_indent + line.strip() + "\n"
                                            for line in lines if line))
                continue
            with formatter.section(name):
                formatter.write_dl([record(o, ctx) for o in options])

    core.TyperCommand.format_options = format_options


def _register() -> None:
    # Each command module owns its registration; the order here is the order in --help.
    from .commands import curate, depth, distill, evaluate, extract, models, pretrain, recon3d, segment, train, view

    for module in (pretrain, distill, curate, extract, depth, segment, recon3d, view, train, evaluate, models):
        module.register(app)


_plain_metavars()
_panelled_help()
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


def _non_finite_value(argv: list[str]) -> str | None:
    """``--option nan`` (or inf) for a number option: click's float ranges let NaN through every bound, and
    no option of pixio means anything by it; the message, or None. Paths or names that read "nan" are not
    numbers and pass."""
    def non_finite(value: str) -> bool:
        try:
            return not math.isfinite(float(value))  # "nan", "inf", and "1e400", which parses to inf
        except ValueError:
            return False

    if not any(non_finite(tok.partition("=")[2] if tok.startswith("--") else tok) for tok in argv):
        return None  # the usual case: no command is resolved
    floats = _float_options(argv)
    for i, tok in enumerate(argv):
        if tok.startswith("--") and "=" in tok:
            name, value = tok.split("=", 1)
        elif i:
            name, value = argv[i - 1], tok
        else:
            continue
        if name in floats and non_finite(value):
            return f"pixio: error: {name} {value}: expected a finite number (see 'pixio --help')"
    return None


def _float_options(argv: list[str]) -> set[str]:
    """The names of the number (float) options of the (sub)command ``argv`` runs."""
    import typer.main

    command = typer.main.get_command(app)
    for tok in argv:  # the command path: pixio [group] command
        sub = getattr(command, "commands", {}).get(tok) if not tok.startswith("-") else None
        if sub is None:
            if not tok.startswith("-"):
                break
            continue
        command = sub
    names = set()
    for p in getattr(command, "params", []):
        if getattr(p.type, "name", "") in ("float", "float range"):
            names.update(p.opts)
    return names


def _usage_line(e: Exception) -> str:
    """Click's message for a bad command line, on one line, with the command it concerns."""
    ctx = getattr(e, "ctx", None)
    where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    message = " ".join(e.format_message().split()) if hasattr(e, "format_message") else str(e)
    return f"pixio: error: {message}{where}"


def _os_error_line(e: OSError) -> str:
    """``<path>: <reason>``, naming the output rather than the hidden temporary file it was written as."""
    import re
    from pathlib import Path

    reason = e.strerror or str(e)
    if not e.filename:
        return reason
    path = Path(os.fsdecode(e.filename))
    temp = re.fullmatch(r"\.(.+)\.[^.]+\.tmp(\.[^.]+)?", path.name)  # writers.atomic_path's names
    return f"{path.with_name(temp.group(1)) if temp else path}: {reason}"


def _how_to_continue(args: list[str]) -> str:
    """The command that continues an interrupted run: the trainers resume with --resume, the rest by
    running again."""
    def value(*names: str) -> str | None:
        for i, a in enumerate(args):
            name, eq, rest = a.partition("=")
            if name in names:
                return rest if eq else (args[i + 1] if i + 1 < len(args) else None)
        return None

    command = next((a for a in args if not a.startswith("-")), "")
    if command in ("pretrain", "distill"):
        run = value("--resume") or value("-o", "--output")
        if run is None or not os.path.exists(os.path.join(run, "checkpoint.pt")):
            return "no checkpoint was saved yet: start the run again"
        return f"continue with `pixio {command} --resume {run}`"
    if command == "train" and "--resume" not in args:
        return "continue with the same command plus --resume"
    if command == "recon3d":  # one scene: nothing is finished before the end, but the model's chunks can be kept
        if value("--save-predictions"):
            return "a rerun of the same command reuses the model's chunks it finished and does the rest again"
        return ("nothing was written; a rerun starts again (with --save-predictions a rerun reuses the model's "
                "finished chunks)")
    return "finished outputs are kept, rerun the same command to resume"


def _run(args: list[str]):
    """The app on ``args``; the outputs it claimed (:mod:`pixio_cli.locks`) let go of however it ends."""
    from .locks import release_all

    try:
        return app(args=args, prog_name="pixio", standalone_mode=False)
    finally:
        release_all()


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app, turning known errors into one line and an exit code.

    Exit codes: 0 done, 1 some inputs failed or the run failed (a full disk), 2 a usage or set-up error, 3 a bug,
    130 interrupted.
    """
    logging.basicConfig(level=logging.INFO, format="pixio: %(message)s", stream=sys.stderr)
    args = _fill_optional_values(list(sys.argv[1:] if argv is None else argv))
    bad = _non_finite_value(args)
    if bad:
        typer.echo(bad, err=True)
        sys.exit(2)
    sigterm_as_interrupt()  # a scheduler's SIGTERM stops a run as Ctrl-C does
    try:
        code = _run(args)
    except _ClickException as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # bare `pixio` or `pixio train`: the help was shown
            ctx = getattr(e, "ctx", None)
            if ctx is not None:
                typer.echo(ctx.get_help(), err=True)
            sys.exit(2)
        if isinstance(e, _ClickUsageError):  # BadParameter, NoSuchOption, MissingParameter, ...
            typer.echo(_usage_line(e), err=True)
            sys.exit(2)
        e.show()
        sys.exit(e.exit_code)
    except PixioError as e:
        typer.echo(f"pixio: error: {e}", err=True)
        sys.exit(e.exit_code)
    except (KeyboardInterrupt, _Abort):
        code = 130
    except OSError as e:  # the machine said no mid-run (a full disk): a failed run, not a bug nor a usage error
        if os.environ.get("PIXIO_DEBUG"):
            raise
        typer.echo(f"pixio: error: {_os_error_line(e)}", err=True)
        sys.exit(1)
    except Exception as e:  # a bug, not bad input: still one line unless asked for more
        if os.environ.get("PIXIO_DEBUG"):
            raise
        typer.echo(f"pixio: internal error: {type(e).__name__}: {e} (set PIXIO_DEBUG=1 for the traceback)", err=True)
        sys.exit(3)
    if code == 130:  # Typer turns Ctrl-C inside a command into exit code 130
        typer.echo(f"pixio: interrupted; {_how_to_continue(args)}", err=True)
    sys.exit(code if isinstance(code, int) else 0)
