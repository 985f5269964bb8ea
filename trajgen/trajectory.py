"""Three-phase hand-eye trajectories from a start pose to the pre-grasp pose (paper Eq. 7-13).

- Eq. 7: the pre-grasp pose has the grasp's rotation and the position ``T_GS - s * n``, ``n`` the
  grasp's approach axis (its +z column).
- Phase 1: rotate in place (SLERP) until the viewing axis points at the object centre, by the smallest
  rotation (the roll about the viewing axis is kept), in steps of at most ``rotation_step``.
- Phase 2 (Eq. 8-9): translate in a straight line toward the pre-grasp position, rotation fixed, in steps
  of exactly ``translation_step``, until the distance to the pre-grasp position is below ``d``. No step
  is taken when it starts within ``d``. With ``phase2_aim`` (not in the paper; `PlanConfig.phase2_aim`)
  each phase-2 step also turns the camera, by the smallest rotation and at most ``rotation_step``, to face
  the object from its new position, so the object stays at the image centre the whole way: every
  demonstrated view with the object off-centre is then one that turns to re-centre it (phases 1 and 3,
  recovery samples), not one that keeps going straight (the paper's phase 2).
- Phase 3 (Eq. 10-13): translate linearly to the pre-grasp position over ``n3`` equal steps,
  ``tau = j / n3``, and SLERP the rotation to the pre-grasp rotation. Before each step, if the angle
  between the current viewing axis and the direction to the object exceeds ``phi``, the SLERP's start
  rotation is re-aimed at the object from the step's position (Eq. 12): ``R_update`` is the rotation
  facing the object that is closest to ``R_pre`` (the smallest turn of ``R_pre``), so that the SLERP
  ``SLERP(R_update, R_pre, tau)`` (Eq. 13), the step's target rotation, only swings the viewing axis
  between the object and the approach direction and never twists it away from both.
  Because the paper's phase 2 does not turn, the object is off-centre when phase 3 starts; so that no step turns
  by more than ``rotation_step``, a step whose target is farther than that turns ``rotation_step``
  toward it (the camera catches up over the next steps). ``n3`` is the smallest count (from the
  distance and angle left, grown until the schedule fits) for which no step translates more than
  ``translation_step`` nor rotates more than ``rotation_step`` and the last step lands exactly on the
  pre-grasp pose.
- The final approach (not in the paper; off unless ``final_distance > 0``, `PlanConfig`'s
  ``final_approach_distance``): phase 3 covers its last ``final_distance`` metres in equal steps of at
  most ``final_step``, the rest in equal steps of at most ``translation_step``, on the same straight
  line; ``tau`` is then the fraction of the distance covered. The camera slows down where the policy has
  to decide to stop.

Steps are indexed 0..T-1; step 0 is the start pose. ``phase[t]`` is 1, 2 or 3 (step 0 counts as phase
1); ``cls[t]`` is 1 at the last step (the pre-grasp pose) only. Actions follow
`splatsim.conventions.pose_to_action`: ``actions[t]`` moves pose ``t`` to pose ``t + 1``; the last
step's action is zero (stay).

All poses are float64 4x4 gripper-to-world transforms in the scene frame. Angles are radians.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.spatial.transform import Rotation
from torch import Tensor

from splatsim.conventions import angle_between_rotations, interpolate_pose, pose_to_action, se3_from_rt

__all__ = [
    "Trajectory",
    "expert_step",
    "face_target_rotation",
    "plan_phase3",
    "plan_three_phase",
    "pregrasp_pose",
    "trajectory_actions",
]

_MAX_REFINE = 50
"""Phase 3 grows its step count at most this many times to meet the rotation step (an invariant)."""


@dataclass
class Trajectory:
    """One planned trajectory (see the module docstring for the conventions)."""

    poses: Tensor  # [T, 4, 4] float64 gripper-to-world
    phase: Tensor  # [T] uint8 in {1, 2, 3}
    cls: Tensor  # [T] uint8, 1 at the last step only
    t1: int
    """Index of the last phase-1 step (0 when the start already faces the object)."""
    t2: int
    """Index of the last phase-2 step (``t1`` when phase 2 takes no step)."""
    recovery: Any = None
    """`trajgen.recovery.RecoverySamples` to render with the trajectory, when planned with recovery."""

    @property
    def num_steps(self) -> int:
        return int(self.poses.shape[0])


def pregrasp_pose(
    grasp_pose: Tensor,  # [..., 4, 4] grasp frame, approach +z
    s: float,
) -> Tensor:  # [..., 4, 4]
    """Eq. 7: the grasp's rotation at ``T_GS - s * n``, ``n`` the approach axis."""
    out = grasp_pose.clone()
    out[..., :3, 3] = grasp_pose[..., :3, 3] - s * grasp_pose[..., :3, 2]
    return out


