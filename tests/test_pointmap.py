"""The point-map model: MapAnything's checkpoint layout loads strictly, outputs are geometrically
consistent, views are treated as a set apart from the reference view, known intrinsics are an input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from heads import geometry as G
from heads.pointmap.cameras import quaternion_to_matrix, rays_from_intrinsics
from heads.pointmap.checkpoint import load_pointmap, save_pointmap
from heads.pointmap.model import PointMapConfig, PointMapModel
from heads.pointmap.predictions import Predictions
from pixio_cli.encoder import size_config
from pixio_cli.errors import CheckpointError

from .conftest import KITCHEN, head_training_stopped_at, random_encoder

SMALL = PointMapConfig(dim=64, depth=4, num_heads=1, taps=[1, 2], dpt_channels=[8, 16, 24, 32], dpt_features=16,
                       scale_hidden=8, ray_dims=[24, 32, 40])


def small_model(seed: int = 0) -> PointMapModel:
    """t16-shaped encoder (a preset, so a file without config can name it) and a small multi-view part,
    every weight random so that no mapping error hides behind an initial value."""
    torch.manual_seed(seed)
    model = PointMapModel(random_encoder(size_config("t16"), seed), SMALL)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.startswith("encoder."):
                p.copy_(1 + 0.05 * torch.randn_like(p) if name.endswith("norm.weight") or "norm_layer.weight" in name
                        or re.search(r"norm\d?\.weight$", name) else 0.05 * torch.randn_like(p))
    return model.eval()


def to_mapanything(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our names -> the public checkpoint's (written independently of the loader's rules)."""
    out = {}
    for k, v in sd.items():
        k2 = re.sub(r"^encoder\.blocks\.(\d+)\.", r"encoder.blocks.\1.inner.", k)
        k2 = re.sub(r"^dpt\.projects\.(\d)\.", r"dense_head.0.input_process.\1.0.0.", k2)
        k2 = re.sub(r"^dpt\.resize_layers\.(\d)\.", r"dense_head.0.input_process.\1.0.1.", k2)
        k2 = re.sub(r"^dpt\.scratch\.layer(\d)_rn\.", lambda m: f"dense_head.0.input_process.{int(m.group(1)) - 1}.1.", k2)
        k2 = re.sub(r"^dpt\.scratch\.", "dense_head.0.scratch.", k2)
        k2 = re.sub(r"^regressor\.", "dense_head.1.", k2)
        out[k2] = v.clone()
    return out


@pytest.fixture(scope="module")
def model() -> PointMapModel:
    return small_model()


def images(v: int = 3, h: int = 48, w: int = 80, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, v, 3, h, w, generator=g)


