"""Every output matches the command that made it, nothing is silently lost or kept, every mistake is a
usage error: one test per way a user was misled, run as a user runs the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from heads.dense.model import DenseModel, HeadConfig, save_head

from .conftest import random_encoder, wait_until, write_rgb

ROOT = Path(__file__).resolve().parents[1]


def ex(model: Path) -> list:
    return ["extract", "--model", model, "--workers", "0", "-q", "--precision", "fp32", "--resize", "32"]


@pytest.fixture
def depth_head(tmp_path) -> Path:
    cfg = HeadConfig(task="depth", features=16, head_channels=[8, 16, 32, 32], crop=32)
    path = tmp_path / "depth.safetensors"
    torch.manual_seed(0)
    save_head(DenseModel(random_encoder(), cfg), path, {})
    return path


@pytest.fixture
def seg_head(tmp_path) -> Path:
    cfg = HeadConfig(task="segment", n_out=3, features=16, head_channels=[8, 16, 32, 32], crop=32,
                     classes=["a", "b", "c"])
    path = tmp_path / "seg.safetensors"
    torch.manual_seed(0)
    save_head(DenseModel(random_encoder(), cfg), path, {})
    return path


# ------------------------------------------------------------------ outputs that match the command


def test_rerun_with_other_options_is_refused_then_overwritten(cli, tiny_encoder_file, tmp_path):
    img = write_rgb(tmp_path / "img.jpg", 40, 50)
    out = tmp_path / "st"
    code, _, err = cli([*ex(tiny_encoder_file), img, "-o", out, "--blocks", "0"])
    assert code == 0, err
    for other in (["--blocks", "1,2"], ["--pool", "cls"], ["--resize", "48"], ["--precision", "bf16"], ["--raw"]):
        code, _, err = cli([*ex(tiny_encoder_file), img, "-o", out, "--blocks", "0", *other])
        assert code == 2 and other[0] in err and "--overwrite" in err, (other, err)
        assert len(err.strip().splitlines()) == 1
    assert list(np.load(out / "img.npz")["blocks"]) == [0]  # untouched by the refused runs
    code, _, err = cli([*ex(tiny_encoder_file), img, "-o", out, "--blocks", "1,2", "--overwrite"])
    assert code == 0 and "extracted 1" in err
    assert list(np.load(out / "img.npz")["blocks"]) == [1, 2]
    code, _, err = cli([*ex(tiny_encoder_file), img, "-o", out, "--blocks", "1,2"])
    assert code == 0 and "skipped 1" in err  # same settings, same input: resumed
    write_rgb(img, 40, 50, seed=5)  # the input changed: its output is redone
    os.utime(img, ns=(time.time_ns(), time.time_ns() + 10**9))
    code, _, err = cli([*ex(tiny_encoder_file), img, "-o", out, "--blocks", "1,2"])
    assert code == 0 and "extracted 1" in err and "skipped" not in err


def test_two_inputs_never_share_an_output(cli, tiny_encoder_file, tmp_path):
    write_rgb(tmp_path / "a" / "x.jpg", seed=1)
    write_rgb(tmp_path / "b" / "x.jpg", seed=2)
    code, _, err = cli([*ex(tiny_encoder_file), tmp_path / "a", tmp_path / "b", "-o", tmp_path / "out"])
    assert code == 0 and "extracted 2" in err, err
    a, b = np.load(tmp_path / "out" / "a" / "x.npz"), np.load(tmp_path / "out" / "b" / "x.npz")
    assert not np.allclose(a["patch_tokens"], b["patch_tokens"])
    # one key that stays ambiguous (a video's frame folder and an image of the same name) is refused before work
    clip = tmp_path / "c" / "v.avi"
    clip.parent.mkdir()
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 5, (32, 32))
    writer.write(np.zeros((32, 32, 3), np.uint8))
    writer.release()
    write_rgb(tmp_path / "c" / "v" / "000000.jpg")
    code, _, err = cli([*ex(tiny_encoder_file), tmp_path / "c", "-o", tmp_path / "out2"])
    assert code == 2 and "would both write" in err and not (tmp_path / "out2").exists()


def test_depth_writes_what_evaluate_measures(cli, depth_head, tmp_path):
    from heads.metrics import DepthMeter

    data = tmp_path / "data"
    for i in range(3):
        write_rgb(data / "images" / f"f{i}.png", 48, 72, seed=i)
        (data / "depth").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(data / "depth" / f"f{i}.png"), np.full((48, 72), 800 + 300 * i, np.uint16))
    code, out, err = cli(["evaluate", "depth", "--model", depth_head, "--data", data, "--dataset", "generic-depth",
                          "--depth-scale", "1000", "--json", "--workers", "0"])
    assert code == 0, err
    evaluated = json.loads(out)
    code, _, err = cli(["depth", data / "images", "-o", tmp_path / "pred", "--format", "npy", "--model", depth_head,
                        "-q", "--workers", "0"])
    assert code == 0, err
    meter = DepthMeter(1e-3, 10.0)
    for i in range(3):
        gt = cv2.imread(str(data / "depth" / f"f{i}.png"), cv2.IMREAD_UNCHANGED).astype(np.float32) / 1000
        meter.update(torch.from_numpy(np.load(tmp_path / "pred" / f"f{i}.npy")), torch.from_numpy(gt))
    written = meter.result()
    assert written["images"] == evaluated["images"] == 3
    for k in ("abs_rel", "rmse", "d1"):
        assert written[k] == pytest.approx(evaluated[k], abs=1e-6), k
    code, _, err = cli(["depth", data / "images", "-o", tmp_path / "whole", "--format", "npy", "--model",
                        depth_head, "-q", "--workers", "0", "--no-tile"])
    assert code == 0 and not np.allclose(np.load(tmp_path / "whole" / "f0.npy"), np.load(tmp_path / "pred" / "f0.npy"))


def test_evaluate_scores_the_trivial_baseline_from_the_training_split(cli, depth_head, tmp_path):
    """`evaluate depth` puts the training split's mean depth, everywhere, beside the model: scored on the
    evaluated images, from the training targets only, and said not to be held out when the two are one set."""
    from heads.metrics import DepthMeter

    data = tmp_path / "data"
    (data / "depth").mkdir(parents=True)
    depths = {"t0": 1000, "t1": 3000, "v0": 1500, "v1": 2500}  # mm: train mean 2.0 m
    for i, (name, mm) in enumerate(depths.items()):
        write_rgb(data / "images" / f"{name}.png", 32, 48, seed=i)
        cv2.imwrite(str(data / "depth" / f"{name}.png"), np.full((32, 48), mm, np.uint16))
    for split, names in (("train", ["t0", "t1"]), ("val", ["v0", "v1"])):
        (data / f"{split}.txt").write_text("".join(f"images/{n}.png depth/{n}.png\n" for n in names))
    args = ["evaluate", "depth", "--model", depth_head, "--data", data, "--dataset", "generic-depth",
            "--depth-scale", "1000", "--json", "--workers", "0"]
    code, out, err = cli(args)
    assert code == 0, err
    trivial = json.loads(out)["baseline"]
    assert trivial["mean_depth"] == pytest.approx(2.0) and trivial["train_targets"] == 2
    meter = DepthMeter(1e-3, 10.0)
    for mm in (1500, 2500):
        gt = torch.full((32, 48), mm / 1000)
        meter.update(torch.full_like(gt, 2.0), gt)
    for k in ("abs_rel", "rmse", "d1"):
        assert trivial[k] == pytest.approx(meter.result()[k], abs=1e-6), k
    assert trivial["shares_images_with_val"] == 0 and "training-set mean depth, 2.000 m" in err
    code, out, _ = cli(args + ["--no-baseline"])
    assert code == 0 and "baseline" not in json.loads(out)
    for split in ("train", "val"):  # no split files: train and val are the same images
        (data / f"{split}.txt").unlink()
    code, out, err = cli(args)
    assert code == 0 and json.loads(out)["baseline"]["shares_images_with_val"] == 4 and "not held out" in err


def test_output_extension_selects_the_format(cli, depth_head, seg_head, tmp_path):
    img = write_rgb(tmp_path / "one.jpg", 40, 56)
    code, _, err = cli(["depth", img, "-o", tmp_path / "d_one.npy", "--model", depth_head, "-q", "--workers", "0"])
    assert code == 0, err
    assert (tmp_path / "d_one.npy").is_file() and np.load(tmp_path / "d_one.npy").shape == (40, 56)
    code, _, err = cli(["depth", img, "-o", tmp_path / "d.png", "--format", "npy", "--model", depth_head, "-q"])
    assert code == 2 and "--format is npy" in err
    for cmd, head, name in (("depth", depth_head, "d.jpg"), ("segment", seg_head, "s_one.jpg")):
        code, _, err = cli([cmd, img, "-o", tmp_path / name, "--model", head, "-q"])
        assert code == 2 and "extension" in err and not (tmp_path / name).exists(), err
    code, _, err = cli(["extract", "--model", depth_head, img, "-o", tmp_path / "f.npz", "-q", "--workers", "0"])
    assert code == 0 and (tmp_path / "f.npz").is_file(), err


def test_vis_legend_says_when_it_is_clipped(monkeypatch):
    from heads.dense import visualize

    texts: list[str] = []
    real = cv2.putText
    monkeypatch.setattr(visualize.cv2, "putText", lambda img, text, *a, **kw: (texts.append(text), real(img, text, *a, **kw)))
    depth = np.linspace(0.5, 9.0, 400 * 300, dtype=np.float32).reshape(300, 400)
    visualize.depth_picture(depth)
    assert texts[0].startswith("<=") and texts[1].startswith(">=") and any("clipped" in t for t in texts)
    texts.clear()
    visualize.depth_picture(depth, lo=0.5, hi=9.0)
    assert not texts[0].startswith("<=") and not any("clipped" in t for t in texts)


# ------------------------------------------------------------------ failures and mistakes


@pytest.mark.parametrize("args", [
    [], ["bogus"], ["extract"], ["extract", "--bogus", "x"], ["extract", "x", "--shards", "0", "-o", "o"],
    ["extract", "x", "--workers", "-1", "-o", "o"], ["curate", "x", "-o", "o", "--masks", "0"], ["train"],
    ["evaluate", "depth"], ["depth", "x"], ["extract", "x", "-o", "o", "--pool", "max"],
])
def test_every_command_line_mistake_is_a_usage_error(cli, args):
    _one_usage_line(cli, args)


TRAIN = ["train", "depth", "--encoder", "e", "--data", "d", "-o", "h.safetensors"]
PRE = ["pretrain", "--data", "d", "-o", "r", "--steps", "4"]


@pytest.mark.parametrize("args", [  # values that crashed (exit 3) or ran nonsense (exit 0) before
    [*PRE, "--lr", "-1"], [*PRE, "--blr", "0"], [*PRE, "--crop-scale-min", "1.5"], [*PRE, "--crop-scale-min", "-1"],
    [*PRE, "--drop-path", "5"], [*PRE, "--warmup-steps", "-3"], [*PRE, "--warmup-steps", "10"],
    ["pretrain", "--data", "d", "-o", "r", "--epochs", "0"], [*PRE, "--mask-ratio", "1"],
    ["distill", "--teacher", "t", "--students", "0x2", "--data", "d", "-o", "r", "--steps", "2"],
    [*TRAIN, "--batch-size", "0"], [*TRAIN, "--crop", "0"], [*TRAIN, "--head-channels", "8,x"],
    [*TRAIN, "--workers", "-1"], [*TRAIN, "--lr", "-1"], [*TRAIN, "--max-depth", "0"],
    [*TRAIN, "--depth-scale", "0"], [*TRAIN, "--eval-limit", "0"], [*TRAIN[:-1], "h.pth"],
    ["train", "pointmap", "--encoder", "e", "--data", "d", "-o", "o", "--dpt-channels", "8,16,0,32"],
])
def test_training_values_out_of_range_are_usage_errors(cli, args):
    _one_usage_line(cli, args)


def _one_usage_line(cli, args):
    code, _, err = cli(args)
    assert code == 2, err
    assert "internal error" not in err and "Traceback" not in err
    if args not in ([], ["train"]):  # a bare `pixio` or `pixio train` shows the help
        assert len(err.strip().splitlines()) == 1, err


def test_outputs_that_cannot_be_written_are_one_line(cli, tiny_encoder_file, tmp_path, monkeypatch):
    """Refused before any work where it can be known (a file in the way, a folder the system will not
    write); a write that fails later (a full disk) is one line naming the output, not its temp file."""
    img = write_rgb(tmp_path / "i.jpg")
    (tmp_path / "file").write_text("in the way")
    for args, expected in (([*ex(tiny_encoder_file), img, "-o", tmp_path / "file" / "o"], "is a file, not a folder"),
                           ([*ex(tiny_encoder_file), img, "-o", "/proc/pixio-test.npz"], "cannot write in /proc"),
                           (["depth", img, "-o", "/proc/d.png"], "cannot write in /proc"),
                           (["curate", img, "-o", tmp_path / "file" / "c"], "is a file, not a folder"),
                           (["curate", img, "-o", tmp_path / "c", "--report", "/proc/r.png"], "cannot write in /proc"),
                           (["recon3d", img, "-o", "/proc/s.ply"], "cannot write in /proc")):
        code, _, err = cli(args)
        assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, (args, err)
    assert not (tmp_path / "c").exists()

    def full_disk(src, dst):
        raise OSError(28, "No space left on device", str(src))

    monkeypatch.setattr(os, "replace", full_disk)
    code, _, err = cli([*ex(tiny_encoder_file), img, "-o", tmp_path / "o"])
    assert code == 1 and len(err.strip().splitlines()) == 1, err  # a failed run, not a usage error
    assert f"{tmp_path / 'o' / '.pixio-run.jsonl'}: No space left on device" in err and ".tmp" not in err, err


def test_outputs_never_become_inputs(cli, depth_head, tmp_path):
    """An output folder inside the input folder is not read back on a rerun; one that holds the inputs,
    and a single output that is the input itself, are refused before any work."""
    src = tmp_path / "imgs"
    write_rgb(src / "a.jpg")
    write_rgb(src / "b.png")
    args = ["depth", src, "--model", depth_head, "-q", "-o"]
    for run in range(2):
        code, _, err = cli([*args, src / "depth"])
        assert code == 0 and (run == 0 or "skipped 2" in err), err
    assert sorted(p.relative_to(src).as_posix() for p in (src / "depth").rglob("*.png")) == ["depth/a.png", "depth/b.png"]
    code, _, err = cli([*args, src])
    assert code == 2 and "beside the input images" in err and len(err.strip().splitlines()) == 1, err
    code, _, err = cli(["depth", tmp_path, "--model", depth_head, "-q", "-o", tmp_path])  # imgs/ beside imgs/depth/
    assert code == 2 and "beside the input images" in err, err
    code, _, err = cli(["depth", src, "--model", depth_head, "-q", "-o", src, "--format", "npy"])  # not pictures:
    assert code == 0 and (src / "a.npy").exists(), err  # nothing the next run would read as an input
    before = (src / "b.png").read_bytes()
    code, _, err = cli(["depth", src / "b.png", "--model", depth_head, "-q", "-o", src / "b.png"])
    assert code == 2 and "is the input itself" in err, err
    assert (src / "b.png").read_bytes() == before


def test_a_picture_beside_a_single_output_never_replaces_an_input(cli, depth_head, seg_head, tmp_path):
    """--vis and --overlay name their picture after -o: where that is the input, the photo would become the
    picture (exit 0 before); refused before any work, the input untouched."""
    photo = write_rgb(tmp_path / "g_vis.png")
    before = photo.read_bytes()
    code, _, err = cli(["depth", photo, "--model", depth_head, "-q", "-o", tmp_path / "g.png", "--vis"])
    assert code == 2 and "--vis" in err and "g_vis.png" in err and "input" in err, err
    other = write_rgb(tmp_path / "h_overlay.png")
    code, _, err = cli(["segment", other, "--model", seg_head, "-q", "-o", tmp_path / "h.png", "--overlay"])
    assert code == 2 and "--overlay" in err and "h_overlay.png" in err, err
    assert photo.read_bytes() == before and not (tmp_path / "g.png").exists() and not (tmp_path / "h.png").exists()


def test_depth_says_what_it_wrote_and_how_to_see_it(cli, depth_head, tmp_path):
    """A 16-bit millimetre PNG looks black in every viewer: the final line says what the file holds and how to
    get a picture (it said only 'predicted 1')."""
    photo = write_rgb(tmp_path / "a.jpg")
    code, _, err = cli(["depth", photo, "--model", depth_head, "-q", "-o", tmp_path / "d.png"])
    assert code == 0 and "millimetres" in err and "--vis" in err and str(tmp_path / "d.png") in err, err
    code, _, err = cli(["depth", photo, "--model", depth_head, "-q", "-o", tmp_path / "e.png", "--vis"])
    assert code == 0 and "nearly black" not in err, err


def test_one_process_commands_refuse_torchrun(cli, tmp_path, monkeypatch):
    """recon3d and evaluate do their whole job in one process: under torchrun every rank would redo it
    and write the same files."""
    img = write_rgb(tmp_path / "i.jpg")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    for args in (["recon3d", img, "-o", tmp_path / "s.ply"], ["evaluate", "knn", "--data", tmp_path],
                 ["evaluate", "depth", "--data", tmp_path]):
        code, _, err = cli(args)
        assert code == 2 and "runs in one process" in err and len(err.strip().splitlines()) == 1, (args, err)
    assert not (tmp_path / "s.ply").exists()


@pytest.mark.parametrize("extra,expected", [
    (["--blocks", "1,1"], "named twice"), (["--blocks", ""], "empty"), (["--precision", "fp16"], "needs a GPU"),
    (["--resize", "100x20"], "4:1"), (["--device", "tpu"], "expected auto"), (["--resize", "100000"], "at most 4096"),
    (["--resize", "20000x16000"], "at most 16384"),
    pytest.param(["--device", "mps"], "not available", marks=pytest.mark.skipif(
        torch.backends.mps.is_available(), reason="this machine has MPS")),
])
def test_contradicting_options_are_refused(cli, tiny_encoder_file, tmp_path, extra, expected):
    img = write_rgb(tmp_path / "i.jpg")
    code, _, err = cli([*ex(tiny_encoder_file), img, "-o", tmp_path / "o", *extra])
    assert code == 2 and expected in err, err
    assert not list((tmp_path / "o").rglob("*.npz")) if (tmp_path / "o").exists() else True


@pytest.mark.parametrize("extra,expected", [
    (["--ply", "--fov", "-5"], "between 0 and 180"), (["--ply", "--fov", "60", "--fx", "500"], "give one"),
    (["--fov", "60"], "only used by --ply"), (["--fx", "300"], "only used by --ply"),
    (["--ply", "--fx", "inf"], "finite number"), (["--ply", "--fx", "nan"], "finite number"),
])
def test_camera_options_must_fit(cli, depth_head, tmp_path, extra, expected):
    img = write_rgb(tmp_path / "i.jpg")
    code, _, err = cli(["depth", img, "-o", tmp_path / "o", "--model", depth_head, "-q", *extra])
    assert code == 2 and expected in err, err


def test_a_head_is_evaluated_only_on_its_own_classes(cli, seg_head, tmp_path):
    root = tmp_path / "seg"
    write_rgb(root / "images" / "a.jpg")
    (root / "labels").mkdir()
    cv2.imwrite(str(root / "labels" / "a.png"), np.ones((48, 64), np.uint8))
    args = ["evaluate", "segment", "--data", root, "--dataset", "generic-segment", "--model", seg_head, "--workers", "0"]
    (root / "classes.txt").write_text("a\nb\nc\n")
    code, _, err = cli(args)
    assert code == 0, err
    (root / "classes.txt").write_text("a\nb\n")  # the 3-class head on a 2-class list: refused, not ignored
    code, _, err = cli(args)
    assert code == 2 and "the head predicts 3 classes, but the dataset has 2" in err, err


def test_a_point_cloud_camera_is_a_setting_of_the_run(cli, depth_head, tmp_path):
    """Depth maps without --ply, then with --fov 60, then --vis alone, then --fov 60 again (all skipped)
    run; --fov 90 is refused, as it would leave the fov-60 clouds in place."""
    src = tmp_path / "in"
    write_rgb(src / "a.jpg")
    args = ["depth", src, "-o", tmp_path / "o", "--model", depth_head, "-q"]
    for extra, skipped in (([], None), (["--ply", "--fov", "60"], None), (["--vis"], None),
                           (["--ply", "--fov", "60"], "skipped 1")):
        code, _, err = cli([*args, *extra])
        assert code == 0 and (skipped is None or skipped in err), (extra, err)
    assert (tmp_path / "o" / "a.ply").exists() and (tmp_path / "o" / "a_vis.png").exists()
    code, _, err = cli([*args, "--ply", "--fov", "90"])
    assert code == 2 and "--ply camera: --fov 60 before, --fov 90 now" in err, err


def test_enlarging_far_past_the_original_warns(cli, tiny_encoder_file, tmp_path, caplog):
    write_rgb(tmp_path / "in" / "small.jpg", 20, 30)
    write_rgb(tmp_path / "in" / "smaller.jpg", 10, 15)
    code, _, err = cli([*ex(tiny_encoder_file)[:-2], tmp_path / "in", "-o", tmp_path / "o", "--resize", "160"])
    assert code == 0
    messages = [r.getMessage() for r in caplog.records]
    assert sum("enlarged" in m and "--resize native" in m for m in messages) == 1  # the first one, in full
    assert "warning: 1 more images were enlarged more than 4x" in messages


def test_missing_paths_follow_one_rule_wherever_they_come_from(cli, tiny_encoder_file, tmp_path):
    good = write_rgb(tmp_path / "in" / "good.jpg")
    for how in ("argv", "stdin"):
        args = [*ex(tiny_encoder_file), "-o", tmp_path / f"o_{how}"]
        if how == "argv":
            code, _, err = cli([*args, good, tmp_path / "typo.jpg"])
        else:
            code, _, err = cli([*args, "-"], stdin=f"{good}\n{tmp_path / 'typo.jpg'}\n")
        assert code == 1 and "failed: " in err and "typo.jpg" in err and "no such file" in err, err
        assert "extracted 1" in err and (tmp_path / f"o_{how}" / "good.npz").exists()


def test_empty_inputs_are_one_error_for_every_command(cli, tiny_encoder_file, tmp_path):
    (tmp_path / "empty").mkdir()
    for args, stdin in (([*ex(tiny_encoder_file), tmp_path / "empty", "-o", tmp_path / "o"], None),
                        ([*ex(tiny_encoder_file), "-", "-o", tmp_path / "o"], ""),
                        (["curate", tmp_path / "empty", "-o", tmp_path / "c", "-q"], None),
                        (["depth", "-", "-o", tmp_path / "d", "-q"], "")):
        code, _, err = cli(args, stdin=stdin)
        assert code == 1 and "no images found" in err, (args, err)


def test_evaluation_without_images_is_an_error_and_defaults_to_the_bundled_head(cli, tmp_path):
    from heads.dense.model import BUNDLED_HEADS
    from pixio_cli.checkpoints import WEIGHTS_DIR

    if not (WEIGHTS_DIR / BUNDLED_HEADS["depth-tiny"]).exists():
        pytest.skip("no bundled depth head")
    code, out, err = cli(["evaluate", "depth", "--data", tmp_path, "--json"])  # no --model: the bundled head
    assert code == 1 and out == ""
    assert str(tmp_path) in err and "7scenes" in err and "val split" in err
    code, out, err = cli(["evaluate", "pointmap", "--data", tmp_path, "-m", "pointmap-tiny", "--json"])  # same case
    assert code == 1 and out == "" and "no val sequences" in err, err


def test_decoding_workers_die_with_a_killed_run(tmp_path):
    for i in range(200):
        write_rgb(tmp_path / "imgs" / f"{i:03d}.jpg", 300, 400, seed=i)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "pixio_cli", "extract", str(tmp_path / "imgs"), "-o",
                             str(tmp_path / "o"), "--workers", "2", "-q", "--batch-size", "2"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children: list[int] = []

    def started() -> bool:
        children[:] = _children(proc.pid)
        return len(children) >= 2

    try:
        wait_until(started, "the decoding workers starting", proc=proc)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    wait_until(lambda: not any(_alive(c) for c in children), "the decoding workers ending with their killed parent",
               timeout=120)


def test_a_failing_data_worker_does_not_hang_the_exit(tmp_path):
    """A worker's error reaches the parent, whose exit stops the other workers with SIGTERM: with
    worker_init they must still end (an ignored SIGTERM hung the exit of every trainer)."""
    script = tmp_path / "fail.py"
    script.write_text(
        "import sys\nfrom torch.utils.data import DataLoader, Dataset\nfrom pixio_cli.engine import worker_init\n"
        "class D(Dataset):\n    def __len__(self): return 1000\n"
        "    def __getitem__(self, i):\n        if i == 5: raise ValueError('bad target')\n        return i\n"
        "try:\n    list(DataLoader(D(), batch_size=2, num_workers=2, worker_init_fn=worker_init))\n"
        "except ValueError:\n    sys.exit(2)  # inside the except block, as cli.main exits\n")
    res = subprocess.run([sys.executable, str(script)], env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60,
                         capture_output=True)
    assert res.returncode == 2, res.stderr[-500:]


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(d.name))
            except (OSError, IndexError, ValueError):
                continue
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


# ------------------------------------------------------------------ help, start-up


def test_help_reads_as_a_user_expects(cli):
    code, out, _ = cli(["--help"])
    assert code == 0 and all(c in out for c in ("train", "evaluate", "recon3d", "extract", "models"))
    assert "..." not in out.split("Commands:")[1]  # every command with its whole line
    code, out, _ = cli(["extract", "--help"])
    assert "<bool>" not in out and "--json " in out.replace("\n", " ") and "[required]" in out
    code, out, _ = cli(["depth", "--help"])
    flat = " ".join(out.split())
    assert "--[no-]tile" in flat and "--output PATH" in flat and "[required]" in flat
    assert "Usage: pixio depth [OPTIONS] INPUT..." in out and "{" not in out.splitlines()[0]
    assert "<" not in flat.replace("<=", "")  # PATH, N, X, a|b: no <path>, <int range>, <str>


def test_recon3d_help_is_grouped_and_fits_a_screen(cli, monkeypatch):
    """`pixio recon3d --help` at 100 columns: options under headings a user looks for, every line of help one
    or two lines, about 60 lines in all; the rarely used tuning listed by name, explained by --help-all."""
    monkeypatch.setenv("COLUMNS", "100")
    code, out, _ = cli(["recon3d", "--help"])
    lines = out.rstrip().splitlines()
    assert code == 0 and len(lines) <= 62, f"{len(lines)} lines"
    heads = [line.rstrip(":") for line in lines if line and not line.startswith(" ") and line.endswith(":")]
    assert heads == ["Arguments", "Inputs", "Cameras", "Depth", "Fusion and mesh", "Outputs", "Performance",
                     "Help", "Advanced (--help-all explains them)"], heads
    assert "Advanced (--help-all explains them):" in out and "--edge-rtol," in out and "--[no-]fusion" in out
    assert "Drop pixels on depth edges" not in out and max(len(line) for line in lines) <= 100
    code, full, _ = cli(["recon3d", "--help-all"])
    assert code == 0 and "Drop pixels on depth edges" in " ".join(full.split()) and "--edge-rtol X" in full


@pytest.mark.parametrize("command", [["extract"], ["depth"], ["segment"], ["curate"], ["pretrain"], ["train", "depth"]])
def test_every_commands_help_groups_its_options_the_same_way(cli, monkeypatch, command):
    """The options every command shares sit under the same headings everywhere (the device and precision under
    Performance, --json under Outputs), the command's own first, Help last; about a screen at 100 columns."""
    monkeypatch.setenv("COLUMNS", "100")
    code, out, _ = cli([*command, "--help"])
    lines = out.rstrip().splitlines()
    assert code == 0 and len(lines) <= 64 and max(len(line) for line in lines) <= 100, (command, len(lines))
    heads = [line.rstrip(":") for line in lines if line and not line.startswith(" ") and line.endswith(":")]
    assert heads[-1] == "Help" and "Performance" in heads, heads
    assert heads[:2] in (["Arguments", "Options"], ["Options", "Inputs"], ["Options", "Outputs"], ["Options", "Model"]), heads
    under = {h: out.split(f"\n{h}:\n")[1].split("\n\n")[0] for h in heads if h != "Arguments"}
    assert "--device" in under["Performance"] and "--device" not in under["Options"], under
    assert "--help" in under["Help"]


