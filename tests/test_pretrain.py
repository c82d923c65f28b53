"""Pretraining: masking, loss, checkpoint layout and export, data stream, curation rules, resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pixio_cli.checkpoints import load_encoder
from pixio_cli.encoder import EncoderConfig, PixioEncoder
from pixio_cli.images import decode_image
from pretrain.data import CurationRules, PretrainStream, Sources, random_resized_crop
from pretrain.mae import MAEConfig, PixioMAE, load_mae, patchify, unpatchify

from .conftest import write_rgb, write_tar

ENC = EncoderConfig(32, 2, 2, img_size=64)
CFG = MAEConfig(ENC, decoder_dim=16, decoder_depth=1, decoder_heads=2, mask_grid=2)
SMOKE = ["--size", "t16", "--img-size", "32", "--decoder-depth", "1", "--decoder-dim", "16", "--decoder-heads", "2",
         "--mask-grid", "1", "--batch-size", "4", "--log-every", "1", "--recon-every", "0", "--lr", "1e-3"]


def test_masking_keeps_whole_blocks_deterministically():
    torch.manual_seed(0)
    mae = PixioMAE(CFG)
    grid = (4, 6)  # 2x3 blocks of 2x2 patches
    noise = mae.block_noise(3, grid, generator=torch.Generator().manual_seed(1))
    keep, restore, mask = mae.masking(noise, grid)
    n_keep = int(6 * 0.25)
    assert keep.shape == (3, n_keep * 4) and mask.shape == (3, 24)
    assert (mask.sum(1) == 24 - n_keep * 4).all()
    for b in range(3):
        m = mask[b].reshape(4, 6)
        blocks = m.reshape(2, 2, 3, 2).permute(0, 2, 1, 3).reshape(6, 4)
        assert ((blocks.sum(1) == 0) | (blocks.sum(1) == 4)).all()  # every 2x2 block all kept or all masked
        assert set(keep[b].tolist()) == set(torch.nonzero(m.flatten() == 0).flatten().tolist())
    again = mae.masking(mae.block_noise(3, grid, generator=torch.Generator().manual_seed(1)), grid)[2]
    other = mae.masking(mae.block_noise(3, grid, generator=torch.Generator().manual_seed(2)), grid)[2]
    assert torch.equal(mask, again) and not torch.equal(mask, other)


def test_loss_counts_masked_patches_only():
    torch.manual_seed(0)
    mae = PixioMAE(CFG).eval()
    x = torch.randn(2, 3, 64, 64)
    noise = mae.block_noise(2, (4, 4), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = mae(x, noise)
        errors = mae.patch_errors(x, out.pred)
    manual = (errors * out.mask).sum(1) / out.mask.sum(1)
    assert torch.allclose(out.loss_per_image, manual)
    assert torch.allclose(out.loss, (errors * out.mask).sum() / out.mask.sum())
    # a perfect prediction on the visible patches changes nothing; on masked ones it does
    target = mae.target(x)
    visible = out.mask.unsqueeze(-1) == 0
    better_visible = torch.where(visible, target, out.pred)
    assert torch.allclose(((mae.patch_errors(x, better_visible) * out.mask).sum() / out.mask.sum()), out.loss)
    better_masked = torch.where(~visible, target, out.pred)
    assert (mae.patch_errors(x, better_masked) * out.mask).sum() < 1e-6
    t = target.reshape(-1, target.shape[-1])
    assert torch.allclose(t.mean(-1), torch.zeros(len(t)), atol=1e-5)  # per-patch normalised target


def test_patchify_roundtrip():
    x = torch.randn(2, 3, 32, 48)
    p = patchify(x, 16)
    assert p.shape == (2, 6, 768)
    assert torch.equal(unpatchify(p, 16, (2, 3)), x)


def test_checkpoint_keys_are_official():
    sd = PixioMAE(MAEConfig(EncoderConfig(32, 2, 2), decoder_dim=16, decoder_depth=2, decoder_heads=2)).state_dict()
    assert sd["mask_token"].shape == (1, 1, 16)
    assert sd["decoder_pos_embed"].shape == (1, 8 + 256, 16)
    assert sd["decoder_pred.weight"].shape == (16 * 16 * 3, 16)
    assert {"decoder_embed.weight", "decoder_norm.bias", "decoder_blocks.1.attn.qkv.weight", "cls_token"} <= set(sd)


def test_random_resized_crop_size_and_determinism():
    img = np.random.default_rng(0).integers(0, 255, (90, 200, 3), dtype=np.uint8)
    a = random_resized_crop(img, 32, np.random.default_rng(5))
    b = random_resized_crop(img, 32, np.random.default_rng(5))
    assert a.shape == (32, 32, 3) and np.array_equal(a, b)


@pytest.mark.parametrize("h,w,out", [(375, 500, 256), (375, 500, 64), (1200, 1600, 64), (3000, 4000, 256),
                                     (500, 5000, 128), (2000, 300, 64), (1250, 1250, 64)])  # last: near a step
def test_reduced_decode_leaves_every_crop_at_least_the_output_size(h, w, out, monkeypatch):
    from pretrain.data import crop_decode_factor

    f = crop_decode_factor((h, w), out)
    if (h, w) == (3000, 4000):
        assert f == 4  # a 12 MP photo headed for 256 px is decoded at a quarter
    if (h, w, out) == (375, 500, 256):
        assert f == 1  # an ImageNet-sized one headed for 256 px in full
    reduced = np.zeros((-(-h // f), -(-w // f), 3), np.uint8)  # libjpeg rounds scaled sizes up
    crops = []  # the size of each crop handed to the resize (which is not run)
    monkeypatch.setattr("pretrain.data.cv2.resize", lambda img, *a, **k: crops.append(img.shape[:2]))
    for seed in range(3000):
        random_resized_crop(reduced, out, np.random.default_rng(seed))
    if f > 1:  # a reduced decode never leaves a crop to enlarge that the full decode would have shrunk
        assert min(min(c) for c in crops) >= out


def test_stream_decodes_large_jpegs_reduced(tmp_path, monkeypatch):
    write_rgb(tmp_path / "big.jpg", 1200, 1600)
    write_rgb(tmp_path / "small.jpg", 40, 50, seed=1)
    seen = {}
    real = decode_image

    def spy(buf, name="<bytes>", reduce=1):
        seen[Path(name).name] = reduce
        return real(buf, name, reduce)

    monkeypatch.setattr("pretrain.data.decode_image", spy)
    samples = []
    for s in PretrainStream(Sources.find([str(tmp_path)]), 64, seed=0):
        samples.append(s)
        if len(samples) == 2:
            break
    assert seen == {"big.jpg": 8, "small.jpg": 1}
    assert all(s.image.shape == (64, 64, 3) for s in samples)


def _jpeg(seed: int, h: int = 40, w: int = 40) -> bytes:
    img = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", img)[1].tobytes()


def _rec(hs: float = 6.0, h: int = 400, w: int = 400, mae: float = 1.0) -> dict:
    return {"histogram_score": hs, "height": h, "width": w, "mae_loss": mae}


# Decisions worked out by hand from the official webdataset loader's rules (facebookresearch/pixio,
# pretraining/datasets/webdataset.py): drop if histogram_score <= the threshold, if height or width is
# below the size, or (soft sampling) if u > mae_loss; a threshold of 0 turns its filter off; a member
# missing from the JSON is dropped. Ours adds: a record with "error" is dropped.
HAND_WORKED = [  # (rules, record, u, kept)
    (CurationRules(4.5, 320, True), _rec(hs=4.5), 0.0, False),  # equal to the threshold: dropped
    (CurationRules(4.5, 320, True), _rec(hs=4.5001), 0.0, True),
    (CurationRules(4.5, 320, True), _rec(h=319, w=1000), 0.0, False),
    (CurationRules(4.5, 320, True), _rec(h=1000, w=319), 0.0, False),
    (CurationRules(4.5, 320, True), _rec(h=320, w=320), 0.0, True),  # equal to the size: kept
    (CurationRules(4.5, 320, True), _rec(mae=0.3), 0.2, True),
    (CurationRules(4.5, 320, True), _rec(mae=0.3), 0.3, True),  # u equal to the loss: kept
    (CurationRules(4.5, 320, True), _rec(mae=0.3), 0.31, False),
    (CurationRules(4.5, 320, True), _rec(mae=0.0), 0.0, True),
    (CurationRules(4.5, 320, True), _rec(mae=0.0), 0.01, False),
    (CurationRules(4.5, 320, False), _rec(mae=0.0), 0.99, True),  # no soft sampling: the loss is not read
    (CurationRules(0.0, 0, False), _rec(hs=-1.0, h=1, w=1), 0.5, True),  # 0 turns a filter off
    (CurationRules(4.5, 320, True), None, 0.0, False),  # not in the JSON
    (CurationRules(), {"error": "corrupt", **_rec()}, 0.0, False),  # ours: a failed statistic
]


@pytest.mark.parametrize("rules, rec, u, kept", HAND_WORKED)
def test_curation_rules_decide_as_the_official_loader(rules, rec, u, kept):
    assert rules.keep(rec, u) == kept


def test_shard_stream_applies_curation_json(tmp_path):
    shard = write_tar(tmp_path / "data" / "part0" / "00000.tar", {
        "a.jpeg": _jpeg(1), "b.jpeg": _jpeg(2), "c.jpeg": _jpeg(3), "d.jpeg": _jpeg(4), "e.jpeg": b"corrupt",
        "notes.txt": b"hi"})
    good = {"histogram_score": 6.0, "height": 400, "width": 400, "mae_loss": 1.0}
    stats = {"a.jpeg": good, "b.jpeg": {**good, "histogram_score": 4.5}, "c.jpeg": {**good, "width": 100},
             "e.jpeg": {**good}}  # d.jpeg is not in the JSON: skipped, as the official loader does
    (tmp_path / "cur" / "part0").mkdir(parents=True)
    (tmp_path / "cur" / "part0" / "00000.json").write_text(json.dumps(stats))
    stream = PretrainStream(Sources.find([str(tmp_path / "data")]), 16, seed=0, curation=tmp_path / "cur",
                            rules=CurationRules(4.5, 320, False))
    got = []
    for s in stream:
        got.append(s)
        if len(got) == 3:
            break
    assert [s.epoch for s in got] == [0, 1, 2]  # only a.jpeg passes, once per epoch
    assert got[-1].failed == 2  # e.jpeg passes the rules but cannot be decoded, every epoch
    # without curation every readable image member is used (d.jpeg too), .txt members are not
    stream2 = PretrainStream(Sources.find([str(shard)]), 16, seed=0)
    seen = []
    for s in stream2:
        seen.append(s)
        if s.epoch > 0:
            break
    assert len(seen) == 5 and seen[-1].failed == 1


def test_folder_stream_skips_corrupt_and_is_deterministic(tmp_path):
    for i in range(5):
        write_rgb(tmp_path / f"{i}.jpg", 40, 50, seed=i)
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 nope")

    def take(n, start=None):
        out = []
        for s in PretrainStream(Sources.find([str(tmp_path)]), 16, seed=3, start=start):
            out.append(s)
            if len(out) == n:
                return out

    a = take(8)
    assert max(s.failed for s in a) == 1
    b = take(8)
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b))
    # resuming after the 3rd sample continues with the 4th
    c = take(5, start={0: (a[2].epoch, a[2].position)})
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a[3:], c))


def test_broken_shard_before_the_resume_point_is_not_counted_again(tmp_path):
    import cv2

    for i in range(3):
        write_tar(tmp_path / f"s{i}.tar", {
            f"{i}_{j}.jpg": cv2.imencode(".jpg", np.full((40, 48, 3), 40 * i + j, np.uint8))[1].tobytes()
            for j in range(2)})
    (tmp_path / "s9.tar").write_bytes(b"not a tar" * 100)

    def epoch0(start=None):
        out = []
        for s in PretrainStream(Sources.find([str(tmp_path)]), 16, seed=2, start=start):
            if s.epoch > 0:
                return out
            out.append(s)

    full = epoch0()
    assert [s.failed for s in full] == [1] * 6  # with seed 2 the broken shard comes first
    resumed = epoch0(start={0: (0, 3)})
    assert [s.position for s in resumed] == [4, 5, 6]
    assert [s.failed for s in resumed] == [0, 0, 0]  # the trainer adds the 1 counted before the resume

def _photos(root: Path, n: int = 12) -> Path:
    for i in range(n):
        write_rgb(root / f"{i:02d}.jpg", 40 + i, 48, seed=i)
    return root


def test_smoke_run_exports_official_encoder(cli, tmp_path):
    data = _photos(tmp_path / "photos")
    out = tmp_path / "run"
    code, _, err = cli(["pretrain", *SMOKE, "--steps", "3", "--data", data, "-o", out, "--workers", "0",
                        "--recon-every", "3"])
    assert code == 0, err
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3]
    assert all(np.isfinite(r["loss"]) and r["images_per_s"] > 0 for r in lines)
    assert (out / "recon" / "step_0000003.png").exists()
    sd = torch.load(out / "encoder.pth", weights_only=True)
    cfg = EncoderConfig(192, 12, 3, img_size=32)
    PixioEncoder(cfg).load_state_dict(sd, strict=True)  # the official layout, nothing more
    assert load_encoder(out / "encoder.pth").cfg.embed_dim == 192
    mae = load_mae(out)
    assert mae.mae_cfg.decoder_depth == 1
    code, _, err = cli(["extract", "-q", "--workers", "0", "--model", out / "encoder.pth", "--resize", "32",
                        data / "00.jpg", "-o", tmp_path / "f"])
    assert code == 0, err
    code, _, err = cli(["pretrain", *SMOKE, "--steps", "3", "--data", data, "-o", out])
    assert code == 2 and "--resume" in err


def test_resume_continues_exactly(cli, tmp_path, monkeypatch):
    """Ctrl-C between steps, inside a forward and inside the optimizer update: each resumed run ends with
    the losses, failure counts and weights of an uninterrupted one."""
    import signal

    import pretrain.train as train

    data = _photos(tmp_path / "photos")
    (Path(data) / "corrupt.jpg").write_bytes(b"\xff\xd8 nope")  # skipped, and counted across the resume too
    args = ["pretrain", *SMOKE, "--steps", "8", "--data", data, "--workers", "2", "--save-every", "100"]
    code, _, err = cli([*args, "-o", tmp_path / "full"])
    assert code == 0, err

    def on_call(m: pytest.MonkeyPatch, owner, name: str, n: int, stop) -> None:
        """Patch ``owner.name`` so that its n-th call runs and then calls ``stop``."""
        real, calls = getattr(owner, name), []

        def wrapper(*a, **k):
            out = real(*a, **k)
            calls.append(1)
            if len(calls) == n:
                stop()
            return out

        m.setattr(owner, name, wrapper)

    def raise_interrupt():
        raise KeyboardInterrupt

    def records(run):
        return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]

    full = records(tmp_path / "full")
    assert full[-1]["failed_images"] > 0
    stops = {  # the 3rd step's metrics (odd: the other data worker's batch is due next), the 4th forward
        "between steps": (train, "_append_metrics", 3, raise_interrupt),  # (masks and batch drawn), and a
        "in a forward": (PixioMAE, "forward", 4, raise_interrupt),  # signal that lands just after the
        "in the update": (torch.optim.AdamW, "step", 4, lambda: os.kill(os.getpid(), signal.SIGINT)),  # weights moved
    }
    for where, (owner, name, n, stop) in stops.items():
        cut = tmp_path / where.replace(" ", "_")
        with monkeypatch.context() as m:
            on_call(m, owner, name, n, stop)
            code, _, err = cli([*args, "-o", cut])
        assert code == 130 and f"continue with `pixio pretrain --resume {cut}`" in err, (where, err)
        code, _, err = cli(["pretrain", "--resume", cut])
        assert code == 0, (where, err)
        assert [(r["step"], r["loss"], r["failed_images"]) for r in records(cut)] == \
            [(r["step"], r["loss"], r["failed_images"]) for r in full], where
        a = torch.load(tmp_path / "full" / "encoder.pth", weights_only=True)
        b = torch.load(cut / "encoder.pth", weights_only=True)
        assert all(torch.equal(a[k], b[k]) for k in a), where


def test_sigterm_saves_the_step_as_ctrl_c_does(tmp_path):
    """A scheduler's preemption (SIGTERM to the whole process group, data workers included) ends a run
    like Ctrl-C: the checkpoint holds the last step."""
    import signal

    from .conftest import wait_until

    data = _photos(tmp_path / "photos", 4)
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "pixio_cli", "pretrain", *SMOKE, "--steps", "100000", "--data",
                             str(data), "-o", str(out), "--workers", "2", "--save-every", "100000"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_until(lambda: (out / "metrics.jsonl").exists()
                   and len((out / "metrics.jsonl").read_text().splitlines()) >= 2,
                   "the run logging its second step before it is stopped", proc=proc)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 130 and "--resume" in err, err
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(steps) >= 2 and torch.load(out / "checkpoint.pt", weights_only=True)["step"] == steps[-1]


def test_pretrain_refuses_what_it_could_not_do_as_asked(cli, tmp_path):
    """Each a one-line error before training: options that contradict each other or cannot work, options
    a --resume would ignore, data with no readable image; a finished run's --resume says so."""
    data = _photos(tmp_path / "photos", 4)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.jpg").write_bytes(b"not a jpeg")
    (bad / "b.jpg").write_bytes(b"")
    run = ["pretrain", *SMOKE, "--data", data]
    for args, code_, expected in (
            ([*run, "--steps", "2", "--epochs", "1", "-o", tmp_path / "a"], 2, "not both"),
            ([*run, "--steps", "2", "--mask-ratio", "1.5", "-o", tmp_path / "b"], 2, "--mask-ratio"),
            ([*run, "--steps", "2", "--mask-ratio", "0", "-o", tmp_path / "c"], 2, "--mask-ratio"),
            (["pretrain", *SMOKE, "--data", bad, "--steps", "2", "--workers", "0", "-o", tmp_path / "d"], 1,
             "no readable image")):
        code, _, err = cli(args)
        assert code == code_ and expected in err and len(err.strip().splitlines()) == 1, (args, err)
    code, _, err = cli([*run, "--steps", "2", "--workers", "0", "-o", tmp_path / "run"])
    assert code == 0, err
    code, _, err = cli(["pretrain", "--resume", tmp_path / "run", "--img-size", "64"])
    assert code == 2 and "--img-size" in err and len(err.strip().splitlines()) == 1, err
    code, _, err = cli([*run, "--steps", "2", "--workers", "0", "-o", tmp_path / "run", "--resume", tmp_path / "run"])
    assert code == 0 and "already finished" in err, err  # the starting command plus --resume (a requeue script)
    code, _, err = cli(["pretrain", "--resume", tmp_path / "run"])
    assert code == 0 and "already finished at step 2" in err and "None" not in err, err


