"""Points, meshes and cameras as files, each written whole or not at all: PLY point clouds and meshes
(PLY, GLB, OBJ) through Open3D, checked after the write (Open3D reports success on a full disk too), and
``cameras.json``. The atomic write under each is :func:`pixio_cli.writers.atomic_path`'s."""

from __future__ import annotations

import errno
import json
import struct
from pathlib import Path

import numpy as np

from pixio_cli.errors import UsageError
from pixio_cli.writers import atomic_path, write_text

from heads.open3d_access import load_open3d, quiet_open3d  # Open3D itself is imported at the first write


def write_ply(path, points: np.ndarray, colours: np.ndarray, normals_towards: np.ndarray | None = None,
              unit: str | None = None) -> None:
    """Coloured points (N, 3) and colours (N, 3) uint8 as a PLY file, with Open3D, atomically. With
    ``normals_towards`` (a 3D point, e.g. a camera centre) normals are estimated and oriented towards it;
    ``unit`` goes into the header as a ``comment units: ...`` line."""
    o3d = load_open3d()
    pcd = o3d.geometry.PointCloud()
    pcd.points = o3d.utility.Vector3dVector(np.asarray(points, np.float64).reshape(-1, 3))
    pcd.colors = o3d.utility.Vector3dVector(np.asarray(colours, np.float64).reshape(-1, 3) / 255)
    if normals_towards is not None and len(pcd.points) >= 3:
        pcd.estimate_normals()
        pcd.orient_normals_towards_camera_location(np.asarray(normals_towards, np.float64))
    path = Path(path)
    with atomic_path(path, keep_suffix=True) as tmp, quiet_open3d(o3d):
        if not o3d.io.write_point_cloud(str(tmp), pcd):
            raise UsageError(f"Open3D could not write {path}")
        if unit:
            _ply_comment(tmp, f"units: {unit}")
        _check_ply(tmp, path)  # Open3D reports success on a full disk too


def write_mesh(path, mesh) -> None:
    """An Open3D triangle mesh in the format of ``path``'s extension (.ply, .glb, .obj), atomically."""
    o3d = load_open3d()
    glb = Path(path).suffix.lower() == ".glb"
    with atomic_path(path, keep_suffix=True) as tmp, quiet_open3d(o3d):
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
    cams = [{"image": name, "width": int(hw[1]), "height": int(hw[0]), "K": np.asarray(k, float).tolist(),
             "cam2world": np.asarray(T, float).tolist()} for name, hw, k, T in zip(images, sizes, K, cam2world)]
    head = {"unit": unit, "convention": "OpenCV: x right, y down, z forward; camera-to-world"}
    if image_root is not None:
        head["image_root"] = image_root
    write_text(path, json.dumps({**head, "cameras": cams}, indent=1) + "\n")
