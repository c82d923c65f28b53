"""``pixio curate``: per-image statistics for self-curation, in the official per-shard layout."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import options as opt
from ..engine import Engine, dist_info
from ..writers import write_image


def curate(
    inputs: opt.Inputs,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder.")],
    model: Annotated[str, typer.Option(
        "--model", "-m", help="A pretrained MAE with its decoder: a `pixio pretrain` run folder, "
                              "its mae.safetensors, or the bundled pixio-tiny.")] = opt.DEFAULT,
    resolution: Annotated[Optional[int], typer.Option(
        help="Short side for the statistics; the MAE sees the central square (default: the model's size).")] = None,
    masks: Annotated[int, typer.Option(help="Fixed masks per image (K); the MAE loss is their mean.", min=1)] = 4,
    seed: Annotated[int, typer.Option(help="Mask k uses seed + k.")] = 0,
    chunk: Annotated[int, typer.Option(help="Loose images per unit of resumable work.", min=1)] = 1000,
    report: Annotated[Optional[Path], typer.Option(help="Write histograms and filter counts to this PNG.")] = None,
    min_entropy: Annotated[float, typer.Option(help="Entropy threshold shown in the report.")] = 4.5,
    min_size: Annotated[int, typer.Option(help="Size threshold shown in the report.")] = 320,
    device: opt.Device = "auto",
    precision: opt.Precision = None,
    batch_size: opt.BatchSize = 32,
    workers: opt.Workers = None,
    quiet: opt.Quiet = False,
) -> None:
    """Compute curation statistics: histogram entropy, size, normalised MAE loss and a content hash.

    Tar shards get <out>/<shard's folder>/<shard>.json (the official loader's
    layout); loose images get <out>/manifest.jsonl. Reruns skip finished work;
    under torchrun every rank takes its own shards and rank 0 normalises.
    """
    from pretrain.curation import Curator, Settings, find_units, iter_records, normalise
    from pretrain.curation_report import filter_table, format_table, report_image
    from pretrain.mae import load_mae

    # input
    units = find_units(inputs, chunk)
    rank, world, _ = dist_info()

    # engine and model
    engine = Engine(device, precision, batch_size, workers, progress=False if quiet else None)
    mae = engine.prepare(load_mae(model))
    side = resolution or mae.mae_cfg.encoder.img_size
    settings = Settings(model=model, model_config=mae.mae_cfg.to_dict(), resolution=side, masks=masks, seed=seed,
                        precision=str(engine.dtype).replace("torch.", ""))
    curator = Curator(mae, engine, settings, output)
    done, failed = curator.run(units[rank::world])

    # output: normalisation over everything, once every rank is done
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo")
        dist.barrier()
    if rank != 0:
        return
    summary = normalise(output, units, settings)
    typer.echo(f"curated {done} images now ({failed} unreadable), {summary['counts']['images']} in all; "
               f"mae_loss normalised between {summary['normalisation_bounds']['low']:.4f} and "
               f"{summary['normalisation_bounds']['high']:.4f}", err=True)
    if report is not None:
        records = list(iter_records(output))
        typer.echo(format_table(filter_table(records, min_entropy, min_size), len(records)), err=True)
        write_image(report, report_image(records, min_entropy, min_size))


def register(app: typer.Typer) -> None:
    app.command(help=curate.__doc__)(curate)
