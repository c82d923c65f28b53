"""recon3d's geometry without a model: ground-truth depths, poses and intrinsics of real 7-Scenes frames
through chunk alignment, cleaning and every export; and the command on a small random model."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from heads import geometry as G
from heads.pointmap.predictions import Predictions
from heads.recon.cleaning import depth_edges
from heads.recon.preview import preview_picture
from heads.recon.chunks import KeptChunks, predict_in_chunks, transformed
from heads.recon.cleaning import Cleaning, clean_points
from heads.sequences import find_sequences
from heads.writers3d import write_cameras_json, write_ply

from .conftest import KITCHEN

HW = (120, 160)


@pytest.fixture(scope="module")
def truth():
    """Ground truth of 8 consecutive kitchen frames at 160x120: Predictions in view 0's frame, and colours."""
    if not KITCHEN.exists():
        pytest.skip("shared data not present")
    seq = find_sequences("7scenes", KITCHEN, "train")[0]
    frames = seq.frames[:8]
    rel = G.relative_to_first(np.stack([f.cam2world for f in frames]))
    depths, pts, colours, Ks = [], [], [], []
    for f, T in zip(frames, rel):
        d = cv2.resize(seq.read_depth(f), HW[::-1], interpolation=cv2.INTER_NEAREST)
        K = G.scale_intrinsics(f.K, (480, 640), HW)
        depths.append(d)
        Ks.append(K)
        pts.append(G.transform(G.depth_to_points(d.astype(np.float64), K), T))
        colours.append(cv2.resize(cv2.imread(str(f.image))[:, :, ::-1], HW[::-1], interpolation=cv2.INTER_AREA))
    depth = np.stack(depths)
    pred = Predictions(images=[str(f.image) for f in frames], pts3d=np.stack(pts).astype(np.float32),
                       depth_z=depth.astype(np.float32), conf=np.ones(depth.shape, np.float32), mask=depth > 0,
                       cam2world=rel.astype(np.float32), K=np.stack(Ks).astype(np.float32),
                       K_original=np.stack([f.K for f in frames]).astype(np.float32),
                       original_hw=np.array([[480, 640]] * len(frames)), scale=1.0, metric=True)
    return pred, np.stack(colours)


def _subset(pred: Predictions, views: list[int]) -> Predictions:
    """The views as a model run on them alone would give: expressed in the first one's frame."""
    to_first = G.invert_pose(pred.cam2world[views[0]].astype(np.float64))
    return Predictions(images=[pred.images[i] for i in views],
                       pts3d=G.transform(pred.pts3d[views].astype(np.float64), to_first).astype(np.float32),
                       depth_z=pred.depth_z[views], conf=pred.conf[views], mask=pred.mask[views],
                       cam2world=(to_first[None] @ pred.cam2world[views].astype(np.float64)).astype(np.float32),
                       K=pred.K[views], K_original=pred.K_original[views], original_hw=pred.original_hw[views],
                       scale=1.0, metric=pred.metric)


def test_chunks_moved_by_random_similarities_are_realigned(truth):
    pred, _ = truth
    rng = np.random.default_rng(0)

    def run(views):
        part = _subset(pred, views)
        q = rng.normal(size=4)
        s, R, t = rng.uniform(0.5, 2), G.rotation_from_quaternion(q / np.linalg.norm(q)), rng.normal(size=3)
        return replace(transformed(part, s, R, t), metric=False)  # a model up to scale: similarities

    scene, report = predict_in_chunks(run, 8, 4, 2)
    assert len(report) == 3 and scene.images == pred.images
    rel = G.relative_to_first(scene.cam2world.astype(np.float64))
    scale = np.linalg.norm(rel[1:, :3, 3], axis=1) / np.linalg.norm(pred.cam2world[1:, :3, 3], axis=1)
    assert np.allclose(scale, scale[0], rtol=1e-3)  # one similarity for the whole scene
    rel[:, :3, 3] /= scale[0]
    assert np.allclose(rel, pred.cam2world, atol=1e-3)


def test_ground_truth_through_cleaning_and_export_matches_the_fused_cloud(truth, tmp_path):
    o3d = pytest.importorskip("open3d")
    pred, colours = truth
    points, cols, obs, counts = clean_points(pred, colours, Cleaning(voxel=0.01, outliers=True))
    assert counts["after_edges"] < counts["after_mask"] and counts["after_voxel"] < counts["after_outliers"]
    write_ply(tmp_path / "scene.ply", points, cols)
    cloud = o3d.io.read_point_cloud(str(tmp_path / "scene.ply"))
    assert len(cloud.points) == len(points) and len(cloud.colors) == len(points)
    fused = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pred.pts3d[pred.mask].astype(np.float64)))
    chamfer = np.asarray(cloud.compute_point_cloud_distance(fused)).mean()
    assert chamfer < 0.01, chamfer
    # each point is the pixel it names: its observation, mapped back to the processing size, re-projects
    v = obs[:, 0].astype(int)
    x = (obs[:, 1] + 0.5) * HW[1] / 640 - 0.5
    y = (obs[:, 2] + 0.5) * HW[0] / 480 - 0.5
    assert np.allclose(pred.pts3d[v, np.round(y).astype(int), np.round(x).astype(int)], points, atol=1e-6)


