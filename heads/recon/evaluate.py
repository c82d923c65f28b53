"""Scoring a reconstructed scene's geometry against RGB-D ground truth (``pixio evaluate recon3d``).

The truth is the recorded depth of the scene's frames back-projected with the
recorded poses. A scene is put in the truth's frame by two fits, neither of
which looks at its own geometry: the similarity that maps its camera centres
onto the recorded ones (a rigid fit for a scene in metres when asked: a short
camera path fixes a scale poorly, and a metric scene's scale is to be judged), then the rigid transform that puts the *recorded*
depth, placed on those same (aligned) cameras, onto the truth (this absorbs an
offset between the depth and colour sensors, which the scene's cameras, found
from colour, carry). Each cloud is then thinned to one point per voxel and
scored by nearest-neighbour distances both ways: accuracy (scene to truth),
completeness (truth to scene), precision and recall within a distance, and
their F-score.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pixio_cli.errors import InputError

from heads.geometry import apply_sim3_to_poses, depth_to_points, transform, umeyama
from heads.open3d_access import load_open3d  # Open3D itself is imported when a function first needs it
from heads.recon.camera_files import read_colmap_model
from heads.recon.scene_files import mixed_files

VOXEL = 0.01  # metres: both clouds thinned to one point per cell before scoring
TAUS = (0.02, 0.05, 0.10)  # metres: precision / recall / F-score distances


@dataclass
class SceneCameras:
    """The cameras a reconstruction wrote: image names, K in original pixels, camera-to-world."""

    names: list[str]
    K: np.ndarray  # (V, 3, 3)
    cam2world: np.ndarray  # (V, 4, 4)
    points: np.ndarray | None = None  # (N, 3): triangulated points of a COLMAP model, when there is one
    image_root: Path | None = None  # the folder the names are relative to, when the cameras say


def read_scene_cameras(folder: Path) -> SceneCameras:
    """The cameras beside a scene: ``cameras.json`` (pixio's) or ``sparse/0`` (a COLMAP model, whose
    triangulated points come along). Where both exist, COLMAP's (with its points) wins."""
    sparse, cams_json = folder / "sparse" / "0", folder / "cameras.json"
    if sparse.is_dir():
        names, K, c2w, points = read_colmap_model(sparse)
        return SceneCameras(names, K, c2w, points)
    if cams_json.exists():
        try:
            data = json.loads(cams_json.read_text())
            cams = data["cameras"]
            root = data.get("image_root")
            return SceneCameras([c["image"] for c in cams], np.array([c["K"] for c in cams], np.float64),
                                np.array([c["cam2world"] for c in cams], np.float64),
                                image_root=Path(root) if isinstance(root, str) and root else None)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(f"{cams_json}: not a cameras.json of pixio's ({e})") from None
    raise InputError(f"{folder}: no cameras beside the scene (run recon3d with --cameras json or --cameras colmap)")


def back_project(depth: np.ndarray, K: np.ndarray, cam2world: np.ndarray, stride: int = 1) -> np.ndarray:
    """World points (n, 3) of the valid pixels (depth > 0) of one z-depth map, every ``stride``-th pixel."""
    pts = depth_to_points(depth.astype(np.float64), K)[::stride, ::stride]
    valid = depth[::stride, ::stride] > 0
    return transform(pts[valid], cam2world)


def thin(points: np.ndarray, voxel: float = VOXEL) -> np.ndarray:
    """One point per occupied voxel: the mean of the points in it."""
    if not len(points):
        return points.reshape(0, 3)
    cells = np.floor(points / voxel).astype(np.int64)
    cells -= cells.min(0)
    span = cells.max(0) + 1
    keys = (cells[:, 0] * span[1] + cells[:, 1]) * span[2] + cells[:, 2]  # one integer per cell: a 1-D unique
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    sums = np.stack([np.bincount(inverse, weights=points[:, k], minlength=len(counts)) for k in range(3)], 1)
    return sums / counts[:, None]


def nearest_distances(query: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Distance (n,) of each query point to its nearest reference point (Open3D's k-d tree)."""
    o3d = load_open3d()
    if not len(reference):
        return np.full(len(query), np.inf)
    q = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(query, np.float64)))
    r = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(reference, np.float64)))
    return np.asarray(q.compute_point_cloud_distance(r))


