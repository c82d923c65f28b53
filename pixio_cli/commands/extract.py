"""``pixio extract``: encoder features for many images, resumable."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import options as opt
from ..errors import UsageError

FORMATS = {".npz": "npz", ".safetensors": "safetensors"}


class Format(str, Enum):
    npz = "npz"
    safetensors = "safetensors"


class Pool(str, Enum):
    none = "none"
    cls = "cls"
    mean = "mean"


def extract(
    inputs: opt.Inputs,
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="Output folder, or a .npz/.safetensors file for one input.")] = None,
    model: opt.Model = opt.DEFAULT,
    size: opt.Size = None,
    blocks: Annotated[Optional[str], typer.Option(
        help="Comma-separated 0-based blocks (negative counts from the end) (default: the last block).",
        show_default=False)] = None,
    raw: Annotated[bool, typer.Option("--raw", help="Tokens before the final LayerNorm.")] = False,
    format: Annotated[Optional[Format], typer.Option(
        "--format", "-f", help="File format (default: npz, or what the -o file's extension says).",
        show_default=False)] = None,
    pool: Annotated[Pool, typer.Option(
        help="none: all tokens; cls: mean of the 8 CLS tokens; mean: mean of the patch tokens.")] = Pool.none,
    shards: Annotated[Optional[int], typer.Option(
        help="Write shards of N images plus index.jsonl instead of one file per image.", min=1)] = None,
    pca: Annotated[Optional[str], typer.Option(
        "--pca", metavar="[FILE.png|DIR]",
        help="Save the first 3 principal components of the patch tokens as RGB: to FILE.png "
             "(one input), DIR, or beside the features when given without a value.")] = None,
    json_lines: opt.Json = False,
    resize: opt.Resize = "256",
    every: opt.Every = 1,
    overwrite: opt.Overwrite = False,
    device: opt.Device = "auto",
    precision: opt.PrecisionInt8 = None,
    batch_size: opt.BatchSize = 16,
    workers: opt.Workers = None,
    compile: opt.Compile = False,
    quiet: opt.Quiet = False,
) -> None:
    """Extract Pixio features: CLS and patch tokens of chosen blocks, one file per image.

    Reruns skip images whose output is complete and was made with the same model
    and options from an unchanged input, so an interrupted run resumes where it
    stopped; other options are refused unless --overwrite.
    """
    from ..model_ids import resolve

    resolve(model)  # a model that cannot be had fails now, before the slow imports

    from ..engine import Engine, dist_info
    from ..extraction import ExtractOutputs, TokenOptions, open_ledger, token_features
    from ..images import ResizePolicy
    from ..inputs import collect
    from ..int8 import BelowBound
    from ..locks import claim
    from ..outputs import check_apart_from_inputs, destination, output_folder
    from ..resume import model_identity
    from .common import finish, parse_blocks, write_json_line

    if output is None and pca is None:
        raise UsageError("nothing to write: give an output folder with -o (and/or --pca)")
    if shards is not None and (output is None or output.suffix.lower() in FORMATS):
        raise UsageError("--shards needs an output folder (-o DIR)")
    policy = ResizePolicy.parse(resize)

    # input
    items = collect(inputs, every=every, outputs=output_folder(output))  # not its own outputs
    dest, fmt = destination(output, items, formats=FORMATS, fmt=format.value if format else None, default="npz") \
        if output else (None, None)
    if dest is not None:
        dest.check_unique(items, [dest.main])
    pca_path, pca_place = _pca_target(pca, dest, items)
    check_apart_from_inputs(items, inputs, [("--pca", pca_place)], skip=output_folder(output))
    rank, world, _ = dist_info()

    # engine and model
    engine = Engine(device, precision, batch_size=batch_size, workers=workers, compile=compile,
                    progress=False if quiet else None, int8=True)
    encoder = engine.load_encoder(model, size)
    tokens = TokenOptions(parse_blocks(blocks, encoder.depth), raw=raw, pool=pool.value, pca=pca_path is not None)

    # output, and what decides the numbers kept beside it for a rerun
    if dest is not None:  # a second run into this output is refused (after every usage check: nothing made yet)
        claim(dest.target, folder=not dest.single, rank=rank)
    folder = dest.folder if dest is not None and not dest.single else (
        Path(pca) if pca and pca_path is not None and (not Path(pca).suffix or Path(pca).is_dir()) else None)
    settings = {"--model": model_identity(model), "--size": size, "--blocks": tokens.blocks, "--raw": raw,
                "--pool": pool.value, "--format": fmt, "--shards": shards, "--resize": policy.describe(),
                "--precision": engine.precision}
    ledger = open_ledger(folder, settings, overwrite=overwrite, shards=shards, rank=rank, world=world) \
        if folder is not None else None
    outputs = ExtractOutputs(dest=dest, fmt=fmt, shards=shards, pooled=pool != Pool.none, ledger=ledger,
                             pca_path=pca_path, blocks=tokens.blocks,
                             on_record=write_json_line if json_lines else None, rank=rank, world=world)
    try:
        summary = engine.run(items, policy, token_features(encoder, tokens), outputs.write, desc="extract",
                             skip=outputs.done, split_ranks=True)
    except BelowBound:
        if ledger is not None:
            ledger.withdraw()  # nothing was written: a rerun in fp32 may use the folder
        raise
    finally:
        outputs.close()
    if outputs.store is None:
        typer.echo("pixio: only the PCA pictures were asked for: no features are kept (give -o for them)", err=True)
    finish(summary, "extracted" if outputs.store is not None else "drew PCA pictures for")


def _pca_target(pca: str | None, dest, items):
    """A function item -> PCA image path (None when no PCA is wanted), and the file or folder they go to."""
    if pca is None:
        return None, None
    if pca == "":
        if dest is None:
            raise UsageError("--pca without a file name writes beside the features: give -o too")
        if dest.single:
            beside = dest.target.with_name(dest.target.stem + "_pca.png")
            return (lambda it: beside), beside
        return (lambda it: dest.folder / f"{it.key}_pca.png"), dest.folder
    from ..writers import check_writable

    target = Path(pca)
    if target.suffix and not target.is_dir():  # as -o: an extension names a file, and it must be .png
        if target.suffix.lower() != ".png":
            raise UsageError(f"--pca {pca}: the pictures are PNG; name a .png file or a folder without an extension")
        if len(items) != 1:
            raise UsageError(f"--pca {pca} names one file but there are {len(items)} inputs: give a folder")
        check_writable(target.parent, f"--pca {pca}")
        return (lambda it: target), target
    check_writable(target, f"--pca {pca}")
    return (lambda it: target / f"{it.key}.png"), target


def register(app: typer.Typer) -> None:
    app.command(help=extract.__doc__, short_help='Encoder features of images (CLS and patch tokens), resumable.')(extract)
