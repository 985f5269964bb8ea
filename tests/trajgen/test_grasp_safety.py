"""Tests for trajgen/grasp_safety.py: each exact, voxel-accelerated test against a brute-force one."""

from __future__ import annotations

import numpy as np
import pytest

from trajgen.grasp_safety import (
    AUTHORS_BOX,
    HandIndex,
    authors_box_clear,
    beyond_fractions,
    clearances,
    eq1_distances,
    object_to_scene,
    rank_values,
    scene_to_object,
    swept_volume_clear,
)
from trajgen.gripper import robotiq_2f_85


def random_poses(n: int, rng: np.random.Generator, spread: float) -> np.ndarray:
    poses = np.zeros((n, 4, 4))
    for i in range(n):
        q, r = np.linalg.qr(rng.normal(size=(3, 3)))
        q = q * np.sign(np.diag(r))
        if np.linalg.det(q) < 0:
            q[:, 0] = -q[:, 0]
        poses[i, :3, :3] = q
    # Put each grasp centre near the cloud so that some grasps touch it and some do not.
    centres = rng.uniform(-spread, spread, (n, 3))
    poses[:, :3, 3] = centres - 0.135 * poses[:, :3, 2]
    poses[:, 3, 3] = 1.0
    return poses


@pytest.fixture(scope="module")
def scene():
    rng = np.random.default_rng(0)
    # A lumpy hand-like cloud: a few dense blobs plus scattered points.
    blobs = [
        rng.normal(c, 0.015, (600, 3)) for c in ([0.0, 0.0, 0.0], [0.06, 0.02, -0.03], [-0.05, 0.05, 0.02])
    ]
    hand = np.concatenate(blobs + [rng.uniform(-0.12, 0.12, (300, 3))])
    poses = random_poses(300, rng, 0.15)
    openings = rng.uniform(0.01, 0.085, 300)
    return hand, poses, openings


def to_local(pose: np.ndarray, pts: np.ndarray) -> np.ndarray:
    inv = np.linalg.inv(pose)
    return pts @ inv[:3, :3].T + inv[:3, 3]


def brute_boxes(local: np.ndarray, opening: float, sweep: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """The gripper's boxes with explicit signs (both fingers), from the Robotiq fields."""
    g = robotiq_2f_85()
    palm, h = g.tip_depth - g.finger_length, opening / 2
    fb, t = g.finger_breadth / 2, g.finger_thickness
    return [
        (
            np.array([-g.body_width / 2, -g.body_thickness / 2, -sweep]),
            np.array([g.body_width / 2, g.body_thickness / 2, palm]),
        ),
        (np.array([h, -fb, palm - sweep]), np.array([h + t, fb, g.tip_depth])),
        (np.array([-h - t, -fb, palm - sweep]), np.array([-h, fb, g.tip_depth])),
        (np.array([-h, -fb, palm - sweep]), np.array([h, fb, g.tip_depth])),
    ]


def test_eq1_and_non_intrusion_match_brute_force(scene):
    hand, poses, _ = scene
    index = HandIndex(hand, 0.008)
    d = eq1_distances(poses, index)
    brute = np.array([np.linalg.norm(to_local(p, hand), axis=1).min() for p in poses])
    assert np.allclose(d, brute, atol=1e-12)
    centres = poses[:, :3, 3] + 0.135 * poses[:, :3, 2]
    frac = beyond_fractions(poses, centres, index)
    brute = np.array([((hand - c) @ p[:3, 2] > 0).mean() for p, c in zip(poses, centres)])
    assert np.array_equal(frac, brute)


@pytest.mark.parametrize("voxel", [0.004, 0.012])
def test_swept_volume_and_clearance_are_exact(scene, voxel):
    hand, poses, openings = scene
    g = robotiq_2f_85()
    index = HandIndex(hand, voxel)
    clear = swept_volume_clear(poses, openings, index, g, 0.3)
    clr = clearances(poses, openings, index, g)
    for i, pose in enumerate(poses):
        local = to_local(pose, hand)
        swept = brute_boxes(local, openings[i], 0.3)
        hit = any(((local >= lo) & (local <= hi)).all(axis=1).any() for lo, hi in swept)
        assert clear[i] == (not hit), i
        at = brute_boxes(local, openings[i], 0.0)
        dist = np.min(
            [np.linalg.norm(np.maximum(np.maximum(lo - local, local - hi), 0), axis=1) for lo, hi in at],
            axis=0,
        )
        assert clr[i] == pytest.approx(dist.min(), abs=1e-12), i
    assert 0.1 < clear.mean() < 0.9  # both outcomes exercised
    assert (clr[~clear] >= 0).all() and (clr == 0).any()


def test_authors_box_matches_brute_force(scene):
    hand, poses, _ = scene
    clear = authors_box_clear(poses, HandIndex(hand, 0.006))
    lo, hi = np.array(AUTHORS_BOX[0]), np.array(AUTHORS_BOX[1])
    brute = np.array(
        [not ((to_local(p, hand) >= lo) & (to_local(p, hand) <= hi)).all(axis=1).any() for p in poses]
    )
    assert np.array_equal(clear, brute)
    with pytest.raises(ValueError, match="symmetric"):
        authors_box_clear(poses, HandIndex(hand), ((-0.01, -0.01, 0.0), (0.02, 0.01, 0.1)))


def test_hand_index_groups_every_point_near_its_representative(scene):
    hand, _, _ = scene
    index = HandIndex(hand, 0.01)
    assert len(index.reps) < len(hand) and index.delta <= 0.01 * np.sqrt(3) + 1e-12
    voxels = np.arange(len(index.reps))
    rows, idx = index.members(voxels, voxels)
    assert np.array_equal(np.sort(idx), np.arange(len(hand)))  # each point exactly once
    assert np.linalg.norm(hand[idx] - index.reps[rows], axis=1).max() == pytest.approx(index.delta)


def test_without_hand_points_everything_is_safe():
    poses = random_poses(5, np.random.default_rng(1), 0.1)
    empty = HandIndex(np.zeros((0, 3)))
    assert np.isinf(eq1_distances(poses, empty)).all()
    assert swept_volume_clear(poses, np.full(5, 0.05), empty, robotiq_2f_85(), 0.3).all()
    assert (beyond_fractions(poses, poses[:, :3, 3], empty) == 1).all()


def test_eq2_moves_object_frame_grasps_by_the_object_mean():
    poses = random_poses(4, np.random.default_rng(2), 0.05)
    mean = np.array([0.1, -0.2, 0.4])
    scene = object_to_scene(poses, mean)
    assert np.allclose(scene[:, :3, :3], poses[:, :3, :3])
    assert np.allclose(scene[:, :3, 3], poses[:, :3, 3] + mean)
    assert np.allclose(scene_to_object(scene, mean), poses)
    # A point held in the grasp frame lands where the object-frame point plus the mean is.
    p = np.array([0.0, 0.0, 0.135, 1.0])
    assert np.allclose(scene[0] @ p, np.append((poses[0] @ p)[:3] + mean, 1.0))


def test_rank_values_prefer_score_and_clearance():
    v = rank_values(np.array([0.5, 0.5, 0.9]), np.array([0.01, 0.2, 0.01]), 0.5, 0.1)
    assert v[1] > v[0] and v[1] == pytest.approx(0.75) and v[2] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="clearance_weight"):
        rank_values(np.zeros(1), np.zeros(1), 2.0, 0.1)
