"""Typer options shared by every command, so flags mean the same thing everywhere."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from .checkpoints import DEFAULT_MODEL

Inputs = Annotated[list[str], typer.Argument(
    help="Images, folders (recursive), globs, videos, or - to read paths from stdin.", show_default=False)]
Model = Annotated[str, typer.Option(
    "--model", "-m", help="Model id (pixio-vitb16 ... pixio-vit5b16, pixio-tiny) or a checkpoint path.")]
Size = Annotated[Optional[str], typer.Option(
    help="Encoder size (t16, s16, b16, l16, h16, 1b16, 5b16) for checkpoints that do not say.")]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
Precision = Annotated[Optional[str], typer.Option(
    help="fp32, bf16 or fp16 (default: bf16 on CUDA, fp32 on CPU).", show_default=False)]
BatchSize = Annotated[int, typer.Option("--batch-size", "-b", help="Images per batch (halved on out-of-memory).")]
Workers = Annotated[Optional[int], typer.Option(help="Decoding processes (default: up to 4).", show_default=False)]
Compile = Annotated[bool, typer.Option("--compile", help="torch.compile the model (pays off on long GPU runs).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
Resize = Annotated[str, typer.Option(
    help="Short side N, WIDTHxHEIGHT, or 'native'; always rounded to a multiple of 16.")]
Every = Annotated[int, typer.Option(help="For videos: use every N-th frame.", min=1)]
Json = Annotated[bool, typer.Option("--json", help="One JSON line per image on stdout.")]
Tile = Annotated[bool, typer.Option("--tile", help="Sliding windows of the head's crop size (no seams).")]
HeadResize = Annotated[Optional[str], typer.Option(
    "--resize", help="Inference size: short side N, WxH or native (default: the head's training scale).")]

DEFAULT = DEFAULT_MODEL
