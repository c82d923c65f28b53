"""Typer options shared by every command, so flags mean the same thing everywhere.

Plain data only: importing this module must not import torch (see ``cli.py``).
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from .model_ids import DEFAULT_MODEL

Inputs = Annotated[list[str], typer.Argument(
    metavar="INPUT...", help="Images, folders (recursive), globs, videos, or - to read paths from stdin.",
    show_default=False)]
Model = Annotated[str, typer.Option(
    "--model", "-m", metavar="ID|PATH", help="Model id (pixio-vitb16 ... pixio-vit5b16, pixio-tiny) or a checkpoint path.", rich_help_panel='Model')]
Size = Annotated[Optional[str], typer.Option(
    metavar="SIZE", help="Encoder size (t16, s16, b16, l16, h16, 1b16, 5b16) for checkpoints that do not say.", rich_help_panel='Model')]
Device = Annotated[str, typer.Option(metavar="DEVICE", help="auto, cpu, cuda or cuda:N.", rich_help_panel='Performance')]
Precision = Annotated[Optional[str], typer.Option(
    metavar="fp32|bf16|fp16", help="fp32, bf16 or fp16 (GPU only). Default: bf16 where the hardware does it natively (CUDA; CPUs with "
         "AVX-512 BF16 or AMX), else fp32. fp32 gives exactly the official numbers.", show_default=False, rich_help_panel='Performance')]
PrecisionInt8 = Annotated[Optional[str], typer.Option(
    "--precision", metavar="fp32|bf16|fp16|int8", help="fp32, bf16, fp16 (GPU only) or int8 (CPU only: linear layers "
    "in int8, faster than fp32 on x86 CPUs, most with VNNI; without it the weights keep 7 bits and fewer models "
    "hold to the bound; docs/performance.md has the measured ratios); the first images are checked against fp32 and the job stops if a token is below cosine "
    "0.999). Default: bf16 where the hardware does it natively, else fp32, exactly the official numbers.",
    show_default=False, rich_help_panel='Performance')]
BatchSize = Annotated[int, typer.Option("--batch-size", "-b", metavar="N", help="Images per batch (halved on out-of-memory).",
                                        min=1, rich_help_panel='Performance')]
Workers = Annotated[Optional[int], typer.Option(
    metavar="N", help="Decoding processes (0: in the main process; default: up to 4).", show_default=False, min=0, rich_help_panel='Performance')]
Compile = Annotated[bool, typer.Option(
    "--compile", help="torch.compile the model, for long runs: seconds up front at the first batch, then "
                      "faster (docs/performance.md has the measured ratios).", rich_help_panel='Performance')]
CompileAuto = Annotated[Optional[bool], typer.Option(
    "--compile/--no-compile", help="torch.compile the training step. Default: on for runs of 2000 steps or more "
    "(the compile takes a minute or two and pays for itself long before), off for shorter ones, under --fsdp and "
    "where no C++ compiler is found.", show_default=False, rich_help_panel='Performance')]
CompileTraining = Annotated[Optional[bool], typer.Option(
    "--compile/--no-compile", help="torch.compile the training step (a minute or two up front, then faster "
    "steps).", rich_help_panel='Performance')]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.", rich_help_panel='Outputs')]

ADVANCED = "Advanced"  # a help panel shown as names only, unless --help-all


def _help_all(ctx: typer.Context, value: bool) -> None:
    if value:
        ctx.meta["pixio_help_all"] = True
        typer.echo(ctx.get_help())
        raise typer.Exit()


HelpAll = Annotated[bool, typer.Option(
    "--help-all", is_eager=True, callback=_help_all, help="This help with the advanced options explained too.")]
Resize = Annotated[str, typer.Option(
    metavar="N|WxH|native", help="Short side N, WIDTHxHEIGHT, or 'native'; always rounded to a multiple of 16.", rich_help_panel='Processing')]
Every = Annotated[int, typer.Option(metavar="N", help="For videos: use every N-th frame.", min=1, rich_help_panel='Inputs')]
Json = Annotated[bool, typer.Option("--json", help="One JSON line per image on stdout.", rich_help_panel='Outputs')]
Overwrite = Annotated[bool, typer.Option(
    "--overwrite", help="Redo everything, replacing outputs made with other settings (default: resume, and "
                        "refuse a folder made with other settings).", rich_help_panel='Outputs')]
Tile = Annotated[bool, typer.Option(
    "--tile/--no-tile", help="Sliding windows of the head's crop size, blended without seams (what `pixio "
                             "evaluate` measures); --no-tile: one whole-image pass (faster, other numbers).", rich_help_panel='Processing')]
HeadResize = Annotated[Optional[str], typer.Option(
    "--resize", help="Inference size: short side N, WxH or native (default: the head's training scale).",
    show_default=False, rich_help_panel='Processing')]

DEFAULT = DEFAULT_MODEL
