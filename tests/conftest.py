"""Shared fixtures: tiny random encoders saved in each format, small real images."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
import torch

from pixio_cli.checkpoints import save_encoder
from pixio_cli.encoder import EncoderConfig, PixioEncoder, build_encoder

# the real sample data, where present (PIXIO_SHARED_DATA: where a copy of the tests runs, as mutation testing's)
SHARED_DATA = Path(os.environ.get("PIXIO_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
KITCHEN = SHARED_DATA / "rgbd-7scenes-redkitchen"
SAMPLES = Path(__file__).resolve().parents[1] / "samples"
TINY = EncoderConfig(embed_dim=48, depth=4, num_heads=3)


def random_encoder(cfg: EncoderConfig = TINY, seed: int = 0) -> PixioEncoder:
    """An encoder with random, non-trivial weights (biases and norms perturbed too)."""
    torch.manual_seed(seed)
    enc = build_encoder(cfg)
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return enc.eval()


@pytest.fixture(scope="session")
def tiny_encoder() -> PixioEncoder:
    return random_encoder()


@pytest.fixture(scope="session")
def tiny_encoder_file(tmp_path_factory, tiny_encoder) -> Path:
    """The tiny encoder in our safetensors format (config inside)."""
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_encoder(tiny_encoder, path)
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run the pixio CLI in-process: ``cli(args, stdin=None) -> (exit_code, stdout, stderr)``."""
    import io

    from pixio_cli.cli import main

    def run(args: list[str], stdin: str | None = None) -> tuple[int, str, str]:
        if stdin is not None:
            monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        out, err = capsys.readouterr()
        return code, out, err

    return run


def wait_until(ready, what: str, timeout: float = 600, proc=None, step: float = 0.2) -> None:
    """Wait for ``ready()`` (an event: a file, a line, a process state), however loaded the machine, and fail
    with ``what`` when it does not come within ``timeout`` seconds, or when ``proc`` (a Popen) ends first."""
    import time

    end = time.monotonic() + timeout
    while not ready():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: the process ended first (exit {proc.returncode})")
        if time.monotonic() > end:
            pytest.fail(f"{what}: not within {timeout:g} s")
        time.sleep(step)


def write_rgb(path: Path, h: int = 48, w: int = 64, seed: int = 0) -> Path:
    """A small smooth random RGB image (OpenCV writes BGR; colours do not matter here)."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)
    return path


def write_tar(path: Path, members: dict[str, bytes]) -> Path:
    """A tar shard with the given members (name -> bytes)."""
    import io
    import tarfile

    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@contextlib.contextmanager
def head_training_stopped_at(step: int, in_update: bool = False):
    """`pixio train depth|segment|pointmap` run inside this stops with Ctrl-C as it begins ``step`` (counted
    from 0), or, ``in_update``, with a SIGINT that lands just after that step's optimizer update."""
    import os
    import signal

    import heads.dense.train as train_mod

    real_lr, real_step, updates = train_mod.lr_factor, torch.optim.AdamW.step, []

    def stop(s: int, total: int, warmup: int) -> float:
        if s == step and not in_update:
            raise KeyboardInterrupt
        return real_lr(s, total, warmup)

    def update(self, *args, **kwargs):
        out = real_step(self, *args, **kwargs)
        updates.append(1)
        if in_update and len(updates) == step + 1:
            os.kill(os.getpid(), signal.SIGINT)
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_mod, "lr_factor", stop)
        mp.setattr(torch.optim.AdamW, "step", update)
        yield


@pytest.fixture
def torchrun_failure():
    """``torchrun_failure(stderr)``: what a failed torchrun said, for an assertion message: the lines of every
    worker that name an error (they come long before the launcher's summary) and the summary's tail."""
    import re

    def lines(stderr: str, tail: int = 1500) -> str:
        hits = [ln for ln in stderr.splitlines()
                if re.search(r"Error|error:|Abort|abort|Traceback|Check failed|terminate called|Signal", ln)]
        return "\n".join(hits[:40]) + "\n...\n" + stderr[-tail:]

    return lines


@pytest.fixture
def free_port() -> int:
    """A TCP port nothing on this machine listens on now, for a torchrun rendezvous (a port derived from the
    process id can be one the system handed out meanwhile, or the last test's)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
