"""Tanks and Temples' refinement of an alignment (heads.recon.evaluate.refine_alignment): ICP with scale
undoes a similarity a few per cent, a degree and a few cm off, on a surface with shape in every direction."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from heads.recon.evaluate import refine_alignment, refinement_report


def surface(n: int = 20000, seed: int = 0) -> np.ndarray:
    """A room's corner with a bump: three walls 1-2 m across and a dome on the floor."""
    rng = np.random.default_rng(seed)
    u, v = rng.uniform(0, 2, (2, n))
    floor = np.stack([u, v, 0.3 * np.exp(-((u - 1) ** 2 + (v - 1) ** 2) / 0.1)], 1)
    wall_x = np.stack([np.zeros(n), u, v * 0.75], 1)
    wall_y = np.stack([u, np.zeros(n), v * 0.75], 1)
    return np.concatenate([floor, wall_x, wall_y])


@pytest.mark.parametrize("s", [0.96, 1.0, 1.04])
def test_a_cloud_a_similarity_off_is_brought_back(s):
    truth = surface()
    R = cv2.Rodrigues(np.radians([0.6, -0.5, 0.8]))[0]
    t = np.array([0.03, -0.02, 0.025])
    moved = s * surface(seed=1) @ R.T + t  # other samples of the same surface, moved
    rs, rR, rt = refine_alignment(moved, truth)
    assert rs * s == pytest.approx(1.0, abs=0.015)  # point-to-point ICP stops short by ~1 % from a cloud 4 % small
    assert np.degrees(np.arccos(np.clip((np.trace(rR @ R) - 1) / 2, -1, 1))) < 0.15
    corner = s * np.zeros(3) @ R.T + t  # where the walls meet, moved: brought back to the origin
    assert np.linalg.norm(rs * corner @ rR.T + rt) < 0.005


def test_a_cloud_in_place_stays_in_place():
    rs, rR, rt = refine_alignment(surface(seed=1), surface())
    assert rs == pytest.approx(1.0, abs=0.002) and np.allclose(rR, np.eye(3), atol=2e-3)
    assert np.linalg.norm(rt) < 0.004


def test_the_report_says_how_far_the_points_moved_not_how_long_the_translation_is():
    """A 90 degree turn about the origin of points 2 m from it, undone in part by the translation: each point
    moves 2 * sqrt(2) m less what the translation takes back, not |t|."""
    points = np.array([[2.0, 0, 0], [0, 2.0, 0]])
    R = cv2.Rodrigues(np.array([0, 0, np.pi / 2]))[0]
    t = np.array([0.0, 0.0, 0.1])
    r = refinement_report(points, 1.0, R, t)
    assert r["degrees"] == pytest.approx(90.0) and r["scale"] == 1.0
    assert r["shift"] == pytest.approx(np.sqrt(8 + 0.01))
    assert refinement_report(points, 1.1, np.eye(3), np.zeros(3))["shift"] == pytest.approx(0.2)
    turn = cv2.Rodrigues(np.radians([0.0, 60.0, 0.0]))[0]
    assert refinement_report(points, 1.0, turn, np.zeros(3))["degrees"] == pytest.approx(60.0)
