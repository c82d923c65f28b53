"""The shared engine: device and precision, model loading, decoding in DataLoader
workers, same-size batching, autocast, optional compile, out-of-memory back-off,
progress, and writing results on a background thread.

A command gives it work items, a batch function (normalised images in, a dict
of per-image tensors out) and a result handler; the engine does the rest.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm import tqdm

from . import cpu
from .errors import InputError, PixioError, UsageError
from .images import IMAGENET_MEAN, IMAGENET_STD, ResizePolicy, decode_for_model, read_bytes
from .inputs import Item
from .interrupts import sigterm_as_interrupt
from .video import FrameReader
from .writers import BackgroundWriter

log = logging.getLogger("pixio")

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# ---------------------------------------------------------------------------- device and precision


def dist_info() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) otherwise."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def init_distributed(device: torch.device) -> None:
    """Join torchrun's process group (NCCL on CUDA, gloo on CPU) when there is more than one process;
    on CUDA make ``device`` the current one."""
    import torch.distributed as dist

    if device.type == "cuda":
        torch.cuda.set_device(device)
    if dist_info()[1] > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def pick_device(spec: str = "auto") -> torch.device:
    """``auto`` (CUDA when present, the local rank's GPU under torchrun), ``cpu``, ``cuda`` or ``cuda:N``."""
    spec = (spec or "auto").lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", dist_info()[2] % torch.cuda.device_count())
        return torch.device("cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise UsageError(f"--device {spec!r}: expected auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {spec}: CUDA is not available on this machine (use --device cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"--device {spec}: only {torch.cuda.device_count()} GPU(s) here")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise UsageError(f"--device {spec}: Apple's MPS is not available on this machine (use --device cpu)")
    elif dev.type != "cpu":
        raise UsageError(f"--device {spec!r}: expected auto, cpu, cuda or cuda:N")
    return dev


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX-512 BF16 or AMX), where bf16 outruns fp32;
    elsewhere bf16 is emulated and slower (docs/performance.md has the measurements)."""
    # ATen held to AVX2 or below (by the user, or to stand in for an older CPU) runs no native bf16
    if os.environ.get("ATEN_CPU_CAPABILITY", "").lower() in ("default", "avx2"):
        return False
    if cpu.flags() is not None:  # Linux: the flags, under oneDNN's cap
        return cpu.usable("avx512_bf16", "amx_bf16")
    probe = getattr(torch._C, "_cpu", None)  # other systems: ask PyTorch's own CPU probe
    try:
        return bool(probe and (probe._is_avx512_bf16_supported() or probe._is_amx_tile_supported()))
    except AttributeError:
        return False


def default_precision(device: torch.device) -> str:
    """bf16 where the hardware does it natively (CUDA, CPUs with AVX-512 BF16 or AMX), else fp32."""
    if device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16()):
        return "bf16"
    return "fp32"


def pick_dtype(precision: str | None, device: torch.device) -> torch.dtype:
    """The compute dtype: ``precision`` when given, else :func:`default_precision`."""
    if precision is None or precision == "auto":
        precision = default_precision(device)
    if precision not in PRECISIONS:
        raise UsageError(f"--precision {precision!r}: expected auto, {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type == "cpu":
        raise UsageError("--precision fp16 needs a GPU; on the CPU use bf16 (fast where the CPU has it natively) "
                         "or fp32")
    return PRECISIONS[precision]


def prepare_for_inference(model: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """``model`` on ``device``, frozen, in eval mode; at bf16/fp16 its linear and convolution weights
    cast once (autocast would cast frozen weights again on every call; the numbers are the same),
    norms kept in fp32, and the attention kernel chosen for the device (see ``set_fused_attention``)."""
    from .encoder import set_fused_attention

    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if dtype != torch.float32:
        for m in model.modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                m.to(dtype)
    set_fused_attention(model, device, dtype)
    return model


def worker_init(_worker_id: int = 0) -> None:
    """DataLoader ``worker_init_fn`` of every loader: SIGTERM ends the worker as Ctrl-C does, and the
    worker ends when its parent dies, even by ``kill -9``.

    A scheduler's SIGTERM reaches the whole process group; a worker killed by it would make the parent
    fail ("worker killed by signal") before it could save its step, while one that exits quietly does
    not. Without the parent-death signal, decoding workers (about half a GB each) outlive a killed run.
    Linux only (the parent-death signal); elsewhere PyTorch's own watchdog remains.
    """
    sigterm_as_interrupt()
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            return
        if os.getppid() == 1:  # the parent died before the signal was armed
            os._exit(0)


def adamw(params, device: torch.device, **kwargs) -> torch.optim.AdamW:
    """AdamW with PyTorch's fused kernel on CUDA and CPU: the same update as the default for-loop, in one
    kernel per parameter group."""
    return torch.optim.AdamW(params, fused=device.type in ("cuda", "cpu") or None, **kwargs)


def autocast(device: torch.device, dtype: torch.dtype):
    """Mixed precision context for ``dtype`` (nothing for fp32)."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


# ---------------------------------------------------------------------------- decoding in workers


@dataclass
class Sample:
    """A decoded, resized image on its way to the model."""

    index: int
    image: np.ndarray  # RGB uint8 (h, w, 3), as the model sees it
    orig_hw: tuple[int, int]
    error: str | None = None
    digest: str | None = None  # sha256 of the encoded bytes (files and tar members)


class _TarReader:
    """Reads members of tar shards, keeping the last shard open with its member index."""

    def __init__(self) -> None:
        self.path: str | None = None
        self.tar = None
        self.members: dict = {}

    def read(self, path: str, member: str) -> bytes:
        import tarfile

        if path != self.path:
            self.close()
            try:
                self.tar = tarfile.open(path)
                self.members = {m.name: m for m in self.tar.getmembers()}
            except (OSError, tarfile.TarError) as e:
                raise InputError(f"{path}: cannot read the tar shard ({e})") from None
            self.path = path
        if member not in self.members:
            raise InputError(f"{path}: no member {member}")
        with self.tar.extractfile(self.members[member]) as f:
            return f.read()

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()
        self.tar, self.path, self.members = None, None, {}


class ImageStream(IterableDataset):
    """Decodes and resizes items; each DataLoader worker takes every n-th chunk of items.

    Chunks keep consecutive video frames and tar members in one worker. A bad item yields a
    Sample with ``error`` set instead of raising, so one file never stops a run.
    """

    def __init__(self, items: list[Item], policy: ResizePolicy, chunk: int = 16) -> None:
        self.items, self.policy, self.chunk = items, policy, chunk

    def __iter__(self) -> Iterator[Sample]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        frames, tars = FrameReader(), _TarReader()
        try:
            for start in range(wid * self.chunk, len(self.items), nw * self.chunk):
                for i in range(start, min(start + self.chunk, len(self.items))):
                    yield self._load(i, frames, tars)
        finally:
            frames.close()
            tars.close()

    def _load(self, i: int, frames: FrameReader, tars: _TarReader) -> Sample:
        item = self.items[i]
        if item.error is not None:
            return Sample(i, np.zeros((0, 0, 3), np.uint8), (0, 0), item.error)
        try:
            if item.frame is not None:
                frame = frames.read(item.path, item.frame)
                return Sample(i, self.policy.apply(frame, frame.shape[:2]), frame.shape[:2])
            data = tars.read(item.path, item.member) if item.member is not None else read_bytes(item.path)
            img, orig = decode_for_model(data, item.label, self.policy)
            return Sample(i, img, orig, digest=hashlib.sha256(data).hexdigest())
        except InputError as e:
            return Sample(i, np.zeros((0, 0, 3), np.uint8), (0, 0), str(e))
        except Exception as e:  # an image library failing on odd data is still bad input
            return Sample(i, np.zeros((0, 0, 3), np.uint8), (0, 0), f"{item.label}: {type(e).__name__}: {e}")


def _collate_one(sample: Sample) -> Sample:
    return sample


def _enlargement(sample: Sample) -> float:
    """How much larger (linear) the model's image is than the original."""
    h, w = sample.orig_hw
    return (sample.image.shape[0] * sample.image.shape[1] / max(1, h * w)) ** 0.5


# ---------------------------------------------------------------------------- the engine


@dataclass
class Batch:
    """Images of one size, ready for the model."""

    samples: list[Sample]
    pixels: torch.Tensor  # normalised float (B, 3, h, w) on the device


@dataclass
class Summary:
    """What a run over many inputs did: outputs made, inputs skipped as already done, failures (label, why)."""
    done: int = 0
    skipped: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    int8_cosine: float | None = None  # with --precision int8: measured on the first images, against fp32

    @property
    def failed(self) -> int:
        """The number of inputs that failed."""
        return len(self.failures)


BatchFn = Callable[[torch.Tensor], dict[str, torch.Tensor]]
ResultFn = Callable[[Item, Sample, dict[str, torch.Tensor]], None]


PREFETCH = 256  # decoded images waiting at most, over all workers


class Engine:
    """Runs a batch function over many images. One instance per command invocation."""

    def __init__(self, device: str = "auto", precision: str | None = None, *, batch_size: int = 16,
                 workers: int | None = None, compile: bool = False, progress: bool | None = None,
                 int8: bool = False) -> None:
        """``int8``: the command offers ``--precision int8`` (its outputs are feature vectors, which
        :class:`~pixio_cli.int8.Int8Check` can hold to a cosine bound)."""
        self.device = pick_device(device)
        self.int8 = precision == "int8"
        if self.int8 and not int8:
            raise UsageError("--precision int8 is offered by pixio extract only (its features are checked against "
                             "fp32); use fp32 or bf16")
        if self.int8 and self.device.type != "cpu":
            raise UsageError("--precision int8 is for CPUs: add --device cpu, or use bf16 on the GPU")
        if self.int8 and compile:
            raise UsageError("--compile and --precision int8 do not go together (int8 runs its own kernels); "
                             "drop one")
        self.int8_bits = None  # of the int8 weights: 8, or 7 on CPUs without VNNI
        if self.int8:
            from .int8 import weight_bits

            self.int8_bits = weight_bits()
            if self.int8_bits is None:
                raise UsageError("--precision int8 needs oneDNN's int8 kernels on an x86 CPU with AVX2 or newer, "
                                 "which this machine lacks; use fp32")
        self.dtype = pick_dtype("fp32" if self.int8 else precision, self.device)
        self._int8_check = None
        if batch_size < 1:
            raise UsageError("--batch-size must be at least 1")
        self.batch_size = batch_size
        if workers is not None and workers < 0:
            raise UsageError("--workers must be 0 (decode in the main process) or more")
        self.workers = min(4, os.cpu_count() or 1) if workers is None else workers
        self.compile = compile
        # None: a bar when stderr is a terminal, quiet in logs and pipes
        self.progress = progress
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1) * 255
        self._std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1) * 255

    # -- models

    def load_encoder(self, source: str, size: str | None = None):
        """Load an encoder from any accepted source onto this engine's device."""
        from .checkpoints import load_encoder

        return self.prepare(load_encoder(source, size=size))

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model on this engine's device and precision, frozen (see :func:`prepare_for_inference`);
        with int8, its linear layers in int8 and checked on the first batch."""
        model = prepare_for_inference(model, self.device, self.dtype)
        if self.int8:
            from .int8 import Int8Check, quantise_linears

            quantise_linears(model, self.int8_bits)
            self._int8_check = self._int8_check or Int8Check([])
            self._int8_check.models.append(model)
        return model

    @property
    def precision(self) -> str:
        """What decides the numbers, as resume ledgers record it: the dtype's name, or int8 (with the weights'
        bits where they are not 8, so that a folder is never finished on a CPU of the other kind)."""
        if self.int8:
            return "int8" if self.int8_bits == 8 else f"int8 ({self.int8_bits}-bit weights)"
        return str(self.dtype).removeprefix("torch.")

    def maybe_compile(self, fn: Callable) -> Callable:
        """``fn`` through ``torch.compile`` when the run asked for it (``--compile``), else as it is."""
        return torch.compile(fn, dynamic=None) if self.compile else fn

    # -- tensors

    def to_pixels(self, images: list[np.ndarray]) -> torch.Tensor:
        """RGB uint8 images of one size -> normalised float (B, 3, h, w) on the device.

        uint8 crosses to the device (a quarter of the bytes of float) and is
        normalised there.
        """
        x = torch.from_numpy(np.stack(images))
        if self.device.type == "cuda":
            x = x.pin_memory()
        x = x.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
        return (x - self._mean) / self._std

    def infer(self, fn: BatchFn, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        """``fn(pixels)`` under inference mode and autocast; halves the batch on CUDA out-of-memory."""
        try:
            with torch.inference_mode(), autocast(self.device, self.dtype):
                out = fn(pixels)
                if self._int8_check is not None:
                    self._int8_check(fn, pixels, out)
                return out
        except torch.cuda.OutOfMemoryError:
            n = pixels.shape[0]
            torch.cuda.empty_cache()
            if n == 1:
                raise PixioError("out of GPU memory on a single image: use a smaller --resize, "
                                 "--precision bf16, or --tile where the command has it") from None
            self.batch_size = max(1, n // 2)
            log.warning("out of GPU memory at batch %d: retrying with batch %d", n, self.batch_size)
            parts = [self.infer(fn, part) for part in pixels.split(self.batch_size)]
            return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    # -- the loop

    def batches(self, items: list[Item], policy: ResizePolicy, summary: Summary, bar: tqdm | None = None,
                on_error: Callable[[Sample], None] | None = None, warn_enlarged: bool = True,
                on_started: Callable[[], None] | None = None) -> Iterator[Batch]:
        """Decoded images grouped into same-size batches; failures go to ``summary`` and ``on_error``.
        ``warn_enlarged``: name the first image enlarged more than 4x (and count the others), for
        commands whose --resize can avoid it. ``on_started()`` runs once the decoding workers exist: a thread
        that must run beside them starts there, since a worker forked while another thread creates threads
        (COLMAP's, OpenCV's) can inherit a held lock and hang for ever."""
        stream = ImageStream(items, policy)
        # images decoded ahead: a few batches' worth, never more than there are images nor than PREFETCH (a
        # batch size of a million once queued four million requests before the first image)
        ahead = max(2, min(4 * self.batch_size, len(items), PREFETCH) // max(self.workers, 1))
        loader = DataLoader(stream, batch_size=None, num_workers=self.workers, collate_fn=_collate_one,
                            prefetch_factor=ahead if self.workers else None,
                            persistent_workers=False, worker_init_fn=worker_init)
        pending: dict[tuple[int, int], list[Sample]] = {}
        held = enlarged = 0
        samples = iter(loader)  # the workers are forked here
        if on_started is not None:
            on_started()
        for sample in samples:
            if sample.error:
                summary.failures.append((items[sample.index].label, sample.error))
                if on_error is not None:
                    on_error(sample)
                if bar is not None:
                    bar.update(1)
                continue
            if warn_enlarged and _enlargement(sample) > 4 and (enlarged := enlarged + 1) == 1:  # the first in full
                h, w = sample.orig_hw
                log.warning("warning: %s is %dx%d and is enlarged %.0fx to %dx%d by %s (slow, and no finer "
                            "than the original); --resize native keeps images at their size",
                            items[sample.index].label, w, h, _enlargement(sample), sample.image.shape[1],
                            sample.image.shape[0], policy.describe())
            bucket = pending.setdefault(sample.image.shape[:2], [])
            bucket.append(sample)
            held += 1
            if len(bucket) >= self.batch_size:
                held -= len(bucket)
                yield self._batch(pending.pop(sample.image.shape[:2]))
            elif held > 4 * self.batch_size:  # many sizes: do not hold images forever
                largest = max(pending, key=lambda k: len(pending[k]))
                held -= len(pending[largest])
                yield self._batch(pending.pop(largest))
        for key in list(pending):
            yield self._batch(pending.pop(key))
        if enlarged > 1:
            log.warning("warning: %d more images were enlarged more than 4x", enlarged - 1)

    def _batch(self, samples: list[Sample]) -> Batch:
        return Batch(samples, self.to_pixels([s.image for s in samples]))

    def run(self, items: list[Item], policy: ResizePolicy, fn: BatchFn, on_result: ResultFn,
            desc: str = "pixio", skip: Callable[[Item], bool] | None = None,
            on_error: Callable[[Item, str], None] | None = None, split_ranks: bool = False,
            warn_enlarged: bool = True) -> Summary:
        """Run ``fn`` over ``items`` and hand each image's outputs (CPU tensors) to ``on_result``.

        ``on_result`` and ``on_error`` (an unreadable item and the reason) run on
        the background writer thread, in order. Items for
        which ``skip`` is true (already done) are counted, not run. With
        ``split_ranks``, under torchrun each rank takes every world-size-th item
        of the full list, so the split is the same on a rerun; without it, the
        caller has split the work (or needs all of it, as a metric does).
        """
        if split_ranks:
            rank, world, _ = dist_info()
            items = items[rank::world]
        summary = Summary()
        if skip is not None:
            todo = [it for it in items if not skip(it)]
            summary.skipped, items = len(items) - len(todo), todo
        fn = self.maybe_compile(fn)
        bar = tqdm(total=len(items), desc=desc, unit="img", file=sys.stderr, dynamic_ncols=True,
                   disable=(not self.progress) if self.progress is not None else None)
        writer = BackgroundWriter()
        try:
            failed = None
            if on_error is not None:
                def failed(s: Sample) -> None:
                    writer.submit(lambda: on_error(items[s.index], s.error))
            for batch in self.batches(items, policy, summary=summary, bar=bar, on_error=failed,
                                      warn_enlarged=warn_enlarged):
                out = self.infer(fn, batch.pixels)
                out = {k: v.float().cpu() for k, v in out.items()}
                for j, s in enumerate(batch.samples):
                    per = {k: v[j] for k, v in out.items()}
                    writer.submit(lambda s=s, per=per: on_result(items[s.index], s, per))
                summary.done += len(batch.samples)
                bar.update(len(batch.samples))
        finally:
            bar.close()
            writer.close()  # finish what is queued, also on Ctrl-C: each write is atomic
        summary.int8_cosine = self._int8_check.cosine if self._int8_check is not None else None
        return summary
