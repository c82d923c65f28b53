"""Every accepted checkpoint format loads into the same encoder with the same features."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pixio_cli import model_ids
from pixio_cli.checkpoints import (HUB_MODELS, encoder_config, load_encoder, read_checkpoint, save_encoder,
                                   to_official)
from pixio_cli.encoder import SIZES, EncoderConfig, PixioEncoder, build_encoder
from pixio_cli.errors import CheckpointError

from .conftest import TINY

X = torch.randn(1, 3, 64, 48)


def same_features(a: PixioEncoder, b: PixioEncoder) -> bool:
    with torch.no_grad():
        return torch.allclose(a(X), b(X), atol=1e-5)


def to_transformers_layout(sd: dict) -> dict:
    """Our official-layout state dict in the transformers layout (as on the Hub)."""
    out = {
        "embeddings.cls_token": sd["cls_token"],
        "embeddings.position_embeddings": sd["pos_embed"],
        "embeddings.patch_embeddings.projection.weight": sd["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": sd["patch_embed.proj.bias"],
        "layernorm.weight": sd["norm.weight"],
        "layernorm.bias": sd["norm.bias"],
    }
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    for i in range(depth):
        b, h = f"blocks.{i}", f"encoder.layer.{i}"
        for kind in ("weight", "bias"):
            q, k, v = sd[f"{b}.attn.qkv.{kind}"].chunk(3, dim=0)
            out[f"{h}.attention.attention.query.{kind}"] = q
            out[f"{h}.attention.attention.key.{kind}"] = k
            out[f"{h}.attention.attention.value.{kind}"] = v
            out[f"{h}.attention.output.dense.{kind}"] = sd[f"{b}.attn.proj.{kind}"]
            out[f"{h}.norm1.{kind}"] = sd[f"{b}.norm1.{kind}"]
            out[f"{h}.norm2.{kind}"] = sd[f"{b}.norm2.{kind}"]
            out[f"{h}.mlp.fc1.{kind}"] = sd[f"{b}.mlp.fc1.{kind}"]
            out[f"{h}.mlp.fc2.{kind}"] = sd[f"{b}.mlp.fc2.{kind}"]
    return out


def test_official_pth_loads_strictly(tmp_path):
    enc = build_encoder("t16")
    torch.save(enc.state_dict(), tmp_path / "pixio_vitt16.pth")
    loaded = load_encoder(tmp_path / "pixio_vitt16.pth")  # t16's shape names its size
    assert loaded.cfg.num_heads == SIZES["t16"].num_heads
    assert same_features(enc, loaded)


def test_pretraining_checkpoint_drops_decoder(tmp_path):
    enc = build_encoder("t16")
    sd = dict(enc.state_dict())
    sd["decoder_embed.weight"] = torch.zeros(16, 192)
    sd["mask_token"] = torch.zeros(1, 1, 16)
    torch.save({"model": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}, tmp_path / "ckpt.pth")
    official = to_official(read_checkpoint(tmp_path / "ckpt.pth").tensors)
    assert set(official) == set(enc.state_dict())
    assert same_features(enc, load_encoder(tmp_path / "ckpt.pth"))


def test_transformers_hub_layout_safetensors(tiny_encoder, tmp_path):
    from safetensors.torch import save_file

    folder = tmp_path / "hf"
    folder.mkdir()
    save_file(to_transformers_layout(tiny_encoder.state_dict()), str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"model_type": "pixio", "num_attention_heads": TINY.num_heads}))
    for source in (folder, folder / "model.safetensors"):
        assert same_features(tiny_encoder, load_encoder(source))


def test_our_format_roundtrip_and_fp16(tiny_encoder, tiny_encoder_file, tmp_path):
    assert same_features(tiny_encoder, load_encoder(tiny_encoder_file))
    save_encoder(tiny_encoder, tmp_path / "half.safetensors", dtype=torch.float16, provenance={"note": "test"})
    half = load_encoder(tmp_path / "half.safetensors")
    assert half.metadata["provenance"] == {"note": "test"}
    with torch.no_grad():
        assert (half(X) - tiny_encoder(X)).abs().max() < 0.05


def test_shapes_only_reads_no_tensor_data(tiny_encoder, tmp_path, monkeypatch):
    import safetensors
    from safetensors.torch import save_file

    torch.save({"model": tiny_encoder.state_dict()}, tmp_path / "a.pth")
    save_encoder(tiny_encoder, tmp_path / "b.safetensors", dtype=torch.float16)
    (tmp_path / "hf").mkdir()
    save_file(to_transformers_layout(tiny_encoder.state_dict()), str(tmp_path / "hf" / "model.safetensors"))
    (tmp_path / "hf" / "config.json").write_text(json.dumps({"num_attention_heads": TINY.num_heads}))
    fulls = {source: read_checkpoint(source) for source in (tmp_path / "a.pth", tmp_path / "b.safetensors",
                                                             tmp_path / "hf")}
    real_open, real_load, loads = safetensors.safe_open, torch.load, []

    class NoData:  # a safetensors file whose tensor data cannot be read
        def __init__(self, *args, **kwargs):
            self.f = real_open(*args, **kwargs)

        def __enter__(self):
            self.f.__enter__()
            return self

        def __exit__(self, *exc):
            return self.f.__exit__(*exc)

        def __getattr__(self, name):
            if name == "get_tensor":
                raise AssertionError("tensor data read")
            return getattr(self.f, name)

    monkeypatch.setattr(safetensors, "safe_open", NoData)
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(k.get("mmap")) or real_load(*a, **k))
    for source, full in fulls.items():
        shapes = read_checkpoint(source, shapes_only=True)
        assert all(t.is_meta for t in shapes.tensors.values())
        assert {k: (t.shape, t.dtype) for k, t in shapes.tensors.items()} == \
            {k: (t.shape, t.dtype) for k, t in full.tensors.items()}
    assert loads == [True]  # the .pth: tensors left on disk (mmap), then replaced by meta tensors
    for source in (tmp_path / "b.safetensors", tmp_path / "hf"):  # the .pth carries no head count
        assert encoder_config(source) == TINY


def test_torch_files_of_another_kind_are_one_line_checkpoint_errors(cli, tiny_encoder, tmp_path):
    """A plain state dict or a list where a pretrain checkpoint belongs (curate's --model, pretrain's
    --resume) is a checkpoint error, not an internal one."""
    from pretrain.mae import load_mae

    torch.save(tiny_encoder.state_dict(), tmp_path / "plain.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    for name in ("plain.pt", "list.pt"):
        with pytest.raises(CheckpointError, match="not a pixio pretrain checkpoint"):
            load_mae(tmp_path / name)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.pt").write_bytes((tmp_path / "plain.pt").read_bytes())
    (tmp_path / "photo.png").write_bytes(b"")
    for args in (["pretrain", "--resume", tmp_path / "run"],
                 ["curate", tmp_path / "photo.png", "-o", tmp_path / "c", "--model", tmp_path / "list.pt"]):
        code, _, err = cli(args)
        assert code == 2 and "not a pixio pretrain checkpoint" in err and len(err.strip().splitlines()) == 1, err


def test_size_flag_and_mismatch(tmp_path):
    enc = build_encoder("t16")
    torch.save(enc.state_dict(), tmp_path / "a.pth")
    assert load_encoder(tmp_path / "a.pth", size="t16").cfg == SIZES["t16"]
    with pytest.raises(CheckpointError, match="does not match"):
        load_encoder(tmp_path / "a.pth", size="s16")


def test_unknown_shape_says_how_to_fix(tiny_encoder, tmp_path):
    torch.save(tiny_encoder.state_dict(), tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match="--size"):
        load_encoder(tmp_path / "odd.pth")


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a pickle")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_encoder(tmp_path / "junk.pth")
    with pytest.raises(CheckpointError, match="no such model"):
        load_encoder(tmp_path / "missing.pth")


def test_model_id_downloads_through_huggingface_hub(monkeypatch, tmp_path):
    import huggingface_hub

    enc = build_encoder(EncoderConfig(768, 12, 12))
    torch.save(enc.state_dict(), tmp_path / "pixio_vitb16.pth")
    asked = {}

    def fake_download(repo_id: str, filename: str, **kw) -> str:
        asked.update(repo_id=repo_id, filename=filename)
        return str(tmp_path / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(model_ids, "_reachable", lambda url: True)  # as if online
    loaded = load_encoder("pixio-vitb16")
    assert asked == {"repo_id": "facebook/pixio-vitb16", "filename": "pixio_vitb16.pth"}
    assert loaded.cfg == SIZES["b16"]
    assert set(HUB_MODELS) == {f"pixio-vit{s}16" for s in ("b", "l", "h", "1b", "5b")}


def test_the_point_map_model_falls_back_to_the_file_the_official_loader_takes(monkeypatch, tmp_path):
    import huggingface_hub
    from huggingface_hub import errors

    missing = getattr(errors, "RemoteEntryNotFoundError", None) or errors.EntryNotFoundError  # what the hub raises
    asked = []
    torch.save({}, tmp_path / "model.pth")  # what the fallback name fetches

    def fake_download(repo_id: str, filename: str, **kw) -> str:
        asked.append(filename)
        if filename == "model.safetensors":
            raise missing.__new__(missing)  # the real class (its constructor wants an HTTP response)
        return str(tmp_path / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    monkeypatch.setattr(model_ids, "_reachable", lambda url: True)
    assert model_ids.resolve("pixio-vith16-mapanything") == tmp_path / "model.pth"
    assert asked == ["model.safetensors", "model.pth"]


def test_offline_model_id_is_a_clear_error(monkeypatch):
    import huggingface_hub

    def offline(**kw):
        raise OSError("offline and not cached")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **kw: offline())
    monkeypatch.setattr(model_ids, "_reachable", lambda url: True)  # the hub answers, the download fails
    with pytest.raises(CheckpointError, match="hf download facebook/pixio-vith16"):
        load_encoder("pixio-vith16")


def test_offline_uncached_model_id_fails_fast_with_one_line(tmp_path):
    """No network (as on this machine) and an empty cache: one line within seconds, no retries."""
    import os
    import subprocess
    import sys
    import time

    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0"}
    env.pop("PIXIO_DEBUG", None)
    (tmp_path / "a.png").write_bytes(b"")
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "pixio_cli", "extract", str(tmp_path / "a.png"), "-o",
                          str(tmp_path / "o"), "--model", "pixio-vitl16"], env=env, capture_output=True, text=True,
                         timeout=120)
    seconds = time.perf_counter() - start
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "hf download facebook/pixio-vitl16 pixio_vitl16.pth" in lines[0]
    assert seconds < 15  # the model is resolved before torch is imported: ~0.4 s here; was ~28 s of retries
    env["HF_HUB_OFFLINE"] = "1"
    run = subprocess.run([sys.executable, "-m", "pixio_cli", "extract", str(tmp_path / "a.png"), "-o",
                          str(tmp_path / "o"), "--model", "pixio-vitl16"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1


class Payload:
    """Stands for any object a pickle would have to run code to rebuild."""


def test_corrupt_and_code_carrying_checkpoints_are_one_line(cli, tmp_path):
    (tmp_path / "photo.png").write_bytes(b"")
    (tmp_path / "trunc.pth").write_bytes(b"PK\x03\x04 truncated zip")
    torch.save({"w": torch.zeros(2), "obj": Payload()}, tmp_path / "code.pth")
    (tmp_path / "text.jpg").write_text("hello")  # torch.load: KeyError(104), which said "(104)"
    for name, expected in (("trunc.pth", "not a readable checkpoint"), ("code.pth", "never runs code"),
                           ("text.jpg", "not a readable checkpoint (corrupt, truncated, or not a PyTorch file)")):
        code, _, err = cli(["extract", tmp_path / "photo.png", "-o", tmp_path / "o", "--model", tmp_path / name])
        assert code == 2 and expected in err, err
        assert len(err.strip().splitlines()) == 1 and "weights_only=False" not in err


def test_missing_bundled_model_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(model_ids, "WEIGHTS_DIR", Path(tmp_path))
    with pytest.raises(CheckpointError, match="not in this installation"):
        load_encoder("pixio-tiny")


def test_head_checkpoint_encoder_prefix(tiny_encoder, tmp_path):
    from pixio_cli.checkpoints import save_safetensors

    tensors = {f"encoder.{k}": v for k, v in tiny_encoder.state_dict().items()}
    tensors["head.conv.weight"] = torch.zeros(3, 3)
    save_safetensors(tensors, tmp_path / "head.safetensors", {"encoder_config": TINY.to_dict()})
    assert same_features(tiny_encoder, load_encoder(tmp_path / "head.safetensors"))


def test_loading_skips_random_init_and_leaves_nothing_unfilled(tiny_encoder, tmp_path, monkeypatch):
    save_encoder(tiny_encoder, tmp_path / "enc.safetensors")
    on_meta = []
    real = torch.nn.init.kaiming_uniform_

    def spy(*args, **kwargs):
        on_meta.append((args[0] if args else kwargs["tensor"]).is_meta)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.nn.init, "kaiming_uniform_", spy)
    enc = load_encoder(tmp_path / "enc.safetensors")
    assert on_meta and all(on_meta)  # nn.Linear's initialisation touched no real memory: the checkpoint fills it
    assert same_features(enc, tiny_encoder)
    assert all(not p.is_meta and p.requires_grad for p in enc.parameters())  # trainable as built (finetuning)

    from pixio_cli.checkpoints import empty, require_filled

    half = empty(lambda: torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)))
    half.load_state_dict({"0.weight": torch.ones(2, 2), "0.bias": torch.ones(2)}, strict=False, assign=True)
    with pytest.raises(CheckpointError, match="no weights for 1.weight, 1.bias"):
        require_filled(half, "part.safetensors")


def test_a_hub_that_never_answers_is_given_up_in_one_line(tmp_path):
    """A proxy or firewall that accepts the connection and sends nothing held `pixio models download` for
    minutes (huggingface_hub retries its metadata request five times at 60 s each)."""
    import os
    import socket
    import subprocess
    import sys
    import threading
    import time

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held = []

    def accept() -> None:
        while True:
            try:
                held.append(server.accept()[0])  # and never a byte back
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0",
           "HF_ENDPOINT": f"http://127.0.0.1:{server.getsockname()[1]}", "PIXIO_HUB_STALL": "5"}
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "pixio_cli", "models", "download", "pixio-vitb16"], env=env,
                         capture_output=True, text=True, timeout=120)
    server.close()
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1 and "sent nothing for 5 s" in lines[0], run.stderr
    assert time.perf_counter() - start < 30


def test_a_cached_checkpoint_cut_short_is_not_a_success(monkeypatch, tmp_path):
    import huggingface_hub

    from pixio_cli.checkpoints import save_encoder

    save_encoder(build_encoder(EncoderConfig(48, 2, 3)), tmp_path / "whole.safetensors")
    data = (tmp_path / "whole.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-100])
    assert model_ids.whole(tmp_path / "whole.safetensors") and not model_ids.whole(tmp_path / "cut.safetensors")
    torch.save({"w": torch.zeros(1000)}, tmp_path / "whole.pth")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "whole.pth").read_bytes()[:-50])
    assert model_ids.whole(tmp_path / "whole.pth") and not model_ids.whole(tmp_path / "cut.pth")
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: str(tmp_path / "cut.pth"))
    monkeypatch.setattr(model_ids, "_reachable", lambda url: False)  # offline: it cannot be fetched again
    with pytest.raises(CheckpointError, match="cut short"):
        model_ids.resolve("pixio-vitb16")
    fetched = []

    def fake_download(repo_id: str, filename: str, force_download: bool = False, **kw) -> str:
        fetched.append(force_download)
        return str(tmp_path / "whole.pth")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(model_ids, "_reachable", lambda url: True)  # online: fetched again, in full
    assert model_ids.resolve("pixio-vitb16") == tmp_path / "whole.pth" and fetched == [True]
