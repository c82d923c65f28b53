"""Scenes no network has seen, rendered with exact depth and cameras: the truth for checking that
``pixio recon3d`` takes its geometry from the images.

Each scene is a few meshes (Open3D's ray casting) covered with a solid texture (a sum of plane waves over 3-D
position, so every surface has detail at many scales and none repeats), lit by one light, and seen by a
pinhole camera moving along a path. Written in the ``generic-rgbd`` layout (:mod:`heads.sequences`):
``images/NNNN.png``, ``depth/NNNN.png`` (millimetres), ``poses/NNNN.txt`` (camera-to-world) and ``K.txt``,
so ``pixio evaluate recon3d --dataset generic-rgbd --depth-scale 1000`` scores a reconstruction of it.

- ``object``: things on a table, seen from 0.35-0.6 m on a 60-degree arc (an object-centric, close-range
  set like a phone turned around a thing on a desk; about 40 cm deep);
- ``room``: a 5 x 4 m room with furniture, walked through (1-5 m deep), one wall left bare (no texture:
  only a prior can place it).

    python -m benchmarks.synthetic_scenes object /tmp/object --frames 25
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from heads.geometry import pixel_rays


@dataclass
class Part:
    """One mesh of a scene and how it looks: its texture's colours and how fine its detail is."""

    mesh: object  # open3d.geometry.TriangleMesh
    colours: tuple[tuple[float, float, float], tuple[float, float, float]]  # the texture runs between these (RGB 0-1)
    detail: float = 1.0  # texture frequencies scale (1: 2-80 cycles per metre); 0: one flat colour


def _waves(seed: int, n: int = 48) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random plane waves: directions times frequencies (n, 3, cycles per metre), phases and amplitudes."""
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    f = np.exp(rng.uniform(np.log(2.0), np.log(80.0), n))
    return d * f[:, None], rng.uniform(0, 2 * np.pi, n), f ** -0.6


def texture(points: np.ndarray, part: Part, seed: int) -> np.ndarray:
    """RGB (n, 3) in 0-1 of the part's solid texture at world points (n, 3)."""
    lo, hi = np.array(part.colours[0]), np.array(part.colours[1])
    if part.detail <= 0:
        return np.broadcast_to((lo + hi) / 2, points.shape).copy()
    k, phase, amp = _waves(seed)
    value = np.zeros(len(points))
    for start in range(0, len(points), 200_000):  # (chunk, waves) at a time
        x = points[start:start + 200_000]
        value[start:start + 200_000] = np.cos(2 * np.pi * part.detail * x @ k.T + phase) @ amp
    value = 0.5 + 0.5 * np.tanh(1.5 * value / np.sqrt((amp ** 2).sum() / 2))
    return lo + (hi - lo) * value[:, None]


def look_at(centre: np.ndarray, target: np.ndarray, up=(0.0, -1.0, 0.0)) -> np.ndarray:
    """Camera-to-world (4, 4), OpenCV axes (x right, y down, z forward), at ``centre`` looking at ``target``;
    ``up`` is the world direction that appears up in the image."""
    z = target - centre
    z = z / np.linalg.norm(z)
    x = np.cross(-np.asarray(up, float), z)  # right-handed: x = y x z with y (down in the image) = -up
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, :3] = np.stack([x, y, z], 1)
    T[:3, 3] = centre
    return T


