"""Pictures of dense outputs: coloured depth with a legend, label overlays with a legend, point clouds."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np



def depth_picture(depth: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Depth (metres) as RGB with the TURBO colormap (near = red, far = blue) and a legend bar.

    Colours span the 1st to 99th percentile unless ``lo``/``hi`` are given; depths
    outside are clipped to the end colours, and the legend says so (``<=``/``>=``)
    whenever the map holds values beyond the range shown.
    """
    lo = float(np.percentile(depth, 1)) if lo is None else lo
    hi = float(np.percentile(depth, 99)) if hi is None else hi
    norm = np.clip((depth - lo) / max(hi - lo, 1e-6), 0, 1)
    colour = cv2.applyColorMap(((1 - norm) * 255).astype(np.uint8), cv2.COLORMAP_TURBO)
    h, w = depth.shape
    bar_h = max(24, h // 14)
    ramp = np.linspace(255, 0, w).astype(np.uint8)[None].repeat(bar_h // 2, 0)
    legend = np.full((bar_h, w, 3), 255, np.uint8)
    legend[: bar_h // 2] = cv2.applyColorMap(ramp, cv2.COLORMAP_TURBO)
    scale = max(0.35, bar_h / 60)
    below, above = float(depth.min()) < lo, float(depth.max()) > hi
    left = f"{'<=' if below else ''}{lo:.2f} m"
    right = f"{'>=' if above else ''}{hi:.2f} m"
    y = bar_h - 4
    cv2.putText(legend, left, (3, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1)
    right_w = cv2.getTextSize(right, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0]
    cv2.putText(legend, right, (w - right_w - 3, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1)
    if below or above:
        note = f"clipped (range {float(depth.min()):.2f}-{float(depth.max()):.2f} m)"
        note_w = cv2.getTextSize(note, cv2.FONT_HERSHEY_SIMPLEX, scale * 0.8, 1)[0][0]
        if note_w < w - right_w - cv2.getTextSize(left, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] - 12:
            cv2.putText(legend, note, ((w - note_w) // 2, y), cv2.FONT_HERSHEY_SIMPLEX, scale * 0.8, (0, 0, 0), 1)
    return cv2.cvtColor(np.concatenate([colour, legend]), cv2.COLOR_BGR2RGB)


def overlay_picture(image: np.ndarray, labels: np.ndarray, palette: np.ndarray, classes: list[str],
                    alpha: float = 0.5) -> np.ndarray:
    """The image blended with class colours, and a legend of the classes present (RGB)."""
    colour = palette[np.clip(labels, 0, len(palette) - 1)]
    out = (image.astype(np.float32) * (1 - alpha) + colour.astype(np.float32) * alpha).astype(np.uint8)
    present = [c for c in np.unique(labels) if c < len(classes)]
    row = 22
    legend = np.full((row * ((len(present) + 2) // 3) + 6, out.shape[1], 3), 255, np.uint8)
    col_w = out.shape[1] // 3
    for k, c in enumerate(present):
        x, y = (k % 3) * col_w + 4, (k // 3) * row + 4
        cv2.rectangle(legend, (x, y), (x + 14, y + 14), tuple(int(v) for v in palette[c]), -1)
        cv2.putText(legend, classes[c], (x + 20, y + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    return np.concatenate([out, legend])


def write_point_cloud(path: Path, depth: np.ndarray, image: np.ndarray, fx: float, fy: float,
                      cx: float, cy: float) -> None:
    """A coloured point cloud of one depth map (camera frame, metres)."""
    from .geometry import depth_to_points, write_ply

    K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
    keep = depth.reshape(-1) > 0
    pts = depth_to_points(depth.astype(np.float64), K).reshape(-1, 3)
    write_ply(path.with_suffix(".ply"), pts[keep], image.reshape(-1, 3)[keep])
