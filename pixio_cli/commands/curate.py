"""``pixio curate``: per-image statistics for self-curation, in the official per-shard layout."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import options as opt
from ..errors import UsageError


def curate(
    inputs: opt.Inputs,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder.")],
    model: Annotated[str, typer.Option(
        "--model", "-m", help="A pretrained MAE with its decoder: a `pixio pretrain` run folder, "
                              "its mae.safetensors, or the bundled pixio-tiny.")] = opt.DEFAULT,
    resolution: Annotated[Optional[int], typer.Option(
        help="Short side for the statistics; the MAE sees the central square (default: the model's size).",
        min=16)] = None,
    masks: Annotated[int, typer.Option(help="Fixed masks per image (K); the MAE loss is their mean.", min=1)] = 4,
    seed: Annotated[int, typer.Option(help="Mask k uses seed + k.")] = 0,
    chunk: Annotated[int, typer.Option(help="Loose images per unit of resumable work.", min=1)] = 1000,
    report: Annotated[Optional[Path], typer.Option(help="Write histograms and filter counts to this PNG.")] = None,
    min_entropy: Annotated[float, typer.Option(help="Entropy threshold shown in the report.")] = 4.5,
    min_size: Annotated[int, typer.Option(help="Size threshold shown in the report.")] = 320,
    overwrite: opt.Overwrite = False,
    device: opt.Device = "auto",
    precision: opt.Precision = None,
    batch_size: opt.BatchSize = 32,
    workers: opt.Workers = None,
    quiet: opt.Quiet = False,
) -> None:
    """Compute curation statistics: histogram entropy, size, normalised MAE loss and a content hash.

    Tar shards get <out>/<shard's folder>/<shard>.json (the official loader's
    layout); loose images get <out>/manifest.jsonl. Reruns skip finished work
    made with the same settings from unchanged inputs; under torchrun every rank
    takes its own shards and rank 0 normalises. Unreadable images get a record
    with an error, are listed, and make the exit code 1.
    """
    import dataclasses
    import shutil

    from pretrain.curation import Curator, Settings, find_units, iter_records, normalise
    from pretrain.curation_report import filter_table, format_table, report_image
    from pretrain.mae import load_mae

    from ..engine import Engine, dist_info
    from ..resume import Ledger, file_identity, item_identity, model_identity
    from ..writers import check_writable, write_image
    from .common import echo_failures

    # input
    if report is not None and report.suffix.lower() != ".png":
        raise UsageError(f"--report {report}: the report is a .png")
    units = find_units(inputs, chunk)
    rank, world, _ = dist_info()
    check_writable(output, f"-o {output}")
    if report is not None:
        check_writable(report.parent, f"--report {report}")

    # engine and model
    engine = Engine(device, precision, batch_size=batch_size, workers=workers, progress=False if quiet else None)
    mae = engine.prepare(load_mae(model))
    side = resolution or mae.mae_cfg.encoder.img_size
    settings = Settings(model=model, model_config=mae.mae_cfg.to_dict(), resolution=side, masks=masks, seed=seed,
                        precision=str(engine.dtype).replace("torch.", ""))
    if overwrite and world == 1 and (output / ".raw").exists():
        shutil.rmtree(output / ".raw")
    ledger = Ledger(output, {**dataclasses.asdict(settings), "model": model_identity(model)}, overwrite=overwrite,
                    rank=rank, world=world)

    def identity(unit) -> list:
        return [file_identity(unit.shard)] if unit.shard else [item_identity(it) for it in unit.items]

    curator = Curator(mae, engine, settings, output)
    summary = curator.run(units[rank::world], is_done=lambda u: ledger.done(u.name, identity(u)),
                          on_unit=lambda u: ledger.record(u.name, identity(u)))

    # output: normalisation over everything, once every rank is done
    done, failed = summary.done, summary.failed
    if world > 1:
        import datetime

        import torch
        import torch.distributed as dist

        # gloo on the CPU, not engine.init_distributed's NCCL: the ranks only add up two counts after
        # waiting for the slowest one, which may take far longer than NCCL's 10-minute watchdog allows
        if not dist.is_initialized():
            dist.init_process_group("gloo", timeout=datetime.timedelta(hours=24))
        counts = torch.tensor([done, failed])
        dist.all_reduce(counts)
        done, failed = counts.tolist()
    if rank != 0:
        return
    # every unreadable image of the collection is named, also those recorded by an earlier run
    errors: list[tuple[str, str]] = []
    stats = normalise(output, units, settings, on_error=lambda key, error: errors.append((key, error)))
    echo_failures(errors)
    typer.echo(f"curated {done} images now ({failed} unreadable), {stats['counts']['images']} "
               f"in all; mae_loss normalised between {stats['normalisation_bounds']['low']:.4f} and "
               f"{stats['normalisation_bounds']['high']:.4f}", err=True)
    if report is not None:
        records = list(iter_records(output))
        typer.echo(format_table(filter_table(records, min_entropy, min_size), len(records)), err=True)
        write_image(report, report_image(records, min_entropy, min_size))
    if errors:
        typer.echo(f"{len(errors)} unreadable image(s) have records with an error (pretraining never uses them)",
                   err=True)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command(help=curate.__doc__, short_help='Curation statistics of images (entropy, size, MAE loss) and the keep/drop report.')(curate)
