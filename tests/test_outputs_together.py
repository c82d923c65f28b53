"""Outputs that belong together: one run per output (a second is refused, a killed one leaves nothing stuck), a
scene's files written and recorded as one set, and what is mixed found out by evaluate and view."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from .conftest import KITCHEN, write_rgb

ROOM = Path(__file__).resolve().parents[1] / "samples" / "room"
FRAMES = sorted(ROOM.glob("*.color.jpg"))
ROOT = Path(__file__).resolve().parents[1]


def holder(target: Path, folder: bool) -> subprocess.Popen:
    """Another process that claims ``target`` as a run does and holds it until killed."""
    code = ("import sys, time; from pixio_cli.locks import claim; "
            f"claim({str(target)!r}, folder={folder}); print('held', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"  # waits on the event, not on a clock
    return proc


@pytest.mark.parametrize("command", ["extract", "depth", "recon3d"])
def test_a_second_run_into_an_output_in_use_is_refused_at_once(cli, tmp_path, command):
    """Two recon3d runs into one -o broke each other (each removed the other's work folder); extract and
    depth would interleave their ledgers. The second is refused in one line; once the first is gone (even
    killed with -9) the output is free again."""
    img = write_rgb(tmp_path / "in" / "a.jpg")
    out = tmp_path / "out"
    frames = [tmp_path / "in" / f.name for f in FRAMES[:2]]  # without the intrinsics file beside them
    for f, copy in zip(FRAMES, frames):
        copy.write_bytes(f.read_bytes())
    args = {"extract": ["extract", img, "-o", out], "depth": ["depth", img, "-o", out],
            "recon3d": ["recon3d", *frames, "-o", out, "--no-sfm"]}[command]
    target, folder = (out / "scene.ply", False) if command == "recon3d" else (out, True)
    proc = holder(target, folder)
    try:
        started = time.monotonic()
        code, _, err = cli(args)
        assert code == 1 and "is being written by another pixio run" in err and str(proc.pid) in err, err
        assert len(err.strip().splitlines()) == 1 and time.monotonic() - started < 30
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    code, _, err = cli(args)  # kill -9 left no stuck lock
    assert code == 0, err
    assert not any(p.name.endswith("pixio-lock") for p in out.rglob("*")) and not (out.parent / ".out.pixio-lock").exists()


def test_a_scenes_files_are_recorded_as_one_set_and_a_mix_is_found_out(cli, tmp_path, monkeypatch):
    """A run's cloud, mesh and cameras go into place together and one manifest lists them. Another run into
    the same folder that writes fewer files leaves the first run's mesh behind: evaluate refuses the mix and
    view says it. A run stopped while its files were being moved into place (here after the first move: a
    kill -9 there is the same) leaves a new cloud beside the old cameras: found out the same way."""
    out = tmp_path / "room"
    code, _, err = cli(["recon3d", *FRAMES, "-o", out, "--mesh", "-q"])
    assert code == 0, err
    manifest = json.loads((out / "scene.manifest.json").read_text())
    assert set(manifest["files"]) == {"scene.ply", "scene_mesh.ply", "cameras.json"}
    assert all(manifest["files"][f]["bytes"] == (out / f).stat().st_size for f in manifest["files"])
    assert not list(out.glob(".scene.ply.*"))  # no staging or lock left
    data = ["--data", KITCHEN] if KITCHEN.exists() else None
    if data:
        code, _, err = cli(["evaluate", "recon3d", out, *data])
        assert code == 0, err
    code, _, err = cli(["recon3d", *FRAMES, "-o", out, "--no-fusion", "-q"])  # no --mesh this time
    assert code == 0, err
    from heads.recon.scene_files import mixed_files
    from heads.recon.view import read_scene

    assert mixed_files(out / "scene.ply") == (True, ["scene_mesh.ply (from another run)"])
    assert any("not one run's" in n and "scene_mesh.ply" in n for n in read_scene(out, 10_000).notes)
    if data:
        code, _, err = cli(["evaluate", "recon3d", out, *data])
        assert code == 1 and "not one run's" in err and "scene_mesh.ply" in err, err

    import heads.recon.scene_files as scene_files

    moves = []
    real_move = scene_files._move

    def stopped_after_one(staged, final):
        if moves:
            raise KeyboardInterrupt  # the run stops between two moves
        moves.append(final)
        real_move(staged, final)

    monkeypatch.setattr(scene_files, "_move", stopped_after_one)
    code, _, err = cli(["recon3d", *FRAMES, "-o", out, "--edge-rtol", "0.1", "-q"])
    assert code == 130, err
    assert moves == [out / "scene.ply"]
    listed, mixed = mixed_files(out / "scene.ply")
    assert listed and "scene.ply (not the one this run wrote)" in mixed, mixed


def test_a_full_disk_is_a_failed_run_exit_1(cli, tmp_path, monkeypatch):
    """No space left is the run failing (exit 1), not the command being misused (exit 2)."""
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "out" / "scene.ply"))

    import heads.recon.scene_files as scene_files

    monkeypatch.setattr(scene_files, "_move", full)
    frames = []
    for f in FRAMES[:2]:  # without the intrinsics file beside them, whose use is a line of its own
        frames.append(tmp_path / f.name)
        frames[-1].write_bytes(f.read_bytes())
    code, _, err = cli(["recon3d", *frames, "-o", tmp_path / "out", "--no-sfm", "-q"])
    assert code == 1 and "No space left on device" in err and len(err.strip().splitlines()) == 1, err


def test_minus_as_an_output_names_standard_output_and_is_refused_for_files(cli, tmp_path):
    """`-o -` wrote a folder named "-": as for inputs, "-" is the standard stream."""
    img = write_rgb(tmp_path / "a.jpg")
    for args in (["extract", img, "-o", "-"], ["depth", img, "-o", "-"], ["recon3d", *FRAMES[:2], "-o", "-"]):
        code, _, err = cli(args)
        assert code == 2 and "-o -: " in err and "--json" in err, (args, err)
    assert not Path("-").exists()


def test_after_ctrl_c_recon3d_says_what_a_rerun_will_do(cli, monkeypatch):
    from pixio_cli.cli import _how_to_continue

    assert "nothing was written; a rerun starts again" in _how_to_continue(["recon3d", "x", "-o", "y"])
    assert "reuses the model's chunks" in _how_to_continue(["recon3d", "x", "-o", "y", "--save-predictions", "p.npz"])
    assert "rerun the same command to resume" in _how_to_continue(["extract", "x", "-o", "y"])
