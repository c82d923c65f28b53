"""Multi-view geometry as plain functions: rays, depth and points, poses, alignment.

Conventions everywhere: OpenCV cameras (x right, y down, z forward), 4x4
camera-to-world matrices, pixel centres at integer coordinates (u, v) with K
in the pixels of the image it describes, metres when the data is metric.
Arrays are NumPy, float64 unless said otherwise; batched inputs carry leading
dimensions.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import struct
import sys
import threading
from pathlib import Path

import numpy as np


# ---------------------------------------------------------------------------- cameras


def pixel_grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """(u, v) pixel coordinates of an h x w image, each (h, w)."""
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    return u, v


def ray_directions(K: np.ndarray, h: int, w: int) -> np.ndarray:
    """Unit ray directions (h, w, 3) in the camera frame for intrinsics K."""
    u, v = pixel_grid(h, w)
    d = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
    return d / np.linalg.norm(d, axis=-1, keepdims=True)


def intrinsics_from_rays(rays: np.ndarray, step: int | None = None) -> np.ndarray:
    """K (3, 3) of the pinhole camera closest to per-pixel ray directions (h, w, 3).

    MapAnything's fit: on every ``step``-th row and column (default: about 50
    of each) u = cx + fx x/z and v = cy + fy y/z by least squares. For rays of a
    pinhole camera any fit is exact; for a network's rays this one is what
    MapAnything reports.
    """
    h, w = rays.shape[:2]
    sh, sw = (step, step) if step else (max(1, h // 50), max(1, w // 50))
    r = rays[::sh, ::sw].astype(np.float64)
    u, v = pixel_grid(h, w)
    u, v = u[::sh, ::sw].ravel(), v[::sh, ::sw].ravel()
    fx, cx = np.polyfit((r[..., 0] / r[..., 2]).ravel(), u, 1)
    fy, cy = np.polyfit((r[..., 1] / r[..., 2]).ravel(), v, 1)
    return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]])


def scale_intrinsics(K: np.ndarray, from_hw: tuple[int, int], to_hw: tuple[int, int]) -> np.ndarray:
    """K of the same camera for an image resized from ``from_hw`` to ``to_hw`` (pixel centres kept)."""
    sy, sx = to_hw[0] / from_hw[0], to_hw[1] / from_hw[1]
    out = np.array(K, np.float64, copy=True)
    out[0, 0] *= sx
    out[1, 1] *= sy
    out[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
    out[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
    return out


def depth_to_points(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Camera-frame points (h, w, 3) from z-depth (h, w)."""
    u, v = pixel_grid(*depth.shape)
    return np.stack([(u - K[0, 2]) / K[0, 0] * depth, (v - K[1, 2]) / K[1, 1] * depth, depth], -1)


def ray_depth_to_points(rays: np.ndarray, ray_depth: np.ndarray) -> np.ndarray:
    """Camera-frame points from unit rays (h, w, 3) and the depth along them (h, w)."""
    return rays * ray_depth[..., None]


# ---------------------------------------------------------------------------- poses


