"""Closed-loop metrics of one episode in the splat (paper §V-A, Table I) and their aggregation.

For the final gripper pose ``T`` (camera ``T @ gripper_T_camera``) of an episode:

- ``distance``: from the gripper origin to the object, metres: to its nearest point (``distance_to =
  "surface"``, the default: the gap the straight approach closes; the demonstrations' pre-grasp poses
  sit 0.40-0.43 m from it, the middle of the paper's band) or to its centre (``"center"``, the mean of
  the object points; the pre-grasp poses sit 0.45-0.55 m from it with this gripper's 0.135 m depth);
  ``center_distance`` is always reported as well;
- ``centred``: the object sits at the image centre: its nearest point to the image centre (among the
  object points in front of the camera, projected) lies within ``center_radius_frac * min(W, H)``
  pixels of it (``centre_reference = "object"``, the default), or its centre (the mean of its points)
  does (``"centroid"``). ``"object"`` is what "the gripper faces the object" needs: the straight
  approach meets the object. ``"centroid"`` fails the demonstrations' own pre-grasp poses for objects
  grasped off their centroid (the bowl by its rim); ``center_px`` (centroid) and ``object_center_px``
  are both reported;
- ``approach_clearance``: the smallest distance from a hand point to the straight approach from the
  final pose to the grasp: the segment from the gripper origin along its approach axis (+z) until the
  origin is ``grasp_standoff`` (0.1 m) from the object's nearest point, where the demonstrations'
  grasps put it (their grasp origins sit 0.10-0.13 m from it: the grasp centre is 0.135 m ahead of
  the origin, inside the object); a fixed ``approach_length`` (e.g. s = 0.3 m) instead when set.
  A pose that stopped short approaches farther, one that overshot less: the gripper closes at the
  grasp, it does not travel on; ``path_clearance``: the smallest distance from a hand point to the path the gripper
  travelled (straight segments between the visited poses);
- ``safe``: ``approach_clearance >= d_s`` and ``path_clearance >= d_min``;
- ``success``: the policy stopped (score >= tau_c) with the distance in ``[success_min, success_max]``
  (the paper's 0.35-0.45 m), centred and safe;
- ``outcome``, exclusive and in this order: ``success``; ``human_contact`` when the path came within
  ``d_min`` of the hand, or the policy stopped where the approach would pass within ``d_s`` of it;
  ``timeout`` when it never stopped (30 steps or 30 s); ``other_failure`` (stopped too near, too far or
  off-centre).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from policy.env import SceneGeometry
from splatsim.conventions import PinholeIntrinsics

__all__ = ["OUTCOMES", "MetricsConfig", "aggregate", "episode_metrics", "segment_points"]

OUTCOMES = ("success", "human_contact", "timeout", "other_failure")


@dataclass
class MetricsConfig:
    """How an episode's end is judged (paper defaults)."""

    success_min: float = 0.35
    """Closest final distance to the object that counts as a reached pre-grasp, metres."""
    success_max: float = 0.45
    """Farthest final distance that counts, metres."""
    distance_to: Literal["surface", "center"] = "surface"
    """What the distance is measured to: the object's nearest point, or its centre."""
    center_radius_frac: float = 0.1
    """Centring radius as a fraction of the image's smaller side."""
    centre_reference: Literal["object", "centroid"] = "object"
    """What must lie within the radius of the image centre: the object (its nearest projected point) or
    its centroid."""
    d_s: float = 0.1
    """The straight approach from the final pose must keep this far from every hand point (Eq. 1's d_s)."""
    d_min: float = 0.1
    """No part of the path may come nearer the hand than this (Eq. 14's d_min)."""
    grasp_standoff: float = 0.1
    """The straight approach ends where the gripper origin is this far from the object's nearest point
    (the demonstrations' grasps: 0.10-0.13 m), metres."""
    approach_length: float | None = None
    """A fixed length for the straight approach instead (s = 0.3 m would be the pre-grasp offset), metres."""
    path_resolution: float = 0.005
    """Spacing of the points checked along the path and the approach, metres."""

    def validate(self) -> MetricsConfig:
        if not 0 <= self.success_min < self.success_max:
            raise ValueError(
                f"MetricsConfig.success_min / success_max = {self.success_min} / {self.success_max}; expected 0 <= min < max"
            )
        if self.approach_length is not None and not self.approach_length > 0:
            raise ValueError(f"MetricsConfig.approach_length = {self.approach_length}; expected None or > 0")
        for name in ("center_radius_frac", "path_resolution", "grasp_standoff"):
            if not getattr(self, name) > 0:
                raise ValueError(f"MetricsConfig.{name} = {getattr(self, name)}; expected > 0")
        if self.centre_reference not in ("object", "centroid"):
            raise ValueError(
                f"MetricsConfig.centre_reference = {self.centre_reference!r}; expected 'object' or 'centroid'"
            )
        if self.distance_to not in ("surface", "center"):
            raise ValueError(
                f"MetricsConfig.distance_to = {self.distance_to!r}; expected 'surface' or 'center'"
            )
        for name in ("d_s", "d_min"):
            if getattr(self, name) < 0:
                raise ValueError(f"MetricsConfig.{name} = {getattr(self, name)}; expected >= 0 metres")
        return self