def test_non_finite_loss_stops_with_step(cli, tmp_path, monkeypatch):
    import pretrain.mae as mae_mod

    data = _photos(tmp_path / "photos", 4)
    real = mae_mod.PixioMAE.patch_errors
    monkeypatch.setattr(mae_mod.PixioMAE, "patch_errors", lambda self, x, p: real(self, x, p) * float("nan"))
    code, _, err = cli(["pretrain", *SMOKE, "--steps", "3", "--data", data, "-o", tmp_path / "r", "--workers", "0"])
    assert code == 2 and "at step 1" in err and "Traceback" not in err
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_cpu_processes(tmp_path, mode, torchrun_failure, free_port):
    data = _photos(tmp_path / "photos", 8)
    out = tmp_path / mode
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
           str(free_port), "-m", "pixio_cli", "pretrain", *SMOKE,
           "--steps", "2", "--data", str(data), "-o", str(out), "--workers", "0", "--device", "cpu"]
    if mode == "fsdp":
        cmd.append("--fsdp")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, torchrun_failure(res.stderr)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2]  # rank 0 logs, once per step
    assert lines[0]["images_per_s"] > 0
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    assert len(state["ranks"]) == 2 and state["world"] == 2
    PixioEncoder(EncoderConfig(192, 12, 3, img_size=32)).load_state_dict(
        torch.load(out / "encoder.pth", weights_only=True), strict=True)