def transform(points: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Apply a 4x4 (or 3x4) transform to points (..., 3)."""
    return points @ T[:3, :3].T + T[:3, 3]


def invert_pose(T: np.ndarray) -> np.ndarray:
    """Inverse of rigid transforms (..., 4, 4), in closed form."""
    out = np.zeros_like(T)
    rt = np.swapaxes(T[..., :3, :3], -1, -2)
    out[..., :3, :3] = rt
    out[..., :3, 3] = -(rt @ T[..., :3, 3:])[..., 0]
    out[..., 3, 3] = 1
    return out


def relative_to_first(cam2world: np.ndarray) -> np.ndarray:
    """Camera-to-world poses (V, 4, 4) expressed in the first camera's frame (the first becomes I)."""
    return invert_pose(cam2world[0])[None] @ cam2world


def rotation_from_quaternion(q: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) from unit quaternions (..., 4) in (x, y, z, w) order."""
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    x, y, z, w = np.moveaxis(q, -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def quaternion_from_rotation(R: np.ndarray) -> np.ndarray:
    """Unit quaternions (..., 4) in (x, y, z, w) order, w >= 0, from rotation matrices (..., 3, 3)
    (the eigenvector of the largest eigenvalue of Bar-Itzhack's symmetric 4x4: robust for any angle
    and for matrices a little off orthonormal)."""
    R = np.asarray(R, np.float64)
    m = R.reshape(-1, 3, 3)
    out = np.empty((len(m), 4))
    for i, r in enumerate(m):
        (a, b, c), (d, e, f), (g, h, k) = r
        Q = np.array([[a - e - k, d + b, g + c, h - f],
                      [d + b, e - a - k, h + f, c - g],
                      [g + c, h + f, k - a - e, d - b],
                      [h - f, c - g, d - b, a + e + k]]) / 3
        w, v = np.linalg.eigh(Q)
        q = v[:, np.argmax(w)]
        out[i] = q if q[3] >= 0 else -q
    return out.reshape(*R.shape[:-2], 4)


def rotation_angle_deg(R_a: np.ndarray, R_b: np.ndarray) -> np.ndarray:
    """Angle (degrees) of the rotation taking R_a to R_b, for (..., 3, 3) stacks."""
    cos = (np.trace(np.swapaxes(R_a, -1, -2) @ R_b, axis1=-2, axis2=-1) - 1) / 2
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def translation_angle_deg(t_a: np.ndarray, t_b: np.ndarray, ambiguity: bool = True) -> np.ndarray:
    """Angle (degrees) between translation directions (..., 3); with ``ambiguity`` the sign is ignored,
    as MapAnything's benchmark does (min(a, 180 - a))."""
    a = t_a / (np.linalg.norm(t_a, axis=-1, keepdims=True) + 1e-15)
    b = t_b / (np.linalg.norm(t_b, axis=-1, keepdims=True) + 1e-15)
    ang = np.degrees(np.arccos(np.clip((a * b).sum(-1), -1.0, 1.0)))
    return np.minimum(ang, 180 - ang) if ambiguity else ang


def relative_pose_errors(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation and translation-direction errors (degrees) of every view pair i < j.

    For each pair the relative pose inv(T_i) T_j of the prediction is compared
    with that of the ground truth (camera-to-world stacks, (V, 4, 4)).
    """
    i, j = np.triu_indices(len(gt), k=1)
    rel_p = invert_pose(pred[i]) @ pred[j]
    rel_g = invert_pose(gt[i]) @ gt[j]
    return (rotation_angle_deg(rel_g[:, :3, :3], rel_p[:, :3, :3]),
            translation_angle_deg(rel_g[:, :3, 3], rel_p[:, :3, 3]))


# ---------------------------------------------------------------------------- alignment


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = True) -> tuple[float, np.ndarray, np.ndarray]:
    """(s, R, t) minimising sum |dst - (s R src + t)|^2 over point pairs (N, 3) (Umeyama 1991).

    Without ``with_scale`` s is 1 (a rigid fit, for metric predictions).
    """
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / len(src)
    U, S, Vt = np.linalg.svd(cov)
    D = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        D[2, 2] = -1
    R = U @ D @ Vt
    var_s = (xs ** 2).sum() / len(src)
    s = float(np.trace(np.diag(S) @ D) / var_s) if with_scale and var_s > 0 else 1.0
    t = mu_d - s * R @ mu_s
    return s, R, t


def ransac_umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = True, threshold: float | None = None,
                   iters: int = 200, sample: int = 4, seed: int = 0) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """A robust :func:`umeyama`: fits on random minimal samples, keeps the one with the most inliers
    (residual under ``threshold``, default 5 % of the destination's spread), refits on its inliers.

    Returns (s, R, t, inlier mask).
    """
    n = len(src)
    if threshold is None:
        threshold = 0.05 * float(np.linalg.norm(dst - dst.mean(0), axis=1).mean() or 1.0)
    rng = np.random.default_rng(seed)
    best = np.ones(n, bool)
    best_count = -1
    for _ in range(iters if n > sample else 0):
        idx = rng.choice(n, sample, replace=False)
        s, R, t = umeyama(src[idx], dst[idx], with_scale)
        inliers = np.linalg.norm(dst - (s * src @ R.T + t), axis=1) < threshold
        if inliers.sum() > best_count:
            best, best_count = inliers, int(inliers.sum())
    if best.sum() < 3:
        best = np.ones(n, bool)
    s, R, t = umeyama(src[best], dst[best], with_scale)
    inliers = np.linalg.norm(dst - (s * src @ R.T + t), axis=1) < threshold
    if inliers.sum() >= 3:
        s, R, t = umeyama(src[inliers], dst[inliers], with_scale)
    return s, R, t, inliers


def apply_sim3_to_poses(cam2world: np.ndarray, s: float, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Camera-to-world poses (V, 4, 4) after the world is mapped by x -> s R x + t."""
    out = np.array(cam2world, np.float64, copy=True)
    out[:, :3, :3] = R @ cam2world[:, :3, :3]
    out[:, :3, 3] = s * cam2world[:, :3, 3] @ R.T + t
    return out


def mean_norm(points: list[np.ndarray], masks: list[np.ndarray] | None = None) -> float:
    """The mean distance to the origin of the valid points of several point maps (joint)."""
    total, count = 0.0, 0
    for i, p in enumerate(points):
        norms = np.linalg.norm(p, axis=-1)
        keep = masks[i] if masks is not None else np.ones(norms.shape, bool)
        total += float(norms[keep].sum())
        count += int(keep.sum())
    return total / count if count else 0.0


# ---------------------------------------------------------------------------- cleaning


def depth_edges(depth: np.ndarray, rtol: float) -> np.ndarray:
    """Pixels (h, w) on a depth discontinuity: some 8-neighbour differs by more than ``rtol`` x the
    pixel's depth (the floaters between a foreground edge and the background)."""
    d = np.pad(depth.astype(np.float64), 1, mode="edge")
    h, w = depth.shape
    centre = d[1:-1, 1:-1]
    worst = np.zeros((h, w))
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            worst = np.maximum(worst, np.abs(d[dy:dy + h, dx:dx + w] - centre))
    return worst > rtol * np.maximum(centre, 1e-9)


def voxel_representatives(points: np.ndarray, voxel: float) -> np.ndarray:
    """Indices of one point per occupied voxel of side ``voxel`` (the first, so each kept point is still
    an observed pixel), in their original order."""
    cells = np.floor(points / voxel).astype(np.int64)
    cells -= cells.min(0)
    span = cells.max(0) + 1
    if float(span[0]) * float(span[1]) * float(span[2]) < 2.0 ** 62:  # one integer per cell: a fast 1-D unique
        keys = (cells[:, 0] * span[1] + cells[:, 1]) * span[2] + cells[:, 2]
        _, first = np.unique(keys, return_index=True)
    else:
        _, first = np.unique(cells, axis=0, return_index=True)
    return np.sort(first)


def statistical_inliers(points: np.ndarray, neighbours: int = 20, std_ratio: float = 2.0) -> np.ndarray:
    """Indices of points whose mean distance to their neighbours is within ``std_ratio`` standard
    deviations of the average (Open3D's statistical outlier removal)."""
    o3d = _open3d()
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(points, np.float64)))
    _, kept = pcd.remove_statistical_outlier(nb_neighbors=neighbours, std_ratio=std_ratio)
    return np.asarray(kept, np.int64)


def _open3d():
    from pixio_cli.errors import UsageError

    try:
        import open3d as o3d
    except ImportError as e:  # also raised when libusb-1.0 is missing
        raise UsageError(f"this needs Open3D ({e}); install open3d and the system library libusb-1.0") from None
    return o3d


# ---------------------------------------------------------------------------- pictures


def render_points(points: np.ndarray, colours: np.ndarray, K: np.ndarray, world2cam: np.ndarray,
                  hw: tuple[int, int], radius: int = 1, background: int = 255) -> np.ndarray:
    """An RGB picture (h, w, 3) of coloured points seen by a pinhole camera, nearest point wins
    (z-buffer); each point covers a (2 radius + 1)^2 square."""
    h, w = hw
    cam = transform(points, world2cam)
    front = cam[:, 2] > 1e-6
    cam, col = cam[front], colours[front]
    u = np.round(cam[:, 0] / cam[:, 2] * K[0, 0] + K[0, 2]).astype(np.int64)
    v = np.round(cam[:, 1] / cam[:, 2] * K[1, 1] + K[1, 2]).astype(np.int64)
    image = np.full((h, w, 3), background, np.uint8)
    zbuf = np.full((h, w), np.inf)
    order = np.argsort(-cam[:, 2])  # far to near: nearer points overwrite
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            uu, vv = u[order] + dx, v[order] + dy
            ok = (uu >= 0) & (uu < w) & (vv >= 0) & (vv < h)
            z = cam[order, 2][ok]
            idx = (vv[ok], uu[ok])
            nearer = z < zbuf[idx]  # with duplicates the last write (nearest) wins
            image[idx[0][nearer], idx[1][nearer]] = col[order][ok][nearer]
            zbuf[idx[0][nearer], idx[1][nearer]] = z[nearer]
    return image


def frustum_segments(K: np.ndarray, hw: tuple[int, int], cam2world: np.ndarray, size: float) -> np.ndarray:
    """The 8 line segments (8, 2, 3) of a camera frustum of depth ``size``, in world coordinates."""
    h, w = hw
    corners = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float64)
    rays = np.stack([(corners[:, 0] - K[0, 2]) / K[0, 0], (corners[:, 1] - K[1, 2]) / K[1, 1], np.ones(4)], -1)
    far = transform(rays * size, cam2world)
    apex = cam2world[:3, 3]
    return np.array([[apex, c] for c in far] + [[far[i], far[(i + 1) % 4]] for i in range(4)])