def _axis_angle_rotmat(axis: Tensor, angle: Tensor) -> Tensor:
    """Rodrigues: rotation about the unit ``axis`` [..., 3] by ``angle`` [...]."""
    x, y, z = axis.unbind(-1)
    zero = torch.zeros_like(x)
    K = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).unflatten(-1, (3, 3))
    s, c = torch.sin(angle)[..., None, None], torch.cos(angle)[..., None, None]
    eye = torch.eye(3, dtype=axis.dtype, device=axis.device)
    return eye + s * K + (1 - c) * (K @ K)


def face_target_rotation(
    R: Tensor,  # [..., 3, 3] current rotation
    position: Tensor,  # [..., 3]
    target: Tensor,  # [..., 3]
) -> Tensor:  # [..., 3, 3]
    """The smallest rotation of ``R`` that makes its viewing axis (+z) point from ``position`` at ``target``.

    Where the viewing axis points exactly away from the target, the turn is about the camera's x axis.
    """
    z = R[..., :, 2]
    d = target - position
    d = d / torch.linalg.vector_norm(d, dim=-1, keepdim=True)
    cross = torch.linalg.cross(z, d)
    sin = torch.linalg.vector_norm(cross, dim=-1)
    cos = (z * d).sum(-1)
    angle = torch.atan2(sin, cos)
    axis = torch.where((sin > 1e-12)[..., None], cross / sin.clamp_min(1e-300)[..., None], R[..., :, 0])
    return _axis_angle_rotmat(axis, angle) @ R


def _view_angle(R: Tensor, position: Tensor, target: Tensor) -> float:
    d = target - position
    cos = float((R[:, 2] @ d) / torch.linalg.vector_norm(d))
    return math.acos(max(-1.0, min(1.0, cos)))


def plan_three_phase(
    start_pose: Tensor,  # [4, 4]
    pregrasp: Tensor,  # [4, 4]
    target: Tensor,  # [3] the object centre the camera faces
    *,
    d: float,
    phi: float,
    translation_step: float,
    rotation_step: float,
    final_distance: float = 0.0,
    final_step: float | None = None,
    phase2_aim: bool = False,
) -> Trajectory:
    """Plans the three phases from ``start_pose`` to ``pregrasp`` (module docstring; radians, metres)."""
    if not (translation_step > 0 and rotation_step > 0):
        raise ValueError(
            f"translation_step = {translation_step} m and rotation_step = {rotation_step} rad must be positive"
        )
    dtype = torch.float64
    start_pose, pregrasp, target = start_pose.to(dtype), pregrasp.to(dtype), target.to(dtype)
    poses: list[Tensor] = [start_pose[None]]
    phases: list[int] = [1]

    # Phase 1: turn in place to face the object.
    R_face = face_target_rotation(start_pose[:3, :3], start_pose[:3, 3], target)
    T_face = se3_from_rt(R_face, start_pose[:3, 3])
    angle = float(angle_between_rotations(start_pose[:3, :3], R_face))
    n1 = math.ceil(angle / rotation_step - 1e-9) if angle > 1e-12 else 0
    if n1 > 0:
        tau = torch.arange(1, n1 + 1, dtype=dtype) / n1
        poses.append(interpolate_pose(start_pose, T_face, tau))
        poses[-1][-1] = T_face
        phases += [1] * n1
    t1 = n1
    T1 = poses[-1][-1]

    # Phase 2: straight toward the pre-grasp position, rotation fixed, until closer than d (Eq. 8-9).
    p1, p_pre = T1[:3, 3], pregrasp[:3, 3]
    dist = float(torch.linalg.vector_norm(p_pre - p1))
    n2 = math.floor((dist - d) / translation_step) + 1 if dist >= d else 0
    if n2 > 0:
        u = (p_pre - p1) / dist
        steps = torch.arange(1, n2 + 1, dtype=dtype)[:, None] * translation_step
        positions = p1 + steps * u
        if phase2_aim:
            rotations = _aimed_rotations(T1[:3, :3], positions, target, rotation_step)
        else:
            rotations = T1[:3, :3].expand(n2, 3, 3)
        poses.append(se3_from_rt(rotations, positions))
        phases += [2] * n2
    t2 = t1 + n2
    T2 = poses[-1][-1]

    # Phase 3: linear position + SLERP rotation, re-aimed at the object when off by more than phi.
    phase3 = plan_phase3(
        T2,
        pregrasp,
        target,
        phi=phi,
        translation_step=translation_step,
        rotation_step=rotation_step,
        final_distance=final_distance,
        final_step=final_step,
    )
    n3 = phase3.shape[0]
    poses.append(phase3)
    phases += [3] * n3

    all_poses = torch.cat(poses)
    T = all_poses.shape[0]
    cls = torch.zeros(T, dtype=torch.uint8)
    cls[-1] = 1
    return Trajectory(all_poses, torch.tensor(phases, dtype=torch.uint8), cls, t1, t2)


