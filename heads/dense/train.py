"""Training a dense head on a frozen (or fine-tuned) Pixio encoder, with the official recipe."""

from __future__ import annotations

import logging
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm import tqdm

from pixio_cli.checkpoints import load_encoder, load_torch_dict
from pixio_cli.encoder import set_fused_attention
from pixio_cli.engine import Engine, adamw, autocast, dist_info, init_distributed, pick_device, pick_dtype, worker_init
from pixio_cli.errors import CheckpointError, PixioError, UsageError
from pixio_cli.images import read_image
from pixio_cli.interrupts import interrupts_deferred
from pixio_cli.writers import atomic_path

from heads.datasets import IGNORE, TrainCrops, find_layout
from heads.dense.evaluate import baseline, evaluate
from heads.dense.model import DenseModel, HeadConfig, is_known_id, save_head

log = logging.getLogger("pixio")


@dataclass
class HeadTrainConfig:
    """What `pixio train depth|segment` trains, on what, and how."""
    task: str
    encoder: str
    data: str
    dataset: str
    output: str
    head: str = "dpt"
    size: str | None = None
    features: int = 256
    head_channels: tuple[int, ...] = (256, 512, 1024, 1024)
    depth_scale: float | None = None
    classes: str | None = None
    max_depth: float = 10.0
    min_depth: float = 1e-3
    crop: int = 256
    steps: int = 2000
    batch_size: int = 8
    lr: float | None = None  # default: 1e-4 DPT, 2e-4 linear
    weight_decay: float = 0.01
    warmup: float = 0.1
    finetune: bool = False
    encoder_lr_scale: float = 0.1
    seed: int = 0
    workers: int = 2
    device: str = "auto"
    precision: str | None = None
    half: bool = False
    eval_limit: int | None = None
    save_every: int = 500


def silog_loss(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor, lambd: float = 0.5) -> torch.Tensor:
    """Scale-invariant log loss over valid pixels (the official SiLog, lambda 0.5)."""
    d = torch.log(gt[valid]) - torch.log(pred[valid])
    return torch.sqrt((d ** 2).mean() - lambd * d.mean() ** 2)


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warmup, then poly decay with power 0.9."""
    if step < warmup:
        return (step + 1) / warmup
    return (1 - (step - warmup) / max(1, total - warmup)) ** 0.9


def step_positions(batch_size: int, steps: int, start: int, rank: int, world: int) -> list[int]:
    """This rank's sample positions from step ``start`` on: step s uses global positions
    [s*B*W, (s+1)*B*W), of which rank r takes its own B (so a resumed run sees the same samples)."""
    per_step = batch_size * world
    return [s * per_step + rank * batch_size + j for s in range(start, steps) for j in range(batch_size)]


# options that may change between a run and its --resume: where and how fast it runs, how it is scored and
# stored, not what it learns; and --steps, which extends a run (the lr schedule then stretches to the new
# end, as pretrain's does)
_RESUMABLE_CHANGES = ("output", "workers", "device", "save_every", "eval_limit", "eval_views", "eval_gap",
                      "half", "steps")


def run_settings(cfg) -> dict:
    """A trainer config's settings that a --resume must keep (as JSON gives them back)."""
    return json.loads(json.dumps({k: v for k, v in asdict(cfg).items() if k not in _RESUMABLE_CHANGES}))


class StepCheckpoint:
    """``path`` written atomically by rank 0 (model, optimizer, step, last loss, the run's ``settings``,
    ``extra``), so that a run resumes where it stopped; every rank waits for the write."""

    def __init__(self, path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, rank: int, world: int,
                 settings: dict | None = None) -> None:
        self.path, self.model, self.opt, self.rank, self.world = path, model, opt, rank, world
        self.settings = settings or {}
        self.extra: dict = {}

    def begin(self, resume: bool) -> tuple[int, float]:
        """(step, loss) to start from: the checkpoint's with ``resume``; else (0, nan), refusing to start
        over a checkpoint that a rerun of the interrupted command would otherwise overwrite."""
        if resume:
            return self.load()
        if self.path.exists():
            state = self._read(mmap=True)
            if not state.get("extra", {}).get("finished"):
                raise UsageError(f"{self.path} holds an unfinished run's checkpoint: add --resume to continue it "
                                 "(same options), or remove it to start again")
            raise UsageError(f"{self.path} holds a finished run (step {state['step']}): --resume with a larger --steps "
                             "trains it further; remove the checkpoint (and its output) to train anew, or choose "
                             "another -o")
        return 0, float("nan")

    def _read(self, mmap: bool = False) -> dict:
        return load_torch_dict(self.path, ("model", "optimizer", "step", "loss"), "a pixio training checkpoint", mmap)

    def load(self) -> tuple[int, float]:
        """(step, loss) of the checkpoint, model and optimizer restored, ``extra`` filled."""
        if not self.path.exists():
            raise UsageError(f"--resume: no {self.path} to continue from")
        state = self._read()
        before = state.get("extra", {}).get("settings")
        if before is not None and before != self.settings:
            keys = [k for k in sorted(set(before) | set(self.settings)) if before.get(k) != self.settings.get(k)]
            diff = "; ".join(f"{k}: {before.get(k)} before, {self.settings.get(k)} now" for k in keys)
            raise UsageError(f"--resume: {self.path} was made with other settings ({diff}); resume with the "
                             "options it was started with, or start afresh without --resume")
        try:
            self.model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"{self.path} was written by a run with other settings ({first}); resume "
                                  "with the options it was started with, or start afresh without --resume") from None
        self.extra = state.get("extra", {})
        if "rng" in self.extra:
            torch.set_rng_state(self.extra["rng"])
        return state["step"], state["loss"]

    def save(self, step: int, loss: float, rng: torch.Tensor | None = None) -> None:
        """``rng``: the RNG state as ``step`` began (default: the current one)."""
        if self.rank == 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            rng = torch.get_rng_state() if rng is None else rng
            state = {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(), "step": step,
                     "loss": loss, "extra": {**self.extra, "rng": rng, "settings": self.settings}}
            with atomic_path(self.path) as tmp:
                torch.save(state, tmp)
        if self.world > 1:
            dist.barrier()


