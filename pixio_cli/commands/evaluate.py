"""``pixio evaluate depth|segment|knn|pointmap``: the official metrics of a head checkpoint or an encoder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import options as opt
from ..errors import InputError, UsageError
from .common import single_process

# torch, heads/ and pretrain/ are imported inside each command, so that `pixio --help` starts without them

app = typer.Typer(help="Evaluate a head (depth, segment) or an encoder (knn), with the official metrics.",
                  no_args_is_help=True)


@app.callback()
def _one_process() -> None:
    single_process("evaluate")


def _run(task: str, model: str, data: Path, *, dataset: str, split: str, json_out: bool, device: str,
         precision: str | None, limit: int | None, workers: int | None, with_baseline: bool,
         depth_scale: float | None = None, classes: str | None = None) -> None:
    import json

    from heads.datasets import find_layout
    from heads.dense.evaluate import baseline, evaluate
    from heads.dense.predict import load_dense

    from ..engine import Engine

    engine = Engine(device, precision, batch_size=4, workers=workers, progress=None)
    net = load_dense(engine, model, task)
    layout = find_layout(dataset, data, split=split, depth_scale=depth_scale, classes_file=classes)
    result = evaluate(net, layout, engine, limit=limit)
    _echo_metrics(result)
    if with_baseline:
        try:
            train = find_layout(dataset, data, split="train", depth_scale=depth_scale, classes_file=classes)
        except InputError as e:  # a set with no training split: nothing to take a mean or a majority from
            typer.echo(f"pixio: no baseline: {e}", err=True)
        else:
            cfg = net.cfg
            result["baseline"] = trivial = baseline(train, layout, task=task, min_depth=cfg.min_depth,
                                                    max_depth=cfg.max_depth, n_classes=cfg.n_out, limit=limit)
            if task == "depth":
                what = f"the training-set mean depth, {trivial['mean_depth']:.3f} m, everywhere"
            else:
                names, i = cfg.classes or layout.classes or [], trivial["majority_class"]
                what = f"the majority class, {names[i] if i < len(names) else i}, everywhere"
            shared = {str(img) for img, _ in train.pairs} & {str(img) for img, _ in layout.pairs}
            trivial["shares_images_with_val"] = len(shared)  # no split files: train and val are one set
            leak = f"; {len(shared)} of them evaluated too, so it is not held out" if shared else ""
            typer.echo(f"baseline ({what}; from {trivial['train_targets']} training targets{leak}):", err=True)
            _echo_metrics({k: v for k, v in trivial.items()  # its per-class IoU: the majority's, zeros
                           if k not in ("mean_depth", "majority_class", "train_targets", "iou",
                                         "shares_images_with_val")})
    if json_out:
        typer.echo(json.dumps(_finite(result), allow_nan=False))


def _echo_metrics(result: dict) -> None:
    """One metric a line on stderr; IoU per class in a block, as the benchmark tables list them."""
    for k, v in result.items():
        if k != "iou":
            typer.echo(f"{k:>10s}  {v:.4f}" if isinstance(v, float) else f"{k:>10s}  {v}", err=True)
    if "iou" in result:
        width = max(map(len, result["iou"]))
        typer.echo("IoU per class:", err=True)
        for name, v in result["iou"].items():
            typer.echo(f"  {name:<{width}s}  {v:.4f}", err=True)


Data = Annotated[Path, typer.Option(help="Dataset root folder.")]
Split = Annotated[str, typer.Option(help="train, val or test (where the layout has a test split: camvid's "
                                         "test/ + testannot/; nyuv2's and 7scenes' held-out split is their test split).")]
JsonOut = Annotated[bool, typer.Option("--json", help="Metrics as JSON on stdout.")]
Limit = Annotated[Optional[int], typer.Option(help="At most this many images.", min=1)]
Baseline = Annotated[bool, typer.Option(
    "--baseline/--no-baseline", help="Score the trivial baseline beside the model (the training split's mean "
                                     "depth, or its majority class, everywhere): a figure it matches shows no skill.")]


@app.command("depth")
def evaluate_depth(
        data: Data,
        model: Annotated[str, typer.Option("--model", "-m", help="Depth head checkpoint, or a point-map model (one view per image).")] = "depth-tiny",
        dataset: Annotated[str, typer.Option(help="7scenes, nyuv2, kitti or generic-depth.")] = "7scenes",
        split: Split = "val",
        depth_scale: Annotated[Optional[float], typer.Option(help="Stored value per metre (generic-depth).")] = None,
        json_out: JsonOut = False, device: opt.Device = "auto", precision: opt.Precision = None,
        limit: Limit = None, workers: opt.Workers = None, with_baseline: Baseline = True) -> None:
    """d1, d2, d3, abs_rel, sq_rel, rmse, rmse_log, log10, silog (per image, averaged), beside the trivial
    baseline.

    Measures exactly what `pixio depth` writes by default."""
    _run("depth", model, data, dataset=dataset, split=split, json_out=json_out, device=device, precision=precision,
         limit=limit, workers=workers, with_baseline=with_baseline, depth_scale=depth_scale)


@app.command("segment")
def evaluate_segment(
        data: Data,
        model: Annotated[str, typer.Option("--model", "-m", help="Segmentation head checkpoint.")] = "segment-tiny",
        dataset: Annotated[str, typer.Option(help="camvid, ade20k, voc, loveda or generic-segment.")] = "camvid",
        split: Split = "val",
        classes: Annotated[Optional[str], typer.Option(help="Class-names file (generic-segment).")] = None,
        json_out: JsonOut = False, device: opt.Device = "auto", precision: opt.Precision = None,
        limit: Limit = None, workers: opt.Workers = None, with_baseline: Baseline = True) -> None:
    """mIoU and pixel accuracy from the confusion matrix over the whole split, beside the trivial baseline.

    Measures exactly what `pixio segment` writes by default."""
    _run("segment", model, data, dataset=dataset, split=split, json_out=json_out, device=device,
         precision=precision, limit=limit, workers=workers, with_baseline=with_baseline, classes=classes)


_DEFAULT_K = "10,20,100,200"


@app.command("knn")
def evaluate_knn(
        data: Annotated[Optional[Path], typer.Option(
            help="ImageNet-style folder: train/<class>/*, val/<class>/*.")] = None,
        model: Annotated[str, typer.Option("--model", "-m", help="Encoder: model id or checkpoint.")] = opt.DEFAULT,
        size: opt.Size = None,
        k: Annotated[str, typer.Option("--k", "-k", help="Neighbour counts, comma-separated (by default, those up to "
                                                         "the number of training images).")] = _DEFAULT_K,
        temperature: Annotated[float, typer.Option(help="Temperature of the vote weights exp(sim / T).", min=1e-6)] = 0.07,
        train_list: Annotated[Optional[Path], typer.Option(help="Instead of --data: 'path label' lines.")] = None,
        val_list: Annotated[Optional[Path], typer.Option(help="Instead of --data: 'path label' lines.")] = None,
        cache: Annotated[Optional[Path], typer.Option(
            help="Keep the features here: a rerun or another k reads them instead of running the encoder.")] = None,
        normed: Annotated[bool, typer.Option(
            "--normed", help="Pool the CLS tokens after the final LayerNorm (official: before).")] = False,
        resolution: Annotated[int, typer.Option(help="Short side, then the central square.", min=16)] = 256,
        json_out: JsonOut = False, overwrite: opt.Overwrite = False, device: opt.Device = "auto",
        precision: opt.Precision = None, batch_size: opt.BatchSize = 64, workers: opt.Workers = None,
        quiet: opt.Quiet = False) -> None:
    """k-NN classification accuracy of an encoder's frozen features (the official Pixio protocol).

    Mean of the last block's 8 CLS tokens, L2-normalised; a vote of the k nearest
    training images weighted by exp(similarity / 0.07); top-1 and top-5 in percent.
    """
    import json
    import tempfile

    from ..model_ids import resolve

    resolve(model)  # a model that cannot be had fails now, before the slow imports

    import torch

    from pretrain.knn import find_splits, knn_classify, pooled_features

    from ..engine import Engine
    from ..resume import model_identity
    try:
        ks = [int(v) for v in k.split(",") if v.strip()]
    except ValueError:
        ks = []
    if not ks or min(ks) < 1:
        raise UsageError(f"-k {k}: expected positive neighbour counts such as 10,20")
    if data is None and train_list is None:
        raise UsageError("give --data (train/ and val/ inside) or --train-list and --val-list")
    if (train_list is None) != (val_list is None):
        raise UsageError("--train-list and --val-list go together: give both")
    if data is not None and train_list is not None:
        raise UsageError("--data and --train-list/--val-list both name the images: give one")
    train, val, classes = find_splits(data or Path("."), train_list, val_list)
    if max(ks) > len(train.paths):
        if k != _DEFAULT_K:
            raise UsageError(f"-k {max(ks)}: there are only {len(train.paths)} training images to vote")
        ks = [kk for kk in ks if kk <= len(train.paths)] or [len(train.paths)]  # the default, cut to the data
        typer.echo(f"pixio: only {len(train.paths)} training images: k = {','.join(map(str, ks))}", err=True)
    engine = Engine(device, precision, batch_size=batch_size, workers=workers, progress=False if quiet else None)
    encoder = engine.load_encoder(model, size)
    settings = {"--model": model_identity(model), "--size": size, "--resolution": resolution, "--normed": normed,
                "--precision": engine.precision}
    with tempfile.TemporaryDirectory() as tmp:
        root = cache if cache is not None else Path(tmp)
        feats = {name: pooled_features(engine, encoder, paths=split.paths, folder=root / name, settings=settings,
                                       overwrite=overwrite, resolution=resolution, normed=normed, desc=f"knn {name}")
                 for name, split in (("train", train), ("val", val))}
    train_labels, val_labels = torch.tensor(train.labels), torch.tensor(val.labels)
    results = []
    for kk in ks:
        top1, top5 = knn_classify(feats["train"], train_labels, val=feats["val"], val_labels=val_labels, k=kk,
                                  temperature=temperature, n_classes=len(classes))
        results.append({"k": kk, "top1": round(top1, 3), "top5": round(top5, 3)})
        typer.echo(f"{kk:>4d}-NN  top-1 {top1:6.2f}  top-5 {top5:6.2f}", err=True)
    if json_out:
        typer.echo(json.dumps({"results": results, "train": len(train.paths), "val": len(val.paths),
                               "classes": len(classes)}))


@app.command("pointmap")
def evaluate_pointmap(
        data: Data,
        model: Annotated[str, typer.Option("--model", "-m", help="Point-map model: id or checkpoint.")],
        dataset: Annotated[str, typer.Option(help="7scenes or generic-rgbd.")] = "7scenes",
        split: Split = "val",
        views: Annotated[int, typer.Option(help="Views per set.", min=1)] = 4,
        gap: Annotated[int, typer.Option(help="Frames between the views of a set.", min=1)] = 5,
        resize: Annotated[Optional[str], typer.Option(
            help="Processing size (default: the model's, as recon3d).", show_default=False)] = None,
        depth_scale: Annotated[Optional[float], typer.Option(help="Stored value per metre (generic-rgbd).")] = None,
        json_out: JsonOut = False, device: opt.Device = "auto", precision: opt.Precision = None,
        limit: Annotated[Optional[int], typer.Option(help="At most this many view sets.", min=1)] = None) -> None:
    """MapAnything's benchmark metrics over sets of views of each sequence, averaged over the sets:
    points_rel/tau and depth_rel/tau (each side normalised by its mean point norm; tau = % within 1.03),
    pose AUC@5 and @30 over view pairs, ATE after Sim(3) alignment, scale_rel for metric models; beside
    them the pose figures of the trivial cameras (origin_*: every camera at the origin; constant_velocity_*:
    a straight line at constant speed), which a model's must beat to show skill."""
    import json

    from heads.pointmap.checkpoint import load_pointmap, prepare_pointmap
    from heads.pointmap.evaluate import evaluate_pointmap as run
    from heads.sequences import find_sequences

    from ..engine import Engine
    from ..images import ResizePolicy

    sequences = find_sequences(dataset, data, split, depth_scale)
    if not sequences:
        raise InputError(f"--data {data}: no {split} sequences in the {dataset} layout")  # as evaluate depth
    engine = Engine(device, precision, batch_size=views, workers=0, progress=False)
    net = prepare_pointmap(engine, load_pointmap(model))
    result = run(net, sequences, engine, views=views, gap=gap, policy=ResizePolicy.parse(resize) if resize else None,
                 limit=limit)
    width = max(map(len, result))
    for k, v in result.items():
        typer.echo(f"{k:>{width}s}  {v:.4f}" if isinstance(v, float) else f"{k:>{width}s}  {v}", err=True)
    if json_out:
        typer.echo(json.dumps(_finite(result), allow_nan=False))


