"""`--precision int8`: int8 linear layers close to fp32, per-token scales, the first-images check, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pixio_cli.cpu import flags as cpu_flags
from pixio_cli.errors import PixioError
from pixio_cli.int8 import (COSINE_BOUND, Int8Check, Int8Linear, available, exact, min_cosine, quantise_linears,
                            weight_bits)

from .conftest import random_encoder, write_rgb

# int8 needs oneDNN's kernels on AVX2 or newer: elsewhere it is refused (a test below), not run
needs_int8 = pytest.mark.skipif(not available(), reason="no oneDNN int8 on this CPU")
has_onednn_int8 = torch.backends.mkldnn.is_available() and hasattr(torch.ops.onednn, "qlinear_pointwise")
BITS = weight_bits() or 8  # the weights this CPU's int8 sums keep exact (7 without VNNI), as the engine uses


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / a.norm())


@needs_int8
@pytest.mark.parametrize("shape,bias", [((3, 20, 96), True), ((7, 64), False), ((1, 1, 192), True)])
def test_int8_linear_is_close_to_fp32_and_exact_is_fp32(shape, bias):
    torch.manual_seed(0)
    lin = nn.Linear(shape[-1], 80, bias=bias)
    q = Int8Linear(lin, BITS)
    x = torch.randn(*shape)
    with torch.no_grad():
        ref, out = lin(x), q(x)
        assert out.shape == ref.shape
        assert 0 < rel_err(ref, out) < 0.02  # rounded, and only a little
        with exact([q]):
            assert torch.equal(q(x), ref)
        assert not torch.equal(q(x), ref)  # back to int8 after the block


@needs_int8
def test_each_token_has_its_own_scale():
    """A token 1000x larger than the others does not coarsen their steps (a per-tensor scale would zero them)."""
    torch.manual_seed(0)
    lin = nn.Linear(64, 32)
    x = torch.randn(8, 64)
    x[0] *= 1000
    with torch.no_grad():
        ref, out = lin(x), Int8Linear(lin, BITS)(x)
        alone = Int8Linear(lin, BITS)(x[3:4])
    assert min_cosine(ref, out) > 0.999
    assert torch.allclose(out[3:4], alone, rtol=1e-6, atol=1e-6)  # a token's result ignores its batch


@needs_int8
def test_encoder_features_stay_within_the_bound():
    enc = random_encoder()
    q = random_encoder()
    assert quantise_linears(q, BITS) == 4 * len(q.blocks)  # qkv, proj, fc1, fc2 of every block
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref, out = enc(x), q(x)
    # 8-bit weights (VNNI) keep this encoder within the bound; 7-bit ones (AVX2) lose a bit, and there the
    # job's own check decides per model (this random encoder lands at 0.99897 on an AVX2-only EPYC)
    assert (COSINE_BOUND if BITS == 8 else 0.998) < min_cosine(ref, out) < 1


@needs_int8
def test_check_refuses_features_below_the_bound():
    """Small inputs beside one huge coordinate round to zero; a layer that reads only them loses everything."""
    lin = nn.Linear(16, 4, bias=False)
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[:, 1:] = torch.randn(4, 15)
    model = nn.Sequential(lin)
    quantise_linears(model, BITS)
    x = torch.full((2, 16), 1e-3)
    x[:, 0] = 10.0

    def fn(pixels):
        return {"features": model(pixels)}

    check = Int8Check([model])
    with torch.no_grad(), pytest.raises(PixioError, match="cosine"):
        check(fn, x, fn(x))
    assert check.cosine < COSINE_BOUND

    fine = Int8Check([model])
    y = torch.randn(2, 16)
    with torch.no_grad():
        fine(fn, y, fn(y))
    assert fine.cosine > COSINE_BOUND


@needs_int8
def test_extract_int8_end_to_end(cli, tiny_encoder_file, tmp_path):
    img = write_rgb(tmp_path / "in" / "a.jpg", 64, 96, seed=4)
    base = ["extract", str(img), "--model", str(tiny_encoder_file), "--workers", "0", "-q", "--resize", "64"]
    code, _, err = cli([*base, "-o", tmp_path / "f32", "--precision", "fp32"])
    assert code == 0, err
    code, _, err = cli([*base, "-o", tmp_path / "i8", "--precision", "int8"])
    assert code == 0, err
    assert "int8 within cosine 0.99" in err
    a = np.load(tmp_path / "f32" / "a.npz")["patch_tokens"]
    b = np.load(tmp_path / "i8" / "a.npz")["patch_tokens"]
    assert COSINE_BOUND < min_cosine(torch.from_numpy(a), torch.from_numpy(b)) < 1
    # int8 and fp32 features are not mixed in one folder
    code, _, err = cli([*base, "-o", tmp_path / "i8", "--precision", "fp32"])
    assert code == 2 and "--precision" in err


def test_int8_is_refused_where_it_is_not_offered(cli, tiny_encoder_file, tmp_path, monkeypatch):
    img = write_rgb(tmp_path / "a.jpg", 64, 64)
    code, _, err = cli(["depth", str(img), "-o", tmp_path / "d.png", "--precision", "int8", "-q"])
    assert code == 2 and "pixio extract only" in err and "Traceback" not in err
    base = ["extract", str(img), "--model", str(tiny_encoder_file), "--precision", "int8", "-q"]
    code, _, err = cli([*base, "-o", tmp_path / "f", "--compile"])
    assert code == 2 and "--compile" in err and not (tmp_path / "f").exists()
    # oneDNN held below AVX2 stands in for a CPU without it
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX")
    assert not available()
    code, _, err = cli([*base, "-o", tmp_path / "g"])
    assert code == 2 and "AVX2" in err and err.count("\n") == 1


@pytest.mark.parametrize("flags,isa,bits", [
    ("fpu avx2 avx512f avx512_vnni", "", 8), ("fpu avx2 avx_vnni", "", 8), ("fpu avx2 amx_int8", "", 8),
    ("fpu avx2 avx512_vnni", "ALL", 8), ("fpu avx2 avx512_vnni", "avx512_core_bf16", 8),
    ("fpu avx2 fma", "", 7), ("fpu avx2 avx512f", "", 7),  # AVX2 / AVX-512 without VNNI
    ("fpu avx2 avx512_vnni", "AVX2", 7), ("fpu avx2 avx512_vnni", "avx512_core", 7),  # held below VNNI
    ("fpu avx2 avx512_vnni", "avx2_vnni", 7),  # a cap naming a VNNI this CPU lacks: oneDNN runs plain AVX2
    ("fpu avx2 avx_vnni", "avx512_core_vnni", 7),  # the same the other way round
    ("fpu avx2 avx512_vnni", "some_future_isa", None),  # a cap we do not know: not offered
    ("fpu avx2 avx512_vnni", "AVX", None), ("fpu sse4_2 avx", "", None), (None, "", None)])
@pytest.mark.skipif(not has_onednn_int8, reason="this torch build has no oneDNN int8 linear: weight_bits is None "
                                                 "whatever the CPU, so the CPU's flags cannot be tested")
def test_weight_bits_follow_the_cpu(monkeypatch, flags, isa, bits):
    import pixio_cli.cpu as cpu
    import pixio_cli.int8 as int8

    monkeypatch.setattr(cpu, "flags", lambda: None if flags is None else set(flags.split()))
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa)
    assert int8.weight_bits() == bits


@pytest.mark.parametrize("flags,env,native", [
    ("avx2 avx512f avx512_bf16", {}, True), ("avx2 amx_bf16", {}, True), ("avx2 avx512f avx512_vnni", {}, False),
    ("avx2 avx512_bf16", {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI"}, False),
    ("avx2 avx512_bf16", {"DNNL_MAX_CPU_ISA": "avx2"}, False),  # oneDNN's older name for the cap
    ("avx2 avx512_bf16", {"ATEN_CPU_CAPABILITY": "avx2"}, False)])
def test_native_bf16_follows_the_cpu(monkeypatch, flags, env, native):
    import pixio_cli.cpu as cpu
    from pixio_cli.engine import cpu_has_native_bf16

    for var in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    monkeypatch.setattr(cpu, "flags", lambda: set(flags.split()))
    assert cpu_has_native_bf16() is native


_SATURATION = """
import torch
from torch import nn
from pixio_cli.int8 import Int8Linear
lin = nn.Linear(64, 8, bias=False)
with torch.no_grad():
    lin.weight.fill_(1.0)  # the largest int8 weights, by the largest activations: the pairs oneDNN adds overflow
    print(float((Int8Linear(lin, 7)(torch.ones(4, 64)) - 64).abs().max()),
          float((Int8Linear(lin, 8)(torch.ones(4, 64)) - 64).abs().max()))