def run_steps(loader, loss_fn, opt: torch.optim.Optimizer, ckpt: StepCheckpoint, start: int, total: int,
              warmup: int, save_every: int, desc: str, clip: float | None = None, last: float = float("nan")
              ) -> tuple[int, float, float]:
    """The optimisation loop every trainer shares: lr (warmup, poly decay) per step, ``loss_fn(batch)``,
    a finite-loss check, backward, optional clipping, a checkpoint every ``save_every`` steps, at the end
    and on Ctrl-C (single process). Returns (steps done, last loss, seconds)."""
    base = [g.get("initial_lr", g["lr"]) for g in opt.param_groups]
    for g, b in zip(opt.param_groups, base):
        g["initial_lr"] = b
    params = [p for g in opt.param_groups for p in g["params"]]
    bar = tqdm(total=total, initial=start, desc=desc, file=sys.stderr, dynamic_ncols=True,
               disable=ckpt.rank != 0 or None)
    ckpt.extra.pop("finished", None)
    t0 = time.perf_counter()
    step, rng = start, torch.get_rng_state()  # rng: as ``step`` began, what a Ctrl-C within it must save
    try:
        for batch in loader:
            for g, b in zip(opt.param_groups, base):
                g["lr"] = b * lr_factor(step, total, warmup)
            loss = loss_fn(batch)
            value = loss.item()
            if not math.isfinite(value):
                raise PixioError(f"the loss became {value} at step {step + 1}; "
                                 f"the last checkpoint ({ckpt.path}) is kept")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(params, clip)
            with interrupts_deferred():  # the update and the step count go together
                opt.step()
                step, last, rng = step + 1, value, torch.get_rng_state()
            bar.update(1)
            bar.set_postfix(loss=f"{last:.4f}")
            if step % save_every == 0 and step < total:
                ckpt.save(step, last)
    except KeyboardInterrupt:
        if ckpt.world == 1:
            with interrupts_deferred():  # a second Ctrl-C or SIGTERM must not cut the save short
                ckpt.save(step, last, rng)
        raise
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    ckpt.extra["finished"] = step >= total
    ckpt.save(step, last)
    return step, last, seconds


