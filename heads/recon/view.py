"""Looking at a reconstruction in the browser: the coloured cloud, its mesh, and the cameras with their frames.

:func:`read_scene` gathers what a `pixio recon3d` run wrote (the PLY, ``<stem>_mesh.ply`` beside it,
``cameras.json`` or ``sparse/0``, the frames they name); :func:`serve` shows it with viser (the viewer
VGGT and nerfstudio use), imported only here. Lengths and axes are the scene's own: OpenCV camera axes
(x right, y down, z forward), world = the frame the PLY was written in.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import sys
import threading
import time
import webbrowser
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from pixio_cli.errors import InputError, UsageError

from heads.open3d_access import load_open3d, quiet_open3d
from heads.recon.camera_files import _pycolmap, camera_K, image_cam2world
from heads.recon.known_cameras import read_cameras_json
from heads.recon.scene_files import mixed_files
from heads.writers3d import ply_is_whole

# Open3D, viser and what only the viewer needs (trimesh, websockets) are imported where they are used: they are
# slow to import, and reading a scene needs none of viser's.

THUMB_SIDE = 160  # pixels: the long side of a camera's picture in its frustum
POINTS_SHOWN = 1_000_000  # points shown at first (the slider goes up to what was loaded)


@dataclass
class ViewCamera:
    """One camera: ``K`` (3, 3) in its image's pixels, ``cam2world`` (4, 4) OpenCV axes, ``hw`` its image size,
    ``thumb`` a small RGB picture of its frame (or None where the frame is not found)."""

    name: str
    K: np.ndarray
    cam2world: np.ndarray
    hw: tuple[int, int]
    thumb: np.ndarray | None = None


@dataclass
class SceneToView:
    """What the viewer shows: ``points`` (N, 3) float32 and ``colours`` (N, 3) uint8 in a random order (so
    the first k are a fair subset of any size), the mesh (vertices (M, 3), faces (F, 3), vertex colours
    (M, 3) uint8) or None, the cameras, and lines to say (what was left out or made up)."""

    points: np.ndarray
    colours: np.ndarray
    mesh: tuple[np.ndarray, np.ndarray, np.ndarray] | None
    cameras: list[ViewCamera]
    notes: list[str] = field(default_factory=list)


def scene_file(path: Path) -> Path:
    """The scene's point-cloud PLY: ``path`` itself, or in a folder ``scene.ply`` or its only cloud PLY."""
    if path.is_dir():
        if (path / "scene.ply").is_file():
            return path / "scene.ply"
        clouds = sorted(p for p in path.glob("*.ply") if not p.stem.endswith("_mesh"))
        if len(clouds) != 1:
            what = "no" if not clouds else f"{len(clouds)}"
            raise InputError(f"{path}: {what} point-cloud .ply files in the folder; name the scene's .ply")
        return clouds[0]
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    return path


def read_scene(path: Path, max_points: int, seed: int = 0) -> SceneToView:
    """The scene at ``path`` (a PLY or the folder of a `pixio recon3d` run), with at most ``max_points``
    points (a random subset beyond that, said in ``notes``)."""
    ply = scene_file(path)
    points, colours, notes = _read_cloud(ply, max_points, seed)
    mesh_path = ply.with_name(f"{ply.stem}_mesh.ply")
    mesh = None
    if mesh_path.is_file() and _older(mesh_path, ply):  # recon3d writes it after the cloud: an earlier run's
        notes.append(f"{mesh_path.name} not shown: it is older than {ply.name}, from an earlier run")
    elif mesh_path.is_file():
        mesh = _read_mesh(mesh_path, notes)
    cameras = _read_cameras(ply.parent, notes)
    listed, mixed = mixed_files(ply)
    if mixed:
        notes.append(f"warning: the files beside {ply.name} are not one run's ({'; '.join(mixed[:3])}"
                     f"{'; ...' if len(mixed) > 3 else ''}): what is shown may not belong together")
    elif not listed:  # no manifest (an older run, or a cloud from elsewhere): file times are all there is
        for companion in (ply.parent / "cameras.json", ply.parent / "sparse" / "0"):
            if cameras and companion.exists() and _older(companion, ply):
                notes.append(f"{companion.name} is older than {ply.name}: its cameras may be an earlier run's")
                break
    return SceneToView(points, colours, mesh=mesh, cameras=cameras, notes=notes)


