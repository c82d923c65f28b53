"""`pixio extract` end to end: outputs, formats, pooling, shards, PCA, resume, failures, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pixio_cli import feature_stores as features
from pixio_cli.images import ResizePolicy, load_for_model
from pixio_cli.writers import atomic_path

from .conftest import TINY, write_rgb


@pytest.fixture
def photos(tmp_path) -> Path:
    root = tmp_path / "photos"
    write_rgb(root / "a.jpg", 40, 60, seed=1)
    write_rgb(root / "sub" / "b.png", 64, 64, seed=2)
    write_rgb(root / "c.jpg", 100, 30, seed=3)
    return root


def base(model: Path) -> list[str]:
    return ["extract", "--model", str(model), "--workers", "0", "-q", "--resize", "64", "--precision", "fp32"]


def test_extract_folder_npz_matches_encoder(cli, tiny_encoder, tiny_encoder_file, photos, tmp_path):
    out = tmp_path / "feats"
    code, _, err = cli([*base(tiny_encoder_file), str(photos), "-o", out, "--blocks", "1,-1"])
    assert code == 0, err
    assert "extracted 3" in err and "failed 0" in err
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.npz"))
    assert files == ["a.npz", "c.npz", "sub/b.npz"]
    data = np.load(out / "a.npz")
    img, _ = load_for_model(photos / "a.jpg", ResizePolicy.parse("64"))
    h, w = img.shape[:2]
    assert data["patch_tokens"].shape == (2, h // 16, w // 16, TINY.embed_dim)
    assert data["cls_tokens"].shape == (2, 8, TINY.embed_dim)
    assert data["patch_tokens"].dtype == np.float32
    assert list(data["blocks"]) == [1, TINY.depth - 1]
    # the same numbers as running the encoder by hand
    from pixio_cli.images import IMAGENET_MEAN, IMAGENET_STD

    x = (torch.from_numpy(img).permute(2, 0, 1).float()[None] / 255 - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) \
        / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = tiny_encoder.forward_blocks(x, [TINY.depth - 1])[0][0]
    assert np.abs(data["cls_tokens"][1] - ref[:8].numpy()).max() < 1e-4
    assert np.abs(data["patch_tokens"][1].reshape(-1, TINY.embed_dim) - ref[8:].numpy()).max() < 1e-4


def test_raw_differs_from_normed(cli, tiny_encoder_file, photos, tmp_path):
    cli([*base(tiny_encoder_file), str(photos / "a.jpg"), "-o", tmp_path / "n"])
    cli([*base(tiny_encoder_file), str(photos / "a.jpg"), "-o", tmp_path / "r", "--raw"])
    n, r = np.load(tmp_path / "n" / "a.npz"), np.load(tmp_path / "r" / "a.npz")
    assert not np.allclose(n["patch_tokens"], r["patch_tokens"])
    # normed tokens have ~zero mean over channels (LayerNorm with near-zero bias)
    assert abs(n["patch_tokens"].mean()) < abs(r["patch_tokens"]).mean()


def test_safetensors_and_pooling(cli, tiny_encoder_file, photos, tmp_path):
    from safetensors.numpy import load_file

    code, _, _ = cli([*base(tiny_encoder_file), str(photos), "-o", tmp_path / "st", "--format", "safetensors"])
    assert code == 0
    t = load_file(str(tmp_path / "st" / "a.safetensors"))
    assert t["patch_tokens"].ndim == 4 and t["cls_tokens"].shape[1:] == (8, TINY.embed_dim)
    code, _, _ = cli([*base(tiny_encoder_file), str(photos), "-o", tmp_path / "p", "--pool", "cls"])
    pooled = np.load(tmp_path / "p" / "a.npz")
    assert set(pooled.files) == {"features", "blocks", "input_hw"}
    assert np.allclose(pooled["features"][0], t["cls_tokens"][0].mean(0), atol=1e-5)


def test_stdin_list_and_json_lines(cli, tiny_encoder_file, photos, tmp_path):
    listing = f"{photos / 'a.jpg'}\n{photos / 'sub' / 'b.png'}\n"
    code, out, err = cli([*base(tiny_encoder_file), "-", "-o", tmp_path / "o", "--json"], stdin=listing)
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [Path(r["path"]).name for r in lines] == ["a.jpg", "b.png"]
    assert all(Path(r["output"]).exists() for r in lines)
    assert lines[0]["shapes"]["cls_tokens"] == [1, 8, TINY.embed_dim]
    assert "extracted" not in out  # human messages stay on stderr


def test_pca_single_file_and_beside(cli, tiny_encoder_file, photos, tmp_path):
    code, _, err = cli([*base(tiny_encoder_file), str(photos / "c.jpg"), "--pca", tmp_path / "c_pca.png"])
    assert code == 0, err
    pca = cv2.imread(str(tmp_path / "c_pca.png"))
    assert pca.shape == (100, 30, 3)  # the original image size
    assert pca.std() > 5  # not a blank picture
    code, _, _ = cli([*base(tiny_encoder_file), str(photos), "-o", tmp_path / "f", "--pca"])
    assert code == 0 and (tmp_path / "f" / "sub" / "b_pca.png").exists()
    code, _, err = cli([*base(tiny_encoder_file), str(photos), "--pca", tmp_path / "one.png"])
    assert code == 2 and "give a folder" in err
    for name in ("c.jpg", "c.tiff"):  # as -o: an extension names a file, and a PCA picture is a PNG
        code, _, err = cli([*base(tiny_encoder_file), str(photos / "c.jpg"), "--pca", tmp_path / name])
        assert code == 2 and "name a .png file or a folder" in err and not (tmp_path / name).exists(), err


def test_failures_are_reported_and_exit_1(cli, tiny_encoder_file, photos, tmp_path):
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (photos / "empty.png").write_bytes(b"")
    code, _, err = cli([*base(tiny_encoder_file), str(photos), "-o", tmp_path / "o"])
    assert code == 1
    assert "broken.jpg" in err and "empty.png" in err and "failed 2" in err
    assert "Traceback" not in err
    assert len(list((tmp_path / "o").rglob("*.npz"))) == 3


def test_resume_after_kill(cli, tiny_encoder_file, photos, tmp_path, monkeypatch):
    out = tmp_path / "o"
    real = features.write_arrays
    calls = {"n": 0}

    def dying(path, arrays, fmt):
        calls["n"] += 1
        if calls["n"] == 2:
            with atomic_path(path) as tmp:  # die mid-write: a temp file, never the real name
                tmp.write_bytes(b"partial")
                raise KeyboardInterrupt
        real(path, arrays, fmt)

    monkeypatch.setattr(features, "write_arrays", dying)
    code, _, err = cli([*base(tiny_encoder_file), str(photos), "-o", out, "--batch-size", "1"])
    assert code == 130 and "resume" in err
    done = list(out.rglob("*.npz"))
    assert len(done) == 1 and np.load(done[0])["patch_tokens"].size > 0
    assert not list(out.rglob("*.tmp"))
    monkeypatch.setattr(features, "write_arrays", real)
    code, _, err = cli([*base(tiny_encoder_file), str(photos), "-o", out])
    assert code == 0 and "extracted 2" in err and "skipped 1" in err
    assert len(list(out.rglob("*.npz"))) == 3
    done[0].unlink()  # an output deleted since: the ledger alone does not make it done
    code, _, err = cli([*base(tiny_encoder_file), str(photos), "-o", out])
    assert code == 0 and "extracted 1" in err and "skipped 2" in err and done[0].exists()


def test_shards_index_and_resume(cli, tiny_encoder_file, photos, tmp_path):
    out = tmp_path / "s"
    code, _, err = cli([*base(tiny_encoder_file), str(photos), "-o", out, "--shards", "2", "--pool", "mean"])
    assert code == 0, err
    index = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    assert [r["shard"] for r in index] == ["shard-000000.npz", "shard-000000.npz", "shard-000001.npz"]
    s0 = np.load(out / "shard-000000.npz")
    assert s0["features"].shape == (2, 1, TINY.embed_dim)
    code, _, err = cli([*base(tiny_encoder_file), str(photos), "-o", out, "--shards", "2", "--pool", "mean"])
    assert "skipped 3" in err and not (out / "shard-000002.npz").exists()
    code, _, err = cli([*base(tiny_encoder_file), str(photos), "-o", tmp_path / "t", "--shards", "5"])
    t = np.load(tmp_path / "t" / "shard-000000.npz")
    assert "r000000/patch_tokens" in t.files and "r000002/cls_tokens" in t.files


def test_workers_and_video(cli, tiny_encoder_file, photos, tmp_path):
    path = photos / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (48, 32))
    for i in range(5):
        writer.write(np.full((32, 48, 3), 40 * i, np.uint8))
    writer.release()
    args = ["extract", "--model", tiny_encoder_file, "-q", "--workers", "2", str(photos), "-o", tmp_path / "o",
            "--every", "2", "--pool", "cls"]
    code, _, err = cli(args)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "o" / "clip").iterdir()) == ["000000.npz", "000002.npz", "000004.npz"]
    assert "extracted 6" in err


def test_usage_errors(cli, tiny_encoder_file, photos, tmp_path):
    code, _, err = cli([*base(tiny_encoder_file), str(photos)])
    assert code == 2 and "-o" in err
    code, _, err = cli([*base(tiny_encoder_file), str(photos), "-o", tmp_path, "--blocks", "99"])
    assert code == 2 and "does not exist" in err
    code, _, err = cli([*base(tiny_encoder_file), str(tmp_path / "nothing"), "-o", tmp_path])
    assert code == 1 and "no such file" in err
    code, _, err = cli([*base(tiny_encoder_file), str(photos), "-o", tmp_path, "--device", "cuda:3"])
    assert code == 2 and "CUDA" in err
    code, _, err = cli(["extract", "--model", tmp_path / "none.pth", str(photos), "-o", tmp_path])
    assert code == 2 and "no such model" in err and "Traceback" not in err


def test_help_version_and_planned_commands(cli):
    code, out, _ = cli(["--help"])
    for name in ("pretrain", "curate", "extract", "depth", "segment", "recon3d"):
        assert name in out
    code, out, _ = cli(["--version"])
    assert code == 0 and out.startswith("pixio ")


def test_odd_images_end_to_end(cli, tiny_encoder_file, tmp_path):
    odd = tmp_path / "odd"
    odd.mkdir()
    cv2.imwrite(str(odd / "gray.png"), np.full((30, 20), 90, np.uint8))
    cv2.imwrite(str(odd / "rgba.png"), np.full((24, 24, 4), 128, np.uint8))
    cv2.imwrite(str(odd / "deep.png"), np.full((20, 30, 3), 40000, np.uint16))
    cv2.imwrite(str(odd / "dot.png"), np.zeros((1, 1, 3), np.uint8))
    cv2.imwrite(str(odd / "sliver.jpg"), np.full((4, 300, 3), 200, np.uint8))
    code, _, err = cli([*base(tiny_encoder_file), str(odd), "-o", tmp_path / "o"])
    assert code == 0, err
    assert "extracted 5" in err
    sliver = np.load(tmp_path / "o" / "sliver.npz")["patch_tokens"]
    assert sliver.shape[1:3] == (4, 16)  # 64 short side, long side capped at 4x


def test_engine_halves_batch_on_out_of_memory():
    from pixio_cli.engine import Engine

    engine = Engine("cpu", batch_size=8, workers=0)
    seen = []

    def fn(x):
        seen.append(x.shape[0])
        if x.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return {"y": x.sum((1, 2, 3))}

    x = torch.randn(8, 3, 16, 16)
    out = engine.infer(fn, x)
    assert torch.allclose(out["y"], x.sum((1, 2, 3)))
    assert engine.batch_size == 2 and seen[:3] == [8, 4, 2]


def test_overwrite_under_torchrun_clears_the_ledgers_of_other_runs(cli, tiny_encoder_file, photos, tmp_path,
                                                                    monkeypatch):
    """A single-process run, then a 2-rank --overwrite with other settings: a later 2-rank rerun resumes
    (the first run's ledger is gone) instead of being refused."""
    out = tmp_path / "o"
    code, _, err = cli([*base(tiny_encoder_file), str(photos), "-o", out, "--pool", "cls"])
    assert code == 0, err
    (out / ".pixio-run-r2.jsonl").write_text((out / ".pixio-run.jsonl").read_text())  # as a 3-rank run leaves
    monkeypatch.setenv("WORLD_SIZE", "2")
    for extra in (["--overwrite"], []):
        for rank in (0, 1):  # run one after the other as torchrun would run them side by side
            monkeypatch.setenv("RANK", str(rank))
            code, _, err = cli([*base(tiny_encoder_file), str(photos), "-o", out, "--pool", "mean", *extra])
            assert code == 0, err
    assert sorted(p.name for p in out.glob(".pixio-run*")) == [".pixio-run-r0.jsonl", ".pixio-run-r1.jsonl"]


def test_shards_under_torchrun_ranks(cli, tiny_encoder_file, photos, tmp_path, monkeypatch):
    out = tmp_path / "s"
    for rank in (0, 1):  # two ranks, run one after the other as torchrun would run them side by side
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        code, _, err = cli([*base(tiny_encoder_file), str(photos), "-o", out, "--shards", "4", "--pool", "cls"])
        assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == [".pixio-run-r0.jsonl", ".pixio-run-r1.jsonl",
                                                     "index-r0.jsonl", "index-r1.jsonl",
                                                     "shard-r0-000000.npz", "shard-r1-000000.npz"]
    paths = [json.loads(line)["path"] for f in ("index-r0.jsonl", "index-r1.jsonl")
             for line in (out / f).read_text().splitlines()]
    assert len(paths) == len(set(paths)) == 3


def test_pca_colours_hold_under_tiny_feature_changes():
    """The picture of features within cosine 0.9999 of each other keeps its colours: each component's sign is
    set by the data (its skew), not by the SVD's arbitrary choice."""
    from pixio_cli.pca import pca_rgb

    torch.manual_seed(0)
    base = torch.randn(12, 16, 32)
    base[:4, :5] += 3 * torch.randn(32)  # a small bright region, as an object on a background
    pictures = []
    for seed in range(6):
        g = torch.Generator().manual_seed(seed)
        pictures.append(pca_rgb(base + 1e-3 * torch.randn(base.shape, generator=g), (48, 64)).astype(int))
    for p in pictures[1:]:
        assert np.abs(p - pictures[0]).mean() < 3