def preview_camera(cam2world: np.ndarray, points: np.ndarray, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(K, world-to-camera) of a viewpoint behind and above the first camera, looking at the point half-way
    between the cameras' centre and the points', far enough back that every camera and most points show."""
    first = cam2world[0]
    centre = np.median(points, axis=0) if len(points) else first[:3, 3] + first[:3, 2]
    cameras = cam2world[:, :3, 3]
    target = (centre + cameras.mean(0)) / 2
    spread = float(np.percentile(np.linalg.norm(points - target, axis=1), 90)) if len(points) else 1.0
    reach = max(spread, float(np.linalg.norm(cameras - target, axis=1).max()), 1e-6)  # every camera in view
    back, up = -first[:3, 2], -first[:3, 1]  # OpenCV: z forward, y down
    eye = target + (back * 1.1 + up * 0.7) * reach
    forward = target - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    R = np.stack([right, down, forward])  # rows: camera axes in world coordinates
    w2c = np.eye(4)
    w2c[:3, :3], w2c[:3, 3] = R, -R @ eye
    h, w = hw
    f = 0.7 * w
    return np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1]]), w2c


# ---------------------------------------------------------------------------- export


def write_ply(path, points: np.ndarray, colours: np.ndarray, normals_towards: np.ndarray | None = None,
              unit: str | None = None) -> None:
    """Coloured points (N, 3) and colours (N, 3) uint8 as a PLY file, with Open3D, atomically. With
    ``normals_towards`` (a 3D point, e.g. a camera centre) normals are estimated and oriented towards it;
    ``unit`` goes into the header as a ``comment units: ...`` line."""
    from pixio_cli.errors import UsageError
    from pixio_cli.writers import atomic_path

    o3d = _open3d()
    pcd = o3d.geometry.PointCloud()
    pcd.points = o3d.utility.Vector3dVector(np.asarray(points, np.float64).reshape(-1, 3))
    pcd.colors = o3d.utility.Vector3dVector(np.asarray(colours, np.float64).reshape(-1, 3) / 255)
    if normals_towards is not None and len(pcd.points) >= 3:
        pcd.estimate_normals()
        pcd.orient_normals_towards_camera_location(np.asarray(normals_towards, np.float64))
    path = Path(path)
    with atomic_path(path, keep_suffix=True) as tmp, _quiet_open3d(o3d):
        if not o3d.io.write_point_cloud(str(tmp), pcd):
            raise UsageError(f"Open3D could not write {path}")
        if unit:
            _ply_comment(tmp, f"units: {unit}")
        _check_ply(tmp, path)  # Open3D reports success on a full disk too


def write_mesh(path, mesh) -> None:
    """An Open3D triangle mesh in the format of ``path``'s extension (.ply, .glb, .obj), atomically."""
    from pixio_cli.errors import UsageError
    from pixio_cli.writers import atomic_path

    o3d = _open3d()
    glb = Path(path).suffix.lower() == ".glb"
    with atomic_path(path, keep_suffix=True) as tmp, _quiet_open3d(o3d):
        # the legacy writer's GLB has no binary chunk (its buffer is a data URI) and a wrong index maximum:
        # nothing reads it back, Open3D included (isl-org/Open3D#2682); the tensor API's writer is right
        ok = (o3d.t.io.write_triangle_mesh(str(tmp), o3d.t.geometry.TriangleMesh.from_legacy(mesh)) if glb
              else o3d.io.write_triangle_mesh(str(tmp), mesh))
        if not ok:
            raise UsageError(f"Open3D could not write {path}")
        if glb:
            _check_glb(tmp, path)
        elif Path(path).suffix.lower() == ".ply":
            _check_ply(tmp, path)  # Open3D reports success on a full disk too


_QUIET = threading.Lock()


@contextlib.contextmanager
def _quiet_open3d(o3d):
    """Open3D's own warnings and its PLY library's C-level messages (hundreds of "RPly: Failed writing"
    lines on a full disk) held back: the write is checked, and a failure is said in one line."""
    level = o3d.utility.get_verbosity_level()
    o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Error)
    # the descriptor is the whole process's: redirected only from the main thread (never while a background
    # writer's PLY would take the progress bar and warnings of the main thread with it), one at a time
    redirect = threading.current_thread() is threading.main_thread() and _QUIET.acquire(blocking=False)
    if redirect:
        sys.stderr.flush()
        saved = os.dup(2)
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
    try:
        yield
    finally:
        if redirect:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(null)
            _QUIET.release()
        o3d.utility.set_verbosity_level(level)