def _older(path: Path, than: Path) -> bool:
    return path.stat().st_mtime < than.stat().st_mtime


def _read_cloud(ply: Path, max_points: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    try:
        with open(ply, "rb") as f:
            head = f.read(4096)
    except OSError as e:
        raise InputError(f"{ply}: cannot read it ({e.strerror})") from None
    if not head.startswith(b"ply") or b"element vertex" not in head:
        raise InputError(f"{ply}: not a point-cloud PLY file (pixio recon3d writes one)")
    if not ply_is_whole(ply):  # Open3D reads a cut-short file as whole, zeros where the rest would be
        raise InputError(f"{ply}: cut short: it holds less than its header says (a copy or a write that did not "
                         "finish)")
    o3d = load_open3d()
    with quiet_open3d(o3d):
        cloud = o3d.io.read_point_cloud(str(ply))
    points = np.asarray(cloud.points, np.float64)
    if len(points) == 0:
        raise InputError(f"{ply}: the cloud holds no points")
    keep = np.isfinite(points).all(1) & (np.abs(points) < 1e9).all(1)  # beyond that no float32 view holds it
    if not keep.any():
        raise InputError(f"{ply}: none of its {len(points):,} points has finite coordinates a viewer can hold")
    points = points.astype(np.float32)
    notes = []
    if not keep.all():
        notes.append(f"{int((~keep).sum())} points with non-finite or far-off coordinates left out")
    order = np.random.default_rng(seed).permutation(np.flatnonzero(keep))
    if len(order) > max_points:
        notes.append(f"{len(order):,} points: showing a random {max_points:,} (--max-points to change)")
        order = order[:max_points]
    points = points[order]
    if cloud.has_colors():
        colours = (np.asarray(cloud.colors)[order] * 255).round().clip(0, 255).astype(np.uint8)
    else:
        colours = _by_height(points)
        notes.append("the PLY has no colours: shown by height")
    return points, colours, notes


def _by_height(points: np.ndarray) -> np.ndarray:
    """Colours from a point's height (-y, the scene's up in OpenCV axes), as a turbo ramp."""
    h = -points[:, 1]
    lo, hi = np.percentile(h, [2, 98]) if len(h) > 1 else (h.min(), h.min() + 1)
    t = ((h - lo) / max(hi - lo, 1e-9)).clip(0, 1)
    ramp = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_TURBO)[:, 0, ::-1]
    return ramp[(t * 255).astype(np.int64)]