def plan_phase3(
    T2: Tensor,  # [4, 4] where phase 3 starts
    pregrasp: Tensor,  # [4, 4]
    target: Tensor,  # [3]
    *,
    phi: float,
    translation_step: float,
    rotation_step: float,
    final_distance: float = 0.0,
    final_step: float | None = None,
) -> Tensor:  # [n3, 4, 4] the phase-3 poses after T2; the last is exactly ``pregrasp``
    """Phase 3 (Eq. 10-13) from ``T2``: the fewest steps that meet both step limits.

    With ``final_distance > 0`` (the final approach, not in the paper) the last ``final_distance``
    metres before the pre-grasp position are covered in equal steps of at most ``final_step`` and the
    rest in equal steps of at most ``translation_step``; ``tau`` (Eq. 10, 13) is the fraction of the
    distance covered. ``final_distance = 0`` is the paper's ``tau = j / n3``.
    """
    dtype = torch.float64
    T2, pregrasp, target = T2.to(dtype), pregrasp.to(dtype), target.to(dtype)
    dist3 = float(torch.linalg.vector_norm(pregrasp[:3, 3] - T2[:3, 3]))
    rot3 = float(angle_between_rotations(T2[:3, :3], pregrasp[:3, :3]))
    n_rot = math.ceil(rot3 / rotation_step - 1e-9)
    near = min(dist3, final_distance) if final_distance > 0 else 0.0  # the final approach's length
    far = dist3 - near
    fstep = translation_step if final_step is None else min(final_step, translation_step)
    n_far = math.ceil(far / translation_step - 1e-9) if far > 1e-12 else 0
    n_near = math.ceil(near / fstep - 1e-9) if near > 1e-12 else 0
    grow_far = n_far > 0 or n_near == 0  # which part takes the extra steps the rotation needs
    if n_far + n_near < max(1, n_rot):
        if grow_far:
            n_far = max(1, n_rot) - n_near
        else:
            n_near = max(1, n_rot)

    def schedule() -> np.ndarray:  # tau of every step, increasing to 1
        if n_near == 0:
            return np.arange(1, n_far + 1) / n_far  # the paper's j / n3 (also when nothing translates)
        cum = np.concatenate(
            [np.arange(1, n_far + 1) / n_far * far, far + np.arange(1, n_near + 1) / n_near * near]
        )
        return cum / dist3

    for _ in range(_MAX_REFINE):
        phase3, gap = _phase3(T2, pregrasp, target, schedule(), phi, rotation_step)
        if gap <= rotation_step * (1 + 1e-9):
            break
        if grow_far:
            n_far += math.ceil(gap / rotation_step) + 1
        else:
            n_near += math.ceil(gap / rotation_step) + 1
    else:
        raise RuntimeError(f"phase 3 did not reach the pre-grasp rotation within {n_far + n_near} steps")
    phase3[-1] = pregrasp
    return phase3