def test_public_layout_loads_strictly_and_gives_the_same_outputs(model, tmp_path):
    sd = to_mapanything(model.state_dict())
    assert any(".inner." in k for k in sd) and "dense_head.0.input_process.3.0.1.weight" in sd
    assert not any(k.startswith("dense_head.0.scratch.refinenet4.resConfUnit1") for k in sd)
    path = tmp_path / "model.safetensors"
    save_file(sd, str(path))
    loaded = load_pointmap(str(path))
    assert loaded.cfg == SMALL
    x = images()
    with torch.no_grad():
        a, b = model(x), loaded(x)
    for name in ("pts3d", "depth_z", "conf", "cam2world", "scale", "mask_logits"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_mapanything_pixio_checkpoint_key_list_maps_onto_our_model_exactly():
    """The real names and shapes of MapAnything's Pixio-H checkpoint (852 tensors, as its own code builds the
    model: facebookresearch/map-anything f7ebafb with uniception 0.1.7, safetensors' de-duplicated names),
    not names derived from our mapping: every tensor lands in our model, the encoders of known depth and
    poses included, and nothing of the model is left without one."""
    import gzip

    from heads.pointmap.checkpoint import config_from_state_dict, from_mapanything, is_mapanything_layout
    from pixio_cli.checkpoints import infer_config
    from pixio_cli.encoder import PixioEncoder

    rows = gzip.open(Path(__file__).parent / "data" / "mapanything_pixio_keys.tsv.gz", "rt").read().splitlines()
    sd = {name: torch.empty([int(d) for d in shape.split("x")], device="meta")
          for name, shape in (row.split("\t") for row in rows)}
    assert len(sd) == 852 and is_mapanything_layout(sd)
    ours, unused = from_mapanything(sd)
    assert unused == []
    enc_cfg = infer_config({k[len("encoder."):]: v for k, v in ours.items() if k.startswith("encoder.")})
    assert (enc_cfg.embed_dim, enc_cfg.depth, enc_cfg.patch_size, enc_cfg.n_cls_tokens) == (1280, 32, 16, 8)
    cfg = config_from_state_dict(ours, enc_cfg.patch_size)
    assert (cfg.dim, cfg.depth, cfg.taps, cfg.dpt_features, cfg.geometric_inputs) == (768, 24, [11, 17], 256, True)
    with torch.device("meta"):
        expected = PointMapModel(PixioEncoder(enc_cfg), cfg).state_dict()
    assert set(ours) == set(expected)
    assert [k for k in ours if ours[k].shape != expected[k].shape] == []


def test_aliased_names_are_accepted_once(model, tmp_path):
    sd = to_mapanything(model.state_dict())
    sd["dpt_feature_head.scratch.layer2_rn.weight"] = sd["dense_head.0.input_process.1.1.weight"].clone()
    sd["dpt_regressor_head.conv1.bias"] = sd["dense_head.1.conv1.bias"].clone()
    save_file(sd, str(tmp_path / "a.safetensors"))
    load_pointmap(str(tmp_path / "a.safetensors"))
    sd["dpt_regressor_head.conv1.bias"] = sd["dense_head.1.conv1.bias"] + 1  # two different tensors, one name
    save_file(sd, str(tmp_path / "b.safetensors"))
    with pytest.raises(CheckpointError, match="two different tensors"):
        load_pointmap(str(tmp_path / "b.safetensors"))


@pytest.mark.parametrize("change", ["extra", "missing"])
def test_unknown_or_missing_tensors_are_refused(model, tmp_path, change):
    sd = to_mapanything(model.state_dict())
    if change == "extra":
        sd["mystery_head.weight"] = torch.zeros(3)
    else:
        del sd["pose_head.fc_rot.weight"]
    save_file(sd, str(tmp_path / "m.safetensors"))
    with pytest.raises(CheckpointError, match="does not fit a point-map model"):
        load_pointmap(str(tmp_path / "m.safetensors"))


def test_own_format_round_trip(model, tmp_path):
    save_pointmap(model, tmp_path / "pm.safetensors", {"how": "test"})
    loaded = load_pointmap(str(tmp_path / "pm.safetensors"))
    x = images(2)
    with torch.no_grad():
        assert torch.equal(model(x).pts3d, loaded(x).pts3d)


def test_an_encoder_is_not_a_point_map_model(tiny_encoder_file):
    with pytest.raises(CheckpointError, match="not a point-map model"):
        load_pointmap(str(tiny_encoder_file))


def test_outputs_are_consistent_geometry(model):
    with torch.no_grad():
        out = model(images(2, 48, 80))  # a 3x5 token grid: the DPT's deepest level is cropped
    assert out.pts3d.shape == (1, 2, 48, 80, 3) and out.conf.shape == (1, 2, 48, 80)
    assert torch.allclose(out.rays.norm(dim=-1), torch.ones(1), atol=1e-5)
    assert (out.conf >= 1).all() and (out.scale > 0).all()
    R, t = out.cam2world[..., :3, :3], out.cam2world[..., :3, 3]
    assert torch.allclose(R @ R.transpose(-1, -2), torch.eye(3).expand_as(R), atol=1e-5)
    world = torch.einsum("bvij,bvhwj->bvhwi", R, out.pts3d_cam) + t[:, :, None, None]
    assert torch.allclose(world, out.pts3d, atol=1e-5)
    assert torch.allclose(out.depth_z, out.pts3d_cam[..., 2]) and torch.allclose(
        out.depth_ray, out.pts3d_cam.norm(dim=-1), rtol=1e-5)
    assert torch.equal(out.cam2world[..., 3, :], torch.tensor([0.0, 0, 0, 1]).expand(1, 2, 4))


def test_views_through_the_dense_head_in_groups_give_the_same_outputs(model, monkeypatch):
    """Many large views go through the dense head a few at a time (CUDA's upsampling refuses 2**31 elements)."""
    import heads.pointmap.model as pointmap

    x = images(3)
    with torch.no_grad():
        whole = model(x)
        monkeypatch.setattr(pointmap, "MAX_UPSAMPLED", 8 * 48 * 80)  # one view (8 channels) per group
        grouped = model(x)
    assert torch.allclose(whole.pts3d, grouped.pts3d, atol=1e-5)
    assert torch.allclose(whole.conf, grouped.conf, atol=1e-5)


def test_non_reference_views_are_a_set(model):
    """Swapping views 1 and 2 swaps their outputs; view 0 (the reference) and the scale do not change."""
    x = images(3)
    with torch.no_grad():
        a = model(x)
        b = model(x[:, [0, 2, 1]])
    assert torch.allclose(a.pts3d[:, [0, 2, 1]], b.pts3d, atol=1e-4)
    assert torch.allclose(a.scale, b.scale, atol=1e-6)
    with torch.no_grad():
        c = model(x[:, [1, 0, 2]])  # another reference view: another frame
    assert not torch.allclose(a.pts3d[:, 1], c.pts3d[:, 0], atol=1e-3)


def test_known_intrinsics_are_an_input(model):
    K = torch.tensor([[60.0, 0, 39.5], [0, 62.0, 23.5], [0, 0, 1]])
    rays = rays_from_intrinsics(K, 48, 80)
    assert np.allclose(rays.numpy(), G.ray_directions(K.double().numpy(), 48, 80), atol=1e-6)
    assert np.allclose(G.intrinsics_from_rays(rays.double().numpy()), K.numpy(), atol=1e-3)
    x = images(2)
    with torch.no_grad():
        plain = model(x)
        given = model(x, rays[None, None].expand(1, 2, 48, 80, 3))
    assert not torch.allclose(plain.pts3d, given.pts3d, atol=1e-4)


def test_quaternion_convention_matches_geometry():
    q = torch.nn.functional.normalize(torch.randn(5, 4, dtype=torch.float64), dim=-1)
    assert np.allclose(quaternion_to_matrix(q).numpy(), G.rotation_from_quaternion(q.numpy()))


# ---------------------------------------------------------------------------- commands



@pytest.fixture(scope="module")
def model_file(model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pm") / "pm.safetensors"
    save_pointmap(model, path, {"how": "random, for tests"})
    return path


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> list[Path]:
    """Three real 640x480 kitchen frames."""
    if not KITCHEN.exists():
        pytest.skip("shared data not present")
    return [KITCHEN / f"frame-{i:06d}.color.jpg" for i in (0, 4, 8)]


def test_recon3d_writes_a_coloured_scene_and_raw_predictions(cli, model_file, frames, tmp_path):
    o3d = pytest.importorskip("open3d")
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"not a jpeg")
    code, out, err = cli(["recon3d", *frames[:2], bad, frames[2], "-o", tmp_path / "scene.ply", "--model",
                          model_file, "--resize", "64", "--no-mask", "--edge-rtol", "0", "--save-predictions", tmp_path / "p.npz",
                          "--json", "-q", "--workers", "0", "--precision", "fp32"])
    assert code == 1 and "corrupt.jpg" in err  # reported and skipped; the rest reconstructed
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["frames"] == 3 and summary["failed"] == 1 and summary["unit"] == "metres, as the network estimates them"
    assert summary["size"] == [80, 64] and summary["points"] == 3 * 64 * 80
    pcd = o3d.io.read_point_cloud(str(tmp_path / "scene.ply"))
    assert len(pcd.points) == 3 * 64 * 80 and len(pcd.colors) == len(pcd.points)
    pred = Predictions.load(tmp_path / "p.npz")
    assert pred.images == [str(f) for f in frames]
    assert pred.pts3d.shape == (3, 64, 80, 3) and pred.cam2world.shape == (3, 4, 4) and pred.conf.shape == (3, 64, 80)
    assert np.allclose(np.asarray(pcd.points), pred.pts3d.reshape(-1, 3), atol=1e-5)
    # K in processing pixels fits the rays; K_original is the same camera in the 640x480 originals
    assert np.allclose(pred.K_original[:, 0, 0], pred.K[:, 0, 0] * 8, rtol=1e-5)
    assert (pred.original_hw == [480, 640]).all()


def test_recon3d_takes_known_intrinsics(cli, model_file, frames, tmp_path):
    K = np.array([[585.0, 0, 320], [0, 585, 240], [0, 0, 1]])
    np.savetxt(tmp_path / "K.txt", K)
    args = ["recon3d", *frames[:2], "-o", tmp_path / "s.ply", "--model", model_file, "--resize", "64", "--no-mask",
            "-q", "--workers", "0", "--precision", "fp32"]
    code, _, err = cli([*args, "--intrinsics", tmp_path / "K.txt", "--save-predictions", tmp_path / "k.npz"])
    assert code == 0, err
    pred = Predictions.load(tmp_path / "k.npz")
    assert np.allclose(pred.K_original, K) and np.allclose(pred.K[0, 0, 0], 585 / 8)
    (tmp_path / "K3.json").write_text(json.dumps([K.tolist()] * 3))
    code, _, err = cli([*args, "--intrinsics", tmp_path / "K3.json"])
    assert code == 2 and "3 matrices for 2 images" in err
    (tmp_path / "K2.txt").write_text("1 0 0\n0 1 0\n")
    code, _, err = cli([*args, "--intrinsics", tmp_path / "K2.txt"])
    assert code == 2 and "expected one 3x3 matrix" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "K.json").write_text(json.dumps({"fx": 585}))
    (tmp_path / "empty.txt").write_text("")
    for name in ("K.json", "empty.txt", "missing.txt"):  # each an option's file that cannot be read: exit 2
        code, _, err = cli([*args, "--intrinsics", tmp_path / name])
        assert code == 2 and "cannot read it as one 3x3 K" in err and len(err.strip().splitlines()) == 1, err
    # one K per input: an unreadable input skips its own K, the others keep theirs
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    Ks = [K.tolist(), (K * [[2], [2], [1]]).tolist(), (K * [[3], [3], [1]]).tolist()]
    (tmp_path / "K3.json").write_text(json.dumps(Ks))
    code, _, err = cli(["recon3d", frames[0], tmp_path / "bad.jpg", frames[1], *args[3:], "--intrinsics",
                        tmp_path / "K3.json", "--save-predictions", tmp_path / "k3.npz"])
    assert code == 1 and "bad.jpg" in err
    assert np.allclose(Predictions.load(tmp_path / "k3.npz").K_original, np.array(Ks)[[0, 2]])
    # --max-frames keeps the K of each frame it keeps
    code, _, err = cli(["recon3d", *frames[:3], *args[3:], "--intrinsics", tmp_path / "K3.json", "--max-frames", "2",
                        "--save-predictions", tmp_path / "k2.npz"])
    assert code == 0, err
    assert np.allclose(Predictions.load(tmp_path / "k2.npz").K_original, np.array(Ks)[[0, 2]])


