"""Tests for trajgen/contact_graspnet.py: converting Contact-GraspNet output (faked here) to our grasps."""

from __future__ import annotations

import numpy as np
import pytest

import trajgen.contact_graspnet as cgn
from trajgen.contact_graspnet import CGN_GRIPPER_DEPTH, cgn_to_grasp_axes, contact_graspnet_candidates
from trajgen.grasps import GraspConfig, compute_grasps
from trajgen.gripper import robotiq_2f_85


def cube(side: float, spacing: float, rng: np.random.Generator) -> np.ndarray:
    half = side / 2
    out = []
    for axis in range(3):
        n = int(side * side / spacing**2)
        for sign in (-1.0, 1.0):
            p = rng.uniform(-half, half, (n, 3))
            p[:, axis] = sign * half
            out.append(p)
    return np.concatenate(out)


def cgn_pose(contact: np.ndarray, other: np.ndarray, approach: np.ndarray) -> np.ndarray:
    """Contact-GraspNet's build_6d_grasp: R = [b, a x b, a], t = contact + w/2 b - 0.1034 a."""
    b = (other - contact) / np.linalg.norm(other - contact)
    a = approach - (approach @ b) * b
    a /= np.linalg.norm(a)
    T = np.eye(4)
    T[:3, :3] = np.stack([b, np.cross(a, b), a], axis=1)
    T[:3, 3] = contact + np.linalg.norm(other - contact) / 2 * b - CGN_GRIPPER_DEPTH * a
    return T


# Known grasps on a 5 cm cube (object-centred): across x, 1 cm below the top, from above (straight and
# tilted 20 degrees); across y from the side; and one 9 cm wide (beyond the 85 mm stroke).
CONTACTS = [
    (np.array([-0.025, 0.005, 0.015]), np.array([0.025, 0.005, 0.015]), np.array([0.0, 0.0, -1.0])),
    (
        np.array([-0.025, 0.0, 0.01]),
        np.array([0.025, 0.0, 0.01]),
        np.array([0.0, np.sin(0.35), -np.cos(0.35)]),
    ),
    (np.array([0.0, -0.025, 0.0]), np.array([0.0, 0.025, 0.0]), np.array([-1.0, 0.0, 0.0])),
    (np.array([-0.045, 0.0, 0.0]), np.array([0.045, 0.0, 0.0]), np.array([0.0, 0.0, -1.0])),
]


def fake_predictor(with_widths: bool = True, noise: float = 0.0):
    rng = np.random.default_rng(7)
    poses = np.stack([cgn_pose(p, q, a) for p, q, a in CONTACTS]).astype(np.float32)
    poses[:, :3, :3] += noise * rng.normal(size=(len(CONTACTS), 3, 3)).astype(np.float32)
    scores = np.array([0.95, 0.9, 0.85, 0.99], np.float32)
    widths = np.array([np.linalg.norm(q - p) for p, q, _ in CONTACTS], np.float32)

    def predict(points: np.ndarray):
        assert points.ndim == 2 and points.shape[1] == 3
        return poses, scores, (widths if with_widths else None)

    return predict


def test_axes_and_centres_of_contact_graspnet_poses():
    poses = np.stack([cgn_pose(p, q, a) for p, q, a in CONTACTS])
    centers, closing, approach = cgn_to_grasp_axes(poses)
    for k, (p, q, _) in enumerate(CONTACTS):
        assert np.allclose(centers[k], (p + q) / 2, atol=1e-12)
        assert np.allclose(closing[k], (q - p) / np.linalg.norm(q - p), atol=1e-12)
        assert closing[k] @ approach[k] == pytest.approx(0.0, abs=1e-12)
    # float32 outputs that are only nearly orthonormal get the nearest rotation.
    noisy = poses.copy()
    noisy[:, :3, :3] += 1e-3 * np.random.default_rng(0).normal(size=(len(poses), 3, 3))
    _, x, z = cgn_to_grasp_axes(noisy)
    assert np.allclose(np.linalg.norm(x, axis=1), 1.0) and np.allclose((x * z).sum(axis=1), 0.0, atol=1e-12)
    assert np.allclose(x, closing, atol=5e-3)


def test_candidates_keep_the_contacts_and_move_the_origin_to_our_gripper():
    g = robotiq_2f_85()
    pts = cube(0.05, 0.003, np.random.default_rng(1))
    cand, stats = contact_graspnet_candidates(pts, g, fake_predictor(), np.random.default_rng(0))
    assert stats.pairs == len(CONTACTS) and len(cand) == len(CONTACTS)
    for k, (p, q, _) in enumerate(CONTACTS):
        assert np.allclose(cand.centers[k], (p + q) / 2, atol=1e-6)
        assert np.allclose(cand.contacts[k], [p, q], atol=1e-6)
        assert cand.widths[k] == pytest.approx(np.linalg.norm(q - p), abs=1e-6)
    assert cand.exceeds_stroke.tolist() == [False, False, False, True]
    assert not cand.object_collision[:3].any()
    # The straight top grasp keeps its axes; its origin is our gripper's depth behind the centre (the
    # cube's top is clear of the palm there), not Contact-GraspNet's 0.1034 m.
    T = cand.poses[0]
    assert np.allclose(T[:3, 0], [1, 0, 0], atol=1e-6) and np.allclose(T[:3, 2], [0, 0, -1], atol=1e-6)
    assert np.allclose(T[:3, 3], cand.centers[0] + g.depth * np.array([0, 0, 1.0]), atol=1e-6)
    assert np.allclose(cand.scores, [0.95, 0.9, 0.85, 0.99], atol=1e-6)


def test_missing_widths_are_measured_on_the_points():
    pts = cube(0.05, 0.003, np.random.default_rng(2))
    cand, _ = contact_graspnet_candidates(
        pts, robotiq_2f_85(), fake_predictor(with_widths=False, noise=1e-4), np.random.default_rng(0)
    )
    assert np.allclose(cand.widths[:3], 0.05, atol=0.004)


def test_stage_runs_contact_graspnet_grasps_through_the_same_filters(monkeypatch):
    monkeypatch.setattr(cgn, "load_contact_graspnet_predictor", lambda *a, **k: fake_predictor())
    rng = np.random.default_rng(3)
    mean = np.array([0.2, 0.1, 0.4])
    obj = cube(0.05, 0.003, rng) + mean
    hand = rng.normal(mean + [0.0, 0.0, -0.12], 0.01, (500, 3))  # a hand well below the cube
    result = compute_grasps(obj, hand, GraspConfig(sampler="contact_graspnet", min_score=0.5))
    assert result.summary["candidates"] == len(CONTACTS)
    assert result.status[3] == "exceeds_stroke"
    assert result.kept.size >= 1 and set(result.status[result.kept]) == {"kept"}
    # Eq. 2: the object-centred centres land on the scene's cube.
    for k, (p, q, _) in enumerate(CONTACTS):
        assert np.allclose(result.candidates.centers[k], (p + q) / 2 + obj.mean(axis=0), atol=1e-6)