def cloud_scores(points: np.ndarray, truth: np.ndarray, taus: tuple[float, ...] = TAUS) -> dict[str, float]:
    """Accuracy and completeness (median distances, metres) and precision, recall and F-score within each
    distance in ``taus``, of a thinned cloud against a thinned truth."""
    if not len(points):
        out = {"points": 0, "accuracy": float("inf"), "completeness": float("inf")}
        for tau in taus:
            out.update({f"precision@{tau:g}": 0.0, f"recall@{tau:g}": 0.0, f"f@{tau:g}": 0.0})
        return out
    to_truth, to_scene = nearest_distances(points, truth), nearest_distances(truth, points)
    out = {"points": int(len(points)), "accuracy": float(np.median(to_truth)),
           "completeness": float(np.median(to_scene))}
    for tau in taus:
        p, r = float((to_truth < tau).mean()), float((to_scene < tau).mean())
        out.update({f"precision@{tau:g}": p, f"recall@{tau:g}": r, f"f@{tau:g}": 2 * p * r / (p + r) if p + r else 0.0})
    return out


def range_scores(points: np.ndarray, truth: np.ndarray, centres: np.ndarray, edges: tuple[float, ...],
                 taus: tuple[float, ...] = (0.02, 0.05)) -> list[dict[str, float]]:
    """Precision and recall within each distance of ``taus`` per range band: both clouds' points binned by
    their distance to the nearest camera centre of ``centres`` (K, 3), at the band ``edges`` (ascending,
    metres; the last band is open). Each band says what share of the cloud's and of the truth's points lie
    in it; a point's precision is still judged against all of the truth, and a truth point's recall
    against all of the cloud. An empty band's figures are None."""
    to_truth, to_scene = nearest_distances(points, truth), nearest_distances(truth, points)
    at, at_truth = nearest_distances(points, centres), nearest_distances(truth, centres)
    bounds = [0.0, *edges, float("inf")]
    out = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        mine, theirs = (at >= lo) & (at < hi), (at_truth >= lo) & (at_truth < hi)
        row = {"from": lo, "to": hi, "points": float(mine.mean()) if len(mine) else 0.0,
               "truth": float(theirs.mean()) if len(theirs) else 0.0}
        for tau in taus:
            row[f"precision@{tau:g}"] = float((to_truth[mine] < tau).mean()) if mine.any() else None
            row[f"recall@{tau:g}"] = float((to_scene[theirs] < tau).mean()) if theirs.any() else None
        out.append(row)
    return out


def mesh_points(path: Path, spacing: float = VOXEL / 2, seed: int = 0) -> np.ndarray:
    """Points spread evenly over a mesh's surface, about one per ``spacing`` squared (seeded: one mesh gives
    one set of points)."""
    o3d = load_open3d()
    mesh = o3d.io.read_triangle_mesh(str(path))
    v, tri = np.asarray(mesh.vertices), np.asarray(mesh.triangles)
    if not len(tri):
        return np.zeros((0, 3))
    a, b, c = v[tri[:, 0]], v[tri[:, 1]], v[tri[:, 2]]
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    n = int(min(5_000_000, max(1000, area.sum() / spacing ** 2)))
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(tri), n, p=area / area.sum())
    r1, r2 = np.sqrt(rng.random(n))[:, None], rng.random(n)[:, None]
    return (1 - r1) * a[pick] + r1 * (1 - r2) * b[pick] + r1 * r2 * c[pick]


def read_cloud(path: Path) -> np.ndarray:
    """The points of a PLY point cloud."""
    o3d = load_open3d()
    cloud = o3d.io.read_point_cloud(str(path))
    return np.asarray(cloud.points)


@dataclass
class Alignment:
    """Scene frame -> truth frame: x -> R (s x) + t after the similarity of the camera centres."""

    s: float
    R: np.ndarray
    t: np.ndarray
    ate: float  # RMSE of the camera centres after the similarity, metres
    offset: np.ndarray  # (3,) the scene's camera in each truth camera's frame, metres (0 when not solved)

    def apply(self, points: np.ndarray) -> np.ndarray:
        """``points`` (n, 3) mapped by the similarity: s R x + t."""
        return self.s * points @ self.R.T + self.t