def expert_step(
    pose: Tensor,  # [4, 4] gripper pose, e.g. a perturbed waypoint
    pregrasp: Tensor,  # [4, 4]
    target: Tensor,  # [3] the object centre the camera faces
    phase: int,
    *,
    d: float,
    phi: float,
    translation_step: float,
    rotation_step: float,
    final_distance: float = 0.0,
    final_step: float | None = None,
    phase2_aim: bool = False,
) -> Tensor:  # [4, 4] the next pose
    """The planner's next pose from ``pose`` when it is in ``phase`` (1, 2 or 3): the expert action of
    recovery samples (`trajgen.recovery`).

    - Phase 3, or any pose closer than ``d`` to the pre-grasp position (where the planner is in phase 3):
      the first step of phase 3 planned from ``pose`` (`plan_phase3`: straight to the pre-grasp
      position, SLERP toward its rotation re-aimed at the object); from a pose beyond the pre-grasp
      (nearer the object) that is a step back.
    - Phase 2 (farther than ``d``): a ``translation_step`` straight toward the pre-grasp position, the
      rotation kept (Eq. 8-9); with ``phase2_aim``, turned (at most ``rotation_step``) to face the object
      from the new position.
    - Phase 1: the first step of the whole plan from ``pose`` (`plan_three_phase`: turn to face the
      object, or the phase-2 step when it already does).

    At the pre-grasp pose itself the next pose is the pose (stay).
    """
    if phase not in (1, 2, 3):
        raise ValueError(f"expert_step: phase = {phase!r}; expected 1, 2 or 3")
    dtype = torch.float64
    pose, pregrasp, target = pose.to(dtype), pregrasp.to(dtype), target.to(dtype)
    offset = pregrasp[:3, 3] - pose[:3, 3]
    dist = float(torch.linalg.vector_norm(offset))
    if dist < 1e-9 and float(angle_between_rotations(pose[:3, :3], pregrasp[:3, :3])) < 1e-9:
        return pose.clone()
    final = {"final_distance": final_distance, "final_step": final_step}
    if phase == 3 or dist < d:
        return plan_phase3(
            pose,
            pregrasp,
            target,
            phi=phi,
            translation_step=translation_step,
            rotation_step=rotation_step,
            **final,
        )[0]
    if phase == 2:
        out = pose.clone()
        out[:3, 3] = pose[:3, 3] + offset * (translation_step / dist)
        if phase2_aim:
            out[:3, :3] = _aimed_rotations(pose[:3, :3], out[None, :3, 3], target, rotation_step)[0]
        return out
    traj = plan_three_phase(
        pose,
        pregrasp,
        target,
        d=d,
        phi=phi,
        translation_step=translation_step,
        rotation_step=rotation_step,
        phase2_aim=phase2_aim,
        **final,
    )
    return traj.poses[1] if traj.num_steps > 1 else pose.clone()


def _aimed_rotations(
    R0: Tensor,  # [3, 3] the rotation before the first position
    positions: Tensor,  # [n, 3]
    target: Tensor,  # [3]
    rotation_step: float,
) -> Tensor:  # [n, 3, 3]
    """Phase 2 with ``phase2_aim``: at each position the smallest turn of the previous rotation that faces
    ``target``, at most ``rotation_step`` (beyond it the camera turns ``rotation_step`` toward it)."""
    R_prev = R0.detach().cpu().numpy().astype(np.float64)
    target_np = target.detach().cpu().numpy().astype(np.float64)
    out = np.empty((len(positions), 3, 3))
    for i, p in enumerate(positions.detach().cpu().numpy().astype(np.float64)):
        R_prev, _ = _np_turn_toward(R_prev, _np_face_target(R_prev, p, target_np), rotation_step)
        out[i] = R_prev
    return torch.from_numpy(out).to(positions.dtype)