def render(parts: list[Part], K: np.ndarray, cam2world: np.ndarray, hw: tuple[int, int], light: np.ndarray,
           supersample: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """The image (h, w, 3) uint8 and z-depth (h, w) float32 (0 where nothing is hit) of the scene seen from a
    pinhole camera; the image averages ``supersample`` squared rays per pixel (no aliasing of fine texture)."""
    import open3d as o3d

    h, w = hw
    scene = o3d.t.geometry.RaycastingScene()
    ids = [scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(p.mesh)) for p in parts]
    s = supersample
    v, u = np.mgrid[0:h * s, 0:w * s].astype(np.float64)
    u, v = (u + 0.5) / s - 0.5, (v + 0.5) / s - 0.5  # sample positions in pixels (centres at integers)
    d_cam = np.concatenate([pixel_rays(K, u, v), np.ones_like(u)[..., None]], -1).reshape(-1, 3)  # unit z
    d_world = d_cam @ cam2world[:3, :3].T
    rays = np.concatenate([np.broadcast_to(cam2world[:3, 3], d_world.shape), d_world], 1).astype(np.float32)
    hit = scene.cast_rays(o3d.core.Tensor(rays))
    t = hit["t_hit"].numpy().astype(np.float64)  # along the unit-z direction: t is the z-depth
    geometry = hit["geometry_ids"].numpy()
    normal = hit["primitive_normals"].numpy().astype(np.float64)
    found = np.isfinite(t)
    colour = np.zeros((len(t), 3))
    X = cam2world[:3, 3] + d_world * np.where(found, t, 0)[:, None]
    for i, (gid, part) in enumerate(zip(ids, parts)):
        on = found & (geometry == gid)
        if not on.any():
            continue
        n = normal[on]
        n *= np.where((n * d_world[on]).sum(1) > 0, -1.0, 1.0)[:, None]  # facing the camera
        shade = 0.35 + 0.65 * np.clip(n @ light, 0, 1)
        colour[on] = texture(X[on], part, seed=i) * shade[:, None]
    image = colour.reshape(h, s, w, s, 3).mean((1, 3))
    depth = np.where(found, t, 0).reshape(h * s, w * s)[s // 2::s, s // 2::s]  # the sample nearest each centre
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8), depth.astype(np.float32)


def _box(size, centre) -> object:
    import open3d as o3d

    m = o3d.geometry.TriangleMesh.create_box(*size)
    m.translate(np.asarray(centre, float) - np.asarray(size, float) / 2)
    return m


def object_scene(frames: int) -> tuple[list[Part], list[np.ndarray], np.ndarray]:
    """Things on a table (world: y down, the table top at y = 0), cameras on an arc 0.35-0.6 m away."""
    import open3d as o3d

    sphere = o3d.geometry.TriangleMesh.create_sphere(0.06, 40)
    sphere.translate((0.08, -0.06, 0.05))
    cyl = o3d.geometry.TriangleMesh.create_cylinder(0.04, 0.18, 40)
    cyl.rotate(o3d.geometry.get_rotation_matrix_from_xyz((np.pi / 2, 0, 0)), center=(0, 0, 0))
    cyl.translate((-0.1, -0.09, -0.06))
    parts = [
        Part(_box((1.2, 0.02, 0.8), (0, 0.01, 0)), ((0.45, 0.3, 0.15), (0.85, 0.65, 0.4))),  # table top
        Part(_box((1.2, 0.6, 0.02), (0, -0.3, -0.4)), ((0.55, 0.6, 0.65), (0.9, 0.92, 0.95)), 0.5),  # wall behind
        Part(_box((0.12, 0.16, 0.09), (0.0, -0.08, -0.12)), ((0.1, 0.2, 0.5), (0.6, 0.8, 1.0)), 2.0),  # a box
        Part(sphere, ((0.5, 0.05, 0.05), (1.0, 0.6, 0.3)), 2.0),
        Part(cyl, ((0.1, 0.4, 0.1), (0.7, 1.0, 0.5)), 2.0),
        Part(_box((0.2, 0.01, 0.14), (0.15, -0.005, 0.15)), ((0.95, 0.95, 0.9), (0.95, 0.95, 0.9)), 0.0),  # paper
    ]
    target = np.array([0.0, -0.05, -0.03])
    cams = []
    for a in np.linspace(-30, 30, frames):
        r = 0.45 + 0.1 * np.sin(np.radians(3 * a))
        centre = target + np.array([r * np.sin(np.radians(a)), -0.28, r * np.cos(np.radians(a))])
        cams.append(look_at(centre, target))
    return parts, cams, np.array([0.3, -0.8, 0.5]) / np.linalg.norm([0.3, -0.8, 0.5])


