"""The splat as a robot: `SplatRobot` moves a virtual gripper, `SplatCamera` renders its hand-eye view.

The closed-loop evaluation drives these through `policy.robot.run_control_loop` exactly as the real
robot would be driven, with the exported ONNX model, so the whole robot-side path is exercised.

Time is simulated: each motion takes ``max(translation / speed, rotation / angular_speed)`` plus
``step_overhead_s`` (perception and inference on the real system), so the reported time to pre-grasp
is comparable across machines and with the paper's seconds, and the 30 s timeout acts on it.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial.transform import Rotation

from policy.env import SplatEnv
from policy.robot import Camera, Frame, Robot

__all__ = ["SplatCamera", "SplatRobot"]


class SplatRobot(Robot):
    """A virtual gripper in a splat scene (poses in the scene frame)."""

    def __init__(
        self,
        start_pose: np.ndarray,
        *,
        angular_speed_deg: float = 30.0,
        step_overhead_s: float = 0.1,
    ) -> None:
        pose = np.asarray(start_pose, dtype=np.float64)
        if pose.shape != (4, 4) or not np.isfinite(pose).all():
            raise ValueError(f"SplatRobot: start_pose must be a finite 4x4 matrix, got shape {pose.shape}")
        self.pose = pose.copy()
        self.angular_speed = math.radians(angular_speed_deg)
        self.step_overhead_s = float(step_overhead_s)
        self.time_s = 0.0
        self.stopped = False
        self.gripper_closed = False
        self.moves = 0

    def clock(self) -> float:
        """Simulated seconds since the start."""
        return self.time_s

    def current_pose(self) -> np.ndarray:
        return self.pose.copy()

    def move_relative(self, rel: np.ndarray, speed: float, acceleration: float) -> None:
        rel = np.asarray(rel, dtype=np.float64)
        if rel.shape != (4, 4) or not np.isfinite(rel).all():
            raise ValueError(f"SplatRobot.move_relative: rel must be a finite 4x4 matrix, got {rel.shape}")
        self.stopped = False
        dist = float(np.linalg.norm(rel[:3, 3]))
        angle = float(np.linalg.norm(Rotation.from_matrix(rel[:3, :3]).as_rotvec()))
        self.time_s += max(dist / speed, angle / self.angular_speed) + self.step_overhead_s
        self.pose = self.pose @ rel
        self.moves += 1

    def close_gripper(self) -> None:
        self.gripper_closed = True

    def stop(self) -> None:
        self.stopped = True


class SplatCamera(Camera):
    """Renders the hand-eye view (RGB and label mask, and with ``depth`` the depth as uint16 millimetres,
    as the demonstrations store it) at the robot's current gripper pose."""

    def __init__(self, env: SplatEnv, robot: SplatRobot, *, depth: bool = False) -> None:
        self.env = env
        self.robot = robot
        self.intrinsics = env.intrinsics
        self.depth = bool(depth)

    def read(self) -> Frame:
        out = self.env.render(self.robot.current_pose(), with_depth=self.depth)
        rgb, mask = out[0], out[1]
        return Frame(rgb[0], mask[0], self.robot.clock(), out[2][0] if self.depth else None)