def test_recon3d_refuses_what_it_cannot_do(cli, model_file, frames, tmp_path):
    tall = tmp_path / "tall.png"
    cv2.imwrite(str(tall), np.zeros((300, 100, 3), np.uint8))
    args = ["--model", model_file, "--resize", "64", "-q", "--workers", "0"]
    code, _, err = cli(["recon3d", frames[0], tall, "-o", tmp_path / "a.ply", *args])
    assert code == 2 and "aspect ratio" in err and not (tmp_path / "a.ply").exists()
    code, _, err = cli(["recon3d", frames[0], "-o", tmp_path / "a.obj", *args])
    assert code == 2 and ".ply" in err
    (tmp_path / "empty").mkdir()
    code, _, err = cli(["recon3d", tmp_path / "empty", "-o", tmp_path / "a.ply", *args])
    assert code == 1 and "no images found" in err


def test_depth_from_a_point_map_model(cli, model_file, frames, tmp_path):
    o3d = pytest.importorskip("open3d")
    code, _, err = cli(["depth", frames[0], "-o", tmp_path / "d.npy", "--model", model_file, "--resize", "64",
                        "--ply", "-q", "--workers", "0", "--precision", "fp32"])
    assert code == 0, err
    d = np.load(tmp_path / "d.npy")
    assert d.shape == (480, 640) and (d > 0).all()
    assert len(o3d.io.read_point_cloud(str(tmp_path / "d.ply")).points) == 480 * 640  # camera from the model
    code, _, err = cli(["segment", frames[0], "-o", tmp_path / "s.png", "--model", model_file, "-q"])
    assert code != 0 and "point-map model" in err
    code, out, err = cli(["evaluate", "depth", "--data", KITCHEN, "--model", model_file, "--limit", "1", "--json",
                          "--workers", "0", "--precision", "fp32"])
    assert code == 0, err
    scores = json.loads(out.strip().splitlines()[-1])
    assert scores["images"] == 1 and np.isfinite(scores["abs_rel"])