def _read_mesh(path: Path, notes: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    import open3d as o3d

    mesh = o3d.io.read_triangle_mesh(str(path))
    vertices, faces = np.asarray(mesh.vertices, np.float32), np.asarray(mesh.triangles, np.int64)
    if len(faces) == 0:
        notes.append(f"{path.name} holds no triangles: no mesh shown")
        return None
    colours = (np.asarray(mesh.vertex_colors) * 255).round().clip(0, 255).astype(np.uint8) \
        if mesh.has_vertex_colors() else np.full((len(vertices), 3), 180, np.uint8)
    return vertices, faces, colours


def _read_cameras(folder: Path, notes: list[str]) -> list[ViewCamera]:
    """The cameras beside the scene: ``cameras.json`` (pixio's), else a COLMAP model in ``sparse/0``."""
    if (folder / "cameras.json").is_file():
        try:
            cams = read_cameras_json(folder / "cameras.json").cameras
            root = json.loads((folder / "cameras.json").read_text()).get("image_root")
        except UsageError as e:
            notes.append(f"cameras.json not shown: {str(e).split(': ', 1)[-1]}")
            return []
        roots = [Path(root)] if isinstance(root, str) else []
        return [ViewCamera(name, K, cam2world=T, hw=hw, thumb=_thumb(name, roots + [folder, folder / "images"]))
                for name, (K, T, hw) in cams.items()]
    if (folder / "sparse" / "0").is_dir():
        return _colmap_cameras(folder / "sparse" / "0", [folder / "images", folder], notes)
    return []


def _colmap_cameras(model: Path, roots: list[Path], notes: list[str]) -> list[ViewCamera]:
    try:
        rec = _pycolmap().Reconstruction(str(model))
    except Exception as e:  # pycolmap's reader says why in its own words
        notes.append(f"{model} not shown: {str(e).strip()[:120]}")
        return []
    images = sorted((im for im in rec.images.values() if im.has_pose), key=lambda im: im.name)
    return [ViewCamera(im.name, camera_K(im.camera), cam2world=image_cam2world(im),
                       hw=(im.camera.height, im.camera.width), thumb=_thumb(im.name, roots)) for im in images]


def _thumb(name: str, roots: list[Path]) -> np.ndarray | None:
    """The frame ``name`` (relative to one of ``roots``) as a small RGB picture, or None."""
    for root in roots:
        path = root / name
        if path.is_file():
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                return None
            s = THUMB_SIDE / max(image.shape[:2])
            if s < 1:
                image = cv2.resize(image, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
            return np.ascontiguousarray(image[:, :, ::-1])
    return None


def scene_extent(scene: SceneToView) -> float:
    """A length for the scene's size: the spread of its middle 90 % of points (for frustums and the view)."""
    lo, hi = np.percentile(scene.points, [5, 95], axis=0)
    return float(max(np.linalg.norm(hi - lo), 1e-6))


def _add_cameras(server, scene: SceneToView, extent: float) -> list[tuple]:
    """A frustum with its frame for each camera of ``scene``, which a click looks through; returns each
    camera's (wxyz, position, a point ahead of it)."""
    import viser.transforms as tf

    poses = []
    for i, cam in enumerate(scene.cameras):
        h, w = cam.hw
        wxyz = tf.SO3.from_matrix(cam.cam2world[:3, :3]).wxyz
        position = cam.cam2world[:3, 3]
        frustum = server.scene.add_camera_frustum(
            f"/cameras/{i}", fov=2 * math.atan(h / (2 * cam.K[1, 1])), aspect=w / h, scale=extent * 0.03,
            thickness=2.0, thickness_units="screen", image=cam.thumb, color=(40, 200, 60) if i == 0 else (230, 120, 40),
            wxyz=wxyz, position=position)
        poses.append((wxyz, position, cam.cam2world[:3, :3] @ np.array([0.0, 0.0, extent * 0.3]) + position))

        def look_through(event, pose=poses[-1]) -> None:
            event.client.camera.wxyz, event.client.camera.position = pose[0], pose[1]

        frustum.on_click(look_through)
    if scene.cameras:
        server.gui.add_markdown("Click a camera to look through it; the first camera is green.")
    return poses


def serve(scene: SceneToView, host: str, port: int, open_browser: bool, say: Callable[[str], None],
          stop: threading.Event | None = None) -> None:
    """Show ``scene`` on ``host``:``port`` (the next free port if taken, said) until ``stop`` is set or
    Ctrl-C / SIGTERM (as KeyboardInterrupt); ``say`` hears the URL and each browser that connects."""
    import rich
    import viser

    logging.getLogger("websockets").setLevel(logging.WARNING)  # a line per connection otherwise
    rich.reconfigure(quiet=True)  # viser prints a banner and its stops on stdout, which is for data
    free = free_port(host, port)
    with own_page_only(host):
        server = viser.ViserServer(host=host, port=free, verbose=False)
    try:
        bound = server.get_port()
        if bound != port:
            say(f"port {port} is taken: serving on {bound}")
        url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{bound}"
        server.scene.set_up_direction("-y")  # OpenCV axes: y points down
        extent = scene_extent(scene)
        n = len(scene.points)
        shown = min(n, POINTS_SHOWN)
        size = extent / 300
        cloud = server.scene.add_point_cloud("/scene/points", scene.points[:shown], scene.colours[:shown],
                                             point_size=size, point_shape="rounded", point_shading="flat")
        gui_points = server.gui.add_slider("points", min=min(1000, n), max=n, step=max(1, n // 1000),
                                           initial_value=shown)
        gui_size = server.gui.add_slider("point size", min=0.1, max=5.0, step=0.1, initial_value=1.0)
        lock = threading.Lock()

        def redraw(_event=None) -> None:
            with lock:  # the slider fires as it moves: one update at a time
                k = int(gui_points.value)
                cloud.points, cloud.colors = scene.points[:k], scene.colours[:k]
                cloud.point_size = size * float(gui_size.value)

        gui_points.on_update(redraw)
        gui_size.on_update(redraw)
        if scene.mesh is not None:
            vertices, faces, colours = scene.mesh
            import trimesh

            mesh = server.scene.add_mesh_trimesh(
                "/scene/mesh", trimesh.Trimesh(vertices, faces, vertex_colors=colours, process=False), visible=False)
            gui_mesh = server.gui.add_checkbox("mesh", False)
            gui_cloud = server.gui.add_checkbox("cloud", True)
            gui_mesh.on_update(lambda _e: setattr(mesh, "visible", gui_mesh.value))
            gui_cloud.on_update(lambda _e: setattr(cloud, "visible", gui_cloud.value))
        poses = _add_cameras(server, scene, extent)
        if os.environ.get("PIXIO_VIEW_NO_NOTICES"):  # pictures for the docs: no "software WebGL" notice on them
            server.gui.add_html("<style>.mantine-Notifications-root{display:none !important}</style>")
        centre = np.median(scene.points, axis=0)
        if poses:  # behind and above the first camera, looking at the middle of the scene
            eye = poses[0][1] + scene.cameras[0].cam2world[:3, :3] @ np.array([0.0, -0.15, -0.3]) * extent
        else:
            eye = centre + np.array([0.0, -0.5, -1.0]) * extent
        server.initial_camera.up = (0.0, -1.0, 0.0)
        server.initial_camera.position = tuple(eye)
        server.initial_camera.look_at = tuple(centre)
        server.on_client_connect(lambda client: say(f"a browser connected (client {client.client_id})"))

        say(f"viewing {len(scene.points):,} points, {'a mesh, ' if scene.mesh is not None else ''}"
            f"{len(scene.cameras)} cameras at {url} (Ctrl-C to stop)")
        if host not in ("127.0.0.1", "localhost", "::1"):
            say(f"serving on {host}: anyone who can reach this machine on port {bound} can see the scene")
        if open_browser:
            threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()
        while stop is None or not stop.is_set():
            time.sleep(0.1)
    finally:
        server.stop()


def free_port(host: str, port: int) -> int:
    """The first port from ``port`` on that ``host`` can bind (viser's own search runs past 65535 into a
    traceback); a :class:`UsageError` when none up to 65535 is free."""
    for candidate in range(port, 65536):
        try:
            with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
                probe.bind((host, candidate))
            return candidate
        except OSError:
            continue
    raise UsageError(f"--port {port}: no port from {port} to 65535 is free on {host}")


def page_origins(host: str, port: int) -> list[str | None]:
    """The Origin headers the viewer's own page sends from ``host``:``port`` (every address this machine has,
    when it serves on all of them), and None: a program that is not a browser sends none, and could read the
    scene's files anyway."""
    hosts = {"127.0.0.1", "localhost", "[::1]", host if ":" not in host else f"[{host}]"}
    if host in ("0.0.0.0", "::"):
        name = socket.gethostname()
        hosts |= {name, socket.getfqdn()}
        try:
            hosts |= {a[4][0] if ":" not in a[4][0] else f"[{a[4][0]}]" for a in socket.getaddrinfo(name, None)}
        except OSError:
            pass
    return [f"http://{h}:{port}" for h in sorted(hosts)] + [None]


@contextmanager
def own_page_only(host: str):
    """While viser starts its server: the WebSocket that carries the scene accepts only the viewer's own page
    (its Origin, :func:`page_origins`); any other web page the user has open is refused with 403, so it cannot
    read the scene (viser checks no origin itself: websockets' ``origins`` is given for it)."""
    import websockets.asyncio.server as ws_server

    original = ws_server.serve

    def serve(handler, at_host, at_port, *args, **kwargs):
        kwargs.setdefault("origins", page_origins(host, at_port))
        return original(handler, at_host, at_port, *args, **kwargs)

    ws_server.serve = serve
    try:
        yield
    finally:
        ws_server.serve = original


def has_display() -> bool:
    """Whether a browser could open a window here (a desktop session, macOS or Windows)."""
    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
