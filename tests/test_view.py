"""`pixio view`: the scene in a real headless browser, as a person would see it, and one line for each thing
that cannot be shown."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("viser")

RED, BLUE = (220, 30, 30), (30, 60, 220)


def write_ply(path: Path, points: np.ndarray, colours: np.ndarray | None) -> None:
    """An ASCII PLY of ``points`` (N, 3), with uint8 ``colours`` (N, 3) when given."""
    head = ["ply", "format ascii 1.0", f"element vertex {len(points)}", "property float x", "property float y",
            "property float z"]
    if colours is not None:
        head += ["property uchar red", "property uchar green", "property uchar blue"]
    rows = [" ".join(f"{v:.4f}" for v in p) + ("" if colours is None else " " + " ".join(str(int(c)) for c in col))
            for p, col in zip(points, colours if colours is not None else [None] * len(points))]
    path.write_text("\n".join(head + ["end_header"] + rows) + "\n")


def red_room(folder: Path, n: int = 40_000) -> Path:
    """A scene as `pixio recon3d` writes it: a red wall 2 m in front of two cameras (their frames blue), and
    a grey floor, in OpenCV axes; its folder."""
    rng = np.random.default_rng(0)
    wall = np.c_[rng.uniform(-1.2, 1.2, n), rng.uniform(-0.9, 0.6, n), np.full(n, 2.0)]
    floor = np.c_[rng.uniform(-1.2, 1.2, n // 4), np.full(n // 4, 0.6), rng.uniform(0.5, 2.0, n // 4)]
    colours = np.r_[np.tile(RED, (n, 1)), np.full((n // 4, 3), 120)]
    folder.mkdir(parents=True)
    write_ply(folder / "scene.ply", np.r_[wall, floor], colours)
    frame = np.zeros((48, 64, 3), np.uint8)
    frame[:] = BLUE[::-1]
    cv2.imwrite(str(folder / "view0.png"), frame)
    cv2.imwrite(str(folder / "view1.png"), frame)
    K = [[60.0, 0, 32], [0, 60.0, 24], [0, 0, 1]]
    cams = [{"image": f"view{i}.png", "width": 64, "height": 48, "K": K,
             "cam2world": [[1, 0, 0, 0.3 * i], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]} for i in range(2)]
    (folder / "cameras.json").write_text(json.dumps({"unit": "metres", "image_root": str(folder), "cameras": cams}))
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Viewer:
    """`pixio view ARGS` in its own process; its stderr lines gathered as they come."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "pixio_cli", "view", *args, "--no-browser"],
                                     stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     cwd=Path(__file__).resolve().parents[1])
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(iter(self.proc.stderr.readline, "")), daemon=True).start()

    def read(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 90) -> re.Match:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            found = re.search(pattern, self.read())
            if found:
                return found
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"no {pattern!r} from pixio view: {self.read()}")

    def stop(self) -> tuple[int, float]:
        """SIGTERM; the exit code and the seconds it took to end."""
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        seconds = time.monotonic() - start
        time.sleep(0.2)  # the last lines
        return code, seconds


def chromium() -> str | None:
    found = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    if found is None and os.environ.get("PIXIO_REQUIRE_BROWSER"):
        pytest.fail("no chromium here, and PIXIO_REQUIRE_BROWSER says this run must look at the page")
    return found


def screenshot(browser: str, url: str, path: Path) -> np.ndarray:
    """The page at ``url`` as headless Chromium draws it (WebGL in software), after it has had time to load.

    Each run has a profile of its own (the default one is shared with any other Chromium on the machine), and a
    run that hangs under a loaded machine is tried once more."""
    command = [browser, "--headless=new", "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
               "--hide-scrollbars", "--window-size=1024,768", "--virtual-time-budget=15000",
               "--run-all-compositor-stages-before-draw",  # else the picture may be taken mid fade-in
               f"--user-data-dir={path.parent / 'chromium-profile'}", f"--screenshot={path}", url]
    try:
        subprocess.run(command, capture_output=True, timeout=120, cwd=path.parent)
    except subprocess.TimeoutExpired:
        subprocess.run(command, capture_output=True, timeout=120, cwd=path.parent)
    shot = cv2.imread(str(path))
    assert shot is not None, "chromium wrote no screenshot"
    return shot[:, :, ::-1]


