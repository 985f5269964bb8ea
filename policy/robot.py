"""The robot side: `Robot` and `Camera` interfaces and the safety-boxed control loop that runs a policy.

`run_control_loop(policy, robot, camera, cfg)` repeats: read a frame, build the network input
(`policy.data.make_policy_input`), predict ``(action, C)``; stop when ``C >= tau_c`` (Eq. 16), else
move the gripper by the action. Every motion goes through `limit_motion` first:

- speed limits: a step translates at most ``max_step_translation`` and rotates at most
  ``max_step_rotation_deg`` (the action is scaled down, direction kept), and the robot is asked to
  move at ``speed`` / ``acceleration``;
- a workspace box: the target position is clipped into ``[workspace_min, workspace_max]`` (robot base
  frame);

and the loop ends after ``max_steps`` motions or ``timeout_s`` seconds (the paper's 30 steps in the
splat, 30 s on the robot). ``robot.stop()`` runs in ``finally``: on success, timeout, an exception or
Ctrl-C alike.

Frames: poses are 4x4 gripper (TCP) to robot-base transforms, the gripper frame being the grasp frame
(approach +z); actions are `splatsim.conventions` relative motions ``T_next = T_cur @ rel``.
Implementations: `policy.robot_splat` (the splat), `policy.robot_ur` (ur_rtde),
`policy.camera_realsense` (pyrealsense2).
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from scipy.spatial.transform import Rotation

from policy.data import make_policy_input
from splatsim.conventions import PinholeIntrinsics

__all__ = [
    "Camera",
    "ControlConfig",
    "ControlResult",
    "Frame",
    "PolicyFn",
    "Robot",
    "Segmenter",
    "limit_motion",
    "run_control_loop",
]


@dataclass
class Frame:
    """One camera frame at the policy's resolution."""

    rgb: np.ndarray  # [H, W, 3] uint8
    mask: np.ndarray | None = None  # [H, W] uint8 labels (0 background, 1 object, 2 hand), if known
    timestamp: float = 0.0
    depth: np.ndarray | None = None
    """[H, W] depth aligned to ``rgb`` along the camera z axis: float metres, or uint16 millimetres (0: no
    depth); needed by a policy with a depth channel (`ControlConfig.depth`)."""


class Robot(ABC):
    """A 6-DoF arm with a parallel gripper, commanded in relative gripper motions."""

    @abstractmethod
    def current_pose(self) -> np.ndarray:  # [4, 4] gripper-to-base
        """The gripper (TCP) pose in the robot's base frame."""

    @abstractmethod
    def move_relative(self, rel: np.ndarray, speed: float, acceleration: float) -> None:
        """Moves linearly to ``current_pose() @ rel`` (rel [4, 4]) at ``speed`` m/s; returns when there."""

    @abstractmethod
    def close_gripper(self) -> None:
        """Closes the gripper."""

    @abstractmethod
    def stop(self) -> None:
        """Stops any motion now (safe to call at any time, more than once)."""


class Camera(ABC):
    """The hand-eye camera, delivering frames at the policy's resolution and intrinsics."""

    intrinsics: PinholeIntrinsics

    @abstractmethod
    def read(self) -> Frame:
        """The latest frame."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Releases the device."""


class Segmenter(Protocol):
    """Hand and object masks for a real image (the paper: a hand-object detector, FastSAM, FrankMocap)."""

    def __call__(self, rgb: np.ndarray) -> np.ndarray:  # [H, W, 3] uint8 -> [H, W] uint8 labels
        ...


class PolicyFn(Protocol):
    """A policy: network input [1, 5, H, W] ([1, 6, H, W] with depth) float32 -> (action [6], score C in [0, 1])."""

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, float]: ...