@app.command("recon3d")
def evaluate_recon3d(
        scene: Annotated[Path, typer.Argument(
            help="A `pixio recon3d` output: its .ply, or the folder holding scene.ply, with its cameras beside it "
                 "(cameras.json, or sparse/0 whose points are scored too).", show_default=False)],
        data: Data,
        dataset: Annotated[str, typer.Option(help="7scenes or generic-rgbd (depth and poses per frame).")] = "7scenes",
        depth_scale: Annotated[Optional[float], typer.Option(help="Stored value per metre (generic-rgbd).")] = None,
        sensor_offset: Annotated[bool, typer.Option(
            "--sensor-offset/--no-sensor-offset", help="Solve for an offset between the camera of the truth's poses "
                                                       "and the scene's (7-Scenes' depth camera sits beside its "
                                                       "colour camera) when aligning the camera paths.")] = True,
        scale: Annotated[bool, typer.Option(
            "--scale/--no-scale", help="Fit the scene's scale with the camera path (a similarity); --no-scale: a "
                                       "rigid fit, for a scene in metres (known depth, a metric model), whose scale "
                                       "is then judged, not fitted.")] = True,
        voxel: Annotated[float, typer.Option(help="Both clouds thinned to one point per voxel of this side (m).",
                                             min=0.001)] = 0.01,
        refine: Annotated[bool, typer.Option(
            "--refine", help="Then refine the alignment on the scene's own geometry (Tanks and Temples' ICP with "
                             "scale), every row scored after it; how far it moved is said.")] = False,
        by_range: Annotated[Optional[str], typer.Option(
            "--by-range", help="Also precision and recall per range band: the band edges, in metres from the "
                               "nearest recorded camera, ascending (e.g. 1.5,2.5,3.5).", metavar="EDGES",
            show_default=False)] = None,
        json_out: JsonOut = False) -> None:
    """The geometry of a reconstructed scene against the recorded depth of its frames.

    The scene is aligned by its camera path (a similarity of the camera centres onto the recorded ones, or
    with --no-scale a rigid fit),
    then by the rigid transform that puts the recorded depth, placed on the scene's cameras, onto the truth;
    its own geometry is fitted only with --refine. Scores per cloud: accuracy and completeness (median distances),
    precision, recall and F-score within 2, 5 and 10 cm; beside the scene (and its mesh, and the COLMAP
    model's points when beside it) the ceiling the cameras allow (the recorded depth on them) and a
    trivial baseline (one constant depth on them). ATE beside every camera at the origin."""
    import json

    from heads.recon.evaluate import evaluate_scene
    from heads.sequences import find_sequences

    edges = _range_edges(by_range) if by_range is not None else None
    frames = {}
    for split in ("train", "val"):
        for seq in find_sequences(dataset, data, split, depth_scale):
            for f in seq.frames:
                frames.setdefault(str(f.image), (f, seq))
    if not frames:
        raise InputError(f"--data {data}: no frames with depth in the {dataset} layout")
    reader = {id(f): seq for f, seq in frames.values()}
    result = evaluate_scene(scene, [f for f, _ in frames.values()], read_depth=lambda f: reader[id(f)].read_depth(f),
                            voxel=voxel, offset=sensor_offset, scale=scale, refine=refine, ranges=edges)
    typer.echo(f"{result['frames']} frames; ATE {100 * result['ate']:.2f} cm (every camera at the origin: "
               f"{100 * result['ate_origin']:.2f} cm); path scale {result['scale']:.4f}", err=True)
    if result["refined"] is not None:
        r = result["refined"]
        typer.echo(f"refined on the scene's geometry: scale x{r['scale']:.4f}, turned {r['degrees']:.2f} deg, "
                   f"its points moved {100 * r['shift']:.1f} cm on average (the rows below are after it)", err=True)
    typer.echo(f"{'cloud':<28s} {'points':>8s} {'acc cm':>7s} {'comp cm':>8s} {'F@2':>6s} {'P@5':>6s} {'R@5':>6s} "
               f"{'F@5':>6s} {'F@10':>6s}", err=True)
    for name, row in result["rows"].items():
        typer.echo(f"{name:<28s} {row['points']:>8d} {100 * row['accuracy']:>7.1f} {100 * row['completeness']:>8.1f} "
                   f"{row['f@0.02']:>6.3f} {row['precision@0.05']:>6.3f} {row['recall@0.05']:>6.3f} "
                   f"{row['f@0.05']:>6.3f} {row['f@0.1']:>6.3f}", err=True)
    if edges:
        _echo_ranges(result["rows"])
    if json_out:
        typer.echo(json.dumps(_finite(result), allow_nan=False))


