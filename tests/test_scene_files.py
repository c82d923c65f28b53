"""A scene's files as one set (heads/recon/scene_files.py), on small files in a temporary folder: written into
staging, moved into place together (files and whole folders, across disks too), recorded in one manifest, and
the set checked against it."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import heads.recon.scene_files as scene_files
from heads.recon.scene_files import SceneFiles, companions, manifest_path, mixed_files


def test_the_manifest_lies_beside_the_scene_named_after_it():
    assert manifest_path(Path("/out/room.ply")) == Path("/out/room.manifest.json")


def test_the_companions_of_a_scene_are_its_mesh_glb_cameras_and_the_files_of_its_colmap_model(tmp_path):
    scene = tmp_path / "room.ply"
    model = tmp_path / "sparse" / "0"
    (model / "sub").mkdir(parents=True)  # a folder in the model is not a file of the set
    for name in ("points3D.bin", "cameras.bin", "images.bin"):
        (model / name).write_bytes(b"x")
    assert companions(scene) == [scene, tmp_path / "room_mesh.ply", tmp_path / "room.glb", tmp_path / "cameras.json",
                                 model / "cameras.bin", model / "images.bin", model / "points3D.bin"]


def test_a_scene_without_a_colmap_model_has_the_four_others_as_companions(tmp_path):
    assert len(companions(tmp_path / "scene.ply")) == 4


def written(files: SceneFiles, final: Path, text: str) -> Path:
    """``text`` written where ``files`` says the output for ``final`` goes first."""
    staged = files.path(final)
    staged.parent.mkdir(parents=True, exist_ok=True)
    staged.write_text(text)
    return staged


def test_outputs_are_staged_then_moved_into_place_together_and_recorded_in_one_manifest(tmp_path):
    out, staging = tmp_path / "out", tmp_path / "work" / "deep" / "outputs"  # neither exists yet
    scene = out / "scene.ply"
    files = SceneFiles(scene, staging)
    assert staging.is_dir()
    cloud = written(files, scene, "cloud")
    cams = written(files, out / "cameras.json", "{}")
    model = files.path(out / "sparse" / "0")
    (model / "sub").mkdir(parents=True)
    (model / "cameras.bin").write_text("c")
    (model / "sub" / "points3D.bin").write_text("pp")
    assert cloud.parent == cams.parent == model.parent == staging and len({cloud, cams, model}) == 3
    assert not out.exists(), "an output went into place before the commit"
    path = files.commit({"command": "recon3d", "frames": 3})
    assert path == manifest_path(scene) and not list(staging.iterdir())
    assert (scene.read_text(), (out / "cameras.json").read_text()) == ("cloud", "{}")
    assert (out / "sparse" / "0" / "sub" / "points3D.bin").read_text() == "pp"
    manifest = json.loads(path.read_text())
    assert manifest["run"] == {"command": "recon3d", "frames": 3}
    want = {rel: {"bytes": (out / rel).stat().st_size, "mtime_ns": (out / rel).stat().st_mtime_ns}
            for rel in ("scene.ply", "cameras.json", "sparse/0/cameras.bin", "sparse/0/sub/points3D.bin")}
    assert manifest["files"] == want
    assert mixed_files(scene) == (True, [])


def test_without_staging_outputs_are_written_in_place(tmp_path):
    scene = tmp_path / "scene.ply"
    files = SceneFiles(scene, None)
    assert files.path(scene) == scene and files.path(tmp_path / "cameras.json") == tmp_path / "cameras.json"
    scene.write_text("cloud")
    (tmp_path / "cameras.json").write_text("{}")
    files.commit({})
    assert set(json.loads(manifest_path(scene).read_text())["files"]) == {"scene.ply", "cameras.json"}
    assert mixed_files(scene) == (True, [])


def test_a_staging_folder_that_exists_already_is_used(tmp_path):
    staging = tmp_path / "outputs"
    staging.mkdir()
    files = SceneFiles(tmp_path / "out" / "scene.ply", staging)
    assert written(files, tmp_path / "out" / "scene.ply", "a").parent == staging


def test_a_folder_output_replaces_the_earlier_one_whole(tmp_path):
    out = tmp_path / "out"
    (out / "sparse" / "0").mkdir(parents=True)
    (out / "sparse" / "0" / "old.bin").write_text("old")  # an earlier run's
    files = SceneFiles(out / "scene.ply", tmp_path / "outputs")
    written(files, out / "scene.ply", "cloud")
    model = files.path(out / "sparse" / "0")
    model.mkdir()
    (model / "new.bin").write_text("new")
    files.commit({})
    assert [p.name for p in (out / "sparse" / "0").iterdir()] == ["new.bin"]
    assert sorted(p.name for p in (out / "sparse").iterdir()) == ["0"], "the earlier folder was left aside"
    assert set(json.loads(manifest_path(out / "scene.ply").read_text())["files"]) == {"scene.ply", "sparse/0/new.bin"}


def test_a_file_output_replaces_the_earlier_one(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "scene.ply").write_text("old cloud")
    files = SceneFiles(out / "scene.ply", tmp_path / "outputs")
    written(files, out / "scene.ply", "new cloud")
    files.commit({})
    assert (out / "scene.ply").read_text() == "new cloud" and sorted(p.name for p in out.iterdir()) == \
        ["scene.manifest.json", "scene.ply"]


def test_a_file_staged_on_another_disk_is_copied_beside_its_place_then_renamed(tmp_path, monkeypatch):
    out = tmp_path / "out" / "scene"  # its folder made by the move
    staging = tmp_path / "outputs"
    real = os.replace
    renamed = []

    def across_disks(src, dst):
        if Path(src).parent == staging:  # a rename from the staging disk fails, as between two disks
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        renamed.append((Path(src), Path(dst)))
        return real(src, dst)

    monkeypatch.setattr(scene_files.os, "replace", across_disks)
    files = SceneFiles(out / "scene.ply", staging)
    written(files, out / "scene.ply", "cloud")
    files.commit({})
    assert (out / "scene.ply").read_text() == "cloud"
    (tmp, final), = [(src, dst) for src, dst in renamed if dst.name == "scene.ply"]
    assert tmp.parent == out and tmp.name.startswith(".scene.ply.") and not tmp.exists()
    assert sorted(p.name for p in out.iterdir()) == ["scene.manifest.json", "scene.ply"]


def committed(folder: Path, names: list[str]) -> Path:
    """A scene committed with the files ``names`` (relative to ``folder``), written in place."""
    scene = folder / "scene.ply"
    files = SceneFiles(scene, None)
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        files.path(folder / name).write_text(name)
    files.commit({"run": 1})
    return scene


def test_a_scene_without_a_manifest_is_not_checked(tmp_path):
    (tmp_path / "scene.ply").write_text("cloud")
    (tmp_path / "cameras.json").write_text("{}")
    assert mixed_files(tmp_path / "scene.ply") == (False, [])


def test_a_manifest_that_cannot_be_read_is_said(tmp_path):
    scene = committed(tmp_path, ["scene.ply"])
    for text in ("{not json", json.dumps({"run": 1}), "[]"):
        manifest_path(scene).write_text(text)
        assert mixed_files(scene) == (True, ["scene.manifest.json (cannot be read)"]), text


def test_files_gone_replaced_or_from_another_run_are_each_found_out(tmp_path):
    scene = committed(tmp_path, ["scene.ply", "scene_mesh.ply", "scene.glb", "cameras.json", "sparse/0/images.bin"])
    assert mixed_files(scene) == (True, [])
    (tmp_path / "scene_mesh.ply").unlink()
    (tmp_path / "scene.glb").unlink()
    st = (tmp_path / "cameras.json").stat()
    (tmp_path / "cameras.json").write_text("{ }")  # another size
    os.utime(tmp_path / "cameras.json", ns=(st.st_atime_ns, st.st_mtime_ns))  # the same time
    (tmp_path / "sparse" / "0" / "images.bin").write_text("sparse/0/IMAGES.bin")  # the same size, another time
    os.utime(tmp_path / "sparse" / "0" / "images.bin", ns=(1, 10 ** 9))
    (tmp_path / "sparse" / "0" / "points3D.bin").write_text("another run's")
    listed, mixed = mixed_files(scene)
    assert listed and mixed == ["scene_mesh.ply (gone)", "scene.glb (gone)",
                                "cameras.json (not the one this run wrote)",
                                "sparse/0/images.bin (not the one this run wrote)",
                                "sparse/0/points3D.bin (from another run)"], mixed


def test_the_manifest_is_indented_json_one_entry_a_line_as_the_other_records(tmp_path):
    """Written as pixio writes its other JSON records (pixio_cli.writers.write_json: one space a level), so that
    a person comparing two runs' manifests reads them line by line."""
    scene = committed(tmp_path, ["scene.ply", "cameras.json"])
    text = manifest_path(scene).read_text()
    assert text == json.dumps(json.loads(text), indent=1) + "\n"
    assert len(text.splitlines()) > 10