def test_evaluation_scores_ground_truth_as_perfect(frames):
    """Predictions made from the ground truth (in another world frame) score perfectly: the evaluation's
    conventions (frames, poses, scaling of K) agree with the layout's."""
    from heads.metrics import pointmap_metrics
    from heads.pointmap.evaluate import as_evaluated, ground_truth
    from heads.sequences import find_sequences

    seq = find_sequences("7scenes", KITCHEN, "train")[0]
    chosen = [seq.frames[i] for i in (0, 5, 10)]
    hw = (60, 80)
    gt, valid = ground_truth([seq.read_depth(f) for f in chosen], [f.K for f in chosen],
                             cam2world=[f.cam2world for f in chosen], image_hw=[(480, 640)] * 3, hw=hw)
    world = np.eye(4)
    world[:3, :3] = G.rotation_from_quaternion(np.array([0.3, -0.2, 0.1, 0.9]))
    world[:3, 3] = [1.0, 2.0, -0.5]
    poses = world @ gt["cam2world"]  # the same cameras in an arbitrary world frame, 2x the size
    pts = np.stack([G.transform(c, T) for c, T in zip(gt["pts3d_cam"], poses)])
    scaled = poses.copy()
    scaled[:, :3, 3] *= 2
    pred = Predictions(images=["a", "b", "c"], pts3d=(2 * pts).astype(np.float32), depth_z=2 * gt["pts3d_cam"][..., 2],
                       conf=np.ones(valid.shape), mask=valid, cam2world=scaled, K=np.zeros((3, 3, 3)),
                       K_original=np.zeros((3, 3, 3)), original_hw=np.zeros((3, 2)), scale=2.0, metric=False)
    m = pointmap_metrics(as_evaluated(pred), gt, valid)
    assert m["points_rel"] < 1e-3 and m["depth_rel"] < 1e-3  # float32 round-off
    assert m["points_tau"] == 100 and m["pose_auc5"] > 99.9
    assert np.allclose(gt["cam2world"][0], np.eye(4), atol=1e-3)  # 7-Scenes poses are orthonormal to ~1e-4
    # a depth map stored at half the image's size gives the same ground truth: K is in the image's pixels
    half, _ = ground_truth([seq.read_depth(f)[::2, ::2] for f in chosen], [f.K for f in chosen],
                           cam2world=[f.cam2world for f in chosen], image_hw=[(480, 640)] * 3, hw=hw)
    both = valid & np.isfinite(half["pts3d"]).all(-1)
    err = np.linalg.norm(half["pts3d"] - gt["pts3d"], axis=-1)[both]
    assert np.median(err) < 0.01 * np.median(gt["pts3d_cam"][..., 2][valid])