def train_head(cfg: HeadTrainConfig, resume: bool = False) -> dict:
    """Train, evaluate on the held-out split, compare with the trivial baseline, save one file.

    ``<output>.ckpt`` is written atomically every ``save_every`` steps (and on
    Ctrl-C in a single process); ``resume`` continues from it exactly. Under
    torchrun the model is wrapped in DDP (BatchNorm synchronised) and rank 0
    evaluates and saves.
    """
    rank, world, _ = dist_info()
    device = pick_device(cfg.device)
    dtype = pick_dtype(cfg.precision, device)
    init_distributed(device)
    torch.manual_seed(cfg.seed)
    train_layout = find_layout(cfg.dataset, cfg.data, split="train", depth_scale=cfg.depth_scale,
                               classes_file=cfg.classes)
    val_layout = find_layout(cfg.dataset, cfg.data, split="val", depth_scale=cfg.depth_scale, classes_file=cfg.classes)
    shared = len({p.resolve() for p, _ in train_layout.pairs} & {p.resolve() for p, _ in val_layout.pairs})
    if shared and rank == 0:  # a layout without splits serves both: allowed, but never passed off as held out
        log.warning("the val split shares %d images with train: its metrics are not held out (give %s split "
                    "files or folders)", shared, cfg.dataset)
    encoder = load_encoder(cfg.encoder, cfg.size)
    n_out = 1 if cfg.task == "depth" else len(train_layout.classes or [])
    hcfg = HeadConfig(task=cfg.task, kind=cfg.head, n_out=n_out, features=cfg.features,
                      head_channels=list(cfg.head_channels), max_depth=cfg.max_depth, min_depth=cfg.min_depth,
                      classes=train_layout.classes, palette=train_layout.palette, crop=cfg.crop,
                      encoder_source=cfg.encoder if is_known_id(cfg.encoder) else None,
                      intrinsics=train_layout.intrinsics,
                      infer_short=min(read_image(train_layout.pairs[0][0]).shape[:2]))
    model = DenseModel(encoder, hcfg).to(device)
    model.finetune = cfg.finetune
    for p in model.encoder.parameters():
        p.requires_grad_(cfg.finetune)
    set_fused_attention(model.encoder, device, dtype, training=cfg.finetune)
    lr = cfg.lr or (1e-4 if cfg.head == "dpt" else 2e-4)
    groups = [{"params": list(model.head.parameters()), "lr": lr}]
    if cfg.finetune:
        groups.append({"params": list(model.encoder.parameters()), "lr": lr * cfg.encoder_lr_scale})
    opt = adamw(groups, device, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
    net: torch.nn.Module = model
    if world > 1:
        if device.type == "cuda":  # SyncBatchNorm is CUDA-only; on CPU (gloo) DDP keeps rank 0's statistics
            model.head = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model.head)
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                        else None)

    ckpt = StepCheckpoint(Path(f"{cfg.output}.ckpt"), model, opt=opt, rank=rank, world=world,
                          settings=run_settings(cfg))
    start, last = ckpt.begin(resume)

    def loss_fn(batch) -> torch.Tensor:
        x, target = (t.to(device) for t in batch)
        with autocast(device, dtype):
            out = net(x)
        if cfg.task == "depth":
            valid = (target > cfg.min_depth) & (target < cfg.max_depth)
            return silog_loss(out.float(), target, valid) if valid.any() else out.sum() * 0
        return F.cross_entropy(out.float(), target, ignore_index=IGNORE)

    crops = TrainCrops(train_layout, cfg.crop, cfg.seed, total=cfg.steps * cfg.batch_size * world)
    loader = DataLoader(crops, batch_size=cfg.batch_size,
                        sampler=step_positions(cfg.batch_size, cfg.steps, start=start, rank=rank, world=world),
                        num_workers=cfg.workers, drop_last=True, worker_init_fn=worker_init)
    net.train()
    model.encoder.train(cfg.finetune)  # a frozen encoder stays in eval mode
    step, last, seconds = run_steps(loader, loss_fn, opt=opt, ckpt=ckpt, start=start, total=cfg.steps,
                                    warmup=int(cfg.warmup * cfg.steps), save_every=cfg.save_every,
                                    desc=f"train {cfg.task}", last=last)
    if rank != 0:
        return {}

    engine = Engine(cfg.device, cfg.precision, batch_size=4, workers=cfg.workers, progress=False)
    metrics = evaluate(model, val_layout, engine, limit=cfg.eval_limit)
    trivial = baseline(train_layout, val_layout, task=cfg.task, min_depth=cfg.min_depth, max_depth=cfg.max_depth,
                       n_classes=n_out, limit=cfg.eval_limit)
    provenance = {"data": str(cfg.data), "dataset": cfg.dataset, "train_pairs": len(train_layout.pairs),
                  "val_pairs": len(val_layout.pairs), "steps": cfg.steps, "batch_size": cfg.batch_size * world,
                  "final_loss": last, "train_seconds": round(seconds, 1), "encoder": cfg.encoder,
                  "val_metrics": _brief(metrics), "baseline": _brief(trivial), "val_shared_with_train": shared}
    if world > 1:
        model.head = _plain_batchnorm(model.head)
    save_head(model.cpu(), cfg.output, provenance, torch.float16 if cfg.half else torch.float32,
              embed_encoder=hcfg.encoder_source is None)
    return provenance


def _plain_batchnorm(module: torch.nn.Module) -> torch.nn.Module:
    """SyncBatchNorm back to BatchNorm2d (same state), so the saved head runs anywhere."""
    for name, child in module.named_children():
        if isinstance(child, torch.nn.SyncBatchNorm):
            bn = torch.nn.BatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                      child.track_running_stats)
            bn.load_state_dict(child.state_dict())
            setattr(module, name, bn)
        else:
            _plain_batchnorm(child)
    return module


def _brief(m: dict) -> dict:
    return json.loads(json.dumps({k: v for k, v in m.items() if k != "iou"}))