def test_fused_adamw_on_cpu_matches_the_official_for_loop_update():
    from pixio_cli.engine import adamw

    torch.manual_seed(0)
    params = [torch.randn(64, 32), torch.randn(32)]
    grads = [[torch.randn_like(p) for p in params] for _ in range(5)]
    ours_p = [p.clone().requires_grad_() for p in params]
    ref_p = [p.clone().requires_grad_() for p in params]
    ours = adamw(ours_p, torch.device("cpu"), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.05)
    ref = torch.optim.AdamW(ref_p, lr=1e-2, betas=(0.9, 0.95), weight_decay=0.05, foreach=False)
    assert ours.defaults["fused"] is True
    for g in grads:
        for opt, ps in ((ours, ours_p), (ref, ref_p)):
            for p, gi in zip(ps, g):
                p.grad = gi.clone()
            opt.step()
    for a, b in zip(ours_p, ref_p):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_compile_is_chosen_for_long_runs_only(monkeypatch):
    from pretrain import train

    cpu, mps = torch.device("cpu"), torch.device("mps")
    monkeypatch.setattr(train, "_has_cxx", lambda: True)
    assert train.compile_choice(None, train.AUTO_COMPILE_STEPS, False, cpu)
    assert not train.compile_choice(None, train.AUTO_COMPILE_STEPS - 1, False, cpu)
    assert not train.compile_choice(None, 10 ** 6, True, cpu)  # FSDP2 recompiles per block
    assert not train.compile_choice(None, 10 ** 6, False, mps)
    assert train.compile_choice(True, 1, True, cpu) and not train.compile_choice(False, 10 ** 6, False, cpu)
    monkeypatch.setattr(train, "_has_cxx", lambda: False)
    assert not train.compile_choice(None, 10 ** 6, False, cpu)


