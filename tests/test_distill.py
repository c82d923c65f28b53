"""`pixio distill`: the alignment loss, a copy of the teacher at zero loss, falling loss, exact resume,
official-layout students, and DDP/FSDP under torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from pixio_cli.checkpoints import load_encoder
from pixio_cli.encoder import EncoderConfig, PixioEncoder
from pretrain.distill import DistillConfig, Distiller, alignment_loss, student_config

from .conftest import random_encoder, write_rgb


def _photos(root: Path, n: int = 12) -> Path:
    for i in range(n):
        write_rgb(root / f"{i:02d}.jpg", 40 + i, 48, seed=i)
    return root


def args(teacher: Path, data: Path, students: str = "32x2", steps: int = 8) -> list:
    return ["distill", "--teacher", teacher, "--students", students, "--data", data, "--img-size", "32",
            "--batch-size", "4", "--steps", steps, "--log-every", "1", "--lr", "2e-3", "--precision", "fp32",
            "--mask-grid", "1"]


def test_alignment_loss_is_zero_for_identical_tokens_and_gathers_kept_patches():
    torch.manual_seed(0)
    teacher = torch.randn(2, 8 + 16, 12)
    for kind in ("cosine", "l1", "mse"):
        for fuse in ("avg", "sum"):
            loss, lc, lp = alignment_loss(teacher.clone(), teacher, n_cls=8, keep=None, loss_cls=kind, loss_patch=kind,
                                          fuse=fuse)
            assert abs(loss.item()) < 1e-6 and abs(lc.item()) < 1e-6 and abs(lp.item()) < 1e-6
    keep = torch.tensor([[3, 0, 9], [15, 2, 4]])  # a masked student saw these patches, in this order
    student = torch.cat([teacher[:, :8], torch.stack([teacher[b, 8 + keep[b]] for b in range(2)])], 1)
    assert alignment_loss(student, teacher, 8, keep)[0].item() < 1e-6
    # the sum fuse weighs the CLS and patch parts by their token counts
    loss, lc, lp = alignment_loss(torch.randn_like(teacher), teacher, 8, None, fuse="sum")
    assert loss.item() == pytest.approx((lc * 8 / 24 + lp * 16 / 24).item(), rel=1e-6)


def test_a_copy_of_the_teacher_with_identity_projector_and_norm_has_zero_loss():
    teacher = random_encoder().eval()
    cfg = DistillConfig(teacher="-", students={"copy": teacher.cfg.to_dict()})
    distiller = Distiller(cfg, teacher.embed_dim, teacher.n_cls_tokens, drop_path=0.0).eval()
    distiller.students["copy"].load_state_dict(teacher.state_dict())
    distiller.students["copy"].norm = nn.Identity()  # the target is the teacher's last block before its norm
    distiller.projectors["copy"] = nn.Identity()
    distiller.attach_teacher(teacher)
    with torch.no_grad():
        out = distiller(torch.randn(2, 3, 32, 48))
    assert abs(out.loss.item()) < 1e-5
    assert set(out.logs) == {"copy/loss", "copy/loss_cls", "copy/loss_patch"}
    assert not any(k.startswith("_teacher") or "teacher" in k for k in distiller.state_dict())  # never saved


def test_student_shapes():
    cfg = student_config("96x6", 128, 8)
    assert (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.img_size) == (96, 6, 3, 128)
    assert student_config("b16", 256, 8).embed_dim == 768
    assert student_config("64x2x4", 32, 8).num_heads == 4


def test_loss_falls_resume_is_exact_and_students_load_as_official(cli, tmp_path, monkeypatch, tiny_encoder_file):
    import pretrain.train as train

    data = _photos(tmp_path / "photos")
    code, _, err = cli([*args(tiny_encoder_file, data, "32x2,t16"), "-o", tmp_path / "full", "--workers", "2"])
    assert code == 0, err
    rows = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["32x2/loss"] < rows[0]["32x2/loss"] and rows[-1]["t16/loss"] < rows[0]["t16/loss"]

    real = train._append_metrics

    def interrupt_after_3(path, rec, board):
        real(path, rec, board)
        if rec["step"] == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(train, "_append_metrics", interrupt_after_3)
    code, _, err = cli([*args(tiny_encoder_file, data, "32x2,t16"), "-o", tmp_path / "cut", "--workers", "2"])
    assert code == 130
    monkeypatch.setattr(train, "_append_metrics", real)
    code, _, err = cli(["pretrain", "--resume", tmp_path / "cut"])
    assert code == 2 and "a `pixio distill` run" in err, err
    (tmp_path / "cut").rename(tmp_path / "moved")  # a run continues in the folder it is now in
    teacher = Path(tiny_encoder_file)
    stamp = teacher.stat()
    os.utime(teacher, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 10**9))  # "another" teacher file
    code, _, err = cli(["distill", "--resume", tmp_path / "moved"])
    assert code == 2 and "is not the file the run started with" in err, err
    os.utime(teacher, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    code, _, err = cli(["distill", "--resume", tmp_path / "moved"])
    assert code == 0, err
    assert not (tmp_path / "cut").exists()
    cut = [json.loads(line) for line in (tmp_path / "moved" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss"]) for r in cut] == [(r["step"], r["loss"]) for r in rows]
    for name in ("32x2", "t16"):
        a = torch.load(tmp_path / "full" / name / "encoder.pth", weights_only=True)
        b = torch.load(tmp_path / "moved" / name / "encoder.pth", weights_only=True)
        assert all(torch.equal(a[k], b[k]) for k in a)
    # a named size loads strictly as an official checkpoint; a custom shape from its folder (config inside)
    official = torch.load(tmp_path / "full" / "t16" / "encoder.pth", weights_only=True)
    PixioEncoder(EncoderConfig(192, 12, 3, img_size=32)).load_state_dict(official, strict=True)
    assert not any("proj" in k and not k.endswith(("attn.proj.weight", "attn.proj.bias", "proj.weight",
                                                      "proj.bias")) for k in official)
    assert load_encoder(str(tmp_path / "full" / "32x2")).cfg.embed_dim == 32
    img = write_rgb(tmp_path / "x.jpg")
    code, _, err = cli(["extract", img, "-o", tmp_path / "feat", "--model", tmp_path / "full" / "t16" / "encoder.pth",
                        "-q", "--workers", "0"])
    assert code == 0, err


def test_distill_usage_errors(cli, tmp_path, tiny_encoder_file):
    data = _photos(tmp_path / "photos", 2)
    code, _, err = cli(["distill", "--data", data, "-o", tmp_path / "o", "--steps", "1"])
    assert code == 2 and "--teacher" in err
    code, _, err = cli([*args(tiny_encoder_file, data, "32x2,32x2"), "-o", tmp_path / "o"])
    assert code == 2 and "twice" in err
    code, _, err = cli([*args(tiny_encoder_file, data, "30x2x4"), "-o", tmp_path / "o"])
    assert code == 2 and "divisible" in err


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_distill_two_cpu_processes(tmp_path, mode, tiny_encoder_file, torchrun_failure, free_port):
    data = _photos(tmp_path / "photos", 8)
    out = tmp_path / mode
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
           str(free_port), "-m", "pixio_cli",
           *[str(a) for a in args(tiny_encoder_file, data, "32x2", steps=2)], "-o", str(out), "--workers", "0",
           "--device", "cpu"]
    if mode == "fsdp":
        cmd.append("--fsdp")
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, torchrun_failure(res.stderr)
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert load_encoder(str(out / "32x2")).cfg.depth == 2