def _range_edges(spec: str) -> tuple[float, ...]:
    """The band edges of ``--by-range`` (metres, ascending, positive)."""
    try:
        edges = tuple(float(v) for v in spec.split(",") if v.strip())
    except ValueError:
        edges = ()
    if not edges or edges[0] <= 0 or any(b <= a for a, b in zip(edges, edges[1:])) or not all(
            e < float("inf") for e in edges):
        raise UsageError(f"--by-range {spec}: expected band edges in metres, positive and ascending, such as "
                         "1.5,2.5,3.5")
    return edges


def _echo_ranges(rows: dict) -> None:
    """Each cloud's precision and recall per range band, a line per band."""
    typer.echo(f"{'cloud':<28s} {'range m':>9s} {'points':>7s} {'truth':>6s} {'P@2':>6s} {'R@2':>6s} {'P@5':>6s} "
               f"{'R@5':>6s}", err=True)
    figure = lambda v: f"{v:>6.3f}" if v is not None else f"{'-':>6s}"  # noqa: E731
    for name, row in rows.items():
        for band in row.get("by_range", []):
            span = f"{band['from']:g}-{band['to']:g}" if band["to"] < float("inf") else f">{band['from']:g}"
            typer.echo(f"{name:<28s} {span:>9s} {band['points']:>7.0%} {band['truth']:>6.0%} "
                       f"{figure(band['precision@0.02'])} {figure(band['recall@0.02'])} "
                       f"{figure(band['precision@0.05'])} {figure(band['recall@0.05'])}", err=True)


def _finite(obj):
    """``obj`` with every number that is not finite as null: JSON has no Infinity or NaN."""
    import math

    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="evaluate", short_help='Official metrics of a head (depth, segment, pointmap) or an encoder (knn).')