def similarity_with_offset(centres: np.ndarray, truth_c2w: np.ndarray, offset: bool = True, iterations: int = 100,
                           scale: bool = True) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """(s, R, t, x): the similarity x -> s R x + t that maps camera centres (V, 3) onto the truth's, where the
    truth's camera sits at ``x`` (3,) in each truth camera's frame (a lever arm: the truth's poses may be those
    of another sensor, as 7-Scenes' depth camera beside its colour camera). Solved by alternating Umeyama and
    the least-squares lever arm; ``offset=False`` holds x at 0 (the plain similarity of the centres);
    ``scale=False`` holds s at 1 (a rigid fit: for a scene in metres, whose scale is judged, not fitted)."""
    gt, Rg = truth_c2w[:, :3, 3], truth_c2w[:, :3, :3]
    x = np.zeros(3)
    for _ in range(iterations if offset else 1):
        s, R, t = umeyama(centres, gt + Rg @ x, with_scale=scale)
        if not offset:
            break
        x_new = np.einsum("nji,nj->ni", Rg, s * centres @ R.T + t - gt).mean(0)
        if np.linalg.norm(x_new - x) < 1e-9:
            break
        x = x_new
    return s, R, t, x


def align_scene(cameras: SceneCameras, truth_c2w: np.ndarray, depths: list[np.ndarray], depth_K: list[np.ndarray],
                offset: bool = True, stride: int = 2, scale: bool = True) -> tuple[Alignment, list[np.ndarray]]:
    """The alignment of a scene to the truth (see the module's docstring), and the recorded depth placed on
    the scene's aligned cameras (per view, world points in the truth's frame, every ``stride``-th pixel)."""
    ours = cameras.cam2world[:, :3, 3]
    s, R, t, x = similarity_with_offset(ours, truth_c2w, offset, scale=scale)
    gt = truth_c2w[:, :3, 3] + truth_c2w[:, :3, :3] @ x
    ate = float(np.sqrt(((s * ours @ R.T + t - gt) ** 2).sum(1).mean()))
    aligned = apply_sim3_to_poses(cameras.cam2world, s, R, t)
    placed, truth = [], []
    for d, K, T_ours, T_gt in zip(depths, depth_K, aligned, truth_c2w):
        placed.append(back_project(d, K, T_ours, stride))
        truth.append(back_project(d, K, T_gt, stride))
    # the same recorded pixel on our cameras and on the recorded ones: a rigid fit on those pairs
    _, R2, t2 = umeyama(np.concatenate(placed), np.concatenate(truth), with_scale=False)
    fix = np.eye(4)
    fix[:3, :3], fix[:3, 3] = R2, t2
    placed = [transform(p, fix) for p in placed]
    return Alignment(s, R2 @ R, t=R2 @ t + t2, ate=ate, offset=x), placed


def truth_cloud(depths: list[np.ndarray], Ks: list[np.ndarray], cam2world: np.ndarray, voxel: float = VOXEL
                ) -> np.ndarray:
    """The recorded depth of every frame back-projected with the recorded poses, thinned to ``voxel``."""
    return thin(np.concatenate([back_project(d, K, T) for d, K, T in zip(depths, Ks, cam2world)]), voxel)


def scene_files(scene: Path) -> tuple[Path, Path]:
    """(the scene's .ply, the folder its cameras lie in) from a .ply or the folder holding scene.ply."""
    ply = scene if scene.suffix.lower() == ".ply" else scene / "scene.ply"
    if not ply.is_file():
        raise InputError(f"{scene}: no scene (a .ply, or a folder holding scene.ply)")
    return ply, ply.parent


REFINE_DISTANCES = (0.2, 0.1, 0.05)  # metres: ICP's correspondence distance, round by round (--refine)


