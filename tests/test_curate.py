"""`pixio curate`: entropy, deterministic MAE losses, normalisation, official layout, resume, corrupt images."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pixio_cli.checkpoints import save_safetensors
from pixio_cli.encoder import EncoderConfig
from pixio_cli.engine import Engine
from pretrain import curation
from pretrain.curation import Curator, Settings, find_units, histogram_entropy, normalise
from pretrain.data import CurationRules, PretrainStream, Sources
from pretrain.mae import MAEConfig, PixioMAE

from .conftest import write_rgb, write_tar


@pytest.fixture(scope="module")
def mae_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    cfg = MAEConfig(EncoderConfig(32, 2, 2, img_size=64), decoder_dim=16, decoder_depth=1, decoder_heads=2,
                    mask_grid=2)
    mae = PixioMAE(cfg)
    path = tmp_path_factory.mktemp("mae") / "mae.safetensors"
    save_safetensors(mae.state_dict(), path, {"mae_config": cfg.to_dict(), "encoder_config": cfg.encoder.to_dict()})
    return path


def _text_image() -> np.ndarray:
    img = np.full((240, 320, 3), 255, np.uint8)
    for i in range(7):
        cv2.putText(img, f"Lorem ipsum dolor sit {i}", (5, 30 + 30 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 2)
    return img


def _product_image() -> np.ndarray:
    img = np.full((240, 240, 3), 255, np.uint8)
    cv2.circle(img, (120, 110), 60, (40, 30, 200), -1)
    cv2.rectangle(img, (90, 160), (150, 210), (40, 40, 40), -1)
    return cv2.GaussianBlur(img, (5, 5), 0)


def test_entropy_orders_flat_text_product_photo(shared_data):
    from pixio_cli.images import ResizePolicy, load_for_model

    flat = histogram_entropy(np.full((64, 64, 3), 180, np.uint8))
    text = histogram_entropy(_text_image())
    product = histogram_entropy(_product_image())
    photos = sorted((shared_data / "photos").glob("*.JPEG"))[::25]
    natural = [histogram_entropy(load_for_model(p, ResizePolicy.parse("256"))[0]) for p in photos]
    assert flat == 0.0
    assert 0 < text < 4.5 and 0 < product < 4.5
    assert np.median(natural) > 6.5 and min(natural) > text


def _photos(root: Path, n: int) -> Path:
    for i in range(n):
        write_rgb(root / f"{i:02d}.jpg", 50 + 7 * i, 70, seed=i)
    return root


def _curate(mae_file: Path, inputs: list[str], out: Path, batch: int = 4, **kw) -> dict:
    from pretrain.mae import load_mae

    engine = Engine("cpu", batch_size=batch, workers=0, progress=False)
    mae = engine.prepare(load_mae(mae_file))
    settings = Settings(model=str(mae_file), model_config=mae.mae_cfg.to_dict(), resolution=64, masks=3, seed=7,
                        precision="float32")
    units = find_units(inputs, **kw)
    Curator(mae, engine, settings, out).run(units)
    return normalise(out, units, settings)


def _raw(out: Path) -> dict[str, float]:
    vals = {}
    for f in (out / ".raw").rglob("*.jsonl"):
        for line in f.read_text().splitlines():
            r = json.loads(line)
            if "error" not in r:
                vals[r["key"]] = r["mae_loss_raw"]
    return vals


def test_mae_loss_is_deterministic_across_runs_and_batch_sizes(mae_file, tmp_path):
    data = _photos(tmp_path / "imgs", 7)
    _curate(mae_file, [str(data)], tmp_path / "a", batch=4)
    _curate(mae_file, [str(data)], tmp_path / "b", batch=4)
    _curate(mae_file, [str(data)], tmp_path / "c", batch=1)
    a, b, c = _raw(tmp_path / "a"), _raw(tmp_path / "b"), _raw(tmp_path / "c")
    assert len(a) == 7 and a == b
    assert all(abs(a[k] - c[k]) < 1e-5 for k in a)
    assert len(set(round(v, 6) for v in a.values())) > 1  # different images, different losses


def test_under_torchrun_a_rank_curates_every_image_of_its_units(mae_file, tmp_path, monkeypatch):
    # the command gives each rank its own units; the engine must not split their images again
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    data = _photos(tmp_path / "imgs", 5)
    _curate(mae_file, [str(data)], tmp_path / "a", chunk=3)
    assert len(_raw(tmp_path / "a")) == 5


def test_normalisation_pass(tmp_path):
    settings = Settings(model="m", model_config={}, resolution=64, masks=1, seed=0, precision="float32")
    units = [curation.Unit("images/chunk-000000", [])]
    raw = tmp_path / ".raw" / "images" / "chunk-000000.jsonl"
    raw.parent.mkdir(parents=True)
    vals = np.linspace(1.0, 2.0, 101)
    recs = [{"key": f"/x/{i}.jpg", "histogram_score": 7.0, "height": 400, "width": 400, "mae_loss_raw": float(v)}
            for i, v in enumerate(vals)]
    recs.append({"key": "/x/bad.jpg", "error": "corrupt", **curation.ZERO})
    raw.write_text("".join(json.dumps(r) + "\n" for r in recs))
    summary = normalise(tmp_path, units, settings)
    b = summary["normalisation_bounds"]
    assert abs(b["low"] - 1.01) < 2e-3 and abs(b["high"] - 1.99) < 2e-3  # 1st and 99th percentiles
    out = {r["path"]: r for r in map(json.loads, (tmp_path / "manifest.jsonl").read_text().splitlines())}
    assert out["/x/0.jpg"]["mae_loss"] == 0.0 and out["/x/100.jpg"]["mae_loss"] == 1.0
    assert abs(out["/x/50.jpg"]["mae_loss"] - 0.5) < 0.01
    assert out["/x/bad.jpg"]["mae_loss"] == 0.0 and "error" in out["/x/bad.jpg"]
    assert json.loads((tmp_path / "curation.json").read_text())["normalisation"]["low_percentile"] == 1.0


def official_keep(info, hist, size) -> bool:
    return not (info["histogram_score"] <= hist or info["height"] < size or info["width"] < size)


def test_shard_layout_read_back_by_pretraining_loader(mae_file, tmp_path):
    members = {f"img{i}.jpeg": cv2.imencode(".jpg", cv2.resize(
        np.random.default_rng(i).integers(0, 255, (6, 6, 3), dtype=np.uint8), (60 + 20 * i, 90)))[1].tobytes()
        for i in range(5)}
    members["flat.jpeg"] = cv2.imencode(".jpg", np.full((120, 120, 3), 90, np.uint8))[1].tobytes()
    members["broken.jpeg"] = b"\xff\xd8 broken"
    shard = write_tar(tmp_path / "shards" / "part7" / "000003.tar", members)
    out = tmp_path / "cur"
    _curate(mae_file, [str(tmp_path / "shards")], out)
    stats = json.loads((out / "part7" / "000003.json").read_text())  # the official loader's path
    assert set(stats) == set(members)
    assert set(stats["img0.jpeg"]) >= {"histogram_score", "height", "width", "mae_loss", "mae_loss_raw", "sha256"}
    assert stats["broken.jpeg"]["error"] and stats["broken.jpeg"]["mae_loss"] == 0.0
    assert (stats["img2.jpeg"]["height"], stats["img2.jpeg"]["width"]) == (90, 100)
    hist, size = 4.5, 90
    expected = {k for k, v in stats.items() if "error" not in v and official_keep(v, hist, size)}
    assert 0 < len(expected) < len(members) - 1  # the rules cut something (flat, small)
    stream = PretrainStream(Sources.find([str(shard)]), 32, seed=0, curation=out, rules=CurationRules(hist, size))
    got = []
    for s in stream:
        if s.epoch > 0:
            break
        got.append(s)
    assert len(got) == len(expected)
    assert not CurationRules().keep(stats["broken.jpeg"], 0.0)  # an error record is never kept


def test_resume_after_kill_and_corrupt_images(mae_file, tmp_path, monkeypatch, cli):
    data = _photos(tmp_path / "imgs", 6)
    (data / "zz_corrupt.jpg").write_bytes(b"definitely not an image")
    real = curation.write_text
    calls = {"n": 0}

    def dying(path, text):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        real(path, text)

    monkeypatch.setattr(curation, "write_text", dying)
    args = ["curate", data, "-o", tmp_path / "out", "--model", mae_file, "--chunk", "3", "--workers", "0", "-q",
            "--resolution", "64", "--masks", "2", "--batch-size", "2"]
    code, _, err = cli(args)
    assert code == 130
    finished = list((tmp_path / "out" / ".raw").rglob("*.jsonl"))
    assert len(finished) == 1  # one unit, whole; the one being written when killed is not there
    kept = len(finished[0].read_text().splitlines())
    assert not (tmp_path / "out" / "manifest.jsonl").exists()
    monkeypatch.setattr(curation, "write_text", real)
    code, _, err = cli([*args, "--report", tmp_path / "report.png"])
    assert code == 1 and "failed: " in err and "zz_corrupt.jpg" in err, err  # the unreadable image is named
    done_now = int(err.split("curated ")[1].split(" ")[0])
    unreadable_now = int(err.split("images now (")[1].split(" ")[0])
    assert done_now + unreadable_now == 7 - kept and "7 in all" in err
    assert "histogram_score > 4.5" in err
    rows = [json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    bad = [r for r in rows if r["path"].endswith("zz_corrupt.jpg")]
    assert len(rows) == 7 and bad[0]["error"] and bad[0]["mae_loss"] == 0.0
    assert all(0.0 <= r["mae_loss"] <= 1.0 for r in rows)
    assert cv2.imread(str(tmp_path / "report.png")).shape[1] > 600
    settings = json.loads((tmp_path / "out" / "curation.json").read_text())
    assert settings["masks"] == 2 and settings["resolution"] == 64 and settings["histogram"]["log_base"] == 2


def test_torchrun_two_cpu_processes_match_one(mae_file, tmp_path, cli, free_port):
    import os
    import subprocess
    import sys

    data = _photos(tmp_path / "imgs", 5)
    (data / "zz_corrupt.jpg").write_bytes(b"definitely not an image")
    args = ["curate", str(data), "--model", str(mae_file), "--chunk", "2", "--workers", "0", "-q",
            "--resolution", "64", "--masks", "2", "--batch-size", "2", "--device", "cpu", "--precision", "fp32"]
    code, _, err = cli([*args, "-o", tmp_path / "one"])
    assert code == 1, err
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
           str(free_port), "-m", "pixio_cli", *args, "-o", str(tmp_path / "two")]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode != 0 and "zz_corrupt.jpg" in res.stderr, res.stderr[-2000:]
    assert "curated 5 images now (1 unreadable), 6 in all" in res.stderr  # the counts of both ranks

    def rows(out):
        return {r["path"]: r for r in map(json.loads, (tmp_path / out / "manifest.jsonl").read_text().splitlines())}

    one, two = rows("one"), rows("two")
    assert set(one) == set(two) and len(one) == 6
    assert all(abs(one[p]["mae_loss"] - two[p]["mae_loss"]) < 1e-4 and one[p].get("sha256") == two[p].get("sha256")
               for p in one)