"""


@pytest.mark.skipif(not has_onednn_int8 or "avx2" not in (cpu_flags() or set()),
                    reason="no oneDNN int8 kernels or no AVX2 here")
def test_seven_bit_weights_are_exact_without_vnni():
    """oneDNN's AVX2 int8 kernel (oneDNN held to AVX2 stands in for such a CPU) adds pairs of products in 16 bits:
    8-bit weights saturate them, 7-bit ones do not."""
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", _SATURATION], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-1000:]
    err7, err8 = map(float, out.stdout.split())
    assert err7 < 1e-4 and err8 > 10


def test_min_cosine_of_zero_and_nan_vectors():
    z = torch.zeros(2, 4)
    assert min_cosine(z, z) == 1.0  # equal vectors, though without direction
    nan = z.clone()
    nan[0, 0] = float("nan")
    assert np.isnan(min_cosine(nan, z))  # and a check compares with >= so NaN fails


@needs_int8
def test_a_job_below_the_bound_stops_and_leaves_the_folder_to_fp32(cli, tiny_encoder_file, tmp_path, monkeypatch):
    img = write_rgb(tmp_path / "in" / "a.jpg", 64, 96, seed=4)
    base = ["extract", str(img), "--model", str(tiny_encoder_file), "--workers", "0", "-q", "-o", tmp_path / "f"]
    monkeypatch.setattr("pixio_cli.int8.COSINE_BOUND", 1.5)  # no feature can meet it
    code, _, err = cli([*base, "--precision", "int8"])
    assert code == 2 and "below the 1.5" in err and err.count("\n") == 1, err
    assert not list((tmp_path / "f").rglob("*.npz")) and not list((tmp_path / "f").glob(".pixio-run*"))
    code, _, err = cli([*base, "--precision", "fp32"])  # what the message recommends, in the same folder
    assert code == 0 and (tmp_path / "f" / "a.npz").exists(), err


@needs_int8
@pytest.mark.parametrize("bits", [8, 7])
def test_a_stop_says_when_the_weights_kept_7_bits(monkeypatch, bits):
    monkeypatch.setattr("pixio_cli.int8.COSINE_BOUND", 1.5)  # no feature can meet it
    model = nn.Sequential(nn.Linear(16, 8))
    quantise_linears(model, bits)
    with torch.no_grad(), pytest.raises(PixioError) as e:
        Int8Check([model])(lambda x: {"f": model(x)}, torch.randn(2, 16), {"f": model(torch.randn(2, 16))})
    assert ("7 bits" in str(e.value)) == (bits == 7)
