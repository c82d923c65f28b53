"""The pretraining loop: one process or many under torchrun (DDP, or FSDP2 with ``fsdp``).

Checkpoints hold everything a run needs to continue exactly: weights,
optimizer, step, every rank's RNG state and every DataLoader worker's position
in its data stream. They are written atomically, so a crash or preemption at
any moment leaves the last good checkpoint readable.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm import tqdm

from pixio_cli.checkpoints import load_torch_dict, save_safetensors
from pixio_cli.encoder import set_fused_attention
from pixio_cli.engine import adamw, autocast, dist_info, init_distributed, pick_device, pick_dtype, worker_init
from pixio_cli.errors import InputError, PixioError, UsageError
from pixio_cli.images import IMAGENET_MEAN, IMAGENET_STD
from pixio_cli.interrupts import interrupts_deferred
from pixio_cli.writers import atomic_path, write_image, write_json

from .data import CurationRules, PretrainStream, Sources, collate
from .distill import DistillConfig, Distiller, export_students, load_teacher
from .mae import MAEConfig, PixioMAE

CHECKPOINT = "checkpoint.pt"


@dataclass
class TrainConfig:
    """Everything that defines a run; stored in the checkpoint and in ``<out>/config.json``.

    A pretraining run has ``mae``; a distillation run has ``distill`` instead
    (students of a frozen teacher). Everything else, the loop included, is shared.
    """

    mae: MAEConfig | None
    data: list[str]
    output: str
    steps: int
    batch_size: int = 64  # per process
    accum: int = 1
    blr: float = 2.5e-5
    lr: float | None = None  # absolute; default blr * total batch / 256
    min_lr: float = 0.0
    warmup_steps: int = 0
    weight_decay: float = 0.05
    clip_grad: float | None = None
    drop_path: float = 0.0
    crop_scale_min: float = 0.2
    seed: int = 0
    save_every: int = 1000
    log_every: int = 20
    recon_every: int = 1000
    workers: int = 4
    device: str = "auto"
    precision: str | None = None
    compile: bool | None = False  # None: auto (see compile_choice)
    grad_checkpointing: bool = False
    fsdp: bool = False
    curation: str | None = None
    rules: CurationRules = field(default_factory=CurationRules)
    distill: DistillConfig | None = None
    command_line: dict | None = None  # every option's value as the run was started (a --resume compares)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mae"] = self.mae.to_dict() if self.mae is not None else None
        d["distill"] = self.distill.to_dict() if self.distill is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        d["mae"] = MAEConfig.from_dict(d["mae"]) if d.get("mae") else None
        d["distill"] = DistillConfig.from_dict(d["distill"]) if d.get("distill") else None
        d["rules"] = CurationRules(**d.get("rules", {}))
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    @property
    def crop_size(self) -> int:
        """The training crop: the encoder's size (for distillation, the students')."""
        if self.mae is not None:
            return self.mae.encoder.img_size
        return next(iter(self.distill.students.values()))["img_size"]

    def total_batch(self, world: int) -> int:
        """Images per optimizer step over every process."""
        return self.batch_size * self.accum * world

    def peak_lr(self, world: int) -> float:
        """``lr``, or ``blr`` scaled by the total batch over 256."""
        return self.lr if self.lr is not None else self.blr * self.total_batch(world) / 256


def lr_at(step: int, cfg: TrainConfig, peak: float) -> float:
    """Linear warmup to ``peak``, then half-cycle cosine to ``min_lr`` at the last step (per step)."""
    if step < cfg.warmup_steps:
        return peak * step / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr + (peak - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases and 1-D parameters (norms), as the official recipe."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


AUTO_COMPILE_STEPS = 2000


def compile_choice(setting: bool | None, steps_left: int, fsdp: bool, device: torch.device) -> bool:
    """Whether to torch.compile the training step: as asked, else (``None``, auto) for runs of
    ``AUTO_COMPILE_STEPS`` steps or more on a CPU or CUDA where Inductor's C++ compiler is found, except
    under FSDP. A compile that fails anyway stops the run with :class:`CompileFailed`, which names
    ``--no-compile``.

    The compile costs up to a few minutes once; each step after it is faster (the
    pretrain_compiled rows of docs/performance.md), so it pays long before
    ``AUTO_COMPILE_STEPS``. Under FSDP2 Dynamo recompiles once per block and gives
    up after 8, so auto leaves it off there.
    """
    if setting is not None:
        return setting
    return steps_left >= AUTO_COMPILE_STEPS and not fsdp and device.type in ("cpu", "cuda") and _has_cxx()


def _has_cxx() -> bool:
    """Whether the C++ compiler Inductor will call is there (it builds CPU kernels and the GPU launchers)."""
    import shutil

    import torch._inductor.config as inductor

    configured = [c for c in inductor.cpp.cxx if c]  # (None, "g++"): $CXX first where it is set
    cxx = (os.environ.get("CXX") or (configured[-1] if configured else "g++")).split()
    return bool(cxx) and shutil.which(cxx[0]) is not None


def compile_step(model: torch.nn.Module) -> torch.nn.Module:
    """``torch.compile`` for training, with random numbers (masks, drop-path) drawn by PyTorch's own
    generator as in eager mode: compiled and eager runs of one seed see the same masks, and a run
    resumed either way continues from the same random state."""
    import torch._inductor.config as inductor

    inductor.fallback_random = True
    return torch.compile(model)


class NonFiniteLoss(PixioError):
    """The loss became NaN or infinite."""


class CompileFailed(PixioError):
    """torch.compile could not compile the training step."""


class Trainer:
    """Owns the model, optimizer, data and bookkeeping of one pretraining run."""

    def __init__(self, cfg: TrainConfig, resume: bool = False, quiet: bool = False) -> None:
        """``quiet``: no progress bar (the log lines and metrics.jsonl are kept)."""
        self.cfg = cfg
        self.quiet = quiet
        self.out = Path(cfg.output)
        self.rank, self.world, _ = dist_info()
        self.device = pick_device(cfg.device)
        self.dtype = pick_dtype(cfg.precision, self.device)
        init_distributed(self.device)

        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        if cfg.distill is not None:
            teacher = load_teacher(cfg.distill, self.device, self.dtype)
            self.core = Distiller(cfg.distill, teacher.embed_dim, teacher.n_cls_tokens, cfg.drop_path).to(self.device)
            self.core.attach_teacher(teacher)
        else:
            self.core = PixioMAE(cfg.mae, drop_path=cfg.drop_path).to(self.device)
        self.core.grad_checkpointing = cfg.grad_checkpointing
        self.model = self._wrap(self.core)
        self.peak_lr = cfg.peak_lr(self.world)
        self.optimizer = adamw(param_groups(self.model, cfg.weight_decay), self.device, lr=self.peak_lr,
                               betas=(0.9, 0.95))
        self.step = 0
        self.positions: dict[int, tuple[int, int]] = {}
        self.last_worker: int | None = None  # the data worker of the last batch consumed
        self.failed: dict[int, int] = {}  # per data worker of this run (its counters start at 0 on resume)
        self.failed_before = 0  # this rank's skipped images before the run was resumed
        if resume:
            self._load()
        else:
            torch.manual_seed(cfg.seed + 1000 * self.rank)  # per-rank masks and drop-path
        self.compiled = compile_choice(cfg.compile, cfg.steps - self.step, cfg.fsdp, self.device)
        cfg.compile = self.compiled  # stored as decided: a resumed run keeps the kernels it started with
        set_fused_attention(self.core, self.device, self.dtype, training=True, compiled=self.compiled)
        self._forward = compile_step(self.model) if self.compiled else self.model
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1) * 255
        self._std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1) * 255

    # -- setup

    def _wrap(self, model: PixioMAE) -> torch.nn.Module:
        if self.cfg.fsdp:
            from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

            mp = None
            if self.dtype != torch.float32:
                mp = MixedPrecisionPolicy(param_dtype=self.dtype, reduce_dtype=torch.float32)
            kw = {"mp_policy": mp} if mp is not None else {}
            units = model.shard_units() if hasattr(model, "shard_units") else [*model.blocks, *model.decoder_blocks]
            for blk in units:
                fully_shard(blk, **kw)
            return fully_shard(model, **kw)
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        return model

    def loader(self) -> DataLoader:
        """The data loader, resumed where the checkpoint's workers stood."""
        cfg = self.cfg
        # The DataLoader serves workers round-robin from worker 0; rotate so that the
        # worker whose batch was due next when the checkpoint was taken comes first.
        rotate = (self.last_worker + 1) % max(1, cfg.workers) if self.last_worker is not None else 0
        stream = PretrainStream(Sources.find(cfg.data), cfg.crop_size, seed=cfg.seed, rank=self.rank, world=self.world,
                                curation=Path(cfg.curation) if cfg.curation else None, rules=cfg.rules,
                                crop_scale=(cfg.crop_scale_min, 1.0), start=self.positions, rotate=rotate)
        # Its own generator: creating the iterator must not draw from the global RNG (masks, drop-path).
        return DataLoader(stream, batch_size=cfg.batch_size, num_workers=cfg.workers, collate_fn=collate,
                          pin_memory=self.device.type == "cuda", persistent_workers=cfg.workers > 0,
                          prefetch_factor=4 if cfg.workers > 0 else None,
                          generator=torch.Generator().manual_seed(cfg.seed), worker_init_fn=worker_init)

    # -- checkpoints

    def _state_dicts(self) -> tuple[dict, dict]:
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                             get_optimizer_state_dict)

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return (get_model_state_dict(self.model, options=opts),
                get_optimizer_state_dict(self.model, self.optimizer, options=opts))

    def _gather(self, obj):
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def _progress(self) -> dict:
        """This rank's RNG, data positions and failure count: where its stream stands."""
        rng = {"torch": torch.get_rng_state(),
               "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None}
        return {"rng": rng, "positions": dict(self.positions), "last_worker": self.last_worker,
                "failed": self._failed_here()}

    def save(self, progress: dict | None = None) -> None:
        """Write ``checkpoint.pt`` atomically (rank 0), with every rank's RNG and data positions
        (``progress``: those of the start of an unfinished step, else the current ones)."""
        model_sd, optim_sd = self._state_dicts()
        per_rank = self._gather(progress or self._progress())
        if self.rank == 0:
            cfg = self.cfg.to_dict()
            state = {"model": model_sd, "optimizer": optim_sd, "step": self.step, "world": self.world,
                     "workers": self.cfg.workers, "config": {"train": cfg, "mae": cfg["mae"]}, "ranks": per_rank}
            with atomic_path(self.out / CHECKPOINT) as tmp:
                torch.save(state, tmp)
        if self.world > 1:
            dist.barrier()

    def _load(self) -> None:
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                             set_optimizer_state_dict)

        state = _read_state(self.out)
        if state["world"] != self.world or state["workers"] != self.cfg.workers:
            raise UsageError(f"--resume: the run used {state['world']} process(es) x {state['workers']} data workers; "
                             f"resume it with the same (now {self.world} x {self.cfg.workers}) to continue exactly")
        opts = StateDictOptions(full_state_dict=True)
        set_model_state_dict(self.model, state["model"], options=opts)
        set_optimizer_state_dict(self.model, self.optimizer, state["optimizer"], options=opts)
        self.step = state["step"]
        mine = state["ranks"][self.rank]
        self.positions = {int(k): tuple(v) for k, v in mine["positions"].items()}
        self.last_worker = mine["last_worker"]
        self.failed_before = mine.get("failed", 0)
        torch.set_rng_state(mine["rng"]["torch"])
        if self.device.type == "cuda" and mine["rng"]["cuda"] is not None:
            torch.cuda.set_rng_state(mine["rng"]["cuda"], self.device)

    def exports(self) -> list[Path]:
        """The files :meth:`export` writes."""
        if self.cfg.distill is not None:
            return [self.out / name / f"encoder{ext}" for name in self.cfg.distill.students
                    for ext in (".pth", ".safetensors")]
        return [self.out / "encoder.pth", self.out / "mae.safetensors"]

    def export(self) -> None:
        """``encoder.pth`` (official layout, loads strictly as an official checkpoint) and ``mae.safetensors``."""
        model_sd, _ = self._state_dicts()
        if self.rank != 0:
            return
        if self.cfg.distill is not None:
            export_students(model_sd, self.cfg.distill, self.out)
            return
        encoder = {k: v for k, v in model_sd.items() if not k.startswith(("decoder_", "mask_token"))}
        with atomic_path(self.out / "encoder.pth") as tmp:
            torch.save(encoder, tmp)
        meta = {"pixio_format": "mae", "encoder_config": self.cfg.mae.encoder.to_dict(),
                "mae_config": self.cfg.mae.to_dict(), "provenance": {"steps": self.step, "data": self.cfg.data}}
        save_safetensors(model_sd, self.out / "mae.safetensors", meta)

    # -- the loop

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """A batch of uint8 crops (B, S, S, 3) on the device as normalised (B, 3, S, S)."""
        x = images.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
        return (x - self._mean) / self._std

    def run(self) -> dict:
        """The training loop to ``cfg.steps``: saves every ``save_every`` steps and on Ctrl-C, exports at the end;
        returns the last logged metrics."""
        cfg, out = self.cfg, self.out
        if self.rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            write_json(out / "config.json", cfg.to_dict())
            _truncate_metrics(out / "metrics.jsonl", self.step)
        board = _tensorboard(out) if self.rank == 0 else None
        batches = iter(self.loader())
        bar = tqdm(total=cfg.steps, initial=self.step, desc="pretrain", unit="step", file=sys.stderr,
                   disable=True if self.rank != 0 or self.quiet else None, dynamic_ncols=True)
        if self.compiled and self.rank == 0:
            tqdm.write("pixio: compiling the training step (a minute or two before the first step; --no-compile "
                       "to skip)", file=sys.stderr)
        t0, images_since, last, unfinished = time.perf_counter(), 0, {}, None
        self.model.train()
        try:
            while self.step < cfg.steps:
                unfinished = self._progress()  # what a Ctrl-C before the update must save
                lr = lr_at(self.step, cfg, self.peak_lr)
                for g in self.optimizer.param_groups:
                    g["lr"] = lr
                loss_sum, res, x, images = self._accumulate(batches)
                images_since += images
                loss = self._mean_over_ranks(loss_sum)
                if not math.isfinite(loss):
                    raise NonFiniteLoss(
                        f"the loss became {loss} at step {self.step + 1}; stopping without saving "
                        f"(the last good checkpoint in {out} is kept). Try a lower --blr or --clip-grad")
                if cfg.clip_grad:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad)
                with interrupts_deferred():  # the update, the step count and the step's metrics go together
                    self.optimizer.step()
                    self.step += 1
                    unfinished = None
                    bar.update(1)
                    if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                        dt = time.perf_counter() - t0
                        last = {"step": self.step, "loss": loss, "lr": lr, "images_per_s": images_since / dt,
                                "epoch": max((e for e, _ in self.positions.values()), default=0),
                                "failed_images": self._failed_images(),
                                **{k: float(v) for k, v in getattr(res, "logs", {}).items()}}  # per student
                        t0, images_since = time.perf_counter(), 0
                        if self.rank == 0:
                            _append_metrics(out / "metrics.jsonl", last, board)
                            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
                self.optimizer.zero_grad(set_to_none=True)
                if (self.rank == 0 and cfg.recon_every and self.step % cfg.recon_every == 0
                        and hasattr(self.core, "reconstruct")):
                    self._recon_grid(x, res)
                if self.step % cfg.save_every == 0 and self.step < cfg.steps:
                    self.save()
        except Exception as e:  # a failed compile; not Dynamo's suppress_errors: it would swallow a Ctrl-C too
            from torch._dynamo.exc import TorchDynamoException

            if not (self.compiled and isinstance(e, TorchDynamoException)):
                raise
            cause = getattr(e, "inner_exception", None) or e
            why = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:200]
            again = f"--resume {out} --no-compile" if (out / CHECKPOINT).exists() else "--no-compile"
            raise CompileFailed(f"torch.compile failed on the training step ({why}): rerun with {again}") from e
        except KeyboardInterrupt:
            if self.world == 1:  # save progress; with several ranks the collectives may already be gone
                with interrupts_deferred():  # a second Ctrl-C or SIGTERM must not cut the save short
                    self.save(unfinished)
            raise
        finally:
            bar.close()
            if board is not None:
                board.close()
        self.save()
        self.export()
        return last

    def _accumulate(self, batches):
        """One step's micro-batches, forward and backward (gradients summed over ranks on the last only).

        Returns:
            this rank's mean loss (a 0-d tensor), the last micro-batch's result and input (B, 3, H, W), and the
            images the step saw on all ranks.
        """
        cfg = self.cfg
        loss_sum, images = torch.zeros((), device=self.device), 0
        for micro in range(cfg.accum):
            batch = next(batches, None)
            if batch is None:  # every data worker found nothing it could use
                raise InputError(f"no readable image in --data {' '.join(map(str, cfg.data))} (or the "
                                 "curation rules drop every one)")
            self.positions[batch["worker"]] = (batch["epoch"], batch["position"])
            self.last_worker = batch["worker"]
            self.failed[batch["worker"]] = batch["failed"]
            x = self.normalise(batch["images"])
            sync = micro == cfg.accum - 1 or not hasattr(self.model, "no_sync")
            ctx = self.model.no_sync() if not sync else contextlib.nullcontext()
            with ctx, autocast(self.device, self.dtype):
                res = self._forward(x)
            (res.loss / cfg.accum).backward()
            loss_sum += res.loss.detach() / cfg.accum
            images += x.shape[0] * self.world
        return loss_sum, res, x, images

    def _failed_here(self) -> int:
        return self.failed_before + sum(self.failed.values())

    def _failed_images(self) -> int:
        """Unreadable images skipped so far by every rank, before a resume included."""
        n = torch.tensor(self._failed_here(), device=self.device)
        if self.world > 1:
            dist.all_reduce(n)
        return int(n)

    def _mean_over_ranks(self, loss: torch.Tensor) -> float:
        if self.world > 1:
            loss = loss.clone()
            dist.all_reduce(loss)
            loss /= self.world
        return float(loss)

    @torch.no_grad()
    def _recon_grid(self, x: torch.Tensor, res) -> None:
        """Original | masked input | reconstruction, one row per image (up to 8)."""
        n = min(8, x.shape[0])
        x = x[:n].float()
        part = type(res)(res.loss, res.loss_per_image[:n], res.pred[:n].float(), res.mask[:n])
        recon = self.core.reconstruct(x, part)
        p = self.core.patch_size
        grid_hw = (x.shape[-2] // p, x.shape[-1] // p)
        mask = part.mask.reshape(n, 1, *grid_hw).repeat_interleave(p, 2).repeat_interleave(p, 3)

        def to_uint8(t: torch.Tensor) -> np.ndarray:
            img = t * (self._std / 255) + self._mean / 255
            return (img.clamp(0, 1) * 255).byte().permute(0, 2, 3, 1).cpu().numpy()

        orig, masked, rec = to_uint8(x), to_uint8(x * (1 - mask)), to_uint8(recon)
        rows = [np.concatenate([o, m, r], axis=1) for o, m, r in zip(orig, masked, rec)]
        grid = np.concatenate(rows, axis=0)
        write_image(self.out / "recon" / f"step_{self.step:07d}.png",
                    np.concatenate([_titles(["original", "masked input", "reconstruction"], x.shape[-1]), grid]))


def _titles(names: list[str], width: int) -> np.ndarray:
    """A white strip with one title centred over each column of ``width`` pixels (RGB)."""
    import cv2

    font, scale = cv2.FONT_HERSHEY_SIMPLEX, float(np.clip(width / 260, 0.3, 0.6))
    h = cv2.getTextSize("Ag", font, scale, 1)[0][1] + 10
    strip = np.full((h, width * len(names), 3), 255, np.uint8)
    for i, name in enumerate(names):
        while name and cv2.getTextSize(name, font, scale, 1)[0][0] > width - 4:  # a narrow column: cut the name
            name = name[:-1]
        w = cv2.getTextSize(name, font, scale, 1)[0][0]
        cv2.putText(strip, name, (i * width + (width - w) // 2, h - 5), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return strip


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop log lines past the checkpoint we resume from (written after it, before a crash)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line)
        except (ValueError, KeyError):
            continue
    from pixio_cli.writers import write_text

    write_text(path, "".join(line + "\n" for line in keep))


def _append_metrics(path: Path, rec: dict, board) -> None:
    from pixio_cli.writers import append_text

    append_text(path, json.dumps(rec) + "\n")
    if board is not None:
        for k, v in rec.items():
            if k != "step":
                board.add_scalar(f"pretrain/{k}", v, rec["step"])


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # optional
        return None
    return SummaryWriter(str(out / "tensorboard"))


def _read_state(out: str | os.PathLike, mmap: bool = False) -> dict:
    """A run's ``checkpoint.pt``; ``mmap`` leaves the tensors on disk until they are used."""
    path = Path(out) / CHECKPOINT
    if not path.exists():
        raise UsageError(f"--resume {out}: no {CHECKPOINT} there")
    return load_torch_dict(path, ("model", "optimizer", "step", "config", "ranks"), "a pixio pretrain checkpoint", mmap)


def read_run(out: str | os.PathLike) -> tuple[TrainConfig, int]:
    """The TrainConfig stored in a run's checkpoint and the step it holds (for ``--resume DIR``)."""
    state = _read_state(out, mmap=True)
    return TrainConfig.from_dict(state["config"]["train"]), state["step"]
