"""Small helpers shared by the command modules."""

from __future__ import annotations

import typer

from ..engine import Summary
from ..errors import UsageError


def parse_blocks(spec: str | None, depth: int) -> list[int]:
    """``"5,11,-1"`` -> [5, 11, depth-1]; ``None`` -> the last block."""
    if not spec:
        return [depth - 1]
    try:
        ids = [int(s) for s in spec.replace(" ", "").split(",") if s]
    except ValueError:
        raise UsageError(f"--blocks {spec!r}: expected comma-separated integers such as 5,11,17,23") from None
    for b in ids:
        if not -depth <= b < depth:
            raise UsageError(f"--blocks: block {b} does not exist; this encoder has blocks 0..{depth - 1}")
    return [b % depth for b in ids]


def finish(summary: Summary, verb: str) -> None:
    """Report a run on stderr; exit 1 when any input failed."""
    for label, reason in summary.failures:
        typer.echo(f"failed: {reason}" if reason.startswith(label) else f"failed: {label}: {reason}", err=True)
    parts = [f"{verb} {summary.done}"]
    if summary.skipped:
        parts.append(f"skipped {summary.skipped} already done")
    parts.append(f"failed {summary.failed}")
    typer.echo(", ".join(parts), err=True)
    if summary.failed:
        raise typer.Exit(1)


def not_built(name: str, what: str):
    """A ``register`` function for a command that is planned but not built yet (exit code 2)."""
    from ..errors import NotBuiltError

    def command() -> None:
        raise NotBuiltError(f"'pixio {name}' ({what}) is not built yet in this version")

    def register(app: typer.Typer) -> None:
        app.command(name, help=f"(not built yet: {what})", context_settings={
            "allow_extra_args": True, "ignore_unknown_options": True})(command)

    return register