def test_cxx_is_the_one_inductor_calls(monkeypatch, tmp_path):
    from pretrain import train

    monkeypatch.setenv("CXX", str(tmp_path / "missing-g++"))  # set but not there: no fallback to another one
    assert not train._has_cxx()
    monkeypatch.setenv("CXX", f"{sys.executable} --version")  # a command with arguments: its program counts
    assert train._has_cxx()


def test_compiled_and_eager_steps_draw_the_same_masks():
    """Inductor's own generator would draw other masks and drop-paths than eager PyTorch from one seed; a run
    resumed (or benchmarked) the other way would then train on other masks."""
    import torch._dynamo

    from pretrain.train import compile_step

    torch.manual_seed(0)
    model = PixioMAE(CFG, drop_path=0.2).train()
    x = torch.randn(3, 3, 32, 32)
    torch.manual_seed(5)
    eager = model(x)
    try:
        compiled = compile_step(model)
        torch.manual_seed(5)
        out = compiled(x)
    finally:
        torch._dynamo.reset()
    assert torch.equal(eager.mask, out.mask)
    assert torch.allclose(eager.loss, out.loss, rtol=1e-5)


def test_a_long_pretraining_run_is_compiled_and_a_short_one_is_not(tmp_path, monkeypatch):
    import torch._dynamo

    from pretrain import train

    monkeypatch.setattr(train, "_has_cxx", lambda: True)
    data = _photos(tmp_path / "photos", 2)
    kinds = {}
    for steps in (3, train.AUTO_COMPILE_STEPS):
        cfg = train.TrainConfig(mae=CFG, data=[str(data)], output=str(tmp_path / f"r{steps}"), steps=steps, workers=0,
                                device="cpu", compile=None)
        trainer = train.Trainer(cfg)  # compiling itself waits for the first step
        kinds[steps] = (trainer.compiled, isinstance(trainer._forward, torch._dynamo.eval_frame.OptimizedModule),
                        cfg.compile)
    # the choice is stored as made: a resume with fewer steps left keeps it
    assert kinds == {3: (False, False, False), train.AUTO_COMPILE_STEPS: (True, True, True)}


