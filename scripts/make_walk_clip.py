"""samples/walk.mp4: a phone-style clip of the 7-Scenes kitchen for the tutorial (docs/tutorial-video.md).

Every 6th of the first 480 frames of ../shared/data/video-7scenes-redkitchen (80 frames, 640x480), written
at 10 frames per second with OpenCV's mp4v codec: an 8-second walk along the counter.

    python scripts/make_walk_clip.py
"""

from __future__ import annotations

from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[1]
VIDEO = ROOT.parent / "shared" / "data" / "video-7scenes-redkitchen"


def main() -> None:
    frames = sorted(VIDEO.glob("frame-*.color.jpg"))[:480:6]
    if not frames:
        raise SystemExit(f"{VIDEO} is missing: this script needs ../shared/data")
    out = ROOT / "samples" / "walk.mp4"
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (640, 480))
    for path in frames:
        writer.write(cv2.imread(str(path)))
    writer.release()
    print(out, out.stat().st_size, "bytes,", len(frames), "frames")


if __name__ == "__main__":
    main()
