"""Dense heads: metrics by hand, official head layout, sliding windows, checkpoints, train/evaluate/depth/segment CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from heads.dense.dpt import DPTHead, LinearHead
from heads.dense.encoder_features import dense_features, dpt_blocks
from heads.metrics import ConfusionMatrix, DepthMeter, depth_metrics
from heads.dense.model import DenseModel, HeadConfig, load_head, save_head
from pixio_cli.sliding import sliding_window

from .conftest import TINY, head_training_stopped_at, random_encoder


def test_depth_metrics_by_hand():
    pred = torch.tensor([1.0, 2.0, 4.0])
    gt = torch.tensor([1.0, 1.0, 5.0])
    m = depth_metrics(pred, gt)
    # ratios max(p/g, g/p) are 1, 2 and 1.25: under 1.25 one; under 1.5625 and 1.953 two
    assert m["d1"] == pytest.approx(1 / 3) and m["d2"] == pytest.approx(2 / 3) and m["d3"] == pytest.approx(2 / 3)
    assert m["abs_rel"] == pytest.approx((0 + 1 + 0.2) / 3)
    assert m["sq_rel"] == pytest.approx((0 + 1 + 1 / 5) / 3)
    assert m["rmse"] == pytest.approx(math.sqrt((0 + 1 + 1) / 3))
    logs = [0.0, math.log(2), math.log(0.8)]
    assert m["rmse_log"] == pytest.approx(math.sqrt(sum(v * v for v in logs) / 3))
    mean = sum(logs) / 3
    assert m["silog"] == pytest.approx(math.sqrt(sum(v * v for v in logs) / 3 - 0.5 * mean * mean))
    assert m["log10"] == pytest.approx(sum(abs(v) for v in logs) / 3 / math.log(10))
    meter = DepthMeter(0.5, 4.5)  # the 5 m pixel is out of range
    meter.update(pred, gt)
    assert meter.result()["abs_rel"] == pytest.approx(0.5) and meter.result()["images"] == 1


def test_miou_by_hand():
    cm = ConfusionMatrix(3)
    gt = torch.tensor([0, 0, 1, 1, 2, 255])
    pred = torch.tensor([0, 1, 1, 1, 0, 2])
    cm.update(pred, gt)
    r = cm.result(["a", "b", "c"])
    # class a: I=1, U=3 (gt 2 + pred 2 - 1); b: I=2, U=3; c: I=0, U=1
    assert r["iou"]["a"] == pytest.approx(1 / 3) and r["iou"]["b"] == pytest.approx(2 / 3)
    assert r["iou"]["c"] == pytest.approx(0.0)
    assert r["miou"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert r["pixel_acc"] == pytest.approx(3 / 5)


def test_dpt_layout_matches_official_keys_and_shapes():
    head = DPTHead(96, 1, features=32, out_channels=(16, 32, 64, 64))
    keys = set(head.state_dict())
    for k in ("projects.0.weight", "resize_layers.0.weight", "resize_layers.3.weight", "scratch.layer1_rn.weight",
              "scratch.refinenet4.resConfUnit2.conv1.weight", "scratch.refinenet1.out_conv.weight",
              "scratch.output_conv.2.weight"):
        assert k in keys, k
    assert "scratch.layer1_rn.bias" not in keys  # 3x3 convs to the fusion width have no bias
    feats = [torch.randn(2, 96, 4, 6) for _ in range(4)]
    assert head(feats).shape == (2, 1, 32, 48)
    assert set(LinearHead(96, 5).state_dict()) >= {"0.weight", "0.running_mean", "1.weight", "1.bias"}
    assert dpt_blocks(32) == [7, 15, 23, 31] and dpt_blocks(12) == [2, 5, 8, 11]


def test_dense_features_concat_mean_cls(tiny_encoder):
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        f = dense_features(tiny_encoder, x, [1, 3])
        tokens = tiny_encoder.forward_blocks(x, [3])[0]
    assert f[1].shape == (1, 2 * TINY.embed_dim, 2, 3)
    assert torch.allclose(f[1][0, :TINY.embed_dim, 0, 1], tokens[0, 8 + 1])
    assert torch.allclose(f[1][0, TINY.embed_dim:, 1, 2], tokens[0, :8].mean(0))


def test_sliding_window_averages_and_covers():
    x = torch.arange(2 * 3 * 40 * 70, dtype=torch.float32).reshape(2, 3, 40, 70)
    out = sliding_window(lambda w: w.sum(1), x, crop=32, stride=20)
    assert torch.allclose(out, x.sum(1))  # a per-pixel function is unchanged by windowing
    small = sliding_window(lambda w: w[:, :2] * 2, x[..., :20, :20], crop=32)
    assert small.shape == (2, 2, 20, 20) and torch.allclose(small, x[:, :2, :20, :20] * 2)


def _model(task: str = "depth", n_out: int = 1) -> DenseModel:
    cfg = HeadConfig(task=task, n_out=n_out, features=16, head_channels=[8, 16, 32, 32], crop=32,
                     classes=[f"c{i}" for i in range(n_out)] if task == "segment" else None)
    return DenseModel(random_encoder(), cfg).eval()


def test_head_checkpoint_roundtrip(tmp_path):
    model = _model()
    x = torch.randn(1, 3, 32, 32)
    save_head(model, tmp_path / "h.safetensors", {"note": "t"})
    loaded = load_head(str(tmp_path / "h.safetensors"))
    with torch.no_grad():
        a, b = model(x), loaded(x)
    assert torch.allclose(a, b, atol=1e-5) and a.shape == (1, 32, 32)
    assert 0 < a.min() and a.max() < model.cfg.max_depth
    assert loaded.provenance == {"note": "t"}


def _depth_data(root: Path, n: int = 4) -> Path:
    for i in range(n):
        img = cv2.resize(np.random.default_rng(i).integers(0, 255, (6, 8, 3), dtype=np.uint8), (80, 60))
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "depth").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "images" / f"f{i}.png"), img)
        cv2.imwrite(str(root / "depth" / f"f{i}.png"), np.full((60, 80), 1000 + 200 * i, np.uint16))
    return root


def test_depth_cli_end_to_end(cli, tiny_encoder_file, tmp_path):

    data = _depth_data(tmp_path / "d")
    head = tmp_path / "depth.safetensors"
    args = ["train", "depth", "--encoder", tiny_encoder_file, "--data", data, "--dataset", "generic-depth",
            "--depth-scale", "1000", "-o", head, "--features", "16", "--head-channels", "8,16,32,32", "--crop", "32",
            "--steps", "3", "--batch-size", "2", "--workers", "0", "--eval-limit", "3"]
    code, out, err = cli(args)  # generic-depth has no splits: the folder serves as train and val
    assert code == 0, err
    prov = json.loads(out.strip().splitlines()[-1])
    assert prov["steps"] == 3 and "d1" in prov["val_metrics"] and "mean_depth" in prov["baseline"]
    assert prov["val_shared_with_train"] == 4  # said, not passed off as held out
    assert prov["val_metrics"]["images"] == prov["baseline"]["images"] == 3  # the same images, --eval-limit's
    zero = tmp_path / "zero"
    for name in ("images", "depth"):
        (zero / name).mkdir(parents=True)
    for i in range(2):
        cv2.imwrite(str(zero / "images" / f"{i}.png"), np.full((60, 80, 3), 90, np.uint8))
        cv2.imwrite(str(zero / "depth" / f"{i}.png"), np.zeros((60, 80), np.uint16))  # no measurement anywhere
    code, _, err = cli(["evaluate", "depth", "--data", zero, "--dataset", "generic-depth", "--depth-scale", "1000",
                        "--model", head, "--workers", "0"])
    assert code == 1 and "nothing to score" in err, err  # not perfect zeros over 0 images

    code, out, err = cli(["depth", data / "images", "-o", tmp_path / "out", "--model", head, "--workers", "0",
                          "-q", "--vis", "--json", "--resize", "32"])
    assert code == 0, err
    png = cv2.imread(str(tmp_path / "out" / "f0.png"), cv2.IMREAD_UNCHANGED)
    assert png.dtype == np.uint16 and png.shape == (60, 80)  # original size, millimetres
    rec = json.loads(out.splitlines()[0])
    assert abs(np.median(png) / 1000 - rec["median_m"]) < 0.01
    assert (tmp_path / "out" / "f0_vis.png").exists()
    code, out, err = cli(["depth", data / "images" / "f1.png", "-o", tmp_path / "one.npy", "--model", head,
                          "--workers", "0", "-q", "--format", "npy", "--tile"])
    assert code == 0, err
    assert np.load(tmp_path / "one.npy").shape == (60, 80)
    code, _, err = cli(["depth", data / "images", "-o", tmp_path / "out", "--model", head, "--workers", "0", "-q",
                        "--resize", "32"])
    assert code == 0 and "skipped 4" in err
    code, _, err = cli(["depth", data / "images", "-o", tmp_path / "x.png", "--model", head, "-q"])
    assert code == 2 and "give a folder" in err


def test_segment_cli_end_to_end(cli, tmp_path):
    model = _model("segment", 3)
    head = tmp_path / "seg.safetensors"
    save_head(model, head, {})
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(2):
        cv2.imwrite(str(imgs / f"s{i}.jpg"), np.random.default_rng(i).integers(0, 255, (40, 56, 3), dtype=np.uint8))
    code, out, err = cli(["segment", imgs, "-o", tmp_path / "o", "--model", head, "--workers", "0", "-q",
                          "--overlay", "--json", "--resize", "32"])
    assert code == 0, err
    labels = cv2.imread(str(tmp_path / "o" / "s0.png"), cv2.IMREAD_UNCHANGED)
    assert labels.shape[:2] == (40, 56)
    rec = json.loads(out.splitlines()[0])
    assert abs(sum(rec["fractions"].values()) - 1) < 1e-4 and set(rec["fractions"]) <= {"c0", "c1", "c2"}
    assert (tmp_path / "o" / "s0_overlay.png").exists()
    code, _, err = cli(["depth", imgs, "-o", tmp_path / "d", "--model", head, "-q"])
    assert code == 2 and "not a depth head" in err


def _train_args(encoder_file: Path, data: Path, out: Path, steps: int) -> list:
    return ["train", "depth", "--encoder", encoder_file, "--data", data, "--dataset", "generic-depth",
            "--depth-scale", "1000", "-o", out, "--features", "16", "--head-channels", "8,16,32,32", "--crop", "32",
            "--steps", steps, "--batch-size", "2", "--workers", "0", "--eval-limit", "1"]


def test_head_training_resumes_exactly(cli, tiny_encoder_file, tmp_path):
    from safetensors.torch import load_file

    data = _depth_data(tmp_path / "d")
    code, _, err = cli(_train_args(tiny_encoder_file, data, tmp_path / "full.safetensors", 6))
    assert code == 0, err
    a = load_file(str(tmp_path / "full.safetensors"))
    for in_update in (False, True):  # Ctrl-C as step 3 begins, or just after its weights moved
        cut = tmp_path / f"cut{int(in_update)}.safetensors"
        with head_training_stopped_at(3, in_update):
            code, _, err = cli(_train_args(tiny_encoder_file, data, cut, 6))
        assert code == 130 and Path(f"{cut}.ckpt").exists() and "plus --resume" in err, err
        assert not cut.exists()
        other = [a if a != "16" else "8" for a in _train_args(tiny_encoder_file, data, cut, 6)]  # --features 8
        code, _, err = cli([*other, "--resume"])
        assert code == 2 and "other settings (features: 16 before, 8 now)" in err and len(err.strip().splitlines()) == 1, err
        code, _, err = cli([*_train_args(tiny_encoder_file, data, cut, 6), "--lr", "0.5", "--resume"])
        assert code == 2 and "lr: None before, 0.5 now" in err, err  # not only shapes: what it learns from
        code, _, err = cli(_train_args(tiny_encoder_file, data, cut, 6))  # the same command, no --resume: the
        assert code == 2 and "add --resume" in err, err  # checkpoint is not overwritten by a fresh start
        code, _, err = cli([*_train_args(tiny_encoder_file, data, cut, 6), "--resume"])
        assert code == 0, err
        b = load_file(str(cut))
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a if k.startswith("head.")), in_update
    before = (tmp_path / "full.safetensors").read_bytes()
    code, _, err = cli([*_train_args(tiny_encoder_file, data, tmp_path / "full.safetensors", 6), "--lr", "1e-3"])
    assert code == 2 and "holds a finished run (step 6)" in err, err  # never silently trained anew over it
    assert (tmp_path / "full.safetensors").read_bytes() == before
    # a damaged step checkpoint is a one-line checkpoint error, not a traceback
    (tmp_path / "bad.safetensors.ckpt").write_bytes(b"PK\x03\x04 truncated")
    code, _, err = cli([*_train_args(tiny_encoder_file, data, tmp_path / "bad.safetensors", 6), "--resume"])
    assert code == 2 and "bad.safetensors.ckpt is not a readable checkpoint" in err and len(err.strip().splitlines()) == 1


def test_head_training_ddp_two_cpu_processes(tiny_encoder_file, tmp_path, torchrun_failure, free_port):
    import os
    import subprocess
    import sys

    data = _depth_data(tmp_path / "d")
    out = tmp_path / "ddp.safetensors"
    args = [str(a) for a in _train_args(tiny_encoder_file, data, out, 2)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
           str(free_port), "-m", "pixio_cli", *args, "--head", "linear", "--device", "cpu", "--eval-limit", "4"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, torchrun_failure(res.stderr)
    model = load_head(str(out))
    assert type(model.head[0]) is torch.nn.BatchNorm2d  # (on CUDA SyncBatchNorm is turned back for saving)
    provenance = json.loads(res.stdout.strip().splitlines()[-1])
    assert provenance["batch_size"] == 4
    assert provenance["val_metrics"]["images"] == 4  # rank 0 scores the whole split, not its share of it


def test_depth_point_cloud(cli, tmp_path):
    o3d = pytest.importorskip("open3d")
    model = _model()
    head = tmp_path / "h.safetensors"
    save_head(model, head, {})
    data = _depth_data(tmp_path / "d", 1)
    code, _, err = cli(["depth", data / "images" / "f0.png", "-o", tmp_path / "f0.png", "--model", head, "-q",
                        "--workers", "0", "--ply", "--fov", "60"])
    assert code == 0, err
    pcd = o3d.io.read_point_cloud(str(tmp_path / "f0.ply"))
    pts = np.asarray(pcd.points)
    assert len(pts) == 60 * 80 and (pts[:, 2] > 0).all() and len(pcd.colors) == len(pts)
    code, _, err = cli(["depth", data / "images" / "f0.png", "-o", tmp_path / "g.png", "--model", head, "-q",
                        "--workers", "0", "--ply"])
    assert code == 2 and "--fov or --fx" in err and not (tmp_path / "g.png").exists()  # checked before any work