@dataclass
class ControlConfig:
    """The control loop's stop rule and safety limits."""

    tau_c: float = 0.7
    """Stop when the pre-grasp score reaches this (Eq. 16): 0.7 in the splat, 0.6 on the real robot."""
    max_steps: int = 30
    """Most motions (the paper's 30 steps in the splat)."""
    timeout_s: float = 30.0
    """Give up after this long (the paper's 30 s on the robot)."""
    max_step_translation: float = 0.05
    """Largest translation per step, metres (the demonstrations step 0.03 m)."""
    max_step_rotation_deg: float = 10.0
    """Largest rotation per step, degrees (the demonstrations step 5 degrees)."""
    speed: float = 0.1
    """Linear speed asked of the robot, m/s."""
    acceleration: float = 0.3
    """Linear acceleration asked of the robot, m/s^2."""
    workspace_min: tuple[float, float, float] = (-1.0, -1.0, -1.0)
    """Workspace box, lower corner in the robot base frame (metres); targets are clipped into it."""
    workspace_max: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Workspace box, upper corner (metres)."""
    depth: bool = False
    """The policy takes a depth channel (`policy.model.ModelConfig.depth`; an exported model's metadata
    lists ``depth`` among its channels): every frame must carry ``depth``, or the loop stops with an error."""
    lost_object_frames: int = 0
    """Stop (reason 'object_lost') after this many frames in a row without one object pixel (0 = off,
    the splat evaluation's protocol). A policy that has lost the object has nothing to steer by and
    wanders until a limit; on a real arm a few frames is the safer choice."""

    def validate(self) -> ControlConfig:
        checks = [
            ("tau_c", 0 < self.tau_c < 1, "a threshold in (0, 1)"),
            ("max_steps", self.max_steps >= 1, "an integer >= 1"),
            ("timeout_s", self.timeout_s > 0, "a positive time in seconds"),
            ("max_step_translation", 0 < self.max_step_translation <= 0.2, "in (0, 0.2] metres"),
            ("max_step_rotation_deg", 0 < self.max_step_rotation_deg <= 45, "in (0, 45] degrees"),
            ("speed", 0 < self.speed <= 0.5, "in (0, 0.5] m/s"),
            ("acceleration", 0 < self.acceleration <= 2.0, "in (0, 2] m/s^2"),
            ("lost_object_frames", self.lost_object_frames >= 0, "an integer >= 0 (0 = off)"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"ControlConfig.{name} = {getattr(self, name)!r}; expected {expected}")
        lo, hi = np.asarray(self.workspace_min, float), np.asarray(self.workspace_max, float)
        if (
            lo.shape != (3,)
            or hi.shape != (3,)
            or not (np.isfinite(lo).all() and np.isfinite(hi).all())
            or (lo >= hi).any()
        ):
            raise ValueError(
                f"ControlConfig.workspace_min {self.workspace_min} / workspace_max {self.workspace_max}: "
                "expected finite 3-vectors with min < max on every axis"
            )
        return self


@dataclass
class ControlResult:
    """What one run of the control loop did."""

    reason: str
    """'pregrasp' (the score reached tau_c), 'max_steps', 'timeout', 'object_lost'
    (`ControlConfig.lost_object_frames`) or 'error'."""
    steps: int
    """Motions commanded."""
    poses: list[np.ndarray] = field(default_factory=list)
    """Gripper poses: the start, then after every motion."""
    scores: list[float] = field(default_factory=list)
    """Pre-grasp score of every frame the policy saw."""
    actions: list[np.ndarray] = field(default_factory=list)
    """Actions as predicted."""
    commanded: list[np.ndarray] = field(default_factory=list)
    """Relative motions actually sent, after the speed and workspace limits [4, 4]."""
    clipped: list[dict[str, bool]] = field(default_factory=list)
    elapsed_s: float = 0.0
    error: str | None = None
    frames: list[Frame] = field(default_factory=list)
    """Frames seen (only when asked to keep them)."""

    @property
    def stopped(self) -> bool:
        return self.reason == "pregrasp"


def action_to_matrix(action: np.ndarray) -> np.ndarray:  # [6] -> [4, 4]
    """`splatsim.conventions.action_to_relative_transform` in numpy (extrinsic xyz Euler, translation)."""
    a = np.asarray(action, dtype=np.float64).reshape(6)
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("xyz", a[:3]).as_matrix()
    T[:3, 3] = a[3:]
    return T


def limit_motion(
    T_cur: np.ndarray,  # [4, 4]
    action: np.ndarray,  # [6]
    cfg: ControlConfig,
) -> tuple[np.ndarray, dict[str, bool]]:  # rel [4, 4], which limits acted
    """The relative motion to send: the action scaled to the step limits, its target clipped to the box."""
    a = np.asarray(action, dtype=np.float64).reshape(6)
    if not np.isfinite(a).all():
        raise ValueError(f"the policy returned a non-finite action {a.tolist()}")
    rel = action_to_matrix(a)
    info = {"translation": False, "rotation": False, "workspace": False}
    t = rel[:3, 3]
    n = float(np.linalg.norm(t))
    if n > cfg.max_step_translation:
        rel[:3, 3] = t * (cfg.max_step_translation / n)
        info["translation"] = True
    rotvec = Rotation.from_matrix(rel[:3, :3]).as_rotvec()
    angle = float(np.linalg.norm(rotvec))
    max_rot = math.radians(cfg.max_step_rotation_deg)
    if angle > max_rot:
        rel[:3, :3] = Rotation.from_rotvec(rotvec * (max_rot / angle)).as_matrix()
        info["rotation"] = True
    target = T_cur @ rel
    lo, hi = np.asarray(cfg.workspace_min, float), np.asarray(cfg.workspace_max, float)
    p = target[:3, 3]
    p_clip = np.clip(p, lo, hi)
    if not np.array_equal(p, p_clip):
        target = target.copy()
        target[:3, 3] = p_clip
        rel = np.linalg.inv(T_cur) @ target
        info["workspace"] = True
    return rel, info


def run_control_loop(
    policy: PolicyFn,
    robot: Robot,
    camera: Camera,
    cfg: ControlConfig,
    *,
    segmenter: Segmenter | None = None,
    clock: Callable[[], float] = time.monotonic,
    keep_frames: bool = False,
    on_step: Callable[[int, dict[str, Any]], None] | None = None,
) -> ControlResult:
    """Runs ``policy`` on ``robot`` until the pre-grasp score reaches ``tau_c``, a limit, or an error.

    Args:
        policy: Network input -> (action, score), e.g. `policy.runtime.OnnxPolicy`.
        robot: The arm (always stopped on the way out).
        camera: The hand-eye camera; frames without masks go through ``segmenter``.
        cfg: Stop rule and safety limits (validated here).
        segmenter: Masks for frames that come without them.
        clock: Seconds, for the timeout (the splat robot passes its simulated clock).
        keep_frames: Keep every frame in the result (for videos).
        on_step: Called after every policy call with the step index and what happened.

    Raises:
        Whatever the robot, camera or policy raised, after stopping the robot.
    """
    cfg.validate()
    t0 = clock()
    result = ControlResult(reason="max_steps", steps=0)
    unseen_run = 0  # frames in a row without an object pixel
    try:
        result.poses.append(np.asarray(robot.current_pose(), dtype=np.float64))
        for step in range(cfg.max_steps):
            if clock() - t0 >= cfg.timeout_s:
                result.reason = "timeout"
                break
            frame = camera.read()
            mask = frame.mask
            if mask is None:
                if segmenter is None:
                    raise ValueError("the camera gives no masks and no segmenter was given")
                mask = segmenter(frame.rgb)
            if cfg.depth and frame.depth is None:
                raise ValueError(
                    "ControlConfig.depth: the policy takes a depth channel but the camera gave a frame without "
                    "depth (enable the camera's aligned depth stream)"
                )
            depth = frame.depth if cfg.depth else None
            if keep_frames:
                result.frames.append(Frame(frame.rgb, mask, frame.timestamp, frame.depth))
            x = make_policy_input(frame.rgb, mask, depth)[None].numpy()
            unseen_run = 0 if bool((x[0, 4] > 0).any()) else unseen_run + 1
            if cfg.lost_object_frames and unseen_run >= cfg.lost_object_frames:
                result.reason = "object_lost"
                break
            action, score = policy(x)
            action = np.asarray(action, dtype=np.float64).reshape(6)
            score = float(score)
            result.actions.append(action)
            result.scores.append(score)
            if on_step is not None:
                on_step(step, {"score": score, "action": action})
            if score >= cfg.tau_c:
                result.reason = "pregrasp"
                break
            T_cur = np.asarray(robot.current_pose(), dtype=np.float64)
            rel, info = limit_motion(T_cur, action, cfg)
            robot.move_relative(rel, cfg.speed, cfg.acceleration)
            result.steps += 1
            result.commanded.append(rel)
            result.clipped.append(info)
            result.poses.append(np.asarray(robot.current_pose(), dtype=np.float64))
        else:
            result.reason = "max_steps"
        if result.reason == "max_steps" and clock() - t0 >= cfg.timeout_s:
            result.reason = "timeout"
    except BaseException as exc:
        result.reason = "error"
        result.error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        result.elapsed_s = clock() - t0
        robot.stop()
    return result