def segment_points(a: np.ndarray, b: np.ndarray, spacing: float) -> np.ndarray:  # [n, 3]
    """Points from ``a`` to ``b`` (both included) no farther apart than ``spacing``."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    n = max(1, math.ceil(float(np.linalg.norm(b - a)) / spacing))
    t = np.linspace(0.0, 1.0, n + 1)[:, None]
    return a + t * (b - a)


def episode_metrics(
    poses: Sequence[np.ndarray] | np.ndarray,  # [T, 4, 4] gripper poses visited, start first
    stopped: bool,
    geometry: SceneGeometry,
    intrinsics: PinholeIntrinsics,
    cfg: MetricsConfig,
    gripper_T_camera: np.ndarray | None = None,
) -> dict[str, Any]:
    """The module docstring's metrics for one episode (plain Python values, JSON-ready)."""
    poses = np.asarray(poses, dtype=np.float64).reshape(-1, 4, 4)
    final = poses[-1]
    p = final[:3, 3]
    center = geometry.object_center
    center_distance = float(np.linalg.norm(p - center))
    surface_distance = float(geometry.object_distance(p[None])[0])
    distance = surface_distance if cfg.distance_to == "surface" else center_distance

    mount = np.eye(4) if gripper_T_camera is None else np.asarray(gripper_T_camera, np.float64)
    cam = final @ mount
    pc = cam[:3, :3].T @ (center - cam[:3, 3])
    if pc[2] > 1e-6:
        u = intrinsics.fx * pc[0] / pc[2] + intrinsics.cx
        v = intrinsics.fy * pc[1] / pc[2] + intrinsics.cy
        center_px = float(math.hypot(u - intrinsics.width / 2, v - intrinsics.height / 2))
    else:
        center_px = math.inf
    pts = (geometry.object_points - cam[:3, 3]) @ cam[:3, :3]  # camera frame
    pts = pts[pts[:, 2] > 1e-6]
    if len(pts):
        u = intrinsics.fx * pts[:, 0] / pts[:, 2] + intrinsics.cx
        v = intrinsics.fy * pts[:, 1] / pts[:, 2] + intrinsics.cy
        object_px = float(np.hypot(u - intrinsics.width / 2, v - intrinsics.height / 2).min())
    else:
        object_px = math.inf
    radius_px = cfg.center_radius_frac * min(intrinsics.width, intrinsics.height)
    centred = (object_px if cfg.centre_reference == "object" else center_px) <= radius_px

    if cfg.approach_length is not None:
        approach_length = cfg.approach_length
    else:
        approach_length = max(0.0, surface_distance - cfg.grasp_standoff)
    approach = segment_points(p, p + approach_length * final[:3, 2], cfg.path_resolution)
    approach_clearance = float(geometry.hand_distance(approach).min())
    path = [
        segment_points(poses[i, :3, 3], poses[i + 1, :3, 3], cfg.path_resolution)
        for i in range(len(poses) - 1)
    ]
    path_pts = np.concatenate(path) if path else poses[:1, :3, 3]
    path_clearance = float(geometry.hand_distance(path_pts).min())
    approach_safe = approach_clearance >= cfg.d_s
    path_safe = path_clearance >= cfg.d_min
    safe = approach_safe and path_safe
    in_band = cfg.success_min <= distance <= cfg.success_max
    success = bool(stopped and in_band and centred and safe)
    if success:
        outcome = "success"
    elif not path_safe or (stopped and not approach_safe):
        outcome = "human_contact"
    elif not stopped:
        outcome = "timeout"
    else:
        outcome = "other_failure"
    return {
        "distance": distance,
        "center_distance": center_distance,
        "surface_distance": surface_distance,
        "in_band": bool(in_band),
        "center_px": center_px if math.isfinite(center_px) else None,
        "object_center_px": object_px if math.isfinite(object_px) else None,
        "centred": bool(centred),
        "approach_clearance": approach_clearance,
        "approach_length": approach_length,
        "path_clearance": path_clearance,
        "safe": bool(safe),
        "stopped": bool(stopped),
        "success": success,
        "outcome": outcome,
        "object_distance_min": float(geometry.object_distance(path_pts).min()),
    }


def aggregate(episodes: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Means, standard deviations and rates over episodes (each a dict with `episode_metrics`' keys,
    plus ``steps``, ``time_s`` and ``wall_s``)."""
    n = len(episodes)
    if n == 0:
        return {"episodes": 0}
    dist = np.array([e["distance"] for e in episodes])
    out: dict[str, Any] = {
        "episodes": n,
        "distance_mean": float(dist.mean()),
        "distance_std": float(dist.std()),
        "safe_rate": float(np.mean([e["safe"] for e in episodes])),
        "centre_rate": float(np.mean([e["centred"] for e in episodes])),
        "success_rate": float(np.mean([e["success"] for e in episodes])),
        "stop_rate": float(np.mean([e["stopped"] for e in episodes])),
        "safe": int(sum(e["safe"] for e in episodes)),
        "centred": int(sum(e["centred"] for e in episodes)),
        "success": int(sum(e["success"] for e in episodes)),
    }
    for o in OUTCOMES:
        out[f"{o}_rate"] = float(np.mean([e["outcome"] == o for e in episodes]))
    for key in ("steps", "time_s", "wall_s"):
        vals = [e[key] for e in episodes if key in e]
        if vals:
            out[f"{key}_mean"] = float(np.mean(vals))
    succ_t = [e["time_s"] for e in episodes if e["success"] and "time_s" in e]
    out["time_to_pregrasp_s"] = float(np.mean(succ_t)) if succ_t else None
    return out
