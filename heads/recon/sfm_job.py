"""Structure from motion on a thread of its own, beside the network (:class:`SfmJob`): the frames written for
COLMAP at their own size, :func:`heads.recon.sfm.run_sfm` run on them, cancelled at COLMAP's next check on an
error or Ctrl-C; the temporary folders of killed runs are removed.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from pixio_cli.engine import ImageStream
from pixio_cli.errors import RunError
from pixio_cli.images import ResizePolicy, resize_image

from heads.geometry import scale_intrinsics
from heads.recon.camera_files import SfmCameras, _pycolmap
from heads.recon.sfm import MAX_SIDE, SfmOptions, loop_pairs, placed_on_given, run_sfm, triangulate_known


def write_frame(folder: Path, index: int, image: np.ndarray) -> tuple[str, tuple[int, int]]:
    """Frame ``index`` (RGB uint8) as a PNG that COLMAP reads, at most MAX_SIDE a side, aspect kept
    exactly; returns its name and its (h, w)."""
    h, w = image.shape[:2]
    s = MAX_SIDE / max(h, w)
    if s < 1:
        image = resize_image(image, (max(1, round(h * s)), max(1, round(w * s))))
    name = f"{index:06d}.png"
    # encoded in memory and written by Python: cv2.imwrite only says False on a full disk (and libpng prints)
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ValueError(f"OpenCV cannot encode frame {index} as PNG")
    (folder / name).write_bytes(data.tobytes())
    return name, image.shape[:2]


def _remove_orphans() -> None:
    """Frame folders left by runs that were killed (kill -9 gives no time to clean up): those whose
    process is gone."""
    for folder in Path(tempfile.gettempdir()).glob("pixio-sfm-*-*"):
        pid = folder.name.split("-")[2]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(folder, ignore_errors=True)


_DISK_ERRORS = {getattr(errno, n) for n in ("ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM", "EIO") if hasattr(errno, n)}


class SfmJob:
    """:func:`run_sfm` on a background thread over the inputs at their own size (decoded again, apart from
    the network's smaller copies), so matching runs while the model loads and predicts; COLMAP's calls
    release the interpreter. ``result`` waits for it; ``cancel`` stops it at COLMAP's next check."""

    def __init__(self, items: list, options: SfmOptions, video: bool = False, refit: SfmOptions | None = None
                 ) -> None:
        self.items, self.options, self.video, self.refit = items, options, video, refit
        _remove_orphans()
        self._tmp = tempfile.TemporaryDirectory(prefix=f"pixio-sfm-{os.getpid()}-", ignore_cleanup_errors=True)
        self.folder = Path(self._tmp.name)
        self._token = _pycolmap().CancellationToken()
        self._out = None
        self._note: str | None = None  # on the cameras' focal length, for the user
        self._error: BaseException | None = None
        self.written: dict[int, tuple[str, tuple[int, int], tuple[int, int]]] = {}  # index -> name, written, original
        self.stage = "decoding the frames at their own size"
        self.stage_seconds: dict[str, float] = {}  # each stage's time, once it has ended: where a long video's goes
        self._stage_began = 0.0
        self._descriptors: dict[int, np.ndarray] | None = None  # input index -> the network's descriptor
        self._described = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pixio-sfm", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self._stage_began = time.perf_counter()
        try:
            for sample in ImageStream(self.items, ResizePolicy(short=None, multiple=1)):
                if self._token.is_cancelled:
                    return
                if sample.error:
                    continue  # the network's pass reports it
                name, hw = write_frame(self.folder, sample.index, sample.image)
                self.written[sample.index] = (name, hw, tuple(sample.orig_hw))
            order = sorted(self.written)
            names = [self.written[i][0] for i in order]
            if len(names) < 2:
                return
            known, prior = self.options.known_K, self.options.prior_K
            first = self.written[order[0]]
            opts = replace(  # K given in the inputs' own pixels, in the written images' pixels here
                self.options, one_camera=self.options.one_camera and len({self.written[i][2] for i in order}) == 1,
                known_K=None if known is None else [
                    scale_intrinsics(known[i], self.written[i][2], self.written[i][1]) for i in order],
                prior_K=None if prior is None else scale_intrinsics(prior, first[2], first[1]))
            self._out, self._note = run_sfm(self.folder, names, options=opts, video=self.video, cancel=self._token,
                                            on_stage=self._next_stage,
                                            more_pairs=self._loop_pairs if self.options.loop_closure else None)
        except BaseException as e:  # handed to the caller by result()
            self._error = e
        finally:
            self._next_stage(None)

    @property
    def seconds(self) -> float:
        """The thread's time so far, over the stages that have ended."""
        return sum(self.stage_seconds.values())

    def _next_stage(self, stage: str | None) -> None:
        now = time.perf_counter()
        self.stage_seconds[self.stage] = round(self.stage_seconds.get(self.stage, 0.0) + now - self._stage_began, 2)
        self.stage, self._stage_began = stage or self.stage, now

    def describe(self, indices: list[int], descriptors: np.ndarray | None) -> None:
        """The network's descriptors (V, D) of the inputs ``indices``, for loop closure (None: there are none,
        and no loop pairs are matched). Matching waits for them before mapping when asked to close loops."""
        if descriptors is not None:
            self._descriptors = {i: d for i, d in zip(indices, descriptors)}
        self._described.set()

    def _loop_pairs(self, names: list[str]) -> list[tuple[str, str]]:
        """The frames ``names`` (in matching's order) to match where the video returns (:func:`loop_pairs`),
        once the network has given its descriptors (:meth:`describe`)."""
        self.stage = "waiting for the network's descriptors to close loops"
        while not self._described.wait(0.25):
            if self._token.is_cancelled:
                raise KeyboardInterrupt
        if not self._descriptors:
            return []
        index = {self.written[i][0]: i for i in self.written}
        have = [k for k, name in enumerate(names) if index.get(name) in self._descriptors]
        pairs = loop_pairs(np.stack([self._descriptors[index[names[k]]] for k in have]), apart=self.options.overlap)
        return [(names[have[a]], names[have[b]]) for a, b in pairs]

    def result(self, indices: list[int], original_hw: list[tuple[int, int]], on_wait=lambda stage: None
               ) -> SfmCameras:
        """The cameras of the inputs ``indices`` (positions in ``items``), in that order; ``on_wait(stage)``
        hears what COLMAP is doing while the caller waits."""
        try:
            while self._thread.is_alive():
                on_wait(self.stage)
                self._thread.join(0.25)
        except BaseException:  # Ctrl-C while waiting: COLMAP stops before its folder goes
            self.cancel()
            raise
        try:
            if self._error is not None and not isinstance(self._error, (RuntimeError, ValueError, OSError)):
                raise self._error  # Ctrl-C, out of memory, or a bug: not a reason to go on
            if isinstance(self._error, OSError) and self._error.errno in _DISK_ERRORS:  # the machine, not matching
                raise RunError(f"cannot write the frames for matching in {self.folder.parent}: "
                                 f"{self._error.strerror} (set TMPDIR to a folder with room, or --no-sfm)") from None
            names = [self.written.get(i, (f"missing-{i}",))[0] for i in indices]
            hws = [self.written[i][1] if i in self.written else hw for i, hw in zip(indices, original_hw)]
            return SfmCameras(
                self._out, names, np.array(hws, np.int64).reshape(-1, 2), np.array(original_hw, np.int64).reshape(-1, 2),
                note=self._note if self._out is not None else None,
                # COLMAP failing is no reason to lose the network's scene
                error=None if self._error is None else
                f"{type(self._error).__name__}: {str(self._error).strip().splitlines()[-1][:200]}")
        finally:
            self.close()

    def triangulate(self, given: SfmCameras, indices: list[int], on_wait=lambda stage: None,
                    loose_above: float | None = None) -> SfmCameras:
        """The known cameras ``given`` (of the inputs ``indices``, in that order) with this job's matches
        triangulated from them (the job matched without mapping: ``mapper="none"``), so that the network's
        depth is fitted to points seen from the given poses; ``given`` as it is, said in its ``error``, when
        the frames could not be matched.

        Where those points land more than ``loose_above`` px (mean) from where they were seen, the frames are
        mapped as without given cameras (the job's ``refit`` options) and that model is placed on the given
        cameras (:func:`heads.recon.sfm.placed_on_given`): the given frame and scale, the matched cameras'
        fit. Should mapping fail or fit no better, the given cameras stay, triangulated."""
        try:
            while self._thread.is_alive():
                on_wait(self.stage)
                self._thread.join(0.25)
            if self._error is not None and not isinstance(self._error, (RuntimeError, ValueError, OSError)):
                raise self._error
            if self._error is None and len(self.written) >= 2:
                self._next_stage("triangulating the matches from the given cameras")
                names = [self.written.get(i, (f"missing-{i}",))[0] for i in indices]
                hws = np.array([self.written[i][1] if i in self.written else (1, 1) for i in indices], np.int64)
                rec = triangulate_known(self.folder, given, names=names, written_hw=hws, cancel=self._token)
                out = replace(given, reconstruction=rec, names=names, written_hw=hws.reshape(-1, 2))
                if loose_above is not None and self.refit is not None and out.points \
                        and out.reprojection_error > loose_above:
                    out = self._refitted(out, indices)
                self._next_stage(None)
                return out
        except (RuntimeError, ValueError, OSError) as e:
            self._error = e
        except BaseException:
            self.cancel()
            raise
        finally:
            self.close()
        why = f"{type(self._error).__name__}: {str(self._error).strip().splitlines()[-1][:200]}" if self._error \
            else "fewer than 2 frames"
        return replace(given, error=f"no points triangulated from the given cameras ({why})")

    def _refitted(self, given: SfmCameras, indices: list[int]) -> SfmCameras:
        """:meth:`triangulate`'s loose cameras ``given`` replaced by the frames' own mapping placed on them, or
        ``given`` with a note saying why not."""
        written = [i for i in indices if i in self.written]
        same_size = len({self.written[i][2] for i in written}) == 1
        options = replace(self.refit, one_camera=self.refit.one_camera and same_size)
        try:
            rec, _ = run_sfm(self.folder, [self.written[i][0] for i in written], options=options, video=self.video,
                             cancel=self._token,
                             on_stage=lambda stage: self._next_stage(
                                 f"{stage} (the given cameras fit loosely; --hold-cameras skips this)"))
        except (RuntimeError, ValueError) as e:  # COLMAP's failure keeps the given cameras: said, not raised
            why = (str(e).strip().splitlines() or [""])[-1].strip()[:150]  # one line: COLMAP's last says what failed
            return replace(given, note=f"mapping the frames failed ({type(e).__name__}: {why})")
        return placed_on_given(rec, given)

    def cancel(self) -> None:
        """Stops matching at COLMAP's next check and removes its frames."""
        self._token.cancel()
        # global mapping takes no cancellation token: a daemon thread, not waited for beyond a few seconds
        self._thread.join(timeout=5.0)
        self.close()

    def close(self) -> None:
        self._tmp.cleanup()