def refine_alignment(points: np.ndarray, truth: np.ndarray, distances: tuple[float, ...] = REFINE_DISTANCES
                     ) -> tuple[float, np.ndarray, np.ndarray]:
    """(s, R, t) that moves ``points`` (N, 3, already aligned, thinned) closer to ``truth``: Tanks and Temples'
    refinement, Open3D's point-to-point ICP with scale, at each correspondence distance of ``distances`` in
    turn. It fits the scene's own geometry, so a score after it says how good the shape is, not how well the
    cameras placed it; the shift it makes is reported beside the score."""
    o3d = load_open3d()
    reg = o3d.pipelines.registration
    source, target = o3d.geometry.PointCloud(), o3d.geometry.PointCloud()
    source.points = o3d.utility.Vector3dVector(np.asarray(points, np.float64))
    target.points = o3d.utility.Vector3dVector(np.asarray(truth, np.float64))
    T = np.eye(4)
    for d in distances:
        T = reg.registration_icp(source, target, d, T, reg.TransformationEstimationPointToPoint(with_scaling=True),
                                 reg.ICPConvergenceCriteria(1e-6, 1e-6, 100)).transformation
    sR = T[:3, :3]
    s = float(np.cbrt(np.linalg.det(sR)))
    return s, sR / s, T[:3, 3].copy()


def refinement_report(points: np.ndarray, s: float, R: np.ndarray, t: np.ndarray) -> dict[str, float]:
    """How far x -> s R x + t moves ``points`` (N, 3): its scale, its turn in degrees, and the mean distance a
    point moves (metres; a turn about a far origin moves the scene more than its translation says)."""
    return {"scale": float(s), "degrees": float(np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1, 1)))),
            "shift": float(np.linalg.norm(s * points @ R.T + t - points, axis=1).mean())}


def evaluate_clouds(cameras: SceneCameras, clouds: dict[str, np.ndarray], frames: list, read_depth,
                    voxel: float = VOXEL, offset: bool = True, scale: bool = True, refine: bool = False,
                    ranges: tuple[float, ...] | None = None) -> dict:
    """Clouds (name -> points (N, 3) in the frame of ``cameras``) scored against RGB-D ground truth.

    ``frames`` are the layout's frames (:class:`heads.sequences.Frame`, with poses and K), matched to the
    cameras by file name; ``read_depth(frame)`` gives metres. Returns the alignment's figures (ATE, and
    that of every camera at the origin) and one row of scores per cloud, followed by two references on
    the same cameras: the recorded depth (the ceiling: what the cameras allow) and one constant depth for
    every pixel (the truth's median: a flat picture per view, the trivial baseline).

    With ``refine`` the alignment is then refined on the first cloud's geometry (:func:`refine_alignment`),
    and every row, the references too, is scored after it; ``refined`` says by how much (scale, turn, and the
    mean distance the first cloud's points moved).

    With ``ranges`` (band edges, metres) each row also holds ``by_range``: its precision and recall per
    band of distance to the nearest recorded camera (:func:`range_scores`).
    """
    pairs = match_frames(cameras, frames)
    if len(pairs) < 3:
        raise InputError(f"{len(pairs)} of the scene's {len(cameras.names)} cameras name a frame of the data "
                         "(matched by their path); at least 3 are needed to align the scene")
    missing = [f.image.name for _, f in pairs if f.cam2world is None]
    if missing:
        raise InputError(f"{len(missing)} of the matched frames have no recorded pose (first: {missing[0]}): the "
                         "scene cannot be aligned to them")
    idx = [i for i, _ in pairs]
    cameras = SceneCameras([cameras.names[i] for i in idx], cameras.K[idx], cameras.cam2world[idx], cameras.points)
    matched = [f for _, f in pairs]
    depths = [read_depth(f) for f in matched]
    Ks = [np.asarray(f.K, np.float64) for f in matched]
    truth_c2w = np.stack([np.asarray(f.cam2world, np.float64) for f in matched])
    truth = truth_cloud(depths, Ks, truth_c2w, voxel)
    alignment, placed = align_scene(cameras, truth_c2w, depths=depths, depth_K=Ks, offset=offset, scale=scale)
    moved = {name: thin(alignment.apply(points), voxel) for name, points in clouds.items()}
    fix, refined = (lambda p: p), None
    first = next(iter(moved.values()), np.zeros((0, 3)))
    if refine and len(first):
        rs, rR, rt = refine_alignment(first, truth)
        fix = lambda p: thin(rs * p @ rR.T + rt, voxel)  # noqa: E731
        refined = refinement_report(first, rs, rR, rt)
    rows = {name: cloud_scores(fix(points), truth) for name, points in moved.items()}
    rows["recorded_depth_on_cameras"] = cloud_scores(fix(thin(np.concatenate(placed), voxel)), truth)
    flat = float(np.median(np.concatenate([d[d > 0] for d in depths])))
    aligned = apply_sim3_to_poses(cameras.cam2world, alignment.s, alignment.R, alignment.t)
    rows["constant_depth_on_cameras"] = cloud_scores(fix(thin(np.concatenate([
        back_project(np.full(d.shape, flat, np.float32), K, T, 4) for d, K, T in zip(depths, Ks, aligned)]), voxel)),
        truth)
    centres = truth_c2w[:, :3, 3]
    if ranges:
        for name, points in moved.items():
            rows[name]["by_range"] = range_scores(fix(points), truth, centres, ranges)
    return {"frames": len(matched), "ate": alignment.ate,
            "ate_origin": float(np.sqrt(((centres - centres.mean(0)) ** 2).sum(1).mean())),
            "scale": alignment.s, "offset": alignment.offset.tolist(), "voxel": voxel,
            "truth_points": int(len(truth)), "refined": refined, "rows": rows}


