"""Pictures of dense outputs: coloured depth with a legend, label overlays with a legend, point clouds."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from heads.geometry import depth_to_points
from heads.writers3d import write_ply


CMAPS = ("turbo", "grey", "inverse")


def colourise_depth(depth: np.ndarray, lo: float, hi: float, cmap: str = "turbo") -> np.ndarray:
    """Depth (metres) as BGR colours over [lo, hi]: ``turbo`` (near red, far blue), ``grey`` (near white,
    far black) or ``inverse`` (inverse depth in inferno, near bright: the look of Depth Anything's pictures)."""
    if cmap == "inverse":
        near, far = 1 / max(lo, 1e-6), 1 / max(hi, 1e-6)
        norm = np.clip((1 / np.maximum(depth, 1e-6) - far) / max(near - far, 1e-12), 0, 1)  # 1 = near
        return cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)
    norm = np.clip((depth - lo) / max(hi - lo, 1e-6), 0, 1)  # 0 = near
    grey = ((1 - norm) * 255).astype(np.uint8)
    if cmap == "grey":
        return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    return cv2.applyColorMap(grey, cv2.COLORMAP_TURBO)


def depth_picture(depth: np.ndarray, lo: float | None = None, hi: float | None = None, cmap: str = "turbo",
                  image: np.ndarray | None = None) -> np.ndarray:
    """Depth (metres) in colour (see :func:`colourise_depth`) with a legend bar, RGB; with ``image`` (RGB,
    the same size) the input on the left of it, as Depth Anything's side-by-side pictures.

    Colours span the 1st to 99th percentile unless ``lo``/``hi`` are given; depths
    outside are clipped to the end colours, and the legend says so (``<=``/``>=``)
    whenever the map holds values beyond the range shown, with the full range on a
    line of its own when it does not fit beside the ends (small pictures).
    """
    lo = float(np.percentile(depth, 1)) if lo is None else lo
    hi = float(np.percentile(depth, 99)) if hi is None else hi
    colour = colourise_depth(depth, lo, hi, cmap)
    h, w = depth.shape
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = float(np.clip(w / 800, 0.35, 0.8))
    line = cv2.getTextSize("0.00 m", font, scale, 1)[0][1] + 8
    below, above = float(depth.min()) < lo, float(depth.max()) > hi
    left = f"{'<=' if below else ''}{lo:.2f} m"
    right = f"{'>=' if above else ''}{hi:.2f} m"
    note = f"clipped (range {float(depth.min()):.2f}-{float(depth.max()):.2f} m)" if below or above else ""
    left_w, right_w = (cv2.getTextSize(t, font, scale, 1)[0][0] for t in (left, right))
    note_w = cv2.getTextSize(note, font, scale * 0.8, 1)[0][0] if note else 0
    beside = not note or note_w < w - left_w - right_w - 12
    ramp_h = max(8, line // 2)
    legend = np.full((ramp_h + line * (1 if beside else 2) + 2, w, 3), 255, np.uint8)
    ramp = np.repeat(np.linspace(lo, hi, w)[None], ramp_h, 0)
    legend[:ramp_h] = colourise_depth(ramp, lo, hi, cmap)
    y = ramp_h + line - 4
    cv2.putText(legend, left, (3, y), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(legend, right, (w - right_w - 3, y), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
    if note:
        at = ((w - note_w) // 2, y) if beside else (3, y + line)
        cv2.putText(legend, note, at, font, scale * 0.8, (0, 0, 0), 1, cv2.LINE_AA)
    picture = cv2.cvtColor(np.concatenate([colour, legend]), cv2.COLOR_BGR2RGB)
    if image is None:
        return picture
    gap = max(4, w // 64)
    left_panel = np.full((picture.shape[0], w + gap, 3), 255, np.uint8)
    left_panel[:h, :w] = image
    return np.concatenate([left_panel, picture], 1)


def overlay_picture(image: np.ndarray, labels: np.ndarray, palette: np.ndarray, classes: list[str],
                    alpha: float = 0.5) -> np.ndarray:
    """The image blended with class colours, and a legend of the classes present (RGB), in as many
    columns as the widest name allows (one at the least), so names never run into each other."""
    colour = palette[np.clip(labels, 0, len(palette) - 1)]
    out = (image.astype(np.float32) * (1 - alpha) + colour.astype(np.float32) * alpha).astype(np.uint8)
    present = [c for c in np.unique(labels) if c < len(classes)]
    w = out.shape[1]
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = float(np.clip(w / 1000, 0.35, 0.6))
    text_h = cv2.getTextSize("Ag", font, scale, 1)[0][1]
    box, row = text_h + 4, text_h + 12
    widest = max([cv2.getTextSize(classes[c], font, scale, 1)[0][0] for c in present], default=0)
    cols = max(1, min(len(present) or 1, w // (box + 10 + widest + 12)))
    col_w = w // cols
    legend = np.full((row * ((len(present) + cols - 1) // cols) + 6, w, 3), 255, np.uint8)
    for k, c in enumerate(present):
        x, y = (k % cols) * col_w + 4, (k // cols) * row + 4
        cv2.rectangle(legend, (x, y), (x + box, y + box), tuple(int(v) for v in palette[c]), -1)
        name = classes[c]
        room = col_w - box - 14
        while name and cv2.getTextSize(name, font, scale, 1)[0][0] > room:  # one column narrower than a name
            name = name[:-1]
        cv2.putText(legend, name, (x + box + 6, y + box - 2), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([out, legend])


def write_point_cloud(path: Path, depth: np.ndarray, image: np.ndarray, fx: float, fy: float,
                      cx: float, cy: float) -> None:
    """A coloured point cloud of one depth map (camera frame, metres)."""
    K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
    keep = depth.reshape(-1) > 0
    pts = depth_to_points(depth.astype(np.float64), K).reshape(-1, 3)
    write_ply(path.with_suffix(".ply"), pts[keep], image.reshape(-1, 3)[keep])
