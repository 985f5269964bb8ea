"""Tests for trajgen/grasp_sampler.py and trajgen/gripper.py: antipodal widths, placement, NMS."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trajgen.grasp_sampler import (
    nms_se3,
    place_along_approach,
    rotation_distance_symmetric,
    sample_antipodal_grasps,
)
from trajgen.grasps import estimate_normals
from trajgen.gripper import BOX_BODY, BOX_CLOSING, BOX_FINGERS, GripperModel, robotiq_2f_85, robotiq_2f_140

BOX = (0.05, 0.07, 0.20)  # two sides within the 85 mm stroke, the third far beyond it


def box_surface(size: tuple[float, float, float], spacing: float, rng: np.random.Generator) -> np.ndarray:
    half = np.asarray(size) / 2
    faces = []
    for axis in range(3):
        u, v = (axis + 1) % 3, (axis + 2) % 3
        n = int(size[u] * size[v] / spacing**2)
        for sign in (-1.0, 1.0):
            p = (rng.random((n, 3)) * 2 - 1) * half
            p[:, axis] = sign * half[axis]
            faces.append(p)
    return np.concatenate(faces)


def test_box_antipodal_widths_match_its_dimensions():
    rng = np.random.default_rng(0)
    pts = box_surface(BOX, 0.004, rng)
    normals = estimate_normals(pts, 0.012, 30)
    for partners in (1, 3):
        cand, stats = sample_antipodal_grasps(
            pts, normals, robotiq_2f_85(), rng, num_contacts=300, partners_per_contact=partners
        )
        assert stats.pairs > 50
        # Pairs join opposite faces 5 or 7 cm apart (the 20 cm faces are out of reach): the contact axis
        # projected on the face normal is the side. (Near edges, where the estimated normals blend two
        # faces, a contact may sit on the neighbouring face.)
        gap = np.abs(cand.contacts[:, 1] - cand.contacts[:, 0])  # [C, 3]
        side = np.where(gap[:, 0] > gap[:, 1], BOX[0], BOX[1])
        assert np.isclose(np.maximum(gap[:, 0], gap[:, 1]), side, atol=1e-6).mean() > 0.9
        # The well-aligned pairs (normals along the axis) are as wide as the box.
        good = cand.antipodal > 0.9
        assert good.sum() > 20
        w = cand.widths[good]
        assert (np.minimum(np.abs(w - BOX[0]), np.abs(w - BOX[1])) < 0.003).all(), np.unique(np.round(w, 3))
        assert (np.abs(w - BOX[0]) < 0.003).any() and (np.abs(w - BOX[1]) < 0.003).any()


def test_sampled_poses_are_rigid_and_follow_the_grasp_convention():
    rng = np.random.default_rng(1)
    pts = box_surface(BOX, 0.005, rng)
    g = robotiq_2f_85()
    cand, _ = sample_antipodal_grasps(pts, estimate_normals(pts, 0.012, 30), g, rng, num_contacts=80)
    R = cand.poses[:, :3, :3]
    assert np.allclose(np.einsum("cji,cjk->cik", R, R), np.eye(3), atol=1e-9)
    assert np.allclose(np.linalg.det(R), 1.0)
    # +x closes from one contact to the other; the centre is their midpoint, on +z ahead of the origin.
    axis = cand.contacts[:, 1] - cand.contacts[:, 0]
    assert np.allclose(np.abs(np.einsum("ij,ij->i", axis, R[:, :, 0])), cand.widths, atol=1e-9)
    assert np.allclose(cand.centers, cand.contacts.mean(axis=1))
    depth = np.einsum("ij,ij->i", cand.centers - cand.poses[:, :3, 3], R[:, :, 2])
    assert np.allclose(cand.centers, cand.poses[:, :3, 3] + depth[:, None] * R[:, :, 2], atol=1e-9)
    assert (depth >= g.tip_depth - g.finger_length).all() and (depth <= g.tip_depth).all()
    # Several approach angles around each contact axis.
    assert len(cand) == 12 * len(np.unique(cand.contacts.reshape(len(cand), -1), axis=0))


def test_placement_frees_the_gripper_or_flags_a_collision():
    """Grasping a 5 cm cube from the top: the palm must clear its top face; from under a plate: never."""
    rng = np.random.default_rng(2)
    g = robotiq_2f_85()
    cube = box_surface((0.05, 0.05, 0.05), 0.003, rng)
    centers = np.array([[0.0, 0.0, 0.015], [0.0, 0.0, -0.015]])  # 1 cm and 4 cm below the top face
    closing = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    down = np.array([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0]])
    depth, collide, _ = place_along_approach(cube, centers, closing, down, np.full(2, 0.056), g)
    assert not collide[0] and collide[1]
    # Nominal depth when free: the top face then lies ahead of the palm.
    assert depth[0] == pytest.approx(g.depth)
    palm_z = 0.015 + (depth[0] - g.palm)  # the palm's height above the centre's
    assert palm_z > 0.025
    # A wall behind the approach path blocks the sweep back to the pre-grasp pose.
    wall = np.array([[0.0, 0.0, 0.20 + 0.015]])  # 20 cm above: inside the body swept back 0.3 m
    _, _, free = place_along_approach(
        cube, centers[:1], closing[:1], down[:1], np.full(1, 0.056), g, obstacles=wall
    )
    assert not free[0]
    _, _, free = place_along_approach(
        cube, centers[:1], closing[:1], down[:1], np.full(1, 0.056), g, obstacles=wall + [0.3, 0, 0]
    )
    assert free[0]


def test_rotation_distance_counts_the_half_turn_about_the_approach_as_equal():
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    R = q * np.sign(np.linalg.det(q))
    half_turn = R @ np.diag([-1.0, -1.0, 1.0])
    small = R @ np.array([[math.cos(0.2), -math.sin(0.2), 0], [math.sin(0.2), math.cos(0.2), 0], [0, 0, 1]])
    d = rotation_distance_symmetric(R, np.stack([R, half_turn, small]))
    assert d[0] == pytest.approx(0.0, abs=1e-6) and d[1] == pytest.approx(0.0, abs=1e-6)
    assert d[2] == pytest.approx(0.2, abs=1e-6)


def test_nms_keeps_the_best_of_near_duplicates_only():
    R = np.stack([np.eye(3)] * 4)
    R[3] = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # 90 degrees about z
    centers = np.array([[0.0, 0, 0], [0.005, 0, 0], [0.05, 0, 0], [0.0, 0, 0]])
    kept = nms_se3(centers, R, np.array([1, 0, 2, 3]), 0.02, math.radians(30))
    assert kept.tolist() == [1, 2, 3]


def test_gripper_boxes_and_validation():
    g = robotiq_2f_85()
    lo, hi = g.boxes(np.array([0.06]), sweep=0.3)
    assert lo.shape == hi.shape == (1, 3, 3)
    assert hi[0, BOX_CLOSING, 0] == pytest.approx(0.03) and lo[0, BOX_FINGERS, 0] == pytest.approx(0.03)
    assert hi[0, BOX_FINGERS, 0] == pytest.approx(0.03 + g.finger_thickness)
    assert lo[0, BOX_BODY, 2] == pytest.approx(-0.3) and hi[0, BOX_BODY, 2] == pytest.approx(g.palm)
    assert hi[0, BOX_FINGERS, 2] == pytest.approx(g.tip_depth)
    assert g.opening_for(np.array([0.05, 0.084]), 0.003).tolist() == pytest.approx([0.056, 0.085])
    assert robotiq_2f_140().max_width == pytest.approx(0.14)
    with pytest.raises(ValueError, match="depth"):
        GripperModel(depth=0.2)
    with pytest.raises(ValueError, match="max_width"):
        GripperModel(max_width=-0.01)
