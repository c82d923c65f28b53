"""A scene's outputs as one set: written into a staging folder, moved into place together at the end, and
recorded in one manifest beside the scene (``<stem>.manifest.json``: the run, and each file with its size and
modification time).

``pixio evaluate recon3d`` and ``pixio view`` check a scene against its manifest (:func:`mixed_files`), so that
a run killed between two moves, or files of two runs in one folder (a new cloud beside an earlier run's
cameras and mesh), are found out instead of being scored or shown as one scene.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from pixio_cli.writers import write_text

MANIFEST = ".manifest.json"  # <stem>.manifest.json beside <stem>.ply


def manifest_path(scene: Path) -> Path:
    """Where the manifest of the scene ``scene`` (its .ply) lies."""
    return scene.with_name(scene.stem + MANIFEST)


def companions(scene: Path) -> list[Path]:
    """The files a ``pixio recon3d`` run may write beside its scene (what belongs to one set)."""
    folder = scene.parent
    return [scene, scene.with_name(scene.stem + "_mesh.ply"), scene.with_suffix(".glb"), folder / "cameras.json",
            *sorted(p for p in (folder / "sparse" / "0").glob("*") if p.is_file())]


class SceneFiles:
    """Where :func:`heads.recon.pipeline.write_scene` writes each output first (``staging``: a folder of the
    workspace, on the scene's disk; None: straight in place), and :meth:`commit`, which moves them all into
    place and then writes the manifest."""

    def __init__(self, scene: Path, staging: Path | None) -> None:
        self.scene = scene
        self.staging = staging
        self.planned: list[tuple[Path, Path]] = []  # (where it is written, where it goes)
        if staging is not None:
            staging.mkdir(parents=True, exist_ok=True)

    def path(self, final: Path) -> Path:
        """Where to write the output (a file or a folder) that goes to ``final``."""
        staged = final if self.staging is None else self.staging / f"{len(self.planned)}-{final.name}"
        self.planned.append((staged, Path(final)))
        return staged

    def commit(self, run: dict) -> Path:
        """Every output moved into place (folders replaced whole), then the manifest written, last: a kill
        during the moves leaves the earlier manifest, which the new files then do not match."""
        for staged, final in self.planned:
            if staged != final:
                _move(staged, final)
        files = {}
        for _, final in self.planned:
            for f in [final] if final.is_file() else sorted(p for p in final.rglob("*") if p.is_file()):
                st = f.stat()
                files[os.path.relpath(f, self.scene.parent)] = {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns}
        path = manifest_path(self.scene)
        write_text(path, json.dumps({"run": run, "files": files}, indent=1) + "\n")
        return path


def _move(staged: Path, final: Path) -> None:
    """``staged`` put at ``final``: a file by one rename (a copy first when ``final`` is on another disk), a
    folder by renaming the old one aside, the new one in, then removing the old."""
    final.parent.mkdir(parents=True, exist_ok=True)
    if staged.is_dir():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        if final.exists():
            os.replace(final, old)
        os.replace(staged, final)
        shutil.rmtree(old, ignore_errors=True)
        return
    try:
        os.replace(staged, final)
    except OSError:  # another disk (--preview elsewhere): copied beside it, then renamed
        tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        shutil.copyfile(staged, tmp)
        os.replace(tmp, final)


def mixed_files(scene: Path) -> tuple[bool, list[str]]:
    """Whether the scene ``scene`` (its .ply) has a manifest, and the files of its set that do not belong: a
    file the manifest names whose size or modification time differ (replaced since, or a set half put in
    place), one it names that is gone, and a companion (:func:`companions`) it does not name (another run's)."""
    path = manifest_path(scene)
    if not path.is_file():
        return False, []
    try:
        listed = json.loads(path.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return True, [f"{path.name} (cannot be read)"]
    out = []
    for rel, meta in listed.items():
        f = scene.parent / rel
        if not f.is_file():
            out.append(f"{rel} (gone)")
            continue
        st = f.stat()
        if st.st_size != meta.get("bytes") or st.st_mtime_ns != meta.get("mtime_ns"):
            out.append(f"{rel} (not the one this run wrote)")
    for f in companions(scene):
        rel = os.path.relpath(f, scene.parent)
        if f.is_file() and rel not in listed:
            out.append(f"{rel} (from another run)")
    return True, out