def test_a_failed_compile_stops_in_one_line_naming_no_compile(cli, tmp_path, monkeypatch):
    from pretrain import train

    def broken(gm, example_inputs):
        raise RuntimeError("no compiler here")

    import torch._dynamo

    real = torch.compile
    monkeypatch.setattr(train.torch, "compile", lambda model: real(model, backend=broken))
    data = _photos(tmp_path / "photos", 4)
    try:
        code, _, err = cli(["pretrain", *SMOKE, "--steps", "2", "--data", data, "-o", tmp_path / "r", "--workers",
                            "0", "--compile"])
    finally:
        torch._dynamo.reset()  # no compiled code of this model left for later tests
    last = err.strip().splitlines()[-1]  # after the line that says it compiles
    assert code == 2 and last == "pixio: error: torch.compile failed on the training step (no compiler here): " \
                                  "rerun with --no-compile" and "Traceback" not in err, err
    # what it says works; and a run that has a checkpoint is told to resume, where --no-compile may be given
    code, _, err = cli(["pretrain", *SMOKE, "--steps", "2", "--data", data, "-o", tmp_path / "r", "--workers", "0",
                        "--no-compile"])
    assert code == 0, err
    try:
        code, _, err = cli(["pretrain", "--resume", tmp_path / "r", "--steps", "3", "--compile"])
    finally:
        torch._dynamo.reset()
    assert code == 2 and f"rerun with --resume {tmp_path / 'r'} --no-compile" in err, err
    code, _, err = cli(["pretrain", "--resume", tmp_path / "r", "--steps", "3", "--no-compile"])
    assert code == 0, err
    code, _, err = cli(["pretrain", "--resume", tmp_path / "r", "--steps", "4", "--batch-size", "8"])
    assert code == 2 and "--batch-size" in err  # settings that change the numbers still cannot change
    code, out, _ = cli(["distill", "--help"])  # distill's runs are told the same, so it takes the option too
    assert code == 0 and "--[no-]compile" in out  # the flag pair, as every help shows one


def test_quiet_hides_the_bar_and_may_be_given_to_a_resume(cli, tmp_path, monkeypatch):
    from pretrain import train

    asked = []
    real = train.tqdm
    monkeypatch.setattr(train, "tqdm", lambda *a, **k: asked.append(k["disable"]) or real(*a, **k))
    data = _photos(tmp_path / "photos", 4)
    base = ["pretrain", *SMOKE, "--data", data, "-o", tmp_path / "r", "--workers", "0"]
    code, _, err = cli([*base, "--steps", "1", "-q"])
    assert code == 0, err
    code, _, err = cli(["pretrain", "--resume", tmp_path / "r", "--steps", "2"])  # a bar where stderr is a terminal
    assert code == 0, err
    code, _, err = cli(["pretrain", "--resume", tmp_path / "r", "--steps", "3", "-q"])
    assert code == 0, err
    assert asked == [True, None, True]