def test_the_command_line_starts_without_torch():
    code = ("import sys, pixio_cli.cli; "
            "heavy = [m for m in ('torch', 'timm', 'cv2', 'open3d', 'huggingface_hub', 'transformers', 'viser') "
            "if m in sys.modules]; assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)


# ------------------------------------------------------------------ the zoo


def test_zoo_every_image_command_on_good_corrupt_and_odd_images(cli, tiny_encoder_file, depth_head, seg_head, tmp_path):
    """One folder of good, corrupt and odd images through every image command: outputs, messages, exit codes."""
    from pixio_cli.checkpoints import save_safetensors
    from pixio_cli.encoder import EncoderConfig
    from pretrain.mae import MAEConfig, PixioMAE

    zoo = tmp_path / "zoo"
    write_rgb(zoo / "good.jpg", 60, 80, seed=1)
    write_rgb(zoo / "sub" / "good2.png", 50, 50, seed=2)
    cv2.imwrite(str(zoo / "gray.png"), np.full((30, 40), 90, np.uint8))
    cv2.imwrite(str(zoo / "rgba.png"), np.full((24, 36, 4), 128, np.uint8))
    cv2.imwrite(str(zoo / "deep.tif"), np.full((20, 30, 3), 40000, np.uint16))
    cv2.imwrite(str(zoo / "dot.png"), np.zeros((1, 1, 3), np.uint8))
    (zoo / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    (zoo / "empty.png").write_bytes(b"")
    (zoo / "notes.txt").write_text("not an image, not picked up")
    good = 6
    torch.manual_seed(0)
    mae_cfg = MAEConfig(EncoderConfig(32, 2, 2, img_size=64), decoder_dim=16, decoder_depth=1, decoder_heads=2,
                        mask_grid=2)
    mae_file = tmp_path / "mae.safetensors"
    save_safetensors(PixioMAE(mae_cfg).state_dict(), mae_file,
                     {"mae_config": mae_cfg.to_dict(), "encoder_config": mae_cfg.encoder.to_dict()})
    runs = {
        "extract": (["extract", zoo, "-o", tmp_path / "x", "--model", tiny_encoder_file], "*.npz", "extracted"),
        "depth": (["depth", zoo, "-o", tmp_path / "d", "--model", depth_head, "--vis"], "*.png", "predicted"),
        "segment": (["segment", zoo, "-o", tmp_path / "s", "--model", seg_head], "*.png", "segmented"),
        "curate": (["curate", zoo, "-o", tmp_path / "c", "--model", mae_file, "--resolution", "64"], None, "curated"),
    }
    for name, (args, pattern, verb) in runs.items():
        code, _, err = cli([*args, "-q", "--workers", "0", "--precision", "fp32"])
        assert code == 1, (name, err)  # two inputs failed
        assert "Traceback" not in err and "internal error" not in err
        failed = [line for line in err.splitlines() if line.startswith("failed: ")]
        assert len(failed) == 2 and any("corrupt.jpg" in f for f in failed) and any("empty.png" in f for f in failed)
        assert verb in err
        if pattern is not None:
            written = [p for p in (tmp_path / args[3].name).rglob(pattern) if not p.name.endswith("_vis.png")]
            assert len(written) == good, (name, sorted(p.name for p in written))
        else:
            rows = (tmp_path / "c" / "manifest.jsonl").read_text().splitlines()
            assert len(rows) == good + 2 and sum("error" in json.loads(r) for r in rows) == 2
        code, _, err = cli([*args, "-q", "--workers", "0", "--precision", "fp32"])
        assert code == 1 and "failed: " in err  # a rerun redoes nothing that worked and still names the failures
        if verb != "curated":
            assert f"skipped {good}" in err
    assert not list(tmp_path.rglob("*.tmp"))


# ------------------------------------------------------------------ side outputs never touch inputs


@pytest.fixture(scope="module")
def pointmap_file(tmp_path_factory) -> Path:
    from heads.pointmap.checkpoint import save_pointmap

    from .test_pointmap import small_model

    path = tmp_path_factory.mktemp("pm") / "pm.safetensors"
    save_pointmap(small_model(), path, {"how": "random, for tests"})
    return path


def r3(model: Path) -> list:
    return ["recon3d", "--model", model, "--no-sfm", "--no-mask", "--resize", "32", "-q", "--workers", "0",
            "--precision", "fp32"]


def frames(folder: Path, n: int = 3) -> list[Path]:
    return [write_rgb(folder / f"f{i:02d}.png", 48, 64, seed=i) for i in range(n)]


def test_recon3d_side_outputs_never_replace_or_join_the_inputs(cli, pointmap_file, tmp_path):
    d = tmp_path / "d"
    f = frames(d)
    before = f[1].read_bytes()
    code, _, err = cli([*r3(pointmap_file), *f, "-o", tmp_path / "o" / "x.ply", "--preview", f[1]])
    assert code == 2 and "is one of the inputs" in err and len(err.strip().splitlines()) == 1, err
    assert f[1].read_bytes() == before and not (tmp_path / "o").exists()
    code, _, err = cli([*r3(pointmap_file), d, "-o", tmp_path / "o" / "x.ply", "--preview", d / "p.png"])
    assert code == 2 and "inside the input folder" in err and not (d / "p.png").exists(), err
    for _ in range(2):  # its own -o folder inside the input folder: the second run still has 3 views
        code, out, err = cli([*r3(pointmap_file), d, "-o", d / "out", "--preview", d / "out" / "preview.png",
                              "--json"])
        assert code == 0, err
        assert json.loads(out.strip().splitlines()[-1])["frames"] == 3


def test_recon3d_refuses_outputs_in_the_way_before_any_work(cli, pointmap_file, tmp_path):
    f = frames(tmp_path / "d")
    (tmp_path / "x.ply").mkdir()
    code, _, err = cli([*r3(pointmap_file), *f, "-o", tmp_path / "x.ply"])
    assert code == 2 and "is a folder" in err, err
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "sparse").write_text("a file")
    code, _, err = cli([*r3(pointmap_file), *f, "-o", tmp_path / "o" / "s.ply", "--cameras", "colmap"])
    assert code == 2 and "in the way" in err and not (tmp_path / "o" / "s.ply").exists(), err


def test_extract_pca_pictures_never_replace_or_join_the_inputs(cli, tiny_encoder_file, tmp_path):
    d = tmp_path / "d"
    f = frames(d, 2)
    before = f[0].read_bytes()
    for args, says in (([f[0], "--pca", f[0]], "is one of the inputs"),
                       ([d, "--pca", d], "inside the input folder"),
                       ([d, "-o", d, "--pca"], "inside the input folder"),
                       ([f[0], "--pca", d / "f00_pca.png"], "beside the input images")):
        code, _, err = cli([*ex(tiny_encoder_file), *args])
        assert code == 2 and says in err and len(err.strip().splitlines()) == 1, (args, err)
    assert f[0].read_bytes() == before and sorted(p.name for p in d.iterdir()) == ["f00.png", "f01.png"]
    code, _, err = cli([*ex(tiny_encoder_file), d, "-o", d / "feats", "--pca"])  # its own folder: fine
    assert code == 0, err


def test_per_input_intrinsics_stay_with_their_input_when_one_is_missing(cli, pointmap_file, tmp_path):
    from heads.pointmap.predictions import Predictions

    f = frames(tmp_path / "d")
    K = np.array([[60.0, 0, 31.5], [0, 60, 23.5], [0, 0, 1]])
    Ks = [(K * [[s], [s], [1]]).tolist() for s in (1, 2, 3, 4)]
    (tmp_path / "K4.json").write_text(json.dumps(Ks))
    code, _, err = cli([*r3(pointmap_file), f[0], tmp_path / "missing.png", f[1], f[2], "-o", tmp_path / "s.ply",
                        "--intrinsics", tmp_path / "K4.json", "--save-predictions", tmp_path / "p.npz"])
    assert code == 1 and "missing.png" in err, err
    assert np.allclose(Predictions.load(tmp_path / "p.npz").K_original, np.array(Ks)[[0, 2, 3]])


# ------------------------------------------------------------------ a full disk


SMOKE = ["--size", "t16", "--img-size", "32", "--decoder-depth", "1", "--decoder-dim", "16", "--decoder-heads", "2",
         "--mask-grid", "1", "--batch-size", "4", "--log-every", "1", "--recon-every", "0", "--lr", "1e-3",
         "--workers", "0"]


def _photos(folder: Path, n: int = 6) -> Path:
    for i in range(n):
        write_rgb(folder / f"{i:02d}.jpg", 40, 48, seed=i)
    return folder


def test_a_failed_export_is_one_line_and_resume_writes_it(cli, tmp_path, monkeypatch):
    import safetensors.torch

    class SafetensorError(Exception):  # what safetensors raises on a full disk
        pass

    def full(*args, **kwargs):
        raise SafetensorError("No space left on device (os error 28)")

    data, out = _photos(tmp_path / "photos"), tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(safetensors.torch, "save_file", full)
        code, _, err = cli(["pretrain", *SMOKE, "--steps", "2", "--data", data, "-o", out])
    assert code == 1 and "mae.safetensors" in err and len(err.strip().splitlines()) == 1, err
    assert not (out / "mae.safetensors").exists() and not list(out.glob(".*tmp*"))
    code, _, err = cli(["pretrain", "--resume", out])
    assert code == 0 and "wrote its missing mae.safetensors" in err, err
    assert (out / "mae.safetensors").exists()


def test_a_checkpoint_that_cannot_be_saved_is_one_line_naming_it(cli, tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    data = _photos(tmp_path / "photos")
    monkeypatch.setattr(torch, "save", full)
    code, _, err = cli(["pretrain", *SMOKE, "--steps", "2", "--data", data, "-o", tmp_path / "run"])
    assert code == 1 and "checkpoint.pt" in err and "internal error" not in err, err
    assert len(err.strip().splitlines()) == 1


def test_point_clouds_and_meshes_are_checked_before_they_take_their_name(tmp_path, monkeypatch):
    o3d = pytest.importorskip("open3d")
    from heads import writers3d as G

    real = o3d.io.write_point_cloud

    def truncated(path, cloud, **kwargs):  # what Open3D does on a full disk: half a file, and True
        real(path, cloud, **kwargs)
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[: len(data) // 2])
        return True

    pts = np.random.default_rng(0).random((1000, 3))
    G.write_ply(tmp_path / "good.ply", pts, np.zeros((1000, 3), np.uint8))
    assert len(o3d.io.read_point_cloud(str(tmp_path / "good.ply")).points) == 1000
    monkeypatch.setattr(o3d.io, "write_point_cloud", truncated)
    with pytest.raises(OSError, match="not whole"):
        G.write_ply(tmp_path / "good.ply", pts[:10], np.zeros((10, 3), np.uint8))
    assert len(o3d.io.read_point_cloud(str(tmp_path / "good.ply")).points) == 1000  # the previous one stays
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.ply"]


def test_masking_that_hides_every_patch_is_refused(cli, tmp_path):
    data = _photos(tmp_path / "photos")
    i = SMOKE.index("--mask-grid")
    args = SMOKE[:i] + SMOKE[i + 2:]  # the default --mask-grid 4
    args[args.index("--img-size") + 1] = "64"  # a 4x4 patch grid: one block
    code, _, err = cli(["pretrain", *args, "--steps", "1", "--data", data, "-o", tmp_path / "run"])
    assert code == 2 and "leaves no patch visible" in err and not (tmp_path / "run").exists(), err


# ------------------------------------------------------------------ no stale result survives a change


def test_a_model_folder_is_identified_by_every_file_in_it(tmp_path):
    from pixio_cli.resume import model_identity

    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"a" * 10)
    before = model_identity(str(folder))
    (folder / "pytorch_model.bin").write_bytes(b"b" * 11)
    assert model_identity(str(folder)) != before


def test_a_retrained_model_file_is_not_taken_for_the_one_the_outputs_came_from(cli, tiny_encoder_file, tmp_path):
    """An encoder.pth retrained in place keeps its path: a rerun must not reuse the features of the old weights.
    The model's identity holds its file's size and time, so the rerun sees other settings and says so."""
    import shutil

    from pixio_cli.resume import model_identity

    model = tmp_path / "encoder.safetensors"
    shutil.copy(tiny_encoder_file, model)
    img = write_rgb(tmp_path / "in" / "a.jpg")
    before = model_identity(str(model))
    code, _, err = cli([*ex(model), img, "-o", tmp_path / "out"])
    assert code == 0, err
    os.utime(model, ns=(model.stat().st_atime_ns, model.stat().st_mtime_ns + 10 ** 9))  # written again
    assert model_identity(str(model)) != before
    code, _, err = cli([*ex(model), img, "-o", tmp_path / "out"])
    assert code == 2 and "--model" in err and "other settings" in err, err
    with open(model, "ab") as f:  # another size, the same time: still another model
        f.write(b"\0")
    appended = model_identity(str(model))
    os.utime(model, ns=(model.stat().st_atime_ns, model.stat().st_mtime_ns - 10 ** 9))  # back to the time before
    assert model_identity(str(model)) not in (before, appended)


def test_recon3d_resume_redoes_a_chunk_whose_input_was_edited(cli, pointmap_file, tmp_path, monkeypatch):
    import heads.recon.pipeline
    from heads.pointmap.predictions import Predictions

    f = frames(tmp_path / "d", 4)
    args = [*r3(pointmap_file), *f, "-o", tmp_path / "s.ply", "--chunk", "3", "--overlap", "1"]
    real, calls = heads.recon.pipeline.predict, []  # the model's pass on a chunk, as the pipeline calls it

    def killed_after_the_first_chunk(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    with monkeypatch.context() as m:
        m.setattr(heads.recon.pipeline, "predict", killed_after_the_first_chunk)
        code, _, _ = cli([*args, "--save-predictions", tmp_path / "p.npz"])
    assert code == 130 and (tmp_path / "p.npz.parts" / "chunk-0000.npz").exists()
    write_rgb(f[0], 48, 64, seed=99)  # edited in place before the rerun
    code, _, err = cli([*args, "--save-predictions", tmp_path / "p.npz"])
    assert code == 0, err
    code, _, err = cli([*args, "--save-predictions", tmp_path / "fresh.npz"])
    assert code == 0, err
    assert np.allclose(Predictions.load(tmp_path / "p.npz").pts3d, Predictions.load(tmp_path / "fresh.npz").pts3d)


def test_intrinsics_that_are_not_finite_numbers_are_refused(cli, pointmap_file, tmp_path):
    f = frames(tmp_path / "d", 2)
    for value in ("Infinity", "NaN"):
        (tmp_path / "K.json").write_text(f"[[{value}, 0, 31.5], [0, 60, 23.5], [0, 0, 1]]")
        code, _, err = cli([*r3(pointmap_file), *f, "-o", tmp_path / "s.ply", "--intrinsics", tmp_path / "K.json"])
        assert code == 2 and "not a finite number" in err and not (tmp_path / "s.ply").exists(), (value, err)


def test_extract_with_only_pca_says_it_kept_no_features(cli, tiny_encoder_file, tmp_path):
    f = frames(tmp_path / "d", 1)
    code, out, err = cli([*ex(tiny_encoder_file), f[0], "--pca", tmp_path / "p.png", "--json"])
    assert code == 0 and (tmp_path / "p.png").exists(), err
    assert "extracted" not in err and "drew PCA pictures for 1" in err and "no features are kept" in err
    assert "shapes" not in json.loads(out.strip().splitlines()[-1])


# ------------------------------------------------------------------ multi-view data: one line naming the file


def _rgbd(root: Path, n: int = 4) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "depth").mkdir()
    (root / "poses").mkdir()
    for i in range(n):
        write_rgb(root / "images" / f"{i:03d}.png", 48, 64, seed=i)
        cv2.imwrite(str(root / "depth" / f"{i:03d}.png"), np.full((48, 64), 1500 + 10 * i, np.uint16))
        T = np.eye(4)
        T[0, 3] = 0.1 * i
        np.savetxt(root / "poses" / f"{i:03d}.txt", T)
    np.savetxt(root / "K.txt", [[60.0, 0, 31.5], [0, 60, 23.5], [0, 0, 1]])
    return root


@pytest.mark.parametrize("damage, says", [
    (lambda r: np.savetxt(r / "poses" / "001.txt", np.eye(4)[:3]), "001.txt: 12 numbers"),
    (lambda r: (r / "K.txt").write_text("60 60 31.5 23.5\n"), "K.txt: 4 numbers"),
    (lambda r: np.savetxt(r / "poses" / "002.txt", np.full((4, 4), np.nan)), "002.txt: a 4x4 camera-to-world pose holds"),
    (lambda r: cv2.imwrite(str(r / "depth" / "000.png"), np.zeros((48, 64), np.uint16)), "000.png: no pixel has a depth"),
])
def test_damaged_multiview_data_is_one_line_naming_the_file(cli, pointmap_file, tmp_path, damage, says):
    root = _rgbd(tmp_path / "data")
    damage(root)
    code, _, err = cli(["evaluate", "pointmap", "--data", root, "--dataset", "generic-rgbd", "--depth-scale", "1000",
                        "--model", pointmap_file, "--views", "2", "--gap", "1", "--resize", "32"])
    assert code in (1, 2) and says in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("scale", ["0", "-1000"])
def test_a_depth_scale_that_is_not_positive_is_refused(cli, pointmap_file, tmp_path, scale):
    root = _rgbd(tmp_path / "data")
    code, _, err = cli(["evaluate", "pointmap", "--data", root, "--dataset", "generic-rgbd", "--depth-scale", scale,
                        "--model", pointmap_file, "--views", "2", "--gap", "1", "--resize", "32"])
    assert code == 2 and "expected a positive number" in err, err


@pytest.mark.parametrize("args", [["recon3d", "x.jpg", "-o", "o.ply", "--voxel", "nan"],
                                  ["recon3d", "x.jpg", "-o", "o.ply", "--conf-percentile=nan"],
                                  ["recon3d", "x.jpg", "-o", "o.ply", "--voxel", "1e400"],  # inf once parsed
                                  ["recon3d", "x.jpg", "-o", "o.ply", "--conf-min=-1e400"],
                                  ["depth", "x.jpg", "-o", "d.png", "--fov", "inf"],
                                  ["pretrain", "--data", "d", "-o", "r", "--lr", "-inf"]])
def test_a_number_option_that_is_not_finite_is_a_usage_error(cli, args):
    code, _, err = cli(args)
    assert code == 2 and "expected a finite number" in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("seed", ["-1", "99999999999999999999"])
def test_a_seed_out_of_range_is_a_usage_error(cli, seed):
    """pycolmap takes a 32-bit seed: past it the run ended in a TypeError (exit 3)."""
    code, _, err = cli(["recon3d", "x.jpg", "-o", "o.ply", "--seed", seed])
    assert code == 2 and "--seed" in err and len(err.strip().splitlines()) <= 2, err


def test_a_huge_batch_size_bounds_memory_not_the_decoding_queue(tmp_path):
    """-b 100000000 on one image never finished (the loader queued 4 x batch requests per worker first)."""
    import subprocess
    import sys
    import time

    photo = write_rgb(tmp_path / "a.jpg")
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "pixio_cli", "extract", str(photo), "-o", str(tmp_path / "f"),
                          "-b", "100000000", "--workers", "1", "-q", "--resize", "32"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "extracted 1" in out.stderr, out.stderr
    assert time.perf_counter() - start < 60


@pytest.mark.parametrize("command", ["depth", "extract"])
def test_one_image_imports_only_what_its_path_uses(tmp_path, command):
    """`pixio depth one.jpg` and `pixio extract one.jpg` are called once per file in shell pipelines, where
    start-up is most of the run: their import graph holds no torchvision (timm imported it: 1-2 s), and none of
    what other commands need (Open3D, pycolmap, the viewer, transformers)."""
    img = write_rgb(tmp_path / "a.jpg", 64, 80)
    listing = tmp_path / "modules.txt"
    out = tmp_path / ("d.png" if command == "depth" else "f")
    code = ("import atexit, sys\n"
            f"atexit.register(lambda: open({str(listing)!r}, 'w').write('\\n'.join(sorted(sys.modules))))\n"
            "from pixio_cli.cli import main\n"
            f"main([{command!r}, {str(img)!r}, '-o', {str(out)!r}, '-q', '--workers', '0'])\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    loaded = set(listing.read_text().split())
    assert "torch" in loaded  # the run did run
    heavy = sorted(m for m in loaded if m.split(".")[0] in ("torchvision", "timm", "open3d", "pycolmap", "viser",
                                                             "transformers", "sympy", "scipy", "matplotlib"))
    assert not heavy, heavy[:10]
