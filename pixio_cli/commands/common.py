"""Small helpers shared by the command modules (kept free of torch imports)."""

from __future__ import annotations

import json
import os
import sys

import typer

from ..errors import UsageError


def parse_blocks(spec: str | None, depth: int) -> list[int]:
    """``"5,11,-1"`` -> [5, 11, depth-1]; ``None`` -> the last block."""
    if spec is None:
        return [depth - 1]
    try:
        ids = [int(s) for s in spec.replace(" ", "").split(",") if s]
    except ValueError:
        raise UsageError(f"--blocks {spec!r}: expected comma-separated integers such as 5,11,17,23") from None
    if not ids:
        raise UsageError("--blocks is empty: give block numbers such as 5,11 (or leave it out for the last block)")
    for b in ids:
        if not -depth <= b < depth:
            raise UsageError(f"--blocks: block {b} does not exist; this encoder has blocks 0..{depth - 1}")
    resolved = [b % depth for b in ids]
    if len(set(resolved)) != len(resolved):
        raise UsageError(f"--blocks {spec}: a block is named twice (blocks {resolved})")
    return resolved


def require_positive(**values: float | None) -> None:
    """Refuse a given value that is not a positive finite number; ``values`` are keyed by option name
    with ``_`` for ``-`` (``max_depth=0`` -> "--max-depth 0")."""
    import math

    for name, v in values.items():
        if v is not None and not (v > 0 and math.isfinite(v)):
            raise UsageError(f"--{name.replace('_', '-')} {v:g}: expected a positive number")


def single_process(command: str) -> None:
    """Refuse torchrun for a command that does its whole job in one process (every rank would redo it
    and write the same files)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UsageError(f"pixio {command} runs in one process; run it without torchrun (torchrun splits "
                         "extract, depth, segment, curate, pretrain, distill and train)")


def write_json_line(record: dict) -> None:
    """One JSON line on stdout, flushed, for scripts that read the results as they come."""
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def echo_failures(failures: list[tuple[str, str]]) -> None:
    """One ``failed: <path>: <reason>`` line on stderr per (path, reason)."""
    for label, reason in failures:
        typer.echo(f"failed: {reason}" if reason.startswith(label) else f"failed: {label}: {reason}", err=True)


def report_failures(summary) -> None:
    """One ``failed: <path>: <reason>`` line on stderr per input of a run that could not be used."""
    echo_failures(summary.failures)


def finish(summary, verb: str, what: str | None = None) -> None:
    """Report a run on stderr (``what``: what the outputs hold, said after the count); exit 1 when any input
    failed."""
    report_failures(summary)
    parts = [f"{verb} {summary.done}" + (f" ({what})" if what and summary.done else "")]
    if summary.skipped:
        parts.append(f"skipped {summary.skipped} already done")
    parts.append(f"failed {summary.failed}")
    if summary.int8_cosine is not None:
        parts.append(f"int8 within cosine {summary.int8_cosine:.5f} of fp32 on the first images")
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


class Stages:
    """One line in a terminal saying which stage of a run is going and how long it has taken; nothing under
    -q or when stderr is not a terminal (logs and pipes)."""

    def __init__(self, names: list[str], quiet: bool = False, command: str = "pixio") -> None:
        import sys

        from tqdm import tqdm

        self.names, self.command, self.at = names, command, -1
        self.peak_gib: dict[str, float] = {}  # the process's peak memory by the end of each stage
        self.bar = tqdm(total=len(names), file=sys.stderr, disable=True if quiet else None, dynamic_ncols=True,
                        bar_format="{desc} [{n_fmt}/{total_fmt}, {elapsed}]{postfix}")

    def next(self, detail: str = "") -> None:
        """The next stage begins."""
        if self.at >= 0:
            self._peak()
            self.bar.update(1)
        self.at += 1
        self.bar.set_description_str(f"{self.command}: {self.names[self.at]}", refresh=False)
        self.detail(detail)

    def detail(self, text: str) -> None:
        self.bar.set_postfix_str(text, refresh=True)

    def say(self, line: str) -> None:
        """A line on stderr that stays, above the stage line (also under -q, as warnings are)."""
        import sys

        self.bar.write(line, file=sys.stderr)

    def close(self) -> None:
        if self.at >= 0 and self.names[self.at] not in self.peak_gib:
            self._peak()
            self.bar.update(1)
        self.bar.close()

    def _peak(self) -> None:
        import resource
        import sys

        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform == "darwin" else 1)
        self.peak_gib[self.names[self.at]] = round(kib / 2 ** 20, 3)