def test_colmap_model_of_the_network_cameras_round_trips_through_pycolmap(truth, tmp_path):
    pycolmap = pytest.importorskip("pycolmap")
    from heads.recon.camera_files import image_cam2world, write_colmap

    pred, _ = truth
    write_colmap(tmp_path / "sparse", pred.images, original_hw=pred.original_hw, K=pred.K_original.astype(np.float64),
                 cam2world=pred.cam2world.astype(np.float64))
    rec = pycolmap.Reconstruction(str(tmp_path / "sparse"))
    assert rec.num_reg_images() == 8 and rec.num_points3D() == 0  # no made-up one-view points
    for image in rec.images.values():
        i = pred.images.index(image.name)
        assert np.allclose(image_cam2world(image), pred.cam2world[i], atol=1e-5)
        cam = rec.cameras[image.camera_id]
        assert (cam.width, cam.height) == (640, 480)
        K = cam.calibration_matrix()
        assert np.allclose(K[:2, :2], pred.K_original[i][:2, :2]) and np.allclose(K[:2, 2] - 0.5, pred.K_original[i][:2, 2])


def test_cameras_json_and_preview(truth, tmp_path):
    pred, colours = truth
    write_cameras_json(tmp_path / "cameras.json", pred.images, sizes=pred.original_hw, K=pred.K_original,
                       cam2world=pred.cam2world, unit="metres")
    data = json.loads((tmp_path / "cameras.json").read_text())
    assert data["unit"] == "metres" and len(data["cameras"]) == 8
    assert np.allclose(data["cameras"][3]["cam2world"], pred.cam2world[3], atol=1e-6)
    assert data["cameras"][0]["width"] == 640 and np.allclose(data["cameras"][0]["K"], pred.K_original[0])
    points, cols, _, _ = clean_points(pred, colours, Cleaning(voxel=0.02))
    picture = preview_picture(points, cols, pred, (300, 400))
    assert picture.shape == (300, 400, 3)
    covered = (picture != 255).any(-1).mean()
    assert covered > 0.15, covered  # the scene fills a good part of the view
    green = (picture[..., 1] > 120) & (picture[..., 0] < 60) & (picture[..., 2] < 60)
    assert green.any()  # the first camera's frustum


def test_depth_edges_mark_a_step_only():
    d = np.ones((10, 10))
    d[:, 5:] = 2.0
    e = depth_edges(d, 0.03)
    assert e[:, 4:6].all() and not e[:, :4].any() and not e[:, 6:].any()


def test_tsdf_mesh_of_ground_truth_lies_on_the_cloud(truth):
    o3d = pytest.importorskip("open3d")
    from heads.recon.mesh import tsdf_mesh

    pred, colours = truth
    mesh, voxel, coarsened = tsdf_mesh(pred, colours, 0.02)
    assert len(mesh.triangles) > 1000 and voxel == 0.02 and coarsened is None
    verts = o3d.geometry.PointCloud(mesh.vertices)
    fused = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pred.pts3d[pred.mask].astype(np.float64)))
    assert np.median(np.asarray(verts.compute_point_cloud_distance(fused))) < 0.02
    again, _, _ = tsdf_mesh(pred, colours, 0.02)  # the hashed grid's own order varies from run to run
    assert np.array_equal(np.asarray(mesh.vertices), np.asarray(again.vertices))
    assert np.array_equal(np.asarray(mesh.triangles), np.asarray(again.triangles))


