"""Distillation: students learn a frozen teacher's last-block tokens (the official Pixio recipe).

The teacher runs once per batch, in no-grad, at the run's precision; its
target is its last block's output *before* the final LayerNorm (8 CLS tokens
and the patch tokens). Each student sees the same batch (optionally with its
patches block-masked, then compared with the teacher's tokens at the kept
positions), applies its own final norm and a projector (Linear, LayerNorm,
GELU, Linear) to the teacher's width, and is pulled towards the target by a
cosine (or l1 / mse) loss on the CLS tokens and on the patch tokens, averaged
(or summed weighted by token counts). The student losses are summed: students
share no parameters, so each gets the gradient of its own loss, as with the
official per-student optimisers.

Only the students and projectors are trained and checkpointed; the teacher is
reloaded from its source on resume. Each student is exported as an
``encoder.pth`` in the official layout (projector dropped).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pixio_cli.encoder import EncoderConfig, PixioEncoder, size_config
from pixio_cli.errors import UsageError

from .mae import block_masking, mask_block_count

LOSSES = ("cosine", "l1", "mse")


@dataclass
class DistillConfig:
    """What defines a distillation besides the shared training settings."""

    teacher: str  # any source our checkpoint reader loads
    students: dict[str, dict] = field(default_factory=dict)  # name -> EncoderConfig as a dict
    loss_cls: str = "cosine"
    loss_patch: str = "cosine"
    loss_fuse: str = "avg"
    mask_ratio: float = 0.0
    mask_grid: int = 4
    teacher_size: str | None = None
    teacher_identity: str | None = None  # resume.model_identity of the teacher: a resume checks it is unchanged

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DistillConfig":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def student_config(spec: str, img_size: int, n_cls: int) -> EncoderConfig:
    """A student's shape: a size name (``b16``) or ``WIDTHxDEPTH[xHEADS]`` (``96x6``, heads default width/32)."""
    m = re.fullmatch(r"(\d+)x(\d+)(?:x(\d+))?", spec)
    if m:
        width, depth = int(m.group(1)), int(m.group(2))
        heads = int(m.group(3)) if m.group(3) else max(1, width // 32)
        if min(width, depth, heads) < 1:
            raise UsageError(f"--students {spec}: width, depth and heads are positive")
        if width % heads:
            raise UsageError(f"--students {spec}: the width {width} is not divisible by {heads} heads")
        cfg = EncoderConfig(width, depth, heads)
    else:
        cfg = size_config(spec)
    return EncoderConfig(**{**asdict(cfg), "img_size": img_size, "n_cls_tokens": n_cls})


def projector(width: int, target: int) -> nn.Sequential:
    """The official projector from the student's width to the teacher's."""
    return nn.Sequential(nn.Linear(width, target), nn.LayerNorm(target), nn.GELU(), nn.Linear(target, target))


def alignment_loss(student: torch.Tensor, teacher: torch.Tensor, n_cls: int, keep: torch.Tensor | None,
                   loss_cls: str = "cosine", loss_patch: str = "cosine",
                   fuse: str = "avg") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, CLS part, patch part) between student tokens and the teacher's (in fp32).

    ``keep`` are the patch ids the (masked) student saw; the teacher's patch
    tokens are taken at those ids.
    """
    student, teacher = student.float(), teacher.float()
    s_cls, s_patch = student[:, :n_cls], student[:, n_cls:]
    t_cls, t_patch = teacher[:, :n_cls], teacher[:, n_cls:]
    if keep is not None:
        t_patch = torch.gather(t_patch, 1, keep.unsqueeze(-1).expand(-1, -1, t_patch.shape[-1]))

    def one(kind: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if kind == "cosine":
            return 1 - F.cosine_similarity(a, b, dim=-1).mean()
        return F.l1_loss(a, b) if kind == "l1" else F.mse_loss(a, b)

    lc, lp = one(loss_cls, s_cls, t_cls), one(loss_patch, s_patch, t_patch)
    n = student.shape[1]
    loss = (lc + lp) / 2 if fuse == "avg" else lc * (n_cls / n) + lp * ((n - n_cls) / n)
    return loss, lc, lp


@dataclass
class DistillOutput:
    """A distillation step's loss and what to log."""
    loss: torch.Tensor  # the sum of the students' losses
    logs: dict[str, float]  # per student: loss, loss_cls, loss_patch


