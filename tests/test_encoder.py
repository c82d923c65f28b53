"""The encoder gives the official forward's and transformers.PixioModel's features."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pixio_cli.encoder import SIZES, EncoderConfig, PixioEncoder, resize_pos_embed, size_config

from .conftest import TINY, random_encoder

SIZES_TO_CHECK = [(256, 256), (320, 448), (160, 96)]  # (H, W), as the README states them


def official_forward(sd: dict, cfg: EncoderConfig, x: torch.Tensor, blocks: list[int]) -> list[dict]:
    """The official PixioViT forward written out in plain tensor ops, as an independent reference."""
    p, n_cls, d, heads = cfg.patch_size, cfg.n_cls_tokens, cfg.embed_dim, cfg.num_heads
    h, w = x.shape[-2] // p, x.shape[-1] // p
    pos = sd["pos_embed"]
    g = int((pos.shape[1] - n_cls) ** 0.5)
    patch_pos = pos[:, n_cls:]
    if (g, g) != (h, w):
        grid = patch_pos.reshape(1, g, g, d).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
        patch_pos = grid.permute(0, 2, 3, 1).reshape(1, h * w, d)
    t = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=p)
    t = t.flatten(2).transpose(1, 2) + patch_pos
    cls = (sd["cls_token"] + pos[:, :n_cls]).expand(x.shape[0], -1, -1)
    t = torch.cat([cls, t], 1)

    def ln(v, name):
        return F.layer_norm(v, (d,), sd[f"{name}.weight"], sd[f"{name}.bias"], eps=1e-6)

    out = []
    for i in range(cfg.depth):
        b = f"blocks.{i}"
        y = ln(t, f"{b}.norm1")
        qkv = F.linear(y, sd[f"{b}.attn.qkv.weight"], sd[f"{b}.attn.qkv.bias"])
        q, k, v = qkv.reshape(t.shape[0], t.shape[1], 3, heads, d // heads).permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-2, -1)) * (d // heads) ** -0.5
        y = (att.softmax(-1) @ v).transpose(1, 2).reshape(t.shape)
        t = t + F.linear(y, sd[f"{b}.attn.proj.weight"], sd[f"{b}.attn.proj.bias"])
        y = F.gelu(F.linear(ln(t, f"{b}.norm2"), sd[f"{b}.mlp.fc1.weight"], sd[f"{b}.mlp.fc1.bias"]))
        t = t + F.linear(y, sd[f"{b}.mlp.fc2.weight"], sd[f"{b}.mlp.fc2.bias"])
        if i in blocks:
            out.append({"raw": t, "norm": ln(t, "norm")})
    return out


@pytest.mark.parametrize("hw", SIZES_TO_CHECK)
def test_matches_official_forward(tiny_encoder, hw):
    torch.manual_seed(1)
    x = torch.randn(2, 3, *hw)
    blocks = [1, 3]
    sd = tiny_encoder.state_dict()
    with torch.no_grad():
        ref = official_forward(sd, TINY, x, blocks)
        raw = tiny_encoder.forward_blocks(x, blocks, norm=False)
        normed = tiny_encoder.forward_blocks(x, blocks, norm=True)
    for r, a, b in zip(ref, raw, normed):
        assert (r["raw"] - a).abs().max() < 1e-4
        assert (r["norm"] - b).abs().max() < 1e-4
    assert raw[0].shape == (2, 8 + (hw[0] // 16) * (hw[1] // 16), TINY.embed_dim)


@pytest.mark.parametrize("hw", SIZES_TO_CHECK)
def test_matches_transformers(tiny_encoder, tmp_path, hw):
    transformers = pytest.importorskip("transformers")
    from pixio_cli.checkpoints import load_encoder

    # weights made by transformers, saved in its format, read by us
    torch.manual_seed(2)
    hf_cfg = transformers.PixioConfig(hidden_size=TINY.embed_dim, num_hidden_layers=TINY.depth,
                                      num_attention_heads=TINY.num_heads, image_size=256, patch_size=16)
    hf = transformers.PixioModel(hf_cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    hf.save_pretrained(tmp_path / "hf")
    ours = load_encoder(tmp_path / "hf")
    x = torch.randn(2, 3, *hw)
    with torch.no_grad():
        o = hf(pixel_values=x, output_hidden_states=True)
        raw = ours.forward_blocks(x, [0, 2], norm=False)
        last = ours(x)
    # hidden_states[k + 1] is the raw output of block k; the same kernels in the same order: bit for bit, as
    # the README says (max abs difference 0.0)
    assert torch.equal(o.hidden_states[1], raw[0])
    assert torch.equal(o.hidden_states[3], raw[1])
    assert torch.equal(o.last_hidden_state, last)
    with torch.no_grad():  # normed tokens of an intermediate block
        normed = ours.forward_blocks(x, [1], norm=True)[0]
        assert torch.equal(hf.layernorm(o.hidden_states[2]), normed)


def test_sizes_match_design():
    expected = {"b16": 86e6, "l16": 303e6, "h16": 631e6, "1b16": 1362e6, "5b16": 5441e6}
    for name, n in expected.items():
        with torch.device("meta"):  # shapes only, no memory
            enc = PixioEncoder(SIZES[name])
        count = sum(p.numel() for p in enc.parameters())
        assert abs(count - n) / n < 0.01, (name, count)
    assert size_config("pixio-vith16") == SIZES["h16"]
    assert size_config("vit1b16") == SIZES["1b16"]


def test_pos_embed_resize_is_bicubic_without_antialias():
    torch.manual_seed(0)
    pos = torch.randn(1, 16 * 16, 8)
    out = resize_pos_embed(pos, (8, 12))
    grid = pos.reshape(1, 16, 16, 8).permute(0, 3, 1, 2)
    ref = F.interpolate(grid, size=(8, 12), mode="bicubic", align_corners=False, antialias=False)
    assert torch.allclose(out, ref.permute(0, 2, 3, 1).reshape(1, 96, 8))
    assert resize_pos_embed(pos, (16, 16)) is pos


def test_stops_after_last_requested_block(tiny_encoder):
    calls = []
    hooks = [b.register_forward_hook(lambda m, i, o, k=k: calls.append(k)) for k, b in enumerate(tiny_encoder.blocks)]
    try:
        with torch.no_grad():
            tiny_encoder.forward_blocks(torch.randn(1, 3, 32, 32), [1])
    finally:
        for h in hooks:
            h.remove()
    assert calls == [0, 1]


def test_rejects_sizes_not_divisible_by_patch(tiny_encoder):
    from pixio_cli.errors import UsageError

    with pytest.raises(UsageError):
        tiny_encoder(torch.randn(1, 3, 30, 32))


def test_grad_checkpointing_gives_same_gradients():
    enc = random_encoder(seed=3).train()
    x = torch.randn(2, 3, 32, 48)
    enc(x).sum().backward()
    ref = [p.grad.clone() for p in enc.parameters()]
    enc.zero_grad()
    enc.grad_checkpointing = True
    enc(x).sum().backward()
    for a, p in zip(ref, enc.parameters()):
        assert torch.allclose(a, p.grad, atol=1e-5)


def test_state_dict_keys_are_official():
    enc = PixioEncoder(EncoderConfig(32, 2, 2))
    keys = set(enc.state_dict())
    assert {"cls_token", "pos_embed", "patch_embed.proj.weight", "norm.weight"} <= keys
    assert "blocks.1.attn.qkv.weight" in keys and "blocks.1.mlp.fc2.bias" in keys
    assert enc.state_dict()["cls_token"].shape == (1, 8, 32)
    assert enc.state_dict()["pos_embed"].shape == (1, 264, 32)


@pytest.mark.parametrize("dtype,training,compiled,fused", [
    (torch.float32, False, False, True), (torch.float32, True, False, True),  # fp32 eager: the official kernel
    (torch.float32, False, True, True),  # inference: the fused kernel, compiled or not
    (torch.bfloat16, False, False, True),  # CPU inference: the fused kernel is the faster one
    (torch.bfloat16, True, False, False),  # CPU training at bf16: the fused kernel's backward is the slow part
    (torch.float32, True, True, False),  # and compiled CPU training at fp32
])
def test_attention_kernel_policy(dtype, training, compiled, fused):
    from pixio_cli.encoder import set_fused_attention

    model = random_encoder(TINY)
    set_fused_attention(model, torch.device("cpu"), dtype, training=training, compiled=compiled)
    assert {b.attn.fused_attn for b in model.blocks} == {fused}