_PLY_SIZES = {"char": 1, "uchar": 1, "int8": 1, "uint8": 1, "short": 2, "ushort": 2, "int16": 2, "uint16": 2,
              "int": 4, "uint": 4, "int32": 4, "uint32": 4, "float": 4, "float32": 4, "double": 8, "float64": 8}


def ply_is_whole(path) -> bool:
    """Whether a PLY file holds what its header promises: a binary one's body has that size (faces: triangles);
    an ASCII one is taken as it is (not checkable by size)."""
    data = Path(path).read_bytes()
    end = data.find(b"end_header\n")
    if end <= 0:
        return False
    header = data[:end].decode("ascii", "replace").splitlines()
    if not any(line.startswith("format binary") for line in header):
        return True
    size, count, row = end + len(b"end_header\n"), 0, 0
    for line in header + ["element end 0"]:
        words = line.split()
        if words[:1] == ["element"]:
            size += count * row
            count, row = int(words[2]), 0
        elif words[:2] == ["property", "list"]:
            row += _PLY_SIZES.get(words[2], 0) + 3 * _PLY_SIZES.get(words[3], 0)
        elif words[:1] == ["property"]:
            row += _PLY_SIZES.get(words[1], 0)
    return size == len(data)


def _check_ply(tmp, path) -> None:
    """An OSError unless the PLY written is whole (Open3D reports success on a full disk too)."""
    if not ply_is_whole(tmp):
        raise OSError(errno.EIO, "the PLY written is not whole (is the disk full?)", str(path))