def test_evaluate_pointmap_command(cli, model_file, frames):
    code, out, err = cli(["evaluate", "pointmap", "--data", KITCHEN, "--model", model_file, "--views", "2",
                          "--gap", "3", "--limit", "2", "--resize", "64", "--precision", "fp32", "--json"])
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["sets"] == 2 and {"points_rel", "depth_tau", "pose_auc5", "ate", "scale_rel"} <= set(result)
    assert {"origin_ate", "constant_velocity_ate", "constant_velocity_pose_auc30"} <= set(result)


def test_trivial_camera_baselines_score_what_they_are():
    """A camera moving at constant speed along a line is scored perfectly by the constant-velocity
    baseline; the origin baseline's ATE is the cameras' spread."""
    from heads.metrics import camera_metrics, trivial_cameras
    from heads.pointmap.evaluate import baseline_pose_metrics

    R = G.rotation_from_quaternion(np.array([0.1, 0.2, 0.3, 0.9]))
    gt = np.tile(np.eye(4), (5, 1, 1))
    gt[:, :3, :3] = R
    gt[:, :3, 3] = np.array([1.0, 2.0, 3.0]) + np.arange(5)[:, None] * np.array([0.3, -0.1, 0.2])
    line = camera_metrics(trivial_cameras(5)["constant_velocity"], gt)
    assert line["ate_mean"] < 1e-9 and line["rotation_error_deg"] < 1e-4
    origin = camera_metrics(trivial_cameras(5)["origin"], gt)
    assert np.isclose(origin["ate_mean"], np.linalg.norm(gt[:, :3, 3] - gt[:, :3, 3].mean(0), axis=1).mean())
    rel = G.relative_to_first(gt)
    pts = np.ones((5, 2, 2, 3)) + rel[:, None, None, :3, 3]
    base = baseline_pose_metrics({"cam2world": rel, "pts3d": pts}, np.ones((5, 2, 2), bool))
    assert base["constant_velocity_ate"] < 1e-9 and base["origin_ate"] > 0.01


