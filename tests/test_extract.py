"""`pixio extract` end to end: outputs, formats, pooling, shards, PCA, resume, failures, exit codes."""

from __future__ import annotations

import json
import os
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


# ------------------------------------------------------------------ the ledger that decides what a rerun skips
# (pixio_cli/resume.py, shared by extract, depth, segment, curate and the k-NN cache)

SETTINGS = {"--model": "pixio-tiny", "--size": 224, "--pool": "mean"}


def test_a_resumed_folder_keeps_its_records_for_every_later_run(tmp_path):
    """Run 1 finishes two outputs; run 2 resumes and finishes a third; run 3 still skips all three (the resumed run
    must not start the ledger afresh)."""
    from pixio_cli.resume import Ledger

    first = Ledger(tmp_path, SETTINGS)
    first.record("a", [1, 2, None])
    first.record("b", [3, 4, None])
    second = Ledger(tmp_path, SETTINGS)
    assert second.done("a", [1, 2, None]) and second.done("b", [3, 4, None]), "run 2 redoes finished outputs"
    second.record("c", [5, 6, None])
    third = Ledger(tmp_path, SETTINGS)
    for key, ident in (("a", [1, 2, None]), ("b", [3, 4, None]), ("c", [5, 6, None])):
        assert third.done(key, ident), f"run 3 forgot that {key!r} was finished: {third.path.read_text()!r}"
    assert not third.done("a", [1, 9, None]), "an input changed since is not done"
    assert [p.name for p in tmp_path.glob(".pixio-run*")] == [".pixio-run.jsonl"], "one process keeps one ledger"


def test_an_output_recorded_in_this_run_is_done_for_the_rest_of_it(tmp_path):
    from pixio_cli.resume import Ledger

    ledger = Ledger(tmp_path, SETTINGS)
    ledger.record("a", (7, 8, "frame.png"))  # a tuple, as read back from JSON a list: the same identity
    assert ledger.done("a", [7, 8, "frame.png"]), "an output finished earlier in this run would be made again"
    assert not ledger.done("a", [7, 9, "frame.png"])


def test_outputs_recorded_after_a_line_cut_by_a_kill_are_still_skipped(tmp_path):
    """A kill cuts the ledger's last line; the rerun drops it and goes on appending: everything it records,
    the first output too, is skipped by the run after."""
    from pixio_cli.resume import Ledger

    Ledger(tmp_path, SETTINGS).record("a", [1, 2, None])
    ledger_file = tmp_path / ".pixio-run.jsonl"
    with open(ledger_file, "a") as f:
        f.write('{"key": "b", "inp')  # killed while writing b's line
    rerun = Ledger(tmp_path, SETTINGS)
    assert rerun.done("a", [1, 2, None]) and not rerun.done("b", [3, 4, None]), "b was never finished"
    for key in ("b", "c", "d"):
        rerun.record(key, [3, 4, key])
    after = Ledger(tmp_path, SETTINGS)
    assert after.done("a", [1, 2, None]), "the output before the cut line is redone"
    assert all(after.done(key, [3, 4, key]) for key in ("b", "c", "d")), \
        f"outputs recorded after the cut line are redone: {ledger_file.read_text()!r}"


def test_a_record_killed_before_its_newline_is_kept_and_the_next_starts_a_line(tmp_path):
    """A kill between a record and its newline leaves a whole record: it stays finished, and what the rerun
    records after it is on a line of its own."""
    from pixio_cli.resume import Ledger

    Ledger(tmp_path, SETTINGS).record("a", [1, 2, None])
    ledger_file = tmp_path / ".pixio-run.jsonl"
    ledger_file.write_text(ledger_file.read_text().rstrip("\n"))
    rerun = Ledger(tmp_path, SETTINGS)
    rerun.record("b", [3, 4, None])
    after = Ledger(tmp_path, SETTINGS)
    assert after.done("a", [1, 2, None]) and after.done("b", [3, 4, None]), ledger_file.read_text()


