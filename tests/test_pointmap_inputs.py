"""What the point-map model makes of known cameras and depth, and of its heads' outputs: rotations and quaternions,
rays from intrinsics and back, MapAnything's normalised depth and pose inputs, which known input reaches which
encoder (per view, with its mask and metric scale) and how the heads' outputs become cameras and points. Small
and fast: ground truth written independently with NumPy and heads.geometry, and a tiny random model whose
modules are watched with forward hooks."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from heads import geometry as G
from heads.pointmap import model as pointmap
from heads.pointmap.cameras import (intrinsics, matrix_to_quaternion, quaternion_multiply, quaternion_to_matrix,
                                    rays_from_intrinsics)
from heads.pointmap.model import PointMapConfig, PointMapModel, decode, depth_inputs, pose_inputs
from pixio_cli.errors import CheckpointError

from .conftest import random_encoder

B, V, H, W = 2, 3, 32, 64  # a 2 x 4 patch grid (16-pixel patches): h != w, and B * V (6) != h * w (8)
WATCHED = ["encoder", "ray_dirs_encoder", "depth_encoder", "depth_scale_encoder", "cam_rot_encoder",
           "cam_trans_encoder", "cam_trans_scale_encoder", "fusion_norm_layer", "info_sharing", "dpt", "regressor",
           "pose_head", "scale_head"]


# ---------------------------------------------------------------------------- ground truth, written apart


def hamilton(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of (..., 4) quaternions in (x, y, z, w) order: (w_a w_b - a.b, w_a b + w_b a + a x b)."""
    va, vb, wa, wb = a[..., :3], b[..., :3], a[..., 3:], b[..., 3:]
    return np.concatenate([wa * vb + wb * va + np.cross(va, vb), wa * wb - (va * vb).sum(-1, keepdims=True)], -1)


def quaternions(n: int, seed: int = 0) -> np.ndarray:
    """n unit quaternions (x, y, z, w) of either sign; row i's largest component is component i % 4 (each of the
    four ways of reading a quaternion off a matrix is taken)."""
    rng = np.random.default_rng(seed)
    q = rng.uniform(-0.4, 0.4, (n, 4))
    q[np.arange(n), np.arange(n) % 4] = rng.choice([-1.0, 1.0], n) * rng.uniform(0.8, 1.0, n)
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def poses(seed: int = 0, views: int = V) -> np.ndarray:
    """B x views camera-to-world poses (B, views, 4, 4): random rotations, views 1.. 0.3 to 3 m from view 0."""
    rng = np.random.default_rng(seed)
    out = np.tile(np.eye(4), (B, views, 1, 1))
    out[..., :3, :3] = G.rotation_from_quaternion(quaternions(B * views, seed)).reshape(B, views, 3, 3)
    out[..., :3, 3] = rng.normal(size=(B, 1, 3)) + rng.uniform(0.3, 3.0, (B, views, 1)) * G.rotation_from_quaternion(
        quaternions(B * views, seed + 1)).reshape(B, views, 3, 3)[..., 0]
    return out


