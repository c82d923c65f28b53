"""The workspace that keeps a long video's per-view arrays in files: the contents survive, memory does not
hold them, and nothing is left behind."""

import re

import numpy as np
import pytest

from heads.recon.workspace import Workspace, active, each_view, tick


def resident_mib() -> float:
    return int(re.search(r"VmRSS:\s+(\d+)", open("/proc/self/status").read()).group(1)) / 1024


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/status"), reason="reads Linux's /proc")
def test_arrays_in_files_keep_their_contents_but_not_the_memory(tmp_path):
    views, size = 48, (1000, 1000)  # 183 MiB of float32
    with Workspace(tmp_path / "work", every=4) as ws:
        assert active() is ws
        before = resident_mib()
        a = ws.array("depth", (views,) + size, np.float32)
        for v in range(views):
            a[v] = v
            tick()
        grown = resident_mib() - before
        assert grown < 40, grown  # a few views' pages, not all 48
        assert all(a[v, 123, 456] == v for v in range(views))  # read back from the file
        assert float(a[17].mean()) == 17.0
        b = ws.array("keep", (views,) + size, bool)
        assert not b.any()  # new arrays are zeros
        assert len(list((tmp_path / "work").glob("*.npy"))) == 2
        del a, b
    assert not (tmp_path / "work").exists()
    assert active().folder is None  # back to arrays in memory


def test_a_killed_runs_leftovers_are_cleared_and_memory_arrays_are_plain(tmp_path):
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "frames-0.npy").write_bytes(b"half")
    with Workspace(tmp_path / "work") as ws:
        assert list((tmp_path / "work").iterdir()) == []
        ws.array("x", (2, 3), np.float32)
    plain = Workspace(None).array("x", (2, 3), np.int16)
    assert type(plain) is np.ndarray and plain.dtype == np.int16 and not plain.any()


def test_views_on_threads_come_back_in_order_and_an_error_stops_the_rest():
    import threading
    import time

    names = set()

    def work(v):
        names.add(threading.current_thread().name)
        time.sleep(0.01 * ((v * 7) % 5))  # views finish out of order
        return v * v

    assert list(each_view(work, 20, threads=3)) == [(v, v * v) for v in range(20)]
    assert len(names) > 1  # on a pool, not in the calling thread
    assert list(each_view(work, 4, threads=1)) == [(v, v * v) for v in range(4)]
    begun = []

    def failing(v):
        begun.append(v)
        if v == 3:
            raise ValueError("view 3")
        time.sleep(0.01)
        return v

    with pytest.raises(ValueError, match="view 3"):
        for _ in each_view(failing, 100, threads=2):
            pass
    assert len(begun) < 20  # the views not begun were dropped


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/status"), reason="reads Linux's /proc")
def test_views_on_threads_keep_memory_to_the_views_in_flight(tmp_path):
    views, size = 48, (1000, 1000)  # 183 MiB of float32
    with Workspace(tmp_path / "work", every=4) as ws:
        a = ws.array("depth", (views,) + size, np.float32)
        before = resident_mib()
        for v, filled in each_view(lambda v: np.full(size, v, np.float32), views, threads=2):
            a[v] = filled
        grown = resident_mib() - before
        assert grown < 60, grown  # the views in flight and a few pages, not all 48
        assert all(a[v, 5, 9] == v for v in range(views))
        del a