def test_an_output_asked_for_the_first_time_keeps_the_records_before_it(tmp_path):
    """depth --ply's camera is recorded by the first run that asks for point clouds; the ledger is rewritten with
    it, and every output finished before is still skipped afterwards."""
    from pixio_cli.errors import UsageError
    from pixio_cli.resume import Ledger

    first = Ledger(tmp_path, SETTINGS, optional={"--ply camera": None})
    for key in ("a", "b"):
        first.record(key, [1, 2, key])
    with_ply = Ledger(tmp_path, SETTINGS, optional={"--ply camera": "fov 60"})
    assert json.loads((tmp_path / ".pixio-run.jsonl").read_text().splitlines()[0])["settings"]["--ply camera"] == \
        "fov 60", "the camera asked for the first time is recorded"
    assert with_ply.done("a", [1, 2, "a"]) and with_ply.done("b", [1, 2, "b"])
    later = Ledger(tmp_path, SETTINGS, optional={"--ply camera": "fov 60"})
    assert later.done("a", [1, 2, "a"]) and later.done("b", [1, 2, "b"]), \
        f"rewriting the ledger lost finished outputs: {(tmp_path / '.pixio-run.jsonl').read_text()!r}"
    with pytest.raises(UsageError, match="--ply camera: fov 60 before, fov 90 now"):
        Ledger(tmp_path, SETTINGS, optional={"--ply camera": "fov 90"})


def test_a_refusal_names_each_differing_option_with_both_values(tmp_path):
    """Only the options that differ are named, in order, with the old and new value; an option one run did not
    have reads '(not set)'; long values (a model's identity) are cut to 80 characters."""
    from pixio_cli.errors import UsageError
    from pixio_cli.resume import Ledger

    Ledger(tmp_path, {"--pool": "mean", "--size": 224, "--model": "m" * 80, "--blocks": "b" * 81, "--old": 1})
    with pytest.raises(UsageError) as refused:
        Ledger(tmp_path, {"--pool": "mean", "--size": 448, "--model": "n" * 80, "--blocks": "c" * 200, "--new": 2})
    assert str(refused.value) == (
        f"{tmp_path} holds outputs made with other settings ("
        f"--blocks: {'b' * 77}... before, {'c' * 77}... now; "
        f"--model: {'m' * 80} before, {'n' * 80} now; "
        "--new: (not set) before, 2 now; --old: 1 before, (not set) now; --size: 224 before, 448 now); "
        "rerun with --overwrite to replace them, or choose another output"), str(refused.value)


@pytest.mark.parametrize("content", ["", "{not json\n", '{"key": "a", "input": [1]}\n', "[1, 2]\n"],
                         ids=["empty", "cut", "no settings", "not an object"])
def test_a_ledger_that_cannot_be_read_is_refused_naming_the_way_out(tmp_path, content):
    from pixio_cli.errors import UsageError
    from pixio_cli.resume import Ledger

    (tmp_path / ".pixio-run.jsonl").write_text(content)
    with pytest.raises(UsageError) as refused:
        Ledger(tmp_path, SETTINGS)
    assert str(refused.value) == (f"{tmp_path} has a run ledger that cannot be read; rerun with --overwrite to redo "
                                  "everything, or choose another output")
    Ledger(tmp_path, SETTINGS, overwrite=True).record("a", [1, 2, None])  # the way out it names
    assert Ledger(tmp_path, SETTINGS).done("a", [1, 2, None])


def test_a_run_that_finished_nothing_leaves_the_folder_free_for_other_settings(tmp_path):
    """withdraw (a run stopped before its first output, as extract below its precision bound): the ledger it
    started goes, so another run may use the folder; a ledger with finished outputs stays."""
    from pixio_cli.resume import Ledger

    Ledger(tmp_path, SETTINGS).withdraw()
    assert not list(tmp_path.glob(".pixio-run*")), "a new ledger that finished nothing is left behind"
    Ledger(tmp_path, {**SETTINGS, "--size": 448}).record("a", [1, 2, None])  # other settings: not refused
    started = Ledger(tmp_path / "b", SETTINGS)
    started.record("a", [1, 2, None])
    started.withdraw()
    assert Ledger(tmp_path / "b", SETTINGS).done("a", [1, 2, None]), "withdrawn after finishing an output"
    resumed = Ledger(tmp_path, {**SETTINGS, "--size": 448})
    resumed.withdraw()
    assert Ledger(tmp_path, {**SETTINGS, "--size": 448}).done("a", [1, 2, None]), \
        "a rerun that finished nothing removed the ledger of the outputs already there"
    afresh = Ledger(tmp_path, SETTINGS, overwrite=True)
    afresh.withdraw()
    assert not list(tmp_path.glob(".pixio-run*")), "an --overwrite run that finished nothing left its ledger"
    gone = Ledger(tmp_path, SETTINGS)
    gone.path.unlink()  # the folder emptied meanwhile
    gone.withdraw()  # stops without an error


