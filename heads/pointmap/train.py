"""Training a point-map model on multi-view RGB-D sequences (7-Scenes, generic RGB-D).

The loss follows MapAnything's factored supervision, simplified: ground truth
and prediction each divided by their own mean point norm (so the geometry is
learnt up to scale), then L1 on the unit rays, log-depth along the rays,
translations and quaternions (sign-free), confidence-weighted Euclidean
distance on the points (conf * d - alpha * log conf), a log-L1 loss that
teaches the scale head the ratio of the metric norm to the predicted one, and
a binary cross-entropy on the mask (valid ground-truth depth).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from pixio_cli.checkpoints import load_encoder
from pixio_cli.encoder import set_fused_attention
from pixio_cli.engine import Engine, adamw, autocast, dist_info, init_distributed, pick_device, pick_dtype, worker_init
from pixio_cli.errors import InputError, UsageError
from pixio_cli.images import ResizePolicy, read_image, resize_image

from heads import geometry as G
from heads.datasets import normalise
from heads.dense.model import is_known_id
from heads.pointmap.checkpoint import save_pointmap
from heads.pointmap.evaluate import evaluate_pointmap
from heads.pointmap.model import PointMapConfig, PointMapModel, PointMapOutput
from heads.sequences import Sequence, find_sequences, require_cameras, shared_frames
from heads.dense.train import StepCheckpoint, run_settings, run_steps, step_positions

log = logging.getLogger("pixio")


@dataclass
class PointMapTrainConfig:
    """What `pixio train pointmap` trains, on what, and how."""
    encoder: str
    data: str
    dataset: str
    output: str  # a folder: pointmap.safetensors, train.ckpt
    size: str | None = None
    dim: int = 192
    depth: int = 4
    num_heads: int = 3
    dpt_features: int = 64
    dpt_channels: tuple[int, ...] = (48, 96, 192, 384)
    ray_dims: tuple[int, ...] = (96, 128, 192)
    pose_dim: int | None = 256  # MapAnything: 4 x patch^2 = 1024
    ray_prob: float = 0.5  # share of steps that give the model the true camera rays (so --intrinsics works)
    views: int = 3
    max_gap: int = 6
    width: int = 256
    height: int = 192
    steps: int = 2000
    batch_size: int = 4
    lr: float = 2e-4
    weight_decay: float = 0.05
    warmup: float = 0.05
    finetune: bool = False
    encoder_lr_scale: float = 0.1
    depth_scale: float | None = None
    seed: int = 0
    workers: int = 2
    device: str = "auto"
    precision: str | None = None
    half: bool = False
    eval_views: int = 4
    eval_gap: int = 2  # the flat 7-Scenes folder keeps every 4th frame: 2 is 8 real frames
    eval_limit: int | None = 20
    save_every: int = 500


class ViewSets(Dataset):
    """Position -> one training sample: ``views`` frames of one sequence at most ``max_gap`` apart, in a
    random order (the first is the reference), resized to width x height, with their ground truth in the
    first view's camera frame. Deterministic in (seed, position)."""

    def __init__(self, sequences: list[Sequence], views: int, max_gap: int, hw: tuple[int, int], seed: int,
                 total: int) -> None:
        self.sequences = [s for s in sequences if len(s.frames) >= views]
        if not self.sequences:
            raise InputError(f"no training sequence has {views} frames")
        self.views, self.max_gap, self.hw, self.seed, self.total = views, max_gap, hw, seed, total
        sizes = np.array([len(s.frames) for s in self.sequences], np.float64)
        self.weights = sizes / sizes.sum()

    def __len__(self) -> int:
        return self.total

    def __getitem__(self, position: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, position])
        seq = self.sequences[rng.choice(len(self.sequences), p=self.weights)]
        n = len(seq.frames)
        gap = int(rng.integers(1, max(1, min(self.max_gap, (n - 1) // max(1, self.views - 1))) + 1))
        start = int(rng.integers(0, n - (self.views - 1) * gap))
        frames = [seq.frames[start + j * gap] for j in rng.permutation(self.views)]
        h, w = self.hw
        images, depths, Ks, poses = [], [], [], []
        for f in frames:
            img = read_image(f.image)
            images.append(normalise(resize_image(img, (h, w))))
            d = seq.read_depth(f)
            depths.append(cv2.resize(d, (w, h), interpolation=cv2.INTER_NEAREST))
            Ks.append(G.scale_intrinsics(f.K, img.shape[:2], (h, w)))
            poses.append(f.cam2world)
        rel = G.relative_to_first(np.stack(poses).astype(np.float64))
        cams = [G.depth_to_points(d.astype(np.float64), K) for d, K in zip(depths, Ks)]
        return {
            "images": torch.stack(images),
            "pts3d": torch.from_numpy(np.stack([G.transform(c, T) for c, T in zip(cams, rel)]).astype(np.float32)),
            "rays": torch.from_numpy(np.stack([G.ray_directions(K, h, w) for K in Ks]).astype(np.float32)),
            "depth_ray": torch.from_numpy(np.stack([np.linalg.norm(c, axis=-1) for c in cams]).astype(np.float32)),
            "valid": torch.from_numpy(np.stack(depths) > 0),
            "quats": torch.from_numpy(G.quaternion_from_rotation(rel[:, :3, :3]).astype(np.float32)),
            "trans": torch.from_numpy(rel[:, :3, 3].astype(np.float32)),
        }


def _mean_norm(pts: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean distance to the origin over valid pixels, per scene: (B, V, H, W, 3) -> (B,)."""
    n = (pts.norm(dim=-1) * valid).flatten(1).sum(1)
    return n / valid.flatten(1).sum(1).clamp(min=1)


def pointmap_loss(out: PointMapOutput, gt: dict[str, torch.Tensor], conf_alpha: float = 0.2
                  ) -> tuple[torch.Tensor, dict[str, float]]:
    """The training loss and its parts (see the module docstring)."""
    valid = gt["valid"]
    if not valid.any():
        zero = out.pts3d.sum() * 0
        return zero, {}
    s = out.scale.view(-1, 1, 1, 1, 1)
    pts = out.pts3d / s  # the prediction before the metric scale
    pr_norm, gt_norm = _mean_norm(pts, valid).clamp(min=1e-6), _mean_norm(gt["pts3d"], valid).clamp(min=1e-6)
    pr_n, gt_n = pts / pr_norm.view(-1, 1, 1, 1, 1), gt["pts3d"] / gt_norm.view(-1, 1, 1, 1, 1)
    dist_pts = (pr_n - gt_n).norm(dim=-1)
    conf = out.conf
    parts = {
        "points": ((conf * dist_pts - conf_alpha * conf.log())[valid]).mean(),
        "rays": (out.rays - gt["rays"]).abs().sum(-1).mean(),
        "depth": ((out.depth_ray / s[..., 0] / pr_norm.view(-1, 1, 1, 1)).clamp(min=1e-6).log()
                  - (gt["depth_ray"] / gt_norm.view(-1, 1, 1, 1)).clamp(min=1e-6).log()).abs()[valid].mean(),
        "translation": (out.cam2world[..., :3, 3] / out.scale.view(-1, 1, 1) / pr_norm.view(-1, 1, 1)
                        - gt["trans"] / gt_norm.view(-1, 1, 1)).abs().sum(-1).mean(),
        "rotation": torch.minimum((out.quats - gt["quats"]).abs().sum(-1),
                                  (out.quats + gt["quats"]).abs().sum(-1)).mean(),
        "scale": (out.scale.log() - (gt_norm / pr_norm.detach()).log()).abs().mean(),
        "mask": 0.1 * F.binary_cross_entropy_with_logits(out.mask_logits, valid.float()),
    }
    total = sum(parts.values())
    return total, {k: float(v.detach()) for k, v in parts.items()}


def _sequences(cfg: PointMapTrainConfig, rank: int) -> tuple[list, list, int]:
    """The train and val sequences of ``cfg.data``, checked, and how many frames they share."""
    train_seqs = find_sequences(cfg.dataset, cfg.data, "train", cfg.depth_scale)
    val_seqs = find_sequences(cfg.dataset, cfg.data, "val", cfg.depth_scale)
    if not train_seqs or not val_seqs:
        raise UsageError(f"--data {cfg.data}: the {cfg.dataset} layout needs train and val sequences "
                         f"(found {len(train_seqs)} and {len(val_seqs)})")
    shared = shared_frames(train_seqs, val_seqs)
    if shared and rank == 0:  # a folder without splits serves both: allowed, but never passed off as held out
        log.warning("the val split shares %d frames with train: its metrics are not held out (give train/ and "
                    "val/ folders)", shared)
    require_cameras(train_seqs + val_seqs)
    if cfg.width % 16 or cfg.height % 16:
        raise UsageError(f"--width {cfg.width} --height {cfg.height}: both must be multiples of 16")
    return train_seqs, val_seqs, shared


def _model(cfg: PointMapTrainConfig, device: torch.device, world: int):
    """The point-map model on ``device``, the module that trains it (DDP under torchrun) and its optimizer."""
    encoder = load_encoder(cfg.encoder, cfg.size)
    pcfg = PointMapConfig(dim=cfg.dim, depth=cfg.depth, num_heads=cfg.num_heads,
                          taps=[cfg.depth // 2 - 1, cfg.depth * 3 // 4 - 1], dpt_channels=list(cfg.dpt_channels),
                          dpt_features=cfg.dpt_features, ray_dims=list(cfg.ray_dims), pose_dim=cfg.pose_dim)
    model = PointMapModel(encoder, pcfg)
    model.init_weights()
    model.to(device)
    for p in model.encoder.parameters():
        p.requires_grad_(cfg.finetune)
    rest = [p for n, p in model.named_parameters() if not n.startswith("encoder.")]
    groups = [{"params": rest, "lr": cfg.lr}]
    if cfg.finetune:
        groups.append({"params": list(model.encoder.parameters()), "lr": cfg.lr * cfg.encoder_lr_scale})
    opt = adamw(groups, device, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    net: torch.nn.Module = model
    if world > 1:
        # the ray encoder sits out the steps without known cameras
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                        else None, find_unused_parameters=True)
    return model, net, opt


def train_pointmap(cfg: PointMapTrainConfig, resume: bool = False) -> dict:
    """Train; evaluate the untrained and the trained model on the held-out split; save one file.

    ``<output>/train.ckpt`` is written atomically every ``save_every`` steps (and
    on Ctrl-C in a single process); ``resume`` continues from it. Under torchrun
    the model is wrapped in DDP and rank 0 evaluates and saves.
    """
    rank, world, _ = dist_info()
    device = pick_device(cfg.device)
    dtype = pick_dtype(cfg.precision, device)
    init_distributed(device)
    torch.manual_seed(cfg.seed)
    train_seqs, val_seqs, shared = _sequences(cfg, rank)
    model, net, opt = _model(cfg, device, world)
    engine = Engine(cfg.device, cfg.precision, batch_size=cfg.eval_views, workers=0, progress=False)

    def attention_for(training: bool) -> None:  # the trained blocks' kernel; a frozen encoder always infers
        set_fused_attention(model, device, dtype, training=training)
        set_fused_attention(model.encoder, device, dtype, training=training and cfg.finetune)

    def score(m: PointMapModel) -> dict:
        m.eval()
        attention_for(training=False)
        with torch.no_grad():
            r = evaluate_pointmap(m, val_seqs, engine, views=cfg.eval_views, gap=cfg.eval_gap,
                                  policy=ResizePolicy(size=(cfg.width, cfg.height)), limit=cfg.eval_limit)
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}

    ckpt = StepCheckpoint(Path(cfg.output) / "train.ckpt", model, opt=opt, rank=rank, world=world,
                          settings=run_settings(cfg))
    start, last = ckpt.begin(resume)
    if not resume and rank == 0:
        ckpt.extra["untrained"] = score(model)

    data = ViewSets(train_seqs, cfg.views, max_gap=cfg.max_gap, hw=(cfg.height, cfg.width), seed=cfg.seed,
                    total=cfg.steps * cfg.batch_size * world)
    positions = step_positions(cfg.batch_size, cfg.steps, start=start, rank=rank, world=world)
    loader = DataLoader(data, batch_size=cfg.batch_size, sampler=positions, num_workers=cfg.workers, drop_last=True,
                        worker_init_fn=worker_init)
    # which steps see the true rays: drawn for the whole run up front, so every rank and a resumed run agree
    known_rays = iter((torch.rand(cfg.steps, generator=torch.Generator().manual_seed(cfg.seed)) < cfg.ray_prob)
                      [start:].tolist())
    parts: dict[str, float] = {}

    def loss_fn(batch: dict) -> torch.Tensor:
        nonlocal parts
        batch = {k: v.to(device) for k, v in batch.items()}
        known = next(known_rays)
        with autocast(device, dtype):
            out = net(batch["images"], batch["rays"] if known else None)
        loss, parts = pointmap_loss(out, batch)
        return loss

    net.train()
    model.encoder.train(cfg.finetune)
    attention_for(training=True)
    step, last, seconds = run_steps(loader, loss_fn, opt=opt, ckpt=ckpt, start=start, total=cfg.steps,
                                    warmup=int(cfg.warmup * cfg.steps), save_every=cfg.save_every,
                                    desc="train pointmap", clip=1.0, last=last)
    untrained = ckpt.extra.get("untrained")
    if rank != 0:
        return {}
    trained = score(model)
    provenance = {"data": str(cfg.data), "dataset": cfg.dataset, "train_frames": sum(len(s.frames) for s in train_seqs),
                  "steps": cfg.steps, "batch_size": cfg.batch_size * world, "views": cfg.views,
                  "size": [cfg.width, cfg.height], "final_loss": round(last, 4),
                  "final_parts": {k: round(v, 4) for k, v in parts.items()}, "train_seconds": round(seconds, 1),
                  "encoder": cfg.encoder, "finetune": cfg.finetune, "val_metrics": trained,
                  "untrained_val_metrics": untrained, "val_shared_with_train": shared}
    source = cfg.encoder if not cfg.finetune and is_known_id(cfg.encoder) else None
    save_pointmap(model.cpu(), Path(cfg.output) / "pointmap.safetensors", provenance,
                  torch.float16 if cfg.half else torch.float32, encoder_source=source,
                  infer_short=min(cfg.width, cfg.height))
    return provenance