def test_the_scene_shows_in_a_real_browser_and_the_viewer_stops_on_sigterm(tmp_path):
    browser = chromium()
    if browser is None:
        pytest.skip("no chromium (Debian's chromium package) to look at the page with")
    scene = red_room(tmp_path / "room")
    viewer = Viewer(str(scene), "--port", str(free_port()))
    try:
        url = viewer.wait_for(r"viewing 50,000 points, 2 cameras at (http://\S+)").group(1)
        shot = screenshot(browser, url, tmp_path / "shot.png")
        try:  # the page talked to the server, not a cached or error page
            viewer.wait_for("a browser connected", timeout=20)
        except AssertionError:  # a loaded machine can run out chromium's virtual time before the socket opens
            shot = screenshot(browser, url, tmp_path / "shot.png")
            viewer.wait_for("a browser connected")
    finally:
        code, seconds = viewer.stop()
    h, w = shot.shape[:2]
    middle = shot[h // 3: 2 * h // 3, w // 3: 2 * w // 3].astype(np.int64)
    red = (middle[..., 0] > middle[..., 1] + 60) & (middle[..., 0] > middle[..., 2] + 60)
    assert red.mean() > 0.3, f"the red wall covers {red.mean():.0%} of the middle third"  # the scene, in view
    corner = shot[: h // 8, w // 3: 2 * w // 3].astype(np.float64)
    assert middle.std() > 3 * corner.std() + 10  # not a blank page: the middle holds a picture
    pixels = shot.astype(np.int64)
    blue = (pixels[..., 2] > pixels[..., 0] + 60) & (pixels[..., 2] > pixels[..., 1] + 60)
    assert blue.sum() > 2000  # the cameras, showing their frames
    # promptly, loaded machine or not (it once waited for a second signal)
    assert code == 0 and seconds < 10.0 and "viewer stopped" in viewer.read(), (code, seconds, viewer.read())


def test_a_taken_port_is_said_and_the_next_one_served(tmp_path):
    scene = red_room(tmp_path / "room", n=2000)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        viewer = Viewer(str(scene), "--port", str(port))
        try:
            served = int(viewer.wait_for(r"at http://127\.0\.0\.1:(\d+)").group(1))
            assert served != port and f"port {port} is taken: serving on {served}" in viewer.read()
        finally:
            code, seconds = viewer.stop()
    assert code == 0 and seconds < 10.0


@pytest.mark.parametrize("case", ["not a ply", "empty", "missing", "folder without a scene"])
def test_what_cannot_be_shown_is_one_line_and_exit_1(cli, tmp_path, case):
    if case == "not a ply":
        target = tmp_path / "notes.ply"
        target.write_text("these are my notes\n")
    elif case == "empty":
        target = tmp_path / "empty.ply"
        write_ply(target, np.zeros((0, 3)), np.zeros((0, 3)))
    elif case == "missing":
        target = tmp_path / "nothing.ply"
    else:
        target = tmp_path / "folder"
        target.mkdir()
    code, out, err = cli(["view", target, "--no-browser"])
    assert code == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (code, err)
    assert str(target.name) in err


def test_a_huge_or_colourless_cloud_is_shown_and_said(tmp_path):
    """Beyond --max-points a random subset (said); a PLY without colours is coloured by height (said)."""
    from heads.recon.view import read_scene

    rng = np.random.default_rng(1)
    points = rng.normal(size=(30_000, 3))
    write_ply(tmp_path / "grey.ply", points, None)
    scene = read_scene(tmp_path / "grey.ply", max_points=10_000)
    assert len(scene.points) == 10_000 and len(np.unique(scene.points, axis=0)) == 10_000
    assert any("30,000 points: showing a random 10,000" in n for n in scene.notes)
    assert any("no colours: shown by height" in n for n in scene.notes)
    high, low = scene.points[:, 1] < -1, scene.points[:, 1] > 1  # y down: -y is up
    assert np.abs(scene.colours[high].mean(0) - scene.colours[low].mean(0)).sum() > 100


def test_the_mesh_and_cameras_beside_the_scene_are_found(tmp_path):
    import open3d as o3d

    from heads.recon.view import read_scene

    scene = red_room(tmp_path / "room", n=2000)
    box = o3d.geometry.TriangleMesh.create_box()
    o3d.io.write_triangle_mesh(str(scene / "scene_mesh.ply"), box)
    shown = read_scene(scene, max_points=10_000)
    assert shown.mesh is not None and len(shown.mesh[1]) == 12
    assert [c.name for c in shown.cameras] == ["view0.png", "view1.png"]
    assert shown.cameras[1].thumb.shape == (48, 64, 3) and (shown.cameras[1].thumb[0, 0] == BLUE).all()
    assert np.allclose(shown.cameras[1].cam2world[0, 3], 0.3)


def test_recon3d_view_opens_the_viewer_on_what_it_wrote(tmp_path):
    """And SIGTERM stops it cleanly: pycolmap's glog had taken SIGTERM for its crash handler (a stack dump
    and exit -15)."""
    room = Path(__file__).resolve().parents[1] / "samples" / "room"
    viewer = Viewer.__new__(Viewer)
    viewer.proc = subprocess.Popen([sys.executable, "-m", "pixio_cli", "recon3d", str(room), "-o", str(tmp_path / "out"),
                                    "--view", "--no-fusion", "--workers", "0"], stderr=subprocess.PIPE,
                                   stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    viewer.lines = []
    threading.Thread(target=lambda: viewer.lines.extend(iter(viewer.proc.stderr.readline, "")), daemon=True).start()
    try:
        viewer.wait_for(r"viewing [\d,]+ points, 4 cameras at http://127\.0\.0\.1:\d+", timeout=240)
        start = time.monotonic()
        viewer.proc.send_signal(signal.SIGTERM)
        viewer.wait_for("viewer stopped", timeout=30)
        stopped = time.monotonic() - start
        code = viewer.proc.wait(30)  # then the whole run's process ends (torch and COLMAP take their time)
    finally:
        viewer.proc.kill()
    assert code == 0 and stopped < 10.0, (code, stopped)
    assert (tmp_path / "out" / "cameras.json").is_file()  # written for the viewer, which found it


def test_a_mesh_older_than_the_scene_is_an_earlier_run_s_and_not_shown(tmp_path):
    import os

    import open3d as o3d

    from heads.recon.view import read_scene

    scene = red_room(tmp_path / "room", n=2000)
    mesh = scene / "scene_mesh.ply"
    o3d.io.write_triangle_mesh(str(mesh), o3d.geometry.TriangleMesh.create_box())
    for older in (mesh, scene / "cameras.json"):  # a rerun rewrote the cloud only
        os.utime(older, (os.path.getmtime(scene / "scene.ply") - 60,) * 2)
    shown = read_scene(scene, max_points=10_000)
    assert shown.mesh is None and any("scene_mesh.ply not shown: it is older than scene.ply" in n for n in shown.notes)
    assert len(shown.cameras) == 2 and any("cameras.json is older than scene.ply" in n for n in shown.notes)


def _served(folder: Path):
    """The scene in ``folder`` served in this process on a free port: (port, stop event, thread)."""
    from heads.recon.view import read_scene, serve

    stop, said = threading.Event(), []
    port = free_port()
    thread = threading.Thread(target=serve, args=(read_scene(folder, 100_000), "127.0.0.1"),
                              kwargs={"port": port, "open_browser": False, "say": said.append, "stop": stop},
                              daemon=True)
    thread.start()
    end = time.monotonic() + 60
    while not any("viewing" in line for line in said):
        assert time.monotonic() < end, said
        time.sleep(0.05)
    return port, stop, thread


def test_only_the_viewers_own_page_may_read_the_scene(tmp_path):
    """Any web page open in the user's browser can open a WebSocket to 127.0.0.1: one from another origin is
    refused (403) before a byte of the scene is sent; the viewer's own page (and a program that sends no
    Origin) connect."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    port, stop, thread = _served(red_room(tmp_path / "scene"))
    try:
        url = f"ws://127.0.0.1:{port}"
        for evil in ("http://evil.example.com", f"http://127.0.0.1:{port + 1}", "null"):
            with pytest.raises(InvalidStatus) as refused:
                connect(url, origin=evil, subprotocols=["viser-v1.1.1"], open_timeout=10).close()
            assert refused.value.response.status_code == 403, evil
        for own in (f"http://127.0.0.1:{port}", f"http://localhost:{port}", None):
            with connect(url, origin=own, subprotocols=["viser-v1.1.1"], open_timeout=10) as ws:
                assert ws.recv(timeout=10)  # the scene starts to arrive
    finally:
        stop.set()
        thread.join(10)


def test_an_empty_host_or_a_port_range_with_no_free_port_is_one_line(cli, tmp_path):
    """--host "" would listen on every interface; --port 65535 when 65535 is taken ran viser's search past the
    last port into a traceback and a server that never came up."""
    scene = red_room(tmp_path / "scene")
    code, _, err = cli(["view", scene, "--host", "", "--no-browser"])
    assert code == 2 and "--host is empty" in err and "Traceback" not in err, err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 65535))
        code, _, err = cli(["view", scene, "--port", "65535", "--no-browser"])
    assert code == 2 and "no port from 65535 to 65535 is free" in err and "Traceback" not in err, err


def test_each_frustum_points_where_its_camera_looks():
    """A camera turned to look along the world's +x (and one tilted down): its frustum is drawn with its own
    rotation, so it points where the camera looks, and a click looks from there the same way."""
    import math as m

    import viser.transforms as tf

    from heads.recon.view import SceneToView, ViewCamera, _add_cameras

    drawn = []

    class Recorder:  # what _add_cameras asks of viser's server
        class scene:
            @staticmethod
            def add_camera_frustum(name, **kw):
                drawn.append(kw)
                return type("Frustum", (), {"on_click": lambda self, f: None})()

        class gui:
            @staticmethod
            def add_markdown(text):
                return None

    turned = np.eye(4)
    turned[:3, :3] = [[0, 0, 1], [0, 1, 0], [-1, 0, 0]]  # its z (forward) is the world's +x
    tilted = np.eye(4)
    a = m.radians(30)
    tilted[:3, :3] = [[1, 0, 0], [0, m.cos(a), m.sin(a)], [0, -m.sin(a), m.cos(a)]]
    tilted[:3, 3] = [0.5, 0.0, 0.0]
    K = np.array([[60.0, 0, 32], [0, 60.0, 24], [0, 0, 1]])
    cams = [ViewCamera("a", K, cam2world=turned, hw=(48, 64)), ViewCamera("b", K, cam2world=tilted, hw=(48, 64))]
    poses = _add_cameras(Recorder(), SceneToView(np.zeros((1, 3), np.float32), np.zeros((1, 3), np.uint8), None,
                                                 cams), extent=1.0)
    for cam, kw, (wxyz, position, ahead) in zip(cams, drawn, poses):
        R = tf.SO3(np.asarray(kw["wxyz"])).as_matrix()
        assert np.allclose(R, cam.cam2world[:3, :3], atol=1e-9), (R, cam.cam2world)
        assert np.allclose(R @ [0, 0, 1], cam.cam2world[:3, 2]) and np.allclose(kw["position"], cam.cam2world[:3, 3])
        assert np.allclose(ahead - position, 0.3 * cam.cam2world[:3, 2])  # a click looks the camera's way
    assert np.allclose(tf.SO3(np.asarray(drawn[0]["wxyz"])).as_matrix() @ [0, 0, 1], [1, 0, 0])
