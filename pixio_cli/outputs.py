"""Where a command's outputs go: one file named by ``-o``, or ``<folder>/<key><tag>`` per input.

The extension of ``-o`` decides: one that a format of the command uses names a
single file in that format (one input only); no extension (or an existing
folder) names a folder; any other extension is a usage error, so ``-o d.npy``
never silently becomes a folder of PNGs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError
from .images import is_image
from .inputs import Item
from .writers import check_writable


@dataclass(frozen=True)
class Destination:
    """``path(item, tag)``: the file of one output. ``tag`` is the main extension or a suffix such
    as ``_vis.png``; for a single file the main output is the file and the others sit beside it."""

    target: Path
    single: bool
    main: str

    @property
    def folder(self) -> Path:
        """The folder that holds the outputs (and the run's ledger)."""
        return self.target.parent if self.single else self.target

    def path(self, item: Item, tag: str) -> Path:
        """Where ``item``'s output with suffix ``tag`` goes."""
        if self.single:
            return self.target if tag == self.main else self.target.with_name(self.target.stem + tag)
        return self.target / f"{item.key}{tag}"

    def check_unique(self, items: list[Item], tags: list[str], options: dict[str, str] | None = None) -> None:
        """Refuse, before any work, two outputs of this run that would land in one file, an output that is
        an input (a picture named after -o, such as ``_vis.png``, included), and pictures written beside the
        input images (the next run would read them as inputs). ``options`` names the option that asks for
        each tag, for the message."""
        owner: dict[Path, str] = {}
        pictures = [tag for tag in tags if is_image(Path(f"x{tag}"))] if not self.single else []
        inputs_at = {os.path.realpath(it.path): it.label for it in items if it.error is None}
        for it in items:
            if it.error is not None:
                continue
            for tag in tags:
                real = os.path.realpath(self.path(it, tag))
                if real in inputs_at:
                    what = (options or {}).get(tag, "-o")
                    raise UsageError(f"{what} would write {self.path(it, tag)}, which is the input "
                                     f"{inputs_at[real]}: name another -o")
            if pictures and it.frame is None and _same(Path(it.path).parent, self.path(it, pictures[0]).parent):
                raise UsageError(f"-o {self.target} would put pictures beside the input images ({it.label}), where "
                                 "the next run would read them as inputs: choose a folder apart from the inputs")
            for tag in tags:
                p = self.path(it, tag)
                if p in owner and owner[p] != it.label:
                    raise UsageError(f"{owner[p]} and {it.label} would both write {p}: rename one, "
                                     "or give them in separate runs")
                owner[p] = it.label


def output_folder(output: Path | None) -> Path | None:
    """The folder ``-o`` names, or None when it names one file (the rule :func:`destination` applies)."""
    return output if output is not None and (not output.suffix or output.is_dir()) else None


def destination(output: Path, items: list[Item], formats: dict[str, str], fmt: str | None,
                default: str) -> tuple[Destination, str]:
    """The destination named by ``-o`` and the format to write.

    ``formats`` maps file extensions to format names (``{".npy": "npy"}``); ``fmt``
    is ``--format`` when given. Returns the destination and the chosen format.
    """
    ext_of = {name: ext for ext, name in formats.items()}
    suffix = output.suffix.lower()
    if str(output) == "-":  # as for inputs, "-" is the standard stream, which holds no folder of files
        raise UsageError("-o -: standard output cannot hold these files; give a file or a folder (--json writes "
                         "one line per input on standard output)")
    if output_folder(output) is None:
        if suffix not in formats:
            known = ", ".join(f"{ext} ({name})" for ext, name in formats.items())
            raise UsageError(f"-o {output}: this command writes {known}; name a file with one of those "
                             "extensions, or a folder without an extension")
        chosen = formats[suffix]
        if fmt is not None and fmt != chosen:
            raise UsageError(f"-o {output} names a {chosen} file, but --format is {fmt}")
        n = len(items)
        if n != 1:
            raise UsageError(f"-o {output} names one file but there are {n} inputs: give a folder")
        if items[0].error is None and _same(items[0].path, output):
            raise UsageError(f"-o {output} is the input itself: name another file")
        check_writable(output.parent, f"-o {output}")
        return Destination(output, True, suffix), chosen
    chosen = fmt or default
    check_writable(output, f"-o {output}")
    return Destination(output, False, ext_of[chosen]), chosen


def _same(a: str | Path, b: str | Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def check_apart_from_inputs(items: list[Item], inputs: list[str], outputs: list[tuple[str, Path | None]],
                            skip: Path | None = None) -> None:
    """Refuse, before any work, an output that is one of the inputs, and a picture the inputs would take
    back as an input: one beside an input image, or anywhere inside an input folder, except in the run's
    own output folder ``skip`` (which walks leave out). ``outputs`` are (option, path) pairs, the path
    a file or a folder of pictures."""
    inputs_at = {os.path.realpath(it.path): it.path if it.frame is not None else it.label
                 for it in items if it.error is None}  # videos too: no output may replace one
    beside = {os.path.dirname(p) for p in inputs_at}
    walked = [os.path.realpath(spec) for spec in inputs if spec != "-" and Path(spec).is_dir()]
    own = os.path.realpath(skip) if skip is not None else None
    if own in walked:  # an input folder given as -o too: the walk of it does not leave it out
        own = None
    for option, path in outputs:
        if path is None:
            continue
        real = os.path.realpath(path)
        if real in inputs_at:
            raise UsageError(f"{option} {path} is one of the inputs ({inputs_at[real]}): name another file")
        folder = real if not Path(path).suffix or Path(path).is_dir() else os.path.dirname(real)
        picture = Path(path).is_dir() or not Path(path).suffix or is_image(path)
        if not picture or (own is not None and _within(folder, own)):
            continue
        inside = next((d for d in walked if _within(folder, d)), None)
        if inside is not None or folder in beside:
            where = f"inside the input folder {inside}" if inside else "beside the input images"
            raise UsageError(f"{option} {path} would put pictures {where}, where the next run would read them as "
                             "inputs: choose a folder apart from the inputs")


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)