def test_overwrite_removes_the_ledgers_of_runs_with_another_number_of_processes(tmp_path):
    """--overwrite from one process removes the ledgers a 2-rank run left; --overwrite under a 2-rank torchrun
    removes the single-process ledger but each rank keeps the other's. A rerun then resumes instead of being
    refused by a stale ledger."""
    from pixio_cli.resume import Ledger

    old = {**SETTINGS, "--size": 448}
    for rank in (0, 1):
        Ledger(tmp_path, old, rank=rank, world=2).record(f"r{rank}", [rank, 0, None])
    Ledger(tmp_path, SETTINGS, overwrite=True).record("a", [1, 2, None])
    assert sorted(p.name for p in tmp_path.glob(".pixio-run*")) == [".pixio-run.jsonl"]
    assert Ledger(tmp_path, SETTINGS).done("a", [1, 2, None])

    for rank in (0, 1):  # one after the other, as torchrun runs them side by side
        Ledger(tmp_path, old, overwrite=True, rank=rank, world=2).record(f"r{rank}", [rank, 0, None])
    assert sorted(p.name for p in tmp_path.glob(".pixio-run*")) == [".pixio-run-r0.jsonl", ".pixio-run-r1.jsonl"]
    rerun = Ledger(tmp_path, old, rank=0, world=2)
    assert rerun.done("r0", [0, 0, None]) and rerun.done("r1", [1, 0, None]), "every rank's outputs are skipped"


def test_a_hidden_file_in_a_model_folder_is_not_part_of_the_model(tmp_path):
    """A transformers folder's identity is its files; .DS_Store, a .git folder or a sub-folder appearing in it
    (no part of the weights) must not refuse a rerun."""
    from pixio_cli.resume import model_identity

    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"a" * 10)
    before = model_identity(str(folder))
    (folder / ".DS_Store").write_bytes(b"x")
    (folder / ".git").mkdir()
    (folder / "notes").mkdir()
    assert model_identity(str(folder)) == before


def test_a_bundled_model_is_identified_by_its_weights_file(tmp_path, monkeypatch):
    """pixio-tiny upgraded in place (a new install) is another model: outputs of the old one are not reused."""
    import shutil

    from pixio_cli import model_ids
    from pixio_cli.resume import model_identity

    shutil.copy(model_ids.WEIGHTS_DIR / "pixio-tiny.safetensors", tmp_path / "pixio-tiny.safetensors")
    monkeypatch.setattr(model_ids, "WEIGHTS_DIR", tmp_path)
    before = model_identity("pixio-tiny")
    weights = tmp_path / "pixio-tiny.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10 ** 9))  # a new install
    assert model_identity("pixio-tiny") != before, "the bundled model's identity ignores its weights file"


def test_a_public_model_id_is_its_own_identity_whatever_lies_in_the_working_folder(tmp_path, monkeypatch):
    """pixio-vitb16 is loaded from the hub whatever files lie around; a folder of that name in the working folder
    is not the model and must not decide whether a rerun is refused."""
    from pixio_cli.resume import model_identity

    monkeypatch.chdir(tmp_path)
    for name in ("pixio-vitb16", "pixio-vith16-mapanything"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "notes.txt").write_text("not the model")
        assert model_identity(name) == name


def test_engine_batches_says_when_its_decoding_workers_exist_before_the_first_image(photos):
    """``on_started`` runs once, after the workers are forked and before any batch: a thread started there
    (recon3d's matching) never runs while a worker is forked."""
    import multiprocessing

    from pixio_cli.engine import Engine, Summary
    from pixio_cli.inputs import collect

    engine = Engine("cpu", batch_size=2, workers=2, progress=False)
    seen: list = []
    batches = engine.batches(collect([str(photos)]), ResizePolicy(short=32), Summary(),
                             on_started=lambda: seen.append(("started", len(multiprocessing.active_children()))))
    for batch in batches:
        seen.append(("batch", len(batch.samples)))
    assert seen[0] == ("started", 2) and [k for k, _ in seen].count("started") == 1
    assert sum(n for k, n in seen if k == "batch") == 3
