"""Initial hand-eye poses around a target grasp (paper Eq. 3-6 and 14).

Candidates are drawn in blocks and filtered in a fixed order; each rejected candidate is counted under
the first filter it fails (so the counts add up to the candidates rejected):

1. Eq. 3: a position uniformly on the sphere of radius ``r`` around the grasp position.
2. Eq. 4 (``eq4_alpha_min``): the angle at the object centre between the hand centre and the camera
   exceeds ``alpha_min`` (hand and camera on different sides of the object).
3. ``min_height`` (optional, not in the paper): the position lies at least this high along ``up``.
4. Eq. 14 (``eq14_d_min``): the position keeps more than ``d_min`` from every hand and object point.
5. ``line_of_sight`` (optional, not in the paper): the straight line from the position to the object
   centre keeps more than ``sight_clearance`` from the solid background (the person's body, the table),
   so the camera starts in front of the person, not behind them or under the table, where a policy that
   sees only hand and object pixels sees nothing at all.
6. Eq. 5: the orientation looks at the object centre, then turns about its own x and y axes by angles
   uniform in ``[-jitter, jitter]``: ``R_i = R_look @ Rx(theta_x) @ Ry(theta_y)``, so the viewing axis
   is ``z_i = R_look Rx Ry e_z``. (The paper writes ``Rx Ry`` applied to the direction; rotating about
   the camera's own axes makes the perturbation independent of the scene frame.) ``R_look`` is
   `splatsim.conventions.look_at` with image-up along ``up``.
7. Eq. 6 (``eq6_theta_max``): ``z_i . z_f >= cos(theta_max)``, ``z_f`` the grasp's approach axis.

Pure math on tensors (float64); the caller supplies the random generator and the clearance function.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from splatsim.conventions import euler_xyz_to_rotmat, look_at

__all__ = [
    "START_POSE_FILTERS",
    "angle_at_object",
    "jittered_look_at",
    "line_of_sight_clear",
    "sample_start_candidates",
    "sphere_positions",
]

START_POSE_FILTERS = ("eq4_alpha_min", "min_height", "eq14_d_min", "line_of_sight", "eq6_theta_max")
"""Names of the start-pose filters, in the order they are applied (the keys of the reject counts)."""


def sphere_positions(
    center: Tensor,  # [3]
    radius: float,
    directions: Tensor,  # [n, 3] any non-zero vectors (e.g. standard normal draws)
) -> Tensor:  # [n, 3]
    """Eq. 3: ``center + radius * directions / |directions|``, uniform on the sphere for normal draws."""
    unit = directions / torch.linalg.vector_norm(directions, dim=-1, keepdim=True)
    return center + radius * unit


def angle_at_object(
    object_center: Tensor,  # [3]
    hand_center: Tensor,  # [3]
    positions: Tensor,  # [n, 3]
) -> Tensor:  # [n] radians in [0, pi]
    """Eq. 4's angle at the object centre between the hand centre and each position (atan2 form)."""
    a = (hand_center - object_center).expand_as(positions)
    b = positions - object_center
    cross = torch.linalg.vector_norm(torch.linalg.cross(a, b), dim=-1)
    return torch.atan2(cross, (a * b).sum(-1))


def line_of_sight_clear(
    positions: Tensor,  # [n, 3]
    target: Tensor,  # [3]
    background_distance: Callable[[Tensor], Tensor],  # points [m, 3] -> distance to the background [m]
    clearance: float,
    spacing: float = 0.01,
) -> Tensor:  # [n] bool
    """Whether the segment from each position to ``target`` keeps more than ``clearance`` from the
    background, checked at points ``spacing`` apart (and both ends)."""
    positions = positions.to(torch.float64)
    target = target.to(torch.float64)
    if len(positions) == 0:
        return torch.zeros(0, dtype=torch.bool)
    length = float(torch.linalg.vector_norm(positions - target, dim=-1).max())
    m = max(2, int(math.ceil(length / spacing)) + 1)
    t = torch.linspace(0.0, 1.0, m, dtype=torch.float64)
    pts = positions[:, None, :] + t[None, :, None] * (target - positions)[:, None, :]  # [n, m, 3]
    d = torch.as_tensor(background_distance(pts.reshape(-1, 3)), dtype=torch.float64).reshape(
        len(positions), m
    )
    return d.amin(-1) > clearance