def test_the_mesh_voxel_is_coarsened_to_fit_the_memory_it_may_use(truth):
    """A voxel too fine for the TSDF volume's memory is made coarser until the surface's blocks fit, and the
    side asked for comes back so the user is told; one that fits is kept as given."""
    pytest.importorskip("open3d")
    from heads.recon.mesh import BLOCK_BYTES, surface_blocks, tsdf_mesh, voxel_within

    grid = np.stack(np.meshgrid(np.linspace(0, 2, 400), np.linspace(0, 2, 400), [0.0]), -1).reshape(-1, 3)
    plane = [grid[grid[:, 0] < 1.0], grid[grid[:, 0] >= 1.0]]  # two views, each of half a 2 m square
    fine, blocks = voxel_within(plane, 0.002, memory=2**30)  # at 2 mm: 3.9k blocks and a view's 2k, 640 MB
    assert fine == 0.002 and blocks == surface_blocks(plane, 0.002) and blocks * BLOCK_BYTES <= 2**30
    assert surface_blocks([grid], 0.002) > surface_blocks(plane, 0.002)  # room for the largest view's candidates
    coarse, blocks = voxel_within(plane, 0.001, memory=50 * 2**20)
    assert coarse > 0.001 and blocks * BLOCK_BYTES <= 50 * 2**20, (coarse, blocks)
    assert surface_blocks(plane, coarse / 1.5) * BLOCK_BYTES > 50 * 2**20  # not coarser than it needs to be
    pred, colours = truth
    mesh, voxel, asked = tsdf_mesh(pred, colours, 0.002, memory=2 * 2**20)
    assert asked == 0.002 and voxel > 0.002 and len(mesh.triangles) > 100, (voxel, asked)


def test_fixed_order_keeps_the_surface_and_its_winding():
    o3d = pytest.importorskip("open3d")
    from heads.recon.mesh import _in_fixed_order

    box = o3d.geometry.TriangleMesh.create_box()
    box.vertex_colors = o3d.utility.Vector3dVector(np.random.default_rng(0).random((8, 3)))
    rng = np.random.default_rng(1)
    perm = rng.permutation(8)
    tri = np.argsort(perm)[np.asarray(box.triangles)]  # the same triangles over shuffled vertices
    tri = np.stack([np.roll(t, int(rng.integers(3))) for t in tri[rng.permutation(len(tri))]])
    shuffled = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(np.asarray(box.vertices)[perm]),
                                         o3d.utility.Vector3iVector(tri))
    shuffled.vertex_colors = o3d.utility.Vector3dVector(np.asarray(box.vertex_colors)[perm])
    a, b = _in_fixed_order(box, o3d), _in_fixed_order(shuffled, o3d)
    for name in ("vertices", "triangles", "vertex_colors"):
        assert np.array_equal(np.asarray(getattr(a, name)), np.asarray(getattr(b, name))), name
    a.compute_triangle_normals()
    box.compute_triangle_normals()
    assert np.allclose(np.sort(np.asarray(a.triangle_normals), 0), np.sort(np.asarray(box.triangle_normals), 0))


def test_chunk_parts_resume_only_with_the_same_settings(truth, tmp_path):
    pred, _ = truth
    parts = KeptChunks(tmp_path / "p.npz", {"model": "a", "images": pred.images})
    parts.save(0, pred)
    again = KeptChunks(tmp_path / "p.npz", {"model": "a", "images": pred.images}).done()
    assert list(again) == [0] and np.array_equal(Predictions.load(again[0]).pts3d, pred.pts3d)
    assert KeptChunks(tmp_path / "p.npz", {"model": "b", "images": pred.images}).done() == {}
    parts.clear()
    assert not (tmp_path / "p.npz.parts").exists()


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    from heads.pointmap.checkpoint import save_pointmap

    from .test_pointmap import small_model

    path = tmp_path_factory.mktemp("pm") / "pm.safetensors"
    save_pointmap(small_model(), path, {"how": "random, for tests"})
    return path


def test_recon3d_writes_every_output_in_chunks(cli, model_file, tmp_path):
    pycolmap = pytest.importorskip("pycolmap")
    if not KITCHEN.exists():
        pytest.skip("shared data not present")
    frames = [KITCHEN / f"frame-{i:06d}.color.jpg" for i in (800, 824, 848, 872)]  # far enough apart to match
    out = tmp_path / "out"
    code, stdout, err = cli(["recon3d", *frames, "-o", out, "--model", model_file, "--resize", "64", "--no-mask",
                             "--chunk", "3", "--overlap", "2", "--cameras", "colmap", "--preview", tmp_path / "p.png",
                             "--save-predictions", tmp_path / "pred.npz", "--voxel", "0.001", "--max-points", "5000",
                             "--normals", "--mesh", "--glb", "--json", "-q", "--workers", "0", "--precision", "fp32"])
    assert code == 0, err
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert len(summary["chunks"]) == 2 and summary["points"] <= 5000 and summary["frames"] == 4
    assert {"after_edges", "after_voxel"} <= set(summary["cleaning"])
    assert b"comment units: metres, as the network estimates them" in (out / "scene.ply").read_bytes()[:300] and (tmp_path / "p.png").exists()
    o3d = pytest.importorskip("open3d")
    mesh = o3d.io.read_triangle_mesh(str(out / "scene_mesh.ply"))
    glb = o3d.io.read_triangle_mesh(str(out / "scene.glb"))  # the GLB reads back, as the same surface
    assert len(mesh.triangles) > 0 and len(glb.triangles) == len(mesh.triangles) and glb.has_vertex_colors()
    assert not (tmp_path / "pred.npz.parts").exists()  # removed once the whole run is saved
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # the workspace's files gone
    rec = pycolmap.Reconstruction(str(out / "sparse" / "0"))
    assert sorted(im.name for im in rec.images.values()) == sorted(f.name for f in frames)  # as COLMAP finds them
    assert summary["image_root"] == str(KITCHEN)
    assert summary["cameras"]["registered"] == 4 and rec.num_points3D() == summary["cameras"]["points"] > 100
    pred = Predictions.load(tmp_path / "pred.npz")
    assert pred.images == [str(f) for f in frames] and pred.pts3d.shape[0] == 4