def match_frames(cameras: SceneCameras, frames: list) -> list[tuple[int, object]]:
    """(camera index, frame) for each of the scene's cameras that names a frame of the data: by its path
    (under the cameras' image root, when they say it), else by its trailing path (``seq-02/frame-0.png`` is
    that file in any ``seq-02``). A name that fits two frames (a bare file name that two sequences share) is
    refused: its scores would mix two places."""
    by_path = {str(Path(f.image).resolve()): f for f in frames}
    out = []
    for i, n in enumerate(cameras.names):
        name = n.partition("#")[0]
        if cameras.image_root is not None and str((cameras.image_root / name).resolve()) in by_path:
            out.append((i, by_path[str((cameras.image_root / name).resolve())]))
            continue
        tail = "/" + Path(name).as_posix().lstrip("/")
        fits = [f for p, f in by_path.items() if Path(p).as_posix().endswith(tail)]
        if len(fits) > 1:
            raise InputError(f"the scene's camera {name!r} fits {len(fits)} frames of the data ({fits[0].image} and "
                             f"{fits[1].image}): name the frames by their path under the data folder")
        if fits:
            out.append((i, fits[0]))
    return out


def evaluate_scene(scene: Path, frames: list, read_depth, voxel: float = VOXEL, offset: bool = True,
                   scale: bool = True, refine: bool = False, ranges: tuple[float, ...] | None = None) -> dict:
    """:func:`evaluate_clouds` of a ``pixio recon3d`` output (its .ply or folder): the scene, its mesh
    (points spread on it) when there is one, and the COLMAP model's points when its cameras are a COLMAP
    model with points."""
    ply, folder = scene_files(scene)
    _, mixed = mixed_files(ply)
    if mixed:  # scores of one run's cloud beside another's cameras or mesh would mean nothing
        raise InputError(f"{ply}: its files are not one run's ({'; '.join(mixed[:3])}"
                         f"{'; ...' if len(mixed) > 3 else ''}), as {ply.stem}{'.manifest.json'} records: "
                         "rerun pixio recon3d into this folder, or evaluate a folder one run wrote")
    cameras = read_scene_cameras(folder)
    clouds = {"scene": read_cloud(ply)}
    if not len(clouds["scene"]):
        raise InputError(f"{ply}: the scene holds no points: nothing to score")
    mesh = ply.with_name(ply.stem + "_mesh.ply")
    if mesh.exists():
        clouds["mesh"] = mesh_points(mesh)
    if cameras.points is not None and len(cameras.points):
        clouds["colmap_points"] = cameras.points
    try:
        return evaluate_clouds(cameras, clouds, frames=frames, read_depth=read_depth, voxel=voxel, offset=offset,
                               scale=scale, refine=refine, ranges=ranges)
    except InputError as e:
        raise InputError(f"{folder}: {e}") from None