def _check_glb(tmp, path) -> None:
    """A GLB is whole when its header's length is the file's, its chunks fit in it and it has its binary
    chunk."""
    data = Path(tmp).read_bytes()
    ok = len(data) >= 20 and data[:4] == b"glTF"
    if ok:
        _, _, total = struct.unpack_from("<4sII", data)
        json_len, _ = struct.unpack_from("<I4s", data, 12)
        ok = total == len(data) and 20 + json_len + 8 <= len(data) and data[24 + json_len:28 + json_len] == b"BIN\x00"
        try:
            json.loads(data[20:20 + json_len])
        except ValueError:
            ok = False
    if not ok:
        raise OSError(errno.EIO, "the GLB written is not whole (is the disk full?)", str(path))


def _ply_comment(path, text: str) -> None:
    """Insert a comment line into a PLY header, after its format line (the header is ASCII)."""
    data = Path(path).read_bytes()
    at = data.index(b"\n", data.index(b"\nformat ") + 1) + 1
    Path(path).write_bytes(data[:at] + f"comment {text}\n".encode("ascii") + data[at:])


def write_cameras_json(path, images: list[str], sizes: np.ndarray, K: np.ndarray, cam2world: np.ndarray,
                       unit: str, image_root: str | None = None) -> None:
    """``cameras.json``: per image its name (relative to ``image_root`` when given), width, height, K
    (original pixels) and camera-to-world (OpenCV axes: x right, y down, z forward), and the unit of
    lengths."""
    from pixio_cli.writers import write_text

    cams = [{"image": name, "width": int(hw[1]), "height": int(hw[0]), "K": np.asarray(k, float).tolist(),
             "cam2world": np.asarray(T, float).tolist()} for name, hw, k, T in zip(images, sizes, K, cam2world)]
    head = {"unit": unit, "convention": "OpenCV: x right, y down, z forward; camera-to-world"}
    if image_root is not None:
        head["image_root"] = image_root
    write_text(path, json.dumps({**head, "cameras": cams}, indent=1) + "\n")