def _phase3(
    T2: Tensor, pregrasp: Tensor, target: Tensor, taus: np.ndarray, phi: float, rotation_step: float
) -> tuple[Tensor, float]:
    """Phase-3 poses [n3, 4, 4] at ``taus`` (increasing, the last 1) and the angle the last step still has
    to turn to reach ``R_pre``.

    A sequential loop of 3x3 operations: numpy/scipy here, where torch's per-call overhead dominates.
    """
    T2_np, pre_np, target_np = (x.detach().cpu().numpy().astype(np.float64) for x in (T2, pregrasp, target))
    p2, p_pre = T2_np[:3, 3], pre_np[:3, 3]
    R_pre = pre_np[:3, :3]
    R_anchor = T2_np[:3, :3]
    R_prev, p_prev = R_anchor, p2
    n3 = len(taus)
    out = np.tile(np.eye(4), (n3, 1, 1))
    gap = 0.0
    for j in range(1, n3 + 1):
        tau = float(taus[j - 1])
        p = p2 + tau * (p_pre - p2)
        if _np_view_angle(R_prev, p_prev, target_np) > phi:  # Eq. 12
            R_anchor = _np_face_target(R_pre, p, target_np)
        R_want = _np_slerp(R_anchor, R_pre, tau) if j < n3 else R_pre  # Eq. 13
        R_j, turn = _np_turn_toward(R_prev, R_want, rotation_step)
        if j == n3:
            gap = turn
        out[j - 1, :3, :3], out[j - 1, :3, 3] = R_j, p
        R_prev, p_prev = R_j, p
    return torch.from_numpy(out).to(T2.dtype), gap


def _np_turn_toward(R: np.ndarray, R_want: np.ndarray, max_turn: float) -> tuple[np.ndarray, float]:
    """``R_want``, or ``R`` turned ``max_turn`` toward it (SLERP) when it is farther; and the whole turn."""
    turn = _np_angle(R, R_want)
    return (_np_slerp(R, R_want, max_turn / turn) if turn > max_turn else R_want), turn


def _np_view_angle(R: np.ndarray, position: np.ndarray, target: np.ndarray) -> float:
    d = target - position
    return math.atan2(float(np.linalg.norm(np.cross(R[:, 2], d))), float(R[:, 2] @ d))


def _np_face_target(R: np.ndarray, position: np.ndarray, target: np.ndarray) -> np.ndarray:
    z = R[:, 2]
    d = (target - position) / np.linalg.norm(target - position)
    cross = np.cross(z, d)
    sin = float(np.linalg.norm(cross))
    angle = math.atan2(sin, float(z @ d))
    axis = cross / sin if sin > 1e-12 else R[:, 0]
    return Rotation.from_rotvec(angle * axis).as_matrix() @ R


def _np_angle(R0: np.ndarray, R1: np.ndarray) -> float:
    M = R0.T @ R1
    sin = 0.5 * math.sqrt((M[2, 1] - M[1, 2]) ** 2 + (M[0, 2] - M[2, 0]) ** 2 + (M[1, 0] - M[0, 1]) ** 2)
    return math.atan2(sin, 0.5 * (M[0, 0] + M[1, 1] + M[2, 2] - 1.0))


def _np_slerp(R0: np.ndarray, R1: np.ndarray, t: float) -> np.ndarray:
    """Geodesic interpolation ``R0 exp(t log(R0^T R1))`` (shortest arc), as `interpolate_pose`."""
    return R0 @ Rotation.from_rotvec(t * Rotation.from_matrix(R0.T @ R1).as_rotvec()).as_matrix()


def trajectory_actions(
    poses: Tensor,  # [T, 4, 4]
) -> Tensor:  # [T, 6] (euler xyz, translation); the last row is zero
    """``actions[t] = pose_to_action(poses[t], poses[t + 1])``; zero (stay) at the last step."""
    actions = torch.zeros(poses.shape[0], 6, dtype=poses.dtype)
    if poses.shape[0] > 1:
        actions[:-1] = pose_to_action(poses[:-1], poses[1:])
    return actions
