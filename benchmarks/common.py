"""What the benchmarks share: one set of random weights in both models, timers, the hardware limit.

Every benchmark prints one JSON object on stdout whose ``ratio`` is ours / the
reference measured in the same run, next to the limit of the hardware it ran
on (the measured matmul rate at the precision used), so each figure says how
close to the machine it is.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from pixio_cli.checkpoints import load_encoder
from pixio_cli.encoder import PixioEncoder, size_config
from pixio_cli.engine import Engine

PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "photos"


def same_weights(size: str, engine: Engine) -> tuple[torch.nn.Module, PixioEncoder]:
    """``transformers.PixioModel`` with random weights, and our encoder read from its saved files."""
    from transformers import PixioConfig, PixioModel

    cfg = size_config(size)
    torch.manual_seed(0)
    hf = PixioModel(PixioConfig(hidden_size=cfg.embed_dim, num_hidden_layers=cfg.depth,
                                num_attention_heads=cfg.num_heads, image_size=cfg.img_size))
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        ours = load_encoder(tmp)
    return engine.prepare(hf), ours


def save_transformers_weights(size: str, folder: Path) -> Path:
    """Random weights of a size, saved by transformers (what a user downloads), for end-to-end runs."""
    from transformers import PixioConfig, PixioModel

    cfg = size_config(size)
    torch.manual_seed(0)
    PixioModel(PixioConfig(hidden_size=cfg.embed_dim, num_hidden_layers=cfg.depth,
                           num_attention_heads=cfg.num_heads, image_size=cfg.img_size)).save_pretrained(folder)
    return folder


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def paired_rates(ours: Callable[[torch.Tensor], object], reference: Callable[[torch.Tensor], object],
                 batches: list[torch.Tensor], rounds: int, device: torch.device) -> tuple[float, float]:
    """Images per second of ``ours`` and ``reference`` over ``batches``: the best of ``rounds`` passes each.

    The passes alternate (ours, reference, ours, ...) after a warm-up of both, so
    a machine that slows down or speeds up during the run moves both figures alike
    instead of the ratio.
    """
    def one_pass(fn: Callable[[torch.Tensor], object]) -> float:
        sync(device)
        start = time.perf_counter()
        for b in batches:
            fn(b)
        sync(device)
        return sum(b.shape[0] for b in batches) / (time.perf_counter() - start)

    for fn in (ours, reference):
        fn(batches[0])
    best = [0.0, 0.0]
    for _ in range(rounds):
        for i, fn in enumerate((ours, reference)):
            best[i] = max(best[i], one_pass(fn))
    return best[0], best[1]


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int | None = None, seconds: float = 1.0) -> float:
    """Measured dense matmul rate (TFLOP/s) of this device at ``dtype``: the ceiling a model can reach."""
    n = n or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    for _ in range(3):
        a @ b
    sync(device)
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        reps += 1
        if device.type == "cuda" and reps % 10:
            continue
        sync(device)
    sync(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - start) / 1e12


def vit_flops(embed_dim: int, depth: int, tokens: int, mlp_ratio: float = 4.0) -> float:
    """Matmul FLOPs of one forward of ``depth`` ViT blocks over ``tokens`` tokens (attention included)."""
    per_block = 2 * tokens * embed_dim * embed_dim * (4 + 2 * mlp_ratio) + 4 * tokens * tokens * embed_dim
    return depth * per_block


def photos(n: int) -> list[Path]:
    """Up to ``n`` real photos from ../shared/data (none when it is absent)."""
    return sorted(PHOTOS.glob("*.JPEG"))[:n] if PHOTOS.exists() else []


def environment(device: torch.device) -> dict:
    """What a result depends on: the device, the software, the threads."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    if device.type == "cpu":
        try:
            model = [l for l in open("/proc/cpuinfo") if l.startswith("model name")]
            name = model[0].split(":", 1)[1].strip() if model else name
        except OSError:
            pass
    return {"device": str(device), "device_name": name, "cpus": os.cpu_count(), "torch": torch.__version__,
            "threads": torch.get_num_threads()}


def emit(result: dict) -> None:
    """Print a benchmark's result as one JSON line (what `make bench` collects)."""
    print(json.dumps(result), flush=True)


class TimedOut(Exception):
    """A command :func:`run_timed` stopped at its time limit."""


def run_timed(cmd: list[str], stdin: str | None = None, timeout: float | None = None
              ) -> tuple[float, float, str, str]:
    """(seconds, peak memory GiB, stdout, stderr) of ``cmd`` run as a fresh process from the repository root,
    ``stdin`` fed to it; a failure stops the benchmark with the command's last words, and a command still
    running after ``timeout`` seconds is killed (:class:`TimedOut`)."""
    import subprocess
    import threading

    root = Path(__file__).resolve().parents[1]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=root, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(root)})
    streams: dict[str, str] = {}
    threads = [threading.Thread(target=lambda n=n, f=f: streams.__setitem__(n, f.read()))
               for n, f in (("out", proc.stdout), ("err", proc.stderr))]
    if stdin is not None:
        def feed() -> None:
            proc.stdin.write(stdin)
            proc.stdin.close()
        threads.append(threading.Thread(target=feed))
    for t in threads:
        t.start()
    timer = threading.Timer(timeout, proc.kill) if timeout else None
    if timer is not None:
        timer.start()
    _, status, usage = os.wait4(proc.pid, 0)  # its own peak memory, which Popen.wait would not give
    seconds = time.perf_counter() - start
    if timer is not None:
        timer.cancel()
        if seconds >= timeout:
            for t in threads:
                t.join()
            raise TimedOut(f"stopped after {timeout:.0f} s")
    for t in threads:
        t.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} exited {proc.returncode}: {streams['err'].strip()[-500:]}")
    return seconds, usage.ru_maxrss / 2**20, streams["out"], streams["err"]