def expected_pose_inputs(c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each camera relative to the first (its quaternion, its translation over the mean length of the non-zero
    ones) and the log of that mean, from heads.geometry's quaternions (w >= 0) and NumPy."""
    q = G.quaternion_from_rotation(c2w[..., :3, :3])
    rel_q = hamilton(q[:, :1] * [-1, -1, -1, 1], q)
    rel_t = np.einsum("bji,bvj->bvi", c2w[:, 0, :3, :3], c2w[..., :3, 3] - c2w[:, :1, :3, 3])
    lengths = np.linalg.norm(rel_t, axis=-1)
    mean = np.array([row[row > 0].mean() for row in lengths])
    return rel_q, rel_t / mean[:, None, None], np.log(mean)


def expected_depth_inputs(depth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per view (N, H, W): log1p of depth over the mean known (> 0) depth, the log of that mean, and whether any
    depth is known (views with none left out of the first two: nan)."""
    rel, log_mean = np.full(depth.shape, np.nan), np.full(len(depth), np.nan)
    for i, d in enumerate(depth):
        if (d > 0).any():
            mean = d[d > 0].mean()
            rel[i], log_mean[i] = np.log1p(d / mean), np.log(mean)
    return rel, log_mean, (depth > 0).any((1, 2))


# ---------------------------------------------------------------------------- rotations, quaternions, rays


def test_a_quaternion_comes_back_from_its_rotation_with_w_positive_however_it_is_read_off():
    q = quaternions(16)
    R = torch.from_numpy(G.rotation_from_quaternion(q)).reshape(2, 8, 3, 3)
    back = matrix_to_quaternion(R)
    assert back.shape == (2, 8, 4) and back.dtype == torch.float64
    want = np.where(q[:, 3:] < 0, -q, q).reshape(2, 8, 4)
    assert np.allclose(back.numpy(), want, atol=1e-12), np.abs(back.numpy() - want).max()
    one = matrix_to_quaternion(R[1, 5])  # a single matrix: a single quaternion
    assert one.shape == (4,) and np.allclose(one.numpy(), want[1, 5], atol=1e-12)
    rows = matrix_to_quaternion(R[0])  # (N, 3, 3) -> (N, 4)
    assert rows.shape == (8, 4) and np.allclose(rows.numpy(), want[0], atol=1e-12)


def test_a_half_turn_keeps_the_positive_axis_as_mapanythings_quaternions_do():
    """w is 0 for a half turn: the sign is flipped only where w < 0 (PyTorch3D's standardize_quaternion, which
    MapAnything uses), so a half turn about +x reads (1, 0, 0, 0); about the diagonal, (1, 1, 1, 0) / sqrt(3)."""
    R = torch.from_numpy(np.stack([np.diag([1.0, -1, -1]), np.diag([-1.0, 1, -1]), np.diag([-1.0, -1, 1])]))
    assert torch.equal(matrix_to_quaternion(R), torch.eye(3, 4, dtype=torch.float64))
    diagonal = np.array([1.0, 1, 1, 0]) / np.sqrt(3)
    out = matrix_to_quaternion(torch.from_numpy(G.rotation_from_quaternion(diagonal)))
    assert np.allclose(out.numpy(), diagonal, atol=1e-12), out


def test_a_matrix_a_little_off_a_rotation_still_gives_a_unit_quaternion():
    q = quaternions(8, seed=3)
    R = G.rotation_from_quaternion(q) * 1.02 + np.random.default_rng(0).normal(0, 0.01, (8, 3, 3))
    out = matrix_to_quaternion(torch.from_numpy(R)).numpy()
    assert np.allclose(np.linalg.norm(out, axis=-1), 1, atol=1e-12), np.linalg.norm(out, axis=-1)
    assert np.allclose(out, np.where(q[:, 3:] < 0, -q, q), atol=0.03)


def test_quaternions_give_heads_geometrys_rotations():
    q = quaternions(24, seed=1).reshape(2, 3, 4, 4)
    R = quaternion_to_matrix(torch.from_numpy(q))
    assert R.shape == (2, 3, 4, 3, 3)
    assert np.allclose(R.numpy(), G.rotation_from_quaternion(q), atol=1e-12)


def test_the_quaternion_product_is_hamiltons():
    a, b = quaternions(6, seed=4).reshape(2, 3, 4), 1.5 * quaternions(6, seed=5).reshape(2, 3, 4)  # b not unit
    out = quaternion_multiply(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    assert out.shape == (2, 3, 4) and np.allclose(out, hamilton(a, b), atol=1e-12)
    # and it composes rotations: R(a b) = R(a) R(b)
    assert np.allclose(G.rotation_from_quaternion(out), G.rotation_from_quaternion(a) @ G.rotation_from_quaternion(b))


def test_rays_from_intrinsics_are_heads_geometrys_per_camera():
    K = np.array([[[50.0, 0, 30.5], [0, 44.0, 9.25], [0, 0, 1]], [[21.0, 0, 3.0], [0, 27.0, 11.0], [0, 0, 1]]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about (meshgrid's indexing is given)
        rays = rays_from_intrinsics(torch.from_numpy(K), 12, 40)
    assert rays.shape == (2, 12, 40, 3) and rays.dtype == torch.float64
    for k, r in zip(K, rays):
        assert np.allclose(r.numpy(), G.ray_directions(k, 12, 40), atol=1e-12)


def test_rays_are_made_on_the_intrinsics_device():
    """On PyTorch's meta device, which refuses any mix of devices as a GPU does."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (PyTorch warns once per process: whichever test calls first sees it)
        rays = rays_from_intrinsics(torch.eye(3, device="meta"), 5, 7)
    assert rays.device.type == "meta" and rays.shape == (5, 7, 3)


def test_intrinsics_come_back_from_rays_per_view():
    K = np.array([[[40.0 + 3 * i, 0, 20.0 - i], [0, 36.0 + i, 11.0 + i], [0, 0, 1]] for i in range(6)])
    rays = np.stack([G.ray_directions(k, 24, 40) for k in K]).reshape(2, 3, 24, 40, 3)
    out = intrinsics(rays)
    assert out.shape == (2, 3, 3, 3) and np.allclose(out, K.reshape(2, 3, 3, 3), atol=1e-6)
    assert np.allclose(intrinsics(rays[1, 2]), K[5], atol=1e-6)


# ---------------------------------------------------------------------------- what the encoders of depth and poses see


def test_known_poses_enter_relative_to_the_first_camera_with_their_scale_apart():
    c2w = poses(views=4)
    c2w[1, :, :3, 3] *= 0.2  # a batch whose mean distance is below 1
    rel_q, rel_t, log_factor = pose_inputs(torch.from_numpy(c2w))
    want_q, want_t, want_log = expected_pose_inputs(c2w)
    assert np.allclose(rel_q.numpy(), want_q, atol=1e-10), np.abs(rel_q.numpy() - want_q).max()
    assert np.allclose(rel_t.numpy(), want_t, atol=1e-10), np.abs(rel_t.numpy() - want_t).max()
    assert np.allclose(log_factor.numpy(), want_log, atol=1e-7), (log_factor, want_log)


def test_cameras_all_at_one_place_give_zero_translations_and_a_finite_scale():
    c2w = poses()
    c2w[..., :3, 3] = [1.0, -2.0, 0.5]
    _, rel_t, log_factor = pose_inputs(torch.from_numpy(c2w))
    assert torch.equal(rel_t, torch.zeros_like(rel_t)) and torch.isfinite(log_factor).all(), log_factor


def test_known_depth_enters_over_each_views_mean_known_depth_and_a_view_without_any_is_marked():
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.2, 0.9, (4, 6, 10)).astype(np.float32)  # view 0: all known, all below 1 m
    depth[1] *= 5  # view 1: metres, a third unknown
    depth[1, :2] = 0
    depth[2] = 0  # view 2: none known
    depth[3, 3:] = 0  # view 3: below 1 m, half unknown
    rel, log_norm, given = depth_inputs(torch.from_numpy(depth))
    want_rel, want_log, want_given = expected_depth_inputs(depth.astype(np.float64))
    assert given.tolist() == want_given.tolist() == [True, True, False, True]
    assert np.allclose(rel.numpy()[given], want_rel[want_given], atol=1e-6)
    assert np.allclose(log_norm.numpy()[given], want_log[want_given], atol=1e-6), (log_norm, want_log)
    assert torch.equal(rel[2], torch.zeros(6, 10)) and torch.isfinite(log_norm[2]), log_norm[2]


# ---------------------------------------------------------------------------- the model's inputs and outputs


def tiny_model(geometric: bool = True, seed: int = 0) -> PointMapModel:
    """A t16-like encoder and a tiny multi-view part, every weight random (norms near 1), its scale below 1."""
    cfg = PointMapConfig(dim=32, depth=3, num_heads=2, taps=[0, 1], dpt_channels=[8, 16, 24, 32], dpt_features=16,
                         pose_dim=16, scale_hidden=8, ray_dims=[24, 32], geometric_inputs=geometric)
    model = PointMapModel(random_encoder(seed=seed), cfg)
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.startswith("encoder."):
                norm = name.endswith("weight") and ("norm" in name.rsplit(".", 2)[-2] or "norm_layer" in name)
                p.copy_(1 + 0.05 * torch.randn_like(p) if norm else 0.05 * torch.randn_like(p))
        model.scale_head.output_proj.bias.fill_(-0.5)  # a metric scale below 1
    return model.eval()


def known_inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images (B, V, 3, H, W), rays (B, V, H, W, 3) of a different camera per view, depth along them (B, V, H,
    W; batch 0's view 1 half unknown, batch 1's view 2 not known at all) and poses (B, V, 4, 4), float32."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(B, V, 3, H, W, generator=g)
    K = [np.array([[40.0 + 7 * i, 0, 30.0 + i], [0, 38.0 + 5 * i, 14.0 - i], [0, 0, 1]]) for i in range(B * V)]
    rays = torch.from_numpy(np.stack([G.ray_directions(k, H, W) for k in K])).float().reshape(B, V, H, W, 3)
    depth = 0.5 + 3 * torch.rand(B, V, H, W, generator=g)
    depth[0, 1, : H // 2] = 0
    depth[1, 2] = 0
    return images, rays, depth, torch.from_numpy(poses(seed)).float()


def watch(model: PointMapModel) -> dict[str, list[tuple[tuple, object]]]:
    """Module name -> (inputs, output) of each call of it."""
    seen: dict[str, list[tuple[tuple, object]]] = {name: [] for name in WATCHED}
    for name in WATCHED:
        if hasattr(model, name):
            getattr(model, name).register_forward_hook(lambda m, args, out, name=name: seen[name].append((args, out)))
    return seen


def per_view(x: torch.Tensor) -> list[torch.Tensor]:
    """(B, V, ...) -> its B * V views, batch by batch."""
    return [x[b, v] for b in range(x.shape[0]) for v in range(x.shape[1])]


def view_maps(t: torch.Tensor, views: int, h: int, w: int) -> torch.Tensor:
    """Tokens (B, views * h * w + extra, C) -> each view's token map (B * views, C, h, w)."""
    n = h * w
    return torch.stack([t[b, v * n:(v + 1) * n].reshape(h, w, -1).permute(2, 0, 1)
                        for b in range(t.shape[0]) for v in range(views)])


def watched_forward():
    """The tiny model run once on known rays, depth and poses: the model, its inputs and what each encoder saw."""
    model = tiny_model()
    inputs = known_inputs()
    seen = watch(model)
    with torch.no_grad():
        model(*inputs)
    return model, inputs, seen


def test_known_rays_depth_and_poses_reach_their_encoders_view_by_view():
    model, (images, rays, depth, c2w), seen = watched_forward()
    (pixels,), _ = seen["encoder"][0]
    assert torch.equal(pixels, torch.stack(per_view(images))), "each view's image goes through the encoder"
    (ray_maps,), _ = seen["ray_dirs_encoder"][0]
    assert torch.equal(ray_maps, torch.stack([r.permute(2, 0, 1) for r in per_view(rays)])), \
        "each view's rays reach the ray encoder as a (3, H, W) map"
    want_rel, want_log, given = expected_depth_inputs(depth.reshape(B * V, H, W).double().numpy())
    (rel,), _ = seen["depth_encoder"][0]
    assert rel.shape == (B * V, 1, H, W)
    assert np.allclose(rel[given, 0].numpy(), want_rel[given], atol=1e-5), "depth over its view's mean, log1p"
    assert torch.equal(rel[~given], torch.zeros(1, 1, H, W)), "a view without depth is all zeros"
    (log_mean,), _ = seen["depth_scale_encoder"][0]
    assert np.allclose(log_mean[given, 0].numpy(), want_log[given], atol=1e-5), "the log of each view's mean depth"
    want_q, want_t, want_factor = expected_pose_inputs(c2w.double().numpy())
    (rel_q,), _ = seen["cam_rot_encoder"][0]
    assert np.allclose(rel_q.numpy(), want_q, atol=1e-5), "the poses never reached the rotation encoder as they are"
    (rel_t,), _ = seen["cam_trans_encoder"][0]
    assert np.allclose(rel_t.numpy(), want_t, atol=1e-5), "the poses never reached the translation encoder"
    (log_factor,), _ = seen["cam_trans_scale_encoder"][0]
    assert np.allclose(log_factor.numpy(), np.broadcast_to(want_factor[:, None, None], (B, V, 1)), atol=1e-5)


def test_each_encoders_tokens_are_added_to_their_views_image_tokens_a_view_without_depth_gets_none():
    model, (images, rays, depth, c2w), seen = watched_forward()
    out = {name: calls[0][1] for name, calls in seen.items() if calls}
    given = torch.tensor([d.gt(0).any() for d in per_view(depth)])
    depth_tokens = (out["depth_encoder"] + out["depth_scale_encoder"][:, None]) * given[:, None, None]
    pose_tokens = out["cam_rot_encoder"] + out["cam_trans_encoder"] + out["cam_trans_scale_encoder"]
    want = (out["encoder"][:, model.encoder.n_cls_tokens:] + out["ray_dirs_encoder"] + depth_tokens
            + pose_tokens.reshape(B * V, 1, -1))
    (fused,), _ = seen["fusion_norm_layer"][0]
    assert torch.allclose(fused, want, atol=1e-5), (fused - want).abs().amax((1, 2))


def test_without_the_metric_flag_the_scales_of_depth_and_poses_stay_out():
    model = tiny_model()
    images, rays, depth, c2w = known_inputs()
    seen = watch(model)
    with torch.no_grad():
        by_default = model(images, rays, depth, c2w)
        metric = model(images, rays, depth, c2w, metric=True)
    assert len(seen["depth_scale_encoder"]) == len(seen["cam_trans_scale_encoder"]) == 2, "metric is the default"
    assert torch.equal(by_default.pts3d, metric.pts3d)
    with torch.no_grad():
        model(images, rays, depth, c2w, metric=False)
    assert len(seen["depth_scale_encoder"]) == len(seen["cam_trans_scale_encoder"]) == 2, "no scale without metric"
    out = {name: calls[-1][1] for name, calls in seen.items() if calls}
    given = torch.tensor([d.gt(0).any() for d in per_view(depth)])
    pose_tokens = (out["cam_rot_encoder"] + out["cam_trans_encoder"]).reshape(B * V, 1, -1)
    want = (out["encoder"][:, model.encoder.n_cls_tokens:] + out["ray_dirs_encoder"]
            + out["depth_encoder"] * given[:, None, None] + pose_tokens)
    (fused,), _ = seen["fusion_norm_layer"][-1]
    assert torch.allclose(fused, want, atol=1e-5), (fused - want).abs().max()


def test_depth_alone_or_poses_alone_reach_only_their_own_encoders():
    model = tiny_model()
    images, _, depth, c2w = known_inputs()
    seen = watch(model)
    with torch.no_grad():
        model(images, depth_ray=depth)
    assert [len(seen[n]) for n in ("ray_dirs_encoder", "depth_encoder", "cam_rot_encoder")] == [0, 1, 0]
    with torch.no_grad():
        model(images, cam2world=c2w)
    assert [len(seen[n]) for n in ("ray_dirs_encoder", "depth_encoder", "cam_rot_encoder")] == [0, 1, 1]
    out = {name: calls[-1][1] for name, calls in seen.items() if calls}
    pose_tokens = out["cam_rot_encoder"] + out["cam_trans_encoder"] + out["cam_trans_scale_encoder"]
    (fused,), _ = seen["fusion_norm_layer"][-1]
    want = out["encoder"][:, model.encoder.n_cls_tokens:] + pose_tokens.reshape(B * V, 1, -1)
    assert torch.allclose(fused, want, atol=1e-5)


@pytest.mark.parametrize("known", ["depth_ray", "cam2world"])
def test_a_model_without_encoders_of_depth_and_poses_refuses_them_and_takes_rays(known):
    model = tiny_model(geometric=False)
    images, rays, depth, c2w = known_inputs()
    with pytest.raises(CheckpointError) as err:
        model(images, **{known: {"depth_ray": depth, "cam2world": c2w}[known]})
    assert str(err.value) == "this point-map model has no encoders of known depth or poses (MapAnything's do)"
    with torch.no_grad():
        out = model(images, rays)
    assert out.pts3d.shape == (B, V, H, W, 3)


def test_the_views_tokens_and_the_scale_token_flow_to_the_heads_and_back_out_as_cameras():
    """The transformer takes the fused tokens view by view and one scale token; the dense head its input and
    taps as per-view maps; the pose head the last layer's maps; the scale head the last layer's scale token
    (after every view's tokens); the outputs are decode() of the heads' outputs with the scale's exp; the
    descriptor is each view's mean image token before any camera or depth is added."""
    model = tiny_model()
    images, rays, depth, c2w = known_inputs()
    seen = watch(model)
    with torch.no_grad():
        out = model(images, rays, depth, c2w)
    h, w = H // 16, W // 16
    _, fused = seen["fusion_norm_layer"][0]
    (views, extra), layers = seen["info_sharing"][0]
    assert views.shape == (B, V, h * w, fused.shape[-1])
    assert torch.equal(torch.stack(per_view(views)), fused), "view b * V + v's tokens are views[b, v]"
    assert torch.equal(extra, model.scale_token.expand(B, 1, -1)), "one scale token per scene"
    assert len(layers) == 3 and all(t.shape == (B, V * h * w + 1, 32) for t in layers)
    (taps,), dense = seen["dpt"][0]
    want = [fused.reshape(B * V, h, w, -1).permute(0, 3, 1, 2)] + [view_maps(t, V, h, w) for t in layers]
    assert len(taps) == 4 and all(torch.equal(a, b) for a, b in zip(taps, want)), "the dense head's inputs"
    (features, size), pixels = seen["regressor"][0]
    assert torch.equal(features, dense) and tuple(size) == (H, W)
    (pose_maps,), pose = seen["pose_head"][0]
    assert torch.equal(pose_maps, view_maps(layers[-1], V, h, w)), "the pose head reads the last layer"
    (token,), log_scale = seen["scale_head"][0]
    assert torch.equal(token, layers[-1][:, V * h * w]), "the scale head reads the last layer's scale token"
    want = decode(pixels.permute(0, 2, 3, 1).reshape(B, V, H, W, 6), pose.reshape(B, V, 7), log_scale.exp())
    for name in ("pts3d", "rays", "depth_ray", "conf", "mask_logits", "cam2world", "scale"):
        assert torch.equal(getattr(out, name), getattr(want, name)), name
    _, tokens = seen["encoder"][0]
    mean = F.normalize(tokens[:, model.encoder.n_cls_tokens:].mean(1), dim=-1).reshape(B, V, -1)
    assert torch.allclose(out.descriptor, mean, atol=1e-6), "the descriptor is the mean image token"


@pytest.mark.parametrize("views, room, sizes", [(4, None, [4, 2]), (8, 2, [2, 2, 2]), (8, 0.5, [1] * 6)])
def test_views_go_through_the_dense_head_in_groups_the_memory_allows(monkeypatch, views, room, sizes):
    """At most DENSE_VIEWS views at once, and no more than MAX_UPSAMPLED elements (``room`` views' worth) out of
    one upsampling; never fewer than one view. The outputs do not change."""
    model = tiny_model(geometric=False)
    images, rays, _, _ = known_inputs()
    with torch.no_grad():
        whole = model(images, rays)
    seen = watch(model)
    monkeypatch.setattr(pointmap, "DENSE_VIEWS", views)
    if room is not None:
        monkeypatch.setattr(pointmap, "MAX_UPSAMPLED", int(room * model.regressor.conv1.out_channels * H * W))
    with torch.no_grad():
        grouped = model(images, rays)
    assert [len(args[0][0]) for args, _ in seen["dpt"]] == sizes
    assert [len(args[0]) for args, _ in seen["regressor"]] == sizes
    assert torch.allclose(whole.pts3d, grouped.pts3d, atol=1e-5)


def test_cameras_depth_and_the_heads_run_in_float32_under_the_callers_autocast():
    """MapAnything's float32 parts (its encoders of cameras and depth, their fusion and the heads) stay float32
    when the rest runs in bfloat16 (the layers before each encoder's LayerNorm, which autocast keeps float32
    anyway, are watched)."""
    model = tiny_model()
    images, rays, depth, c2w = known_inputs()
    parts = ["encoder.blocks.0.mlp.fc2", "ray_dirs_encoder.encoder", "depth_encoder.encoder",
             "depth_scale_encoder.encoder", "cam_rot_encoder.encoder", "cam_trans_encoder.encoder",
             "cam_trans_scale_encoder.encoder", "regressor", "pose_head", "scale_head"]
    dtypes: dict[str, torch.dtype] = {}
    for name in parts:
        model.get_submodule(name).register_forward_hook(lambda m, args, out, name=name: dtypes.update({name: out.dtype}))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(images, rays, depth, c2w)
    assert dtypes.pop("encoder.blocks.0.mlp.fc2") == torch.bfloat16, "the image encoder runs in the caller's precision"
    assert dtypes == dict.fromkeys(parts[1:], torch.float32)
    assert out.pts3d.dtype == out.cam2world.dtype == torch.float32


# ---------------------------------------------------------------------------- the heads' outputs as cameras


def test_head_outputs_decode_to_unit_rays_metric_depths_and_camera_to_world_poses():
    rng = np.random.default_rng(0)
    dense = rng.normal(size=(B, V, 2, 5, 6))
    dense[..., :3] *= 0.3  # raw rays shorter than 1
    pose = rng.normal(size=(B, V, 7))
    pose[..., 3:] *= 0.2  # raw quaternions shorter than 1
    scale = np.array([0.5, 3.0])
    out = decode(torch.from_numpy(dense), torch.from_numpy(pose), torch.from_numpy(scale))
    s = scale[:, None, None, None]
    rays = dense[..., :3] / np.linalg.norm(dense[..., :3], axis=-1, keepdims=True)
    depth = np.exp(dense[..., 3]) * s
    q = pose[..., 3:] / np.linalg.norm(pose[..., 3:], axis=-1, keepdims=True)
    c2w = np.tile(np.eye(4), (B, V, 1, 1))
    c2w[..., :3, :3], c2w[..., :3, 3] = G.rotation_from_quaternion(q), pose[..., :3] * scale[:, None, None]
    cam = rays * depth[..., None]
    want = {"rays": rays, "depth_ray": depth, "conf": 1 + np.exp(dense[..., 4]), "mask_logits": dense[..., 5],
            "quats": q, "cam2world": c2w, "pts3d_cam": cam, "depth_z": cam[..., 2], "scale": scale,
            "pts3d": np.einsum("bvij,bvhwj->bvhwi", c2w[..., :3, :3], cam) + c2w[:, :, None, None, :3, 3]}
    for name, value in want.items():
        got = getattr(out, name)
        assert got.dtype == torch.float64 and np.allclose(got.numpy(), value, atol=1e-12), name


def test_decoding_stays_on_the_head_outputs_device():
    out = decode(torch.zeros(1, 2, 3, 4, 6, device="meta"), torch.zeros(1, 2, 7, device="meta"),
                 torch.ones(1, device="meta"))
    assert out.cam2world.device.type == "meta" and out.cam2world.shape == (1, 2, 4, 4)
