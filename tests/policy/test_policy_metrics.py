"""Tests for policy.metrics on hand-crafted final poses: success, human contact, timeout, other failures."""

from __future__ import annotations

import numpy as np
import pytest

from policy.env import SceneGeometry
from policy.metrics import MetricsConfig, aggregate, episode_metrics, segment_points
from splatsim.conventions import PinholeIntrinsics

INTR = PinholeIntrinsics.from_fov(0.8, 64, 64)


def geometry() -> SceneGeometry:
    """A 4 cm object ball at the origin; the hand a small cluster at x = +0.2 m."""
    rng = np.random.default_rng(0)
    d = rng.normal(size=(400, 3))
    obj = 0.04 * d / np.linalg.norm(d, axis=1, keepdims=True)
    hand = np.array([0.2, 0.0, 0.0]) + 0.02 * rng.normal(size=(100, 3))
    return SceneGeometry(hand, obj)


def looking_at_origin(position) -> np.ndarray:
    import torch

    from splatsim.conventions import look_at

    return look_at(
        torch.tensor(position, dtype=torch.float64), torch.zeros(3, dtype=torch.float64), up=(0.0, 0.0, 1.0)
    ).numpy()


def test_success() -> None:
    geo = geometry()
    start = looking_at_origin([-0.8, 0.0, 0.0])
    final = looking_at_origin(
        [-0.44, 0.0, 0.0]
    )  # 0.40 m from the object's surface, from the side away from the hand
    m = episode_metrics([start, final], True, geo, INTR, MetricsConfig())
    assert m["distance"] == pytest.approx(0.40, abs=0.005)
    assert m["center_distance"] == pytest.approx(0.44, abs=0.01)
    assert m["centred"] and m["safe"] and m["in_band"]
    assert m["success"] and m["outcome"] == "success"


def test_human_contact_on_the_approach() -> None:
    geo = geometry()
    # 0.4 m from the object, but the approach line passes through the hand (camera behind the hand)
    final = looking_at_origin([0.44, 0.0, 0.0])
    m = episode_metrics([final], True, geo, INTR, MetricsConfig())
    assert m["centred"] and m["in_band"]
    assert m["approach_clearance"] < 0.1 and not m["safe"]
    assert m["outcome"] == "human_contact" and not m["success"]


def test_human_contact_on_the_path() -> None:
    geo = geometry()
    start = looking_at_origin([0.2, 0.5, 0.0])
    via = looking_at_origin([0.2, -0.5, 0.0])  # the straight move between them sweeps through the hand
    final = looking_at_origin([-0.44, 0.0, 0.0])
    m = episode_metrics([start, via, final], True, geo, INTR, MetricsConfig())
    assert m["path_clearance"] < 0.1 and not m["safe"]
    assert m["outcome"] == "human_contact"


def test_timeout() -> None:
    geo = geometry()
    final = looking_at_origin([-0.44, 0.0, 0.0])
    m = episode_metrics([final], False, geo, INTR, MetricsConfig())
    assert not m["success"] and m["outcome"] == "timeout"
    assert m["safe"] and m["centred"]  # a perfect pose does not count without the stop


def test_other_failures() -> None:
    geo = geometry()
    far = looking_at_origin([-0.7, 0.0, 0.0])
    m = episode_metrics([far], True, geo, INTR, MetricsConfig())
    assert not m["in_band"] and m["outcome"] == "other_failure"
    off = looking_at_origin([-0.44, 0.0, 0.0])
    from scipy.spatial.transform import Rotation

    off[:3, :3] = off[:3, :3] @ Rotation.from_euler("y", 20, degrees=True).as_matrix()  # looks 20 deg aside
    m = episode_metrics([off], True, geo, INTR, MetricsConfig())
    assert not m["centred"] and m["outcome"] == "other_failure"
    assert m["object_center_px"] > 0.1 * 64
    behind = looking_at_origin([-0.44, 0.0, 0.0])
    behind[:3, :3] = behind[:3, :3] @ Rotation.from_euler("y", 180, degrees=True).as_matrix()  # looks away
    m = episode_metrics([behind], True, geo, INTR, MetricsConfig())
    assert m["center_px"] is None and not m["centred"]


def test_centring_references() -> None:
    """A ring grasped by its rim: the ring is at the image centre, its centroid (empty space) is not."""
    import torch

    from splatsim.conventions import look_at

    t = np.linspace(0, 2 * np.pi, 200, endpoint=False)
    ring = np.stack([0.08 * np.cos(t), 0.08 * np.sin(t), np.zeros_like(t)], 1)
    geo = SceneGeometry(np.array([[0.0, -0.3, 0.3]]), ring)
    rim = np.array([0.08, 0.0, 0.0])
    pose = look_at(torch.tensor(rim + [0.0, 0.0, 0.4]), torch.tensor(rim), up=(0.0, 1.0, 0.0)).numpy()
    m = episode_metrics([pose], True, geo, INTR, MetricsConfig())
    assert m["centred"] and m["object_center_px"] < 1.0
    m = episode_metrics([pose], True, geo, INTR, MetricsConfig(centre_reference="centroid"))
    assert not m["centred"] and m["center_px"] > 10


def test_center_distance_option_and_validation() -> None:
    geo = geometry()
    final = looking_at_origin([-0.40, 0.0, 0.0])
    m = episode_metrics([final], True, geo, INTR, MetricsConfig(distance_to="center"))
    assert m["distance"] == pytest.approx(0.40, abs=0.01)
    with pytest.raises(ValueError, match="success_min"):
        MetricsConfig(success_min=0.5, success_max=0.4).validate()


def test_aggregate_and_segments() -> None:
    eps = [
        {
            "distance": 0.4,
            "safe": True,
            "centred": True,
            "success": True,
            "stopped": True,
            "outcome": "success",
            "steps": 10,
            "time_s": 5.0,
        },
        {
            "distance": 0.6,
            "safe": True,
            "centred": False,
            "success": False,
            "stopped": False,
            "outcome": "timeout",
            "steps": 30,
            "time_s": 9.0,
        },
    ]
    a = aggregate(eps)
    assert a["success_rate"] == 0.5 and a["timeout_rate"] == 0.5 and a["human_contact_rate"] == 0.0
    assert a["distance_mean"] == pytest.approx(0.5) and a["distance_std"] == pytest.approx(0.1)
    assert a["time_to_pregrasp_s"] == 5.0
    pts = segment_points(np.zeros(3), np.array([0.1, 0, 0]), 0.03)
    assert len(pts) == 5 and np.allclose(pts[-1], [0.1, 0, 0])


def test_the_approach_ends_at_the_grasp() -> None:
    """A gripper that stopped close approaches less far: it closes at the grasp, it does not travel on."""
    rng = np.random.default_rng(1)
    d = rng.normal(size=(400, 3))
    obj = 0.04 * d / np.linalg.norm(d, axis=1, keepdims=True)
    hand = np.array([0.09, 0.0, 0.0]) + 0.01 * rng.normal(size=(50, 3))  # right behind the object
    geo = SceneGeometry(hand, obj)
    near = looking_at_origin([-0.30, 0.0, 0.0])
    m = episode_metrics([near], True, geo, INTR, MetricsConfig())
    assert m["approach_length"] == pytest.approx(0.26 - 0.1, abs=0.01)
    assert m["approach_clearance"] > 0.2 and m["safe"]
    m = episode_metrics([near], True, geo, INTR, MetricsConfig(approach_length=0.3))
    assert m["approach_clearance"] < 0.1 and not m["safe"]