# ---------------------------------------------------------------------------- training


def test_training_samples_carry_consistent_ground_truth():
    from heads.pointmap.train import ViewSets
    from heads.sequences import find_sequences

    if not KITCHEN.exists():
        pytest.skip("shared data not present")
    data = ViewSets(find_sequences("7scenes", KITCHEN, "train"), 3, 4, (48, 64), seed=0, total=10)
    s = data[3]
    assert s["images"].shape == (3, 3, 48, 64) and s["pts3d"].shape == (3, 48, 64, 3)
    assert torch.allclose(s["quats"][0], torch.tensor([0.0, 0, 0, 1]), atol=1e-3) and s["trans"][0].abs().max() < 1e-3
    v = s["valid"][0]
    # view 0 is the reference: its points are its rays times the depth along them
    assert torch.allclose(s["pts3d"][0][v], (s["rays"][0] * s["depth_ray"][0][..., None])[v], atol=1e-4)
    assert torch.equal(data[3]["images"], s["images"])  # deterministic in the position


def test_training_lowers_the_loss_on_one_sample():
    from heads.pointmap.train import ViewSets, pointmap_loss
    from heads.sequences import find_sequences

    if not KITCHEN.exists():
        pytest.skip("shared data not present")
    batch = torch.utils.data.default_collate([ViewSets(find_sequences("7scenes", KITCHEN, "train"), 2, 3, (48, 64),
                                                       seed=1, total=1)[0]])
    model = small_model(1)
    model.init_weights()
    model.train()
    opt = torch.optim.AdamW([p for n, p in model.named_parameters() if not n.startswith("encoder.")], lr=1e-3)
    losses = []
    for _ in range(30):
        loss, parts = pointmap_loss(model(batch["images"]), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert set(parts) == {"points", "rays", "depth", "translation", "rotation", "scale", "mask"}
    assert losses[-1] < 0.6 * losses[0], losses


def test_train_pointmap_command_saves_a_model_that_recon3d_runs(cli, tiny_encoder_file, frames, tmp_path):
    out = tmp_path / "pm"
    args = ["train", "pointmap", "--encoder", tiny_encoder_file, "--data", KITCHEN, "-o", out, "--steps", "2",
            "--batch-size", "1", "--views", "2", "--width", "64", "--height", "48", "--dim", "48", "--depth", "4",
            "--num-heads", "1", "--dpt-features", "16", "--dpt-channels", "8,16,24,32", "--eval-limit", "1",
            "--workers", "0", "--device", "cpu", "--save-every", "1"]
    code, stdout, err = cli(args)
    assert code == 0, err
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["steps"] == 2 and "points_rel" in result["val_metrics"] and "points_rel" in result["untrained_val_metrics"]
    model = load_pointmap(str(out / "pointmap.safetensors"))
    assert model.cfg.depth == 4 and model.provenance["steps"] == 2 and model.infer_short == 48
    assert (out / "train.ckpt").exists()
    code, _, err = cli(["recon3d", *frames[:2], "-o", tmp_path / "s.ply", "--model", out / "pointmap.safetensors",
                        "--no-mask", "-q", "--workers", "0"])
    assert code == 0, err
    code, _, err = cli([*args[:-2], "--save-every", "1", "--steps", "3", "--resume"])
    assert code == 0, err
    assert load_pointmap(str(out / "pointmap.safetensors")).provenance["steps"] == 3


def test_train_pointmap_resumes_exactly(cli, tiny_encoder_file, frames, tmp_path):  # frames: skips without the data
    """Stopped at step 2 of 4 and resumed, the weights equal an uninterrupted run's (same samples and the
    same steps with known rays)."""
    from safetensors.torch import load_file

    def args(out):
        return ["train", "pointmap", "--encoder", tiny_encoder_file, "--data", KITCHEN, "-o", out, "--steps", "4",
                "--batch-size", "1", "--views", "2", "--width", "64", "--height", "48", "--dim", "48", "--depth",
                "4", "--num-heads", "1", "--dpt-features", "16", "--dpt-channels", "8,16,24,32", "--eval-limit", "1",
                "--workers", "0", "--device", "cpu", "--precision", "fp32", "--save-every", "10"]

    code, _, err = cli(args(tmp_path / "full"))
    assert code == 0, err
    with head_training_stopped_at(2):
        code, _, _ = cli(args(tmp_path / "cut"))
    assert code == 130 and (tmp_path / "cut" / "train.ckpt").exists()
    assert not (tmp_path / "cut" / "pointmap.safetensors").exists()
    code, _, err = cli([*args(tmp_path / "cut"), "--resume"])
    assert code == 0, err
    a = load_file(str(tmp_path / "full" / "pointmap.safetensors"))
    b = load_file(str(tmp_path / "cut" / "pointmap.safetensors"))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_train_pointmap_on_two_ddp_processes(tiny_encoder_file, frames, tmp_path, torchrun_failure, free_port):
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
           str(free_port), "-m", "pixio_cli", "train", "pointmap", "--encoder", str(tiny_encoder_file),
           "--data", str(KITCHEN), "-o", str(out), "--steps", "3", "--batch-size", "1", "--views", "2", "--width", "64",
           "--height", "48", "--dim", "48", "--depth", "4", "--num-heads", "1", "--dpt-features", "16",
           "--dpt-channels", "8,16,24,32", "--eval-limit", "1", "--workers", "0", "--device", "cpu"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, torchrun_failure(res.stderr)
    assert json.loads(res.stdout.strip().splitlines()[-1])["batch_size"] == 2
    assert load_pointmap(str(out / "pointmap.safetensors")).provenance["steps"] == 3


def test_known_poses_and_depth_reach_the_encoders_as_mapanythings_code_makes_them():
    """tests/data/mapanything_geometric_inputs.npz was written by scripts/mapanything_inputs_fixture.py with
    MapAnything's own functions (facebookresearch/map-anything f7ebafb): relative quaternions, normalised
    translations and depths, and the logs of their scales, for 2 x 4 random poses and 3 depth maps (one
    empty)."""
    from heads.pointmap.model import depth_inputs, pose_inputs

    ref = np.load(Path(__file__).parent / "data" / "mapanything_geometric_inputs.npz")
    rel_q, rel_t, log_factor = pose_inputs(torch.from_numpy(ref["cam2world"]))
    assert torch.allclose(rel_q, torch.from_numpy(ref["rel_q"]), atol=1e-5)
    assert torch.allclose(rel_t, torch.from_numpy(ref["rel_t"]), atol=1e-5)
    assert torch.allclose(log_factor, torch.from_numpy(ref["log_pose_factor"]), atol=1e-5)
    rel, log_norm, given = depth_inputs(torch.from_numpy(ref["depth"]))
    assert torch.allclose(rel, torch.from_numpy(ref["log_depth"]), atol=1e-6)
    assert torch.allclose(log_norm, torch.from_numpy(ref["log_depth_factor"]), atol=1e-5)
    assert given.tolist() == [True, True, False]


def test_known_poses_in_any_world_frame_give_the_same_scene_in_that_frame():
    """Only poses relative to the first camera enter the model: the same cameras moved by a rigid transform
    give the same depths, and the points and cameras come out moved by it (outputs in the given frame)."""
    from heads.pointmap.predictions import predict

    cfg = PointMapConfig(**{**SMALL.to_dict(), "geometric_inputs": True})
    torch.manual_seed(0)
    net = PointMapModel(small_model().encoder, cfg)
    net.init_weights()
    net.eval()
    x = images(3, 32, 48)[0]
    K = [np.array([[40.0, 0, 24], [0, 40.0, 16], [0, 0, 1]])] * 3
    poses = np.tile(np.eye(4), (3, 1, 1))
    poses[:, 0, 3] = [0.0, 0.3, 0.6]
    move = np.eye(4)
    move[:3, :3] = quaternion_to_matrix(torch.tensor([0.2, -0.1, 0.3, 0.9]) / torch.tensor([0.2, -0.1, 0.3, 0.9]).norm()).numpy()
    move[:3, 3] = [5.0, -2.0, 1.0]
    depth = [np.full((32, 48), 2.0, np.float32)] * 3
    with torch.no_grad():
        a = predict(net, x, names=["a", "b", "c"], original_hw=[(32, 48)] * 3, K_original=K, depth_z=depth,
                    cam2world=poses)
        b = predict(net, x, names=["a", "b", "c"], original_hw=[(32, 48)] * 3, K_original=K, depth_z=depth,
                    cam2world=move @ poses)
        c = predict(net, x, names=["a", "b", "c"], original_hw=[(32, 48)] * 3, K_original=K)
        d = predict(net, x, names=["a", "b", "c"], original_hw=[(32, 48)] * 3, K_original=K, depth_z=depth)
        spread = poses.copy()
        spread[:, 0, 3] *= 3
        e = predict(net, x, names=["a", "b", "c"], original_hw=[(32, 48)] * 3, K_original=K, depth_z=depth,
                    cam2world=spread)
    assert np.allclose(a.depth_z, b.depth_z, rtol=1e-4)
    assert np.allclose(b.pts3d, a.pts3d @ move[:3, :3].T + move[:3, 3], atol=1e-3)
    assert np.allclose(b.cam2world, move @ a.cam2world, atol=1e-4)
    assert not np.allclose(a.depth_z, c.depth_z)  # the depth and poses were used
    assert not np.allclose(a.depth_z, d.depth_z, rtol=1e-4), "the poses never reached the pose encoders"
    assert not np.allclose(a.depth_z, e.depth_z, rtol=1e-4), "other poses, the same output"


def test_views_go_through_the_dense_head_in_small_groups_with_the_same_outputs(model, monkeypatch):
    """MapAnything's memory-efficient inference: the dense head (the memory bottleneck) takes a few views at a
    time, so peak memory per view stays bounded as views grow; the outputs do not change."""
    import heads.pointmap.model as P

    x = images(5, 32, 48)
    with torch.no_grad():
        monkeypatch.setattr(P, "DENSE_VIEWS", 2)
        grouped = model(x)
        monkeypatch.setattr(P, "DENSE_VIEWS", 100)
        whole = model(x)
    for name in ("pts3d", "depth_z", "conf", "cam2world"):
        assert torch.allclose(getattr(grouped, name), getattr(whole, name), atol=1e-5), name