def jittered_look_at(
    positions: Tensor,  # [n, 3]
    target: Tensor,  # [3]
    theta_x: Tensor,  # [n] radians, about the camera's own x axis
    theta_y: Tensor,  # [n] radians, about the camera's own y axis
    up: Tensor | Sequence[float],  # [3] world up (image up)
) -> Tensor:  # [n, 4, 4] c2w
    """Eq. 5: look at ``target``, then ``R = R_look @ Rx(theta_x) @ Ry(theta_y)``."""
    T = look_at(positions, target.expand_as(positions), up)
    zeros = torch.zeros_like(theta_x)
    Rx = euler_xyz_to_rotmat(torch.stack([theta_x, zeros, zeros], -1))
    Ry = euler_xyz_to_rotmat(torch.stack([zeros, theta_y, zeros], -1))
    T[:, :3, :3] = T[:, :3, :3] @ Rx @ Ry
    return T


def sample_start_candidates(
    grasp_pose: Tensor,  # [4, 4] grasp frame in the scene (approach +z)
    object_center: Tensor,  # [3]
    hand_center: Tensor,  # [3]
    min_clearance: Callable[[Tensor], Tensor],  # positions [n, 3] -> distance to P_o u P_h [n]
    rng: np.random.Generator,
    *,
    num: int,
    radius: float,
    alpha_min: float,
    jitter: float,
    theta_max: float,
    d_min: float,
    up: Sequence[float],
    min_height: float | None = None,
    background_distance: Callable[[Tensor], Tensor] | None = None,
    sight_clearance: float = 0.0,
) -> tuple[Tensor, dict[str, int]]:  # poses [m, 4, 4] (m <= num) that pass every filter, reject counts
    """Draws ``num`` candidates and keeps those passing Eq. 4, ``min_height``, Eq. 14, the line of sight
    (with ``background_distance`` and ``sight_clearance > 0``; off otherwise) and Eq. 6.

    Angles are radians. The generator is advanced by the same amount whatever the outcome (three
    normal and two uniform draws per candidate), so a block's result depends only on the generator state.
    """
    dtype = torch.float64
    grasp_pose = grasp_pose.to(dtype)
    object_center = object_center.to(dtype)
    hand_center = hand_center.to(dtype)
    up_t = torch.as_tensor(up, dtype=dtype)
    directions = torch.from_numpy(rng.standard_normal((num, 3)))
    jitters = torch.from_numpy(rng.uniform(-jitter, jitter, (num, 2)))
    counts = dict.fromkeys(START_POSE_FILTERS, 0)

    positions = sphere_positions(grasp_pose[:3, 3], radius, directions)
    keep = torch.ones(num, dtype=torch.bool)

    def reject(name: str, ok: Tensor) -> None:
        counts[name] += int((keep & ~ok).sum())
        keep.logical_and_(ok)

    reject("eq4_alpha_min", angle_at_object(object_center, hand_center, positions) > alpha_min)
    if min_height is not None:
        unit_up = up_t / torch.linalg.vector_norm(up_t)
        reject("min_height", positions @ unit_up >= min_height)
    if bool(keep.any()):
        clearance = torch.full((num,), math.inf, dtype=dtype)
        clearance[keep] = min_clearance(positions[keep]).to(dtype)
        reject("eq14_d_min", clearance > d_min)
    if background_distance is not None and sight_clearance > 0 and bool(keep.any()):
        sight = torch.ones(num, dtype=torch.bool)
        sight[keep] = line_of_sight_clear(
            positions[keep], object_center, background_distance, sight_clearance
        )
        reject("line_of_sight", sight)
    poses = jittered_look_at(positions, object_center, jitters[:, 0], jitters[:, 1], up_t)
    z_f = grasp_pose[:3, 2]
    reject("eq6_theta_max", poses[:, :3, 2] @ z_f >= math.cos(theta_max))
    return poses[keep], counts
