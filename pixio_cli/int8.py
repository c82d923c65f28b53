"""int8 linear layers for CPU inference (``--precision int8``), checked against fp32.

On CPUs without native bf16 the fp32 forward already runs at the machine's fp32
matmul rate, so the only way to a faster forward is fewer bits. Here each
linear layer's weight is rounded to int8 (7 bits on CPUs without VNNI, see
:func:`weight_bits`) with one scale per output channel,
and each input row (one token) is rounded at run time with its own scale: a
per-tensor scale would let the few tokens of very large norm (the CLS tokens,
activation outliers) set the step for all others. The product is oneDNN's
int8 matmul (the kernel PyTorch's own x86 quantisation uses; VNNI where the CPU
has it), exact in int32 and scaled back to float inside the same call: the
scheme of torchao's dynamic int8 activation and weight quantisation, in the few
lines it needs on a CPU.

Rounding is not exact, so :class:`Int8Check` compares the features of a job's
first images with the same layers in fp32 and stops the job when any token
falls below :data:`COSINE_BOUND`.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from . import cpu
from .errors import PixioError

COSINE_BOUND = 0.999


class BelowBound(PixioError):
    """The int8 features of the first images missed the cosine bound."""


def weight_bits() -> int | None:
    """The bits of int8 weights that keep oneDNN's int8 matmul exact on this CPU; None where int8 is not offered.

    With VNNI (or AMX) oneDNN sums uint8 x int8 products in 32 bits: 8-bit weights.
    Without it (AVX2, AVX-512 before VNNI, or oneDNN capped below the CPU's VNNI)
    it adds pairs of products in 16 bits with saturation, and 2 x 255 x 127
    overflows (features at cosine 0.79-0.90 of fp32): weights keep 7 bits there,
    |q| <= 63, so a pair is at most 32130 and the sum stays exact. Below AVX2, and
    where the CPU's flags cannot be read (not Linux), int8 is not offered.
    """
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.onednn, "qlinear_pointwise")):
        return None
    if not cpu.usable("avx2"):
        return None
    return 8 if cpu.usable("avx512_vnni", "avx_vnni", "amx_int8") else 7


def available() -> bool:
    """Whether ``--precision int8`` is offered here (see :func:`weight_bits`)."""
    return weight_bits() is not None


class Int8Linear(nn.Module):
    """An ``nn.Linear`` computed in int8; keeps the float weight for :func:`exact` runs.

    For inference on the CPU: made from a layer already there, and not moved,
    copied or saved after (the packed weight is oneDNN's own tensor). Outputs are
    float32 whatever the input's dtype; no gradient flows through it.
    """

    def __init__(self, linear: nn.Linear, bits: int = 8) -> None:
        super().__init__()
        self.in_features, self.out_features, self.bits = linear.in_features, linear.out_features, bits
        self.weight, self.bias = linear.weight, linear.bias  # the same parameters: no copy of the float weight
        w = linear.weight.detach().float()
        scale = w.abs().amax(dim=1).clamp_min(1e-12) / (2 ** (bits - 1) - 1)
        qweight = (w / scale[:, None]).round().to(torch.int8)
        self.qweight = torch.ops.onednn.qlinear_prepack(qweight, None)  # oneDNN's own layout, once
        self.register_buffer("wscale", scale, persistent=False)
        self.register_buffer("wzero", torch.zeros_like(scale, dtype=torch.int64), persistent=False)
        self.exact = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.exact:
            return F.linear(x, self.weight, self.bias)
        shape = x.shape
        x = x.reshape(-1, shape[-1]).float()
        # max |x| per row from two reductions: x.abs() would write a tensor the size of x first
        xscale = torch.maximum(x.amax(dim=1, keepdim=True), x.amin(dim=1, keepdim=True).neg_()).clamp_min_(1e-12)
        xscale = xscale.div_(127)
        # oneDNN's fast kernels take unsigned activations: the int8 value + 128, zero point 128; adding
        # 128.5 and truncating rounds to the nearest in one pass (the value is always positive)
        xq = torch.mul(x, xscale.reciprocal()).add_(128.5).to(torch.uint8)
        y = torch.ops.onednn.qlinear_pointwise(xq, 1.0, 128, self.qweight, self.wscale, self.wzero, None, 1.0, 0,
                                               torch.float32, "none", [], "")
        y = y.mul_(xscale) if self.bias is None else y.mul_(xscale).add_(self.bias)
        return y.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def quantise_linears(model: nn.Module, bits: int = 8) -> int:
    """Replace every ``nn.Linear`` of ``model`` by an :class:`Int8Linear` with ``bits``-bit weights; returns how
    many."""
    n = 0
    for name, child in model.named_children():
        if isinstance(child, nn.Linear):
            setattr(model, name, Int8Linear(child, bits))
            n += 1
        else:
            n += quantise_linears(child, bits)
    return n


@contextmanager
def exact(models: list[nn.Module]) -> Iterator[None]:
    """Run the int8 layers of ``models`` in fp32 inside the block."""
    layers = [m for model in models for m in model.modules() if isinstance(m, Int8Linear)]
    for m in layers:
        m.exact = True
    try:
        yield
    finally:
        for m in layers:
            m.exact = False


def min_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """The smallest cosine between matching vectors (along the last dimension) of ``a`` and ``b``."""
    a, b = a.reshape(-1, a.shape[-1]).double(), b.reshape(-1, b.shape[-1]).double()
    cos = F.cosine_similarity(a, b, dim=1, eps=1e-30)
    both_zero = (a.abs().amax(1) == 0) & (b.abs().amax(1) == 0)  # equal, though they have no direction
    return float(torch.where(both_zero, torch.ones_like(cos), cos).min())  # NaN when any vector is


class Int8Check:
    """Compares the int8 features of a job's first images with fp32 and refuses a job that misses the bound.

    Each token is quantised with its own scale, so an image's int8 features do not
    depend on the rest of its batch: the first :attr:`images` of the first batch,
    run again in fp32, are a fair check at a small cost.
    """

    images = 2

    def __init__(self, models: list[nn.Module]) -> None:
        self.models = models
        self.cosine: float | None = None  # measured on the first images

    def __call__(self, fn, pixels: torch.Tensor, out: dict[str, torch.Tensor]) -> None:
        if self.cosine is not None:
            return
        n = min(self.images, pixels.shape[0])
        with exact(self.models):
            ref = fn(pixels[:n])
        self.cosine = min(min_cosine(out[k][:n].float(), ref[k].float()) for k in out)
        if not self.cosine >= COSINE_BOUND:  # NaN fails too
            bits = {m.bits for model in self.models for m in model.modules() if isinstance(m, Int8Linear)}
            coarse = " (this CPU has no VNNI, so the weights keep 7 bits)" if bits == {7} else ""
            raise BelowBound(f"--precision int8: on the first images a feature is only within cosine "
                             f"{self.cosine:.5f} of fp32, below the {COSINE_BOUND} this option promises{coarse}; "
                             f"this model needs --precision fp32")