class Distiller(nn.Module):
    """Students and their projectors (the trained part); the frozen teacher is attached, not registered."""

    def __init__(self, cfg: DistillConfig, teacher_dim: int, n_cls: int, drop_path: float = 0.1) -> None:
        super().__init__()
        self.cfg, self.n_cls = cfg, n_cls
        self.students = nn.ModuleDict()
        self.projectors = nn.ModuleDict()
        for name, enc in cfg.students.items():
            student = PixioEncoder(EncoderConfig.from_dict(enc), drop_path=drop_path)
            student.init_weights()
            self.students[name] = student
            self.projectors[name] = projector(student.embed_dim, teacher_dim)
        for p in self.projectors.modules():  # the official init: xavier linears, unit norms
            if isinstance(p, nn.Linear):
                nn.init.xavier_uniform_(p.weight)
                nn.init.zeros_(p.bias)
        self._teacher: list[PixioEncoder] = []  # a list, so it is neither trained nor checkpointed

    def attach_teacher(self, teacher: PixioEncoder) -> None:
        """The frozen teacher, kept out of the module's parameters and state dict."""
        self._teacher[:] = [teacher]

    @property
    def grad_checkpointing(self) -> bool:
        return any(s.grad_checkpointing for s in self.students.values())

    @grad_checkpointing.setter
    def grad_checkpointing(self, on: bool) -> None:
        for s in self.students.values():
            s.grad_checkpointing = on

    def shard_units(self) -> list[nn.Module]:
        """The modules FSDP shards one by one: every student block."""
        return [blk for s in self.students.values() for blk in s.blocks]

    def student_tokens(self, name: str, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        """A student's projected tokens (B, n_cls + kept patches, teacher width)."""
        enc = self.students[name]
        return self.projectors[name](enc.forward_blocks(x, [-1], keep=keep)[0])

    def forward(self, x: torch.Tensor) -> DistillOutput:
        with torch.no_grad():
            target = self._teacher[0].forward_blocks(x, [-1], norm=False)[0]
        keep = None
        if self.cfg.mask_ratio > 0:
            p, g = next(iter(self.students.values())).patch_size, self.cfg.mask_grid
            grid_hw = (x.shape[-2] // p, x.shape[-1] // p)
            noise = torch.rand(x.shape[0], mask_block_count(grid_hw, g), device=x.device)
            keep = block_masking(noise, grid_hw, g, self.cfg.mask_ratio)[0]
        total, logs = torch.zeros((), device=x.device), {}
        for name in self.students:
            loss, lc, lp = alignment_loss(self.student_tokens(name, x, keep), target, n_cls=self.n_cls, keep=keep,
                                          loss_cls=self.cfg.loss_cls, loss_patch=self.cfg.loss_patch,
                                          fuse=self.cfg.loss_fuse)
            total = total + loss
            logs.update({f"{name}/loss": loss.detach(), f"{name}/loss_cls": lc.detach(),
                         f"{name}/loss_patch": lp.detach()})
        return DistillOutput(total, logs)


def load_teacher(cfg: DistillConfig, device: torch.device, dtype: torch.dtype) -> PixioEncoder:
    """The frozen teacher on ``device``, its weights cast to ``dtype`` once (bf16 on CUDA)."""
    from pixio_cli.checkpoints import load_encoder
    from pixio_cli.engine import prepare_for_inference

    return prepare_for_inference(load_encoder(cfg.teacher, size=cfg.teacher_size), device, dtype)


def export_students(model_sd: dict[str, torch.Tensor], cfg: DistillConfig, out: Path) -> list[Path]:
    """``<out>/<student>/encoder.pth`` for each student (the official layout, projector dropped) and
    ``encoder.safetensors`` (the same weights with their config)."""
    from pixio_cli.writers import atomic_path

    from pixio_cli.checkpoints import FORMAT_KEY, save_safetensors

    paths = []
    for name, enc in cfg.students.items():
        prefix = f"students.{name}."
        sd = {k[len(prefix):]: v.detach().cpu().clone() for k, v in model_sd.items() if k.startswith(prefix)}
        path = Path(out) / name / "encoder.pth"
        with atomic_path(path) as tmp:
            torch.save(sd, tmp)
        # the same weights with their config inside, so custom shapes load without --size
        save_safetensors(sd, path.with_suffix(".safetensors"),
                         {FORMAT_KEY: "encoder", "encoder_config": enc, "provenance": {"teacher": cfg.teacher}})
        paths.append(path)
    return paths
