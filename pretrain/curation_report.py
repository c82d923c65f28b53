"""What the curation filters would keep: a table and a histogram picture (OpenCV, no plotting library)."""

from __future__ import annotations

import cv2
import numpy as np

from .data import CurationRules

PANEL_W, PANEL_H, MARGIN = 420, 260, 40


def filter_table(records: list[dict], min_entropy: float, min_size: int) -> list[tuple[str, int, float]]:
    """(filter, images kept, share kept) for each filter alone and all together.

    Soft sampling keeps an image with probability ``mae_loss``: its row gives the
    expected number kept.
    """
    n = len(records)
    ok = [r for r in records if "error" not in r]
    rows = [("readable", len(ok))]
    rows.append((f"histogram_score > {min_entropy:g}", sum(r["histogram_score"] > min_entropy for r in ok)))
    rows.append((f"height and width >= {min_size}", sum(min(r["height"], r["width"]) >= min_size for r in ok)))
    rows.append(("soft sampling (expected)", round(sum(r["mae_loss"] for r in ok))))
    hard = CurationRules(min_entropy, min_size, False)
    passed = [r for r in ok if hard.keep(r, 0.0)]
    rows.append(("all filters together (expected)", round(sum(r["mae_loss"] for r in passed))))
    return [(name, k, k / n if n else 0.0) for name, k in rows]


def format_table(rows: list[tuple[str, int, float]], total: int) -> str:
    """The filters' table: each filter's images kept and share of ``total``."""
    lines = [f"{'filter':34s} {'kept':>8s} {'share':>7s}", f"{'all images':34s} {total:8d} {'100.0%':>7s}"]
    lines += [f"{name:34s} {k:8d} {share * 100:6.1f}%" for name, k, share in rows]
    return "\n".join(lines)


def _panel(values: np.ndarray, title: str, threshold: float | None, lo: float, hi: float) -> np.ndarray:
    img = np.full((PANEL_H, PANEL_W, 3), 255, np.uint8)
    plot_w, plot_h = PANEL_W - 2 * MARGIN, PANEL_H - 2 * MARGIN
    bins = 40
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi)) if len(values) else (np.zeros(bins), None)
    top = max(1, counts.max())
    for i, c in enumerate(counts):
        x0 = MARGIN + int(i * plot_w / bins)
        x1 = MARGIN + int((i + 1) * plot_w / bins) - 1
        y0 = MARGIN + plot_h - int(c / top * plot_h)
        cv2.rectangle(img, (x0, y0), (x1, MARGIN + plot_h), (180, 120, 60), -1)
    cv2.rectangle(img, (MARGIN, MARGIN), (MARGIN + plot_w, MARGIN + plot_h), (0, 0, 0), 1)
    if threshold is not None and hi > lo:
        x = MARGIN + int((threshold - lo) / (hi - lo) * plot_w)
        cv2.line(img, (x, MARGIN), (x, MARGIN + plot_h), (0, 0, 220), 2)
        label = f"threshold {threshold:g}"  # under the axis, clear of the bars
        w = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)[0][0]
        cv2.putText(img, label, (min(max(MARGIN, x - w // 2), MARGIN + plot_w - w), MARGIN + plot_h + 32),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 220), 1)
    cv2.putText(img, title, (MARGIN, MARGIN - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    cv2.putText(img, f"{lo:g}", (MARGIN, MARGIN + plot_h + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    label = f"{hi:g}"
    cv2.putText(img, label, (MARGIN + plot_w - 8 * len(label), MARGIN + plot_h + 16), cv2.FONT_HERSHEY_SIMPLEX,
                0.4, (0, 0, 0), 1)
    cv2.putText(img, f"max count {int(top)}", (MARGIN + plot_w - 110, MARGIN - 12), cv2.FONT_HERSHEY_SIMPLEX,
                0.4, (90, 90, 90), 1)
    return img


def report_image(records: list[dict], min_entropy: float, min_size: int) -> np.ndarray:
    """Histograms of histogram_score, short side and mae_loss with thresholds, plus the table, as RGB."""
    ok = [r for r in records if "error" not in r]
    ent = np.array([r["histogram_score"] for r in ok])
    short = np.array([min(r["height"], r["width"]) for r in ok])
    loss = np.array([r["mae_loss"] for r in ok])
    panels = [
        _panel(ent, "histogram_score (bits)", threshold=min_entropy, lo=0.0, hi=8.0),
        _panel(short, "short side (px)", threshold=min_size, lo=0.0,
               hi=float(max(2 * min_size, short.max() if len(short) else 1))),
        _panel(loss, "mae_loss (keep probability)", threshold=None, lo=0.0, hi=1.0),
    ]
    top = np.concatenate(panels, axis=1)
    rows = [("filter", "kept", "share"), ("all images", str(len(records)), "100.0%")]
    rows += [(name, str(k), f"{share * 100:.1f}%") for name, k, share in filter_table(records, min_entropy, min_size)]
    text = np.full((22 * len(rows) + 20, top.shape[1], 3), 255, np.uint8)
    for i, cells in enumerate(rows):  # fixed columns: OpenCV's fonts are proportional
        for cell, x in zip(cells, (MARGIN, MARGIN + 330, MARGIN + 420)):
            cv2.putText(text, cell, (x, 24 + 22 * i), cv2.FONT_HERSHEY_PLAIN, 1.1, (0, 0, 0), 1)
    return cv2.cvtColor(np.concatenate([top, text], axis=0), cv2.COLOR_BGR2RGB)