def room_scene(frames: int) -> tuple[list[Part], list[np.ndarray], np.ndarray]:
    """A 5 x 4 x 2.6 m room (world: y down, the floor at y = 0) with furniture, walked through."""
    W, D, H = 5.0, 4.0, 2.6
    parts = [
        Part(_box((W, 0.02, D), (0, 0.01, 0)), ((0.3, 0.25, 0.2), (0.6, 0.5, 0.4)), 0.6),  # floor
        Part(_box((W, 0.02, D), (0, -H - 0.01, 0)), ((0.85, 0.85, 0.85), (0.95, 0.95, 0.95)), 0.3),  # ceiling
        Part(_box((W, H, 0.02), (0, -H / 2, -D / 2 - 0.01)), ((0.5, 0.55, 0.7), (0.9, 0.9, 0.95)), 0.6),  # back
        Part(_box((0.02, H, D), (-W / 2 - 0.01, -H / 2, 0)), ((0.6, 0.5, 0.4), (0.95, 0.9, 0.8)), 0.6),  # left
        Part(_box((0.02, H, D), (W / 2 + 0.01, -H / 2, 0)), ((0.92, 0.92, 0.9), (0.92, 0.92, 0.9)), 0.0),  # bare
        Part(_box((1.6, 0.05, 0.9), (-0.6, -0.75, -0.9)), ((0.4, 0.25, 0.1), (0.8, 0.55, 0.3)), 1.5),  # table
        Part(_box((1.0, 1.8, 0.45), (-1.9, -0.9, -1.7)), ((0.5, 0.1, 0.1), (0.9, 0.4, 0.3)), 1.0),  # cabinet
        Part(_box((0.5, 0.45, 0.5), (0.6, -0.225, -1.4)), ((0.1, 0.3, 0.2), (0.5, 0.8, 0.6)), 1.5),  # a crate
        Part(_box((0.8, 0.6, 0.03), (0.9, -1.5, -1.98)), ((0.05, 0.05, 0.1), (0.9, 0.8, 0.2)), 3.0),  # a poster
    ]
    cams = []
    for a in np.linspace(0, 1, frames):
        centre = np.array([-0.8 + 1.6 * a, -1.5, 1.2 - 0.3 * a])
        target = np.array([-1.0 + 2.4 * a, -0.9, -2.0])
        cams.append(look_at(centre, target))
    return parts, cams, np.array([0.2, -0.9, 0.3]) / np.linalg.norm([0.2, -0.9, 0.3])


SCENES = {"object": object_scene, "room": room_scene}


def write_scene(kind: str, folder: Path, frames: int = 25, hw: tuple[int, int] = (480, 640),
                focal: float = 525.0) -> Path:
    """The scene ``kind`` (:data:`SCENES`) rendered into ``folder`` in the ``generic-rgbd`` layout; returns
    the folder of its images (what ``pixio recon3d`` is given)."""
    import cv2

    parts, cams, light = SCENES[kind](frames)
    h, w = hw
    K = np.array([[focal * w / 640, 0, (w - 1) / 2], [0, focal * w / 640, (h - 1) / 2], [0, 0, 1]])
    for sub in ("images", "depth", "poses"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    np.savetxt(folder / "K.txt", K)
    for i, T in enumerate(cams):
        image, depth = render(parts, K=K, cam2world=T, hw=hw, light=light)
        cv2.imwrite(str(folder / "images" / f"{i:04d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(folder / "depth" / f"{i:04d}.png"), np.clip(depth * 1000, 0, 65535).round().astype(np.uint16))
        np.savetxt(folder / "poses" / f"{i:04d}.txt", T)
    return folder / "images"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=sorted(SCENES))
    ap.add_argument("folder", type=Path)
    ap.add_argument("--frames", type=int, default=25)
    ap.add_argument("--width", type=int, default=640)
    args = ap.parse_args()
    print(write_scene(args.kind, args.folder, args.frames, hw=(args.width * 3 // 4, args.width)))


if __name__ == "__main__":
    main()
