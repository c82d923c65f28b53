"""`pixio evaluate knn`: the weighted vote against a hand-computed case, and separable colour classes end to end."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import cv2
import numpy as np
import torch

from pretrain.knn import knn_classify

from .conftest import write_rgb


def test_weighted_vote_by_hand():
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    labels = torch.tensor([0, 1, 1])
    val = torch.tensor([[0.8, 0.6], [1.0, 0.0]])
    val_labels = torch.tensor([0, 0])
    # query 0: similarities 0.8 (class 0), 0.6 and 0.96 (class 1): its nearest neighbour is class 1
    # query 1: similarities 1.0 (class 0), 0.0 and 0.6 (class 1): class 0 wins with any k
    assert knn_classify(train, labels, val, val_labels, k=1) == (50.0, 50.0)  # top-5 counts the k=1 votes only
    w0, w1 = math.exp(0.8 / 0.07), math.exp(0.6 / 0.07) + math.exp(0.96 / 0.07)
    assert w1 > w0  # so query 0 is still wrong with k=3 at T=0.07, but class 0 is its second guess
    assert knn_classify(train, labels, val, val_labels, k=3) == (50.0, 100.0)
    # a very high temperature makes the vote a plain count: 2 votes for class 1 against 1, for both queries
    assert knn_classify(train, labels, val, val_labels, k=3, temperature=1e6)[0] == 0.0  # both outvoted


def _colour_classes(root: Path) -> Path:
    rng = np.random.default_rng(0)
    colours = {"red": (40, 40, 220), "green": (40, 200, 40), "blue": (220, 60, 40)}  # BGR
    for split, n in (("train", 5), ("val", 3)):
        for name, bgr in colours.items():
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                img = np.clip(np.array(bgr)[None, None] + rng.normal(0, 25, (40, 56, 3)), 0, 255).astype(np.uint8)
                cv2.imwrite(str(root / split / name / f"{i}.png"), img)
    return root


def test_knn_separates_colour_classes_and_caches(cli, tiny_encoder_file, tmp_path, caplog):
    data = _colour_classes(tmp_path / "data")
    args = ["evaluate", "knn", "--data", data, "--model", tiny_encoder_file, "-k", "1,3", "--resolution", "32",
            "--workers", "0", "-q", "--json", "--cache", tmp_path / "cache"]
    code, out, err = cli(args)
    assert code == 0, err
    result = json.loads(out)
    assert result["train"] == 15 and result["val"] == 9 and result["classes"] == 3
    assert [r["k"] for r in result["results"]] == [1, 3]
    assert all(r["top1"] >= 88.0 and r["top5"] == 100.0 for r in result["results"])  # solid colours: easy
    caplog.clear()
    caplog.set_level(logging.INFO, logger="pixio")
    code, out2, err = cli(args)  # the same encoder again: features come from the cache
    assert code == 0 and json.loads(out2) == result
    assert any("15 of 15 features read from" in r.getMessage() for r in caplog.records)
    code, _, err = cli([*args, "--normed"])  # other settings: refused, not silently mixed
    assert code == 2 and "--overwrite" in err


def test_knn_list_files_and_bad_layouts(cli, tiny_encoder_file, tmp_path):
    data = _colour_classes(tmp_path / "data")
    for split in ("train", "val"):
        lines = [f"{p.relative_to(data)} {p.parent.name}" for p in sorted((data / split).rglob("*.png"))]
        (data / f"{split}.txt").write_text("\n".join(lines) + "\n")
    code, out, err = cli(["evaluate", "knn", "--train-list", data / "train.txt", "--val-list", data / "val.txt",
                          "--model", tiny_encoder_file, "-k", "1", "--resolution", "32", "--workers", "0", "-q",
                          "--json"])
    assert code == 0 and json.loads(out)["classes"] == 3, err
    code, _, err = cli(["evaluate", "knn", "--data", tmp_path, "--model", tiny_encoder_file])
    assert code == 1 and "train/<class>" in err
    code, _, err = cli(["evaluate", "knn", "--data", data, "-k", "0"])
    assert code == 2 and "-k" in err
    code, out, err = cli(["evaluate", "knn", "--data", data, "--model", tiny_encoder_file, "--resolution", "32",
                          "--workers", "0", "-q", "--json"])  # the default k, cut to the few training images
    assert code == 0 and [r["k"] for r in json.loads(out)["results"]] == [10], err
    n_train = len(list((data / "train").rglob("*.png")))
    for args, expected in ((["--data", data, "-k", f"1,{n_train + 1}"], f"only {n_train} training images"),
                           (["--train-list", data / "train.txt"], "go together"),
                           (["--data", data, "--train-list", data / "train.txt", "--val-list", data / "val.txt"],
                            "give one")):
        code, _, err = cli(["evaluate", "knn", "--model", tiny_encoder_file, *args])
        assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, (args, err)
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    (empty / "val" / "red").mkdir(parents=True)
    cv2.imwrite(str(empty / "val" / "red" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    code, _, err = cli(["evaluate", "knn", "--data", empty, "--model", tiny_encoder_file])
    assert code == 1 and "no training images" in err


def test_official_pooling_is_the_raw_cls_mean(tiny_encoder, tmp_path):
    """The official eval_knn.py pools `cls_tokens` (before the final norm): pooled_features, by default,
    gives the L2-normalised mean of the raw CLS tokens of the images as the engine feeds them."""
    from pretrain.knn import pooled_features
    from pixio_cli.engine import Engine
    from pixio_cli.images import ResizePolicy, load_for_model

    paths = [str(write_rgb(tmp_path / f"{i}.png", 40, 56, seed=i)) for i in range(2)]
    engine = Engine("cpu", "fp32", batch_size=2, workers=0, progress=False)
    got = pooled_features(engine, tiny_encoder, paths=paths, folder=tmp_path / "cache", settings={}, overwrite=False,
                          resolution=32)
    x = engine.to_pixels([load_for_model(p, ResizePolicy(short=32, crop=32))[0] for p in paths])
    with torch.no_grad():
        raw = tiny_encoder.forward_blocks(x, [-1], norm=False)[0][:, :8].mean(1)
        normed = tiny_encoder.forward_blocks(x, [-1], norm=True)[0][:, :8].mean(1)
    assert torch.allclose(got, torch.nn.functional.normalize(raw, dim=1), atol=1e-5)
    assert not torch.allclose(got, torch.nn.functional.normalize(normed, dim=1), atol=1e-3)

