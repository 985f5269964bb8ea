"""A Universal Robots arm through ur_rtde (``pip install splatsim[robot]``; import-guarded).

ur_rtde's poses are ``[x, y, z, rx, ry, rz]``: the TCP position in the base frame (metres) and its
orientation as a rotation vector (axis * angle, radians). `URRobot` converts them to and from the
project's 4x4 gripper-to-base matrices and moves with ``moveL`` (linear in tool space, blocking).

Set the robot's TCP to the gripper frame of the policy (ARCHITECTURE.md's grasp frame: origin at the
gripper base, +z the approach axis, +x the finger-closing axis); the hand-eye camera's mount is a
property of the policy's training camera, not of this class.

Safety here, on top of `policy.robot.run_control_loop`'s: speed and acceleration are checked against
hard limits, every target is checked against the workspace box before ``moveL`` (refused, not
clipped: the loop clips, so a target outside is a bug), and `stop` decelerates with ``stopL`` and
never raises.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from policy.robot import Robot

__all__ = ["MAX_ACCELERATION", "MAX_SPEED", "URRobot", "matrix_to_ur_pose", "ur_pose_to_matrix"]

MAX_SPEED = 0.25
"""Hard limit on the linear TCP speed this adapter ever asks for, m/s."""
MAX_ACCELERATION = 1.2
"""Hard limit on the linear TCP acceleration, m/s^2."""


def ur_pose_to_matrix(pose: Any) -> np.ndarray:  # [x, y, z, rx, ry, rz] -> [4, 4]
    p = np.asarray(pose, dtype=np.float64).reshape(-1)
    if p.shape != (6,) or not np.isfinite(p).all():
        raise ValueError(f"a UR pose must be 6 finite numbers [x, y, z, rx, ry, rz], got {list(p)}")
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(p[3:]).as_matrix()
    T[:3, 3] = p[:3]
    return T


def matrix_to_ur_pose(T: np.ndarray) -> list[float]:  # [4, 4] -> [x, y, z, rx, ry, rz]
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4) or not np.isfinite(T).all():
        raise ValueError(f"expected a finite 4x4 pose, got shape {T.shape}")
    rv = Rotation.from_matrix(T[:3, :3]).as_rotvec()
    return [float(v) for v in (*T[:3, 3], *rv)]


class URRobot(Robot):
    """`policy.robot.Robot` on ur_rtde's ``RTDEControlInterface`` / ``RTDEReceiveInterface``.

    Args:
        host: The robot's IP address (ignored when ``control`` and ``receive`` are given).
        control: An ``RTDEControlInterface`` (or a stand-in with ``moveL`` and ``stopL``).
        receive: An ``RTDEReceiveInterface`` (or a stand-in with ``getActualTCPPose``).
        close_gripper_fn: Closes the gripper (e.g. a Robotiq driver's ``move_and_wait_for_pos``).
        workspace_min, workspace_max: The box (base frame, metres) no target may leave.
    """

    def __init__(
        self,
        host: str | None = None,
        *,
        control: Any = None,
        receive: Any = None,
        close_gripper_fn: Callable[[], None] | None = None,
        workspace_min: tuple[float, float, float] = (-1.0, -1.0, -1.0),
        workspace_max: tuple[float, float, float] = (1.0, 1.0, 1.0),
    ) -> None:
        if control is None or receive is None:
            if host is None:
                raise ValueError(
                    "URRobot: give the robot's host (IP address), or control and receive interfaces"
                )
            try:
                import rtde_control
                import rtde_receive
            except ImportError as exc:
                raise ImportError(
                    "URRobot needs ur_rtde: pip install 'splatsim[robot]' (or pip install ur_rtde)"
                ) from exc
            control = control or rtde_control.RTDEControlInterface(host)
            receive = receive or rtde_receive.RTDEReceiveInterface(host)
        self.control = control
        self.receive = receive
        self.close_gripper_fn = close_gripper_fn
        self.workspace_min = np.asarray(workspace_min, dtype=np.float64)
        self.workspace_max = np.asarray(workspace_max, dtype=np.float64)
        if (self.workspace_min >= self.workspace_max).any():
            raise ValueError(
                f"URRobot: workspace_min {workspace_min} must be below workspace_max {workspace_max}"
            )

    def current_pose(self) -> np.ndarray:
        return ur_pose_to_matrix(self.receive.getActualTCPPose())

    def move_relative(self, rel: np.ndarray, speed: float, acceleration: float) -> None:
        if not 0 < speed <= MAX_SPEED:
            raise ValueError(f"URRobot: speed {speed} m/s outside (0, {MAX_SPEED}]")
        if not 0 < acceleration <= MAX_ACCELERATION:
            raise ValueError(f"URRobot: acceleration {acceleration} m/s^2 outside (0, {MAX_ACCELERATION}]")
        rel = np.asarray(rel, dtype=np.float64)
        target = self.current_pose() @ rel
        p = target[:3, 3]
        if (p < self.workspace_min - 1e-9).any() or (p > self.workspace_max + 1e-9).any():
            raise ValueError(
                f"URRobot: target position {p.round(4).tolist()} leaves the workspace box "
                f"[{self.workspace_min.tolist()}, {self.workspace_max.tolist()}]; refusing to move"
            )
        ok = self.control.moveL(matrix_to_ur_pose(target), float(speed), float(acceleration))
        if ok is False:
            raise RuntimeError(
                "URRobot: moveL was rejected by the controller (protective stop? out of reach?)"
            )

    def close_gripper(self) -> None:
        if self.close_gripper_fn is None:
            raise RuntimeError("URRobot: no gripper driver given (close_gripper_fn)")
        self.close_gripper_fn()

    def stop(self) -> None:
        try:
            self.control.stopL(0.5)
        except Exception:  # stopping must never raise: it runs in `finally`
            pass