@pytest.mark.parametrize("extra, expected", [
    (["--glb"], "--glb writes the mesh"),
    (["--chunk", "4", "--overlap", "4"], "--overlap 4 must be smaller"),
    (["--preview", "p.jpg"], "the preview is a .png"),
    (["--fps", "2", "--every", "3"], "--fps and --every"),
])
def test_recon3d_refuses_contradicting_options(cli, tmp_path, extra, expected):
    code, _, err = cli(["recon3d", "x.jpg", "-o", tmp_path / "s.ply", *extra])
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1


def test_recon3d_takes_a_video_by_frame_rate(cli, model_file, tmp_path):
    video = tmp_path / "walk.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (80, 64))
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)
    for i in range(20):
        writer.write(np.roll(base, i, axis=1))
    writer.release()
    args = ["recon3d", video, "-o", tmp_path / "s.ply", "--model", model_file, "--no-mask", "--json", "-q",
            "--workers", "0", "--precision", "fp32"]
    code, out, err = cli([*args, "--fps", "5"])
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["frames"] == 10  # 10 fps -> every 2nd frame
    peaks = summary["peak_memory_gib"]  # where memory grows: the process's peak by the end of each stage
    assert list(peaks) == ["loading the model and decoding", "predicting", "cameras", "fusing the views", "writing"]
    assert all(0 < a <= b for a, b in zip(list(peaks.values()), list(peaks.values())[1:])), peaks
    code, out, err = cli([*args, "--max-frames", "4"])
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["frames"] == 4


def test_folders_and_globs_are_in_natural_order(tmp_path):
    from pixio_cli.inputs import collect

    for name in ("f10.png", "f2.png", "f1.png", "F3.png"):
        cv2.imwrite(str(tmp_path / name), np.zeros((16, 16, 3), np.uint8))
    expected = ["f1.png", "f2.png", "F3.png", "f10.png"]
    assert [Path(it.path).name for it in collect([str(tmp_path)])] == expected
    assert [Path(it.path).name for it in collect([str(tmp_path / "*.png")])] == expected


def test_recon3d_of_one_frame_is_monocular(cli, model_file, tmp_path):
    if not KITCHEN.exists():
        pytest.skip("shared data not present")
    code, out, err = cli(["recon3d", KITCHEN / "frame-000000.color.jpg", "-o", tmp_path / "one.ply", "--model",
                          model_file, "--resize", "64", "--no-mask", "--cameras", "json", "--json", "-q",
                          "--workers", "0", "--mesh"])
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["frames"] == 1
    cams = json.loads((tmp_path / "cameras.json").read_text())["cameras"]
    assert len(cams) == 1 and (cams[0]["width"], cams[0]["height"]) == (640, 480)
    assert "earlier run" not in err
    # the same folder again without --mesh: the mesh left there belongs to the earlier scene, and it says so (the
    # cameras are written every time)
    code, _, err = cli(["recon3d", KITCHEN / "frame-000000.color.jpg", "-o", tmp_path / "one.ply", "--model",
                        model_file, "--resize", "64", "--no-mask", "-q", "--workers", "0"])
    assert code == 0 and (f"{tmp_path / 'one_mesh.ply'} beside {tmp_path / 'one.ply'} comes from an earlier "
                          "run, not this one (--mesh rewrites it)") in err, err


def test_the_network_leaves_a_core_to_the_sfm_thread():
    """On the CPU the network predicts on one core fewer while matching runs beside it, and gets it back after,
    interrupted or not; without a matching job, or on one core, nothing changes."""
    from types import SimpleNamespace

    import torch

    from heads.recon.pipeline import _core_left_for

    before = torch.get_num_threads()
    cpu, job = SimpleNamespace(device=torch.device("cpu")), object()
    try:
        torch.set_num_threads(2)
        with _core_left_for(job, cpu):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with pytest.raises(KeyboardInterrupt), _core_left_for(job, cpu):
            raise KeyboardInterrupt
        assert torch.get_num_threads() == 2
        with _core_left_for(None, cpu):
            assert torch.get_num_threads() == 2
        torch.set_num_threads(1)
        with _core_left_for(job, cpu):
            assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
