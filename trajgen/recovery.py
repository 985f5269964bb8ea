"""Recovery samples (DART-style noise injection) and tolerance stop labels for the demonstrations.

Behaviour cloning on the planner's trajectories only ever shows the policy the states on those paths;
its own small errors take it off them, to states it has never seen (drift), and only one frame per
episode, the pre-grasp pose, shows it where to stop. `RecoveryConfig` (``PlanConfig.recovery``; off by
default, the paper's demonstrations) adds, per planned trajectory:

- **waypoint samples**: ``waypoint_samples`` poses around every waypoint (but the last) of the phases
  in ``waypoint_phases``, the position moved uniformly within a ball of ``position_noise`` and the
  rotation turned about a uniformly random axis by up to ``rotation_noise_deg``;
- **pre-grasp samples**: ``pregrasp_samples`` poses around the pre-grasp pose, in its frame uniformly
  ``pregrasp_back`` farther from the object to ``pregrasp_forward`` nearer it along the approach axis
  and up to ``pregrasp_lateral`` to either side, turned by up to ``pregrasp_rotation_deg``.

Each sample's action is the expert's: the planner's next step from the sample toward the pre-grasp
(`trajgen.trajectory.expert_step`, in the phase of the waypoint it perturbs; phase 3 around the
pre-grasp, which steps back from poses beyond it), with the plan's step limits. Samples within the
plan's ``d_min`` of the hand or object (Eq. 14) or ``d_background`` of the background are drawn again
(up to ``max_tries`` times, then left out).

Stop labels (``stop_label``): ``"pregrasp"`` (the default, the paper's) labels Cls = 1 at the exact
pre-grasp pose only, so every recovery sample gets 0. ``"tolerance"`` labels Cls = 1 wherever stopping
would count as a success with margin (`stop_labels`): within ``stop_position_tolerance`` and
``stop_rotation_tolerance_deg`` of the pre-grasp pose, the distance to the object's nearest point within
``stop_band``, the object within ``stop_center_deg`` of the viewing axis, and the straight approach clear
of the hand by ``stop_d_s`` (the checks of `policy.metrics`, in the planner's terms: the viewing axis is
the gripper's +z, as with the default camera mount). The trajectories' own frames are labelled by the
same rule (the pre-grasp frame always 1), so nominal and recovery frames never disagree.

Everything is drawn from a generator keyed on the trajectory's start pose, so the samples do not depend
on the order of planning and leave the start-pose stream untouched.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from scipy.spatial.transform import Rotation
from torch import Tensor

from splatsim.conventions import angle_between_rotations, pose_to_action
from trajgen.trajectory import Trajectory, expert_step

if TYPE_CHECKING:
    from trajgen.planning import PlanConfig, PointClearance

__all__ = [
    "PREGRASP_SOURCE",
    "RecoveryConfig",
    "RecoverySamples",
    "recovery_samples",
    "relabel_trajectory",
    "stop_labels",
]

PREGRASP_SOURCE = -1
"""`RecoverySamples.source` of the samples drawn around the pre-grasp pose."""


@dataclass
class RecoveryConfig:
    """Recovery (noise-injected) samples and the stop-label rule; lengths in metres, angles in degrees."""

    add_recovery: bool = False
    """Add recovery samples to every planned trajectory (off: the paper's demonstrations, unchanged)."""
    waypoint_samples: int = 1
    """Perturbed samples per waypoint (every waypoint but the last, in ``waypoint_phases``)."""
    waypoint_phases: tuple[int, ...] = (1, 2, 3)
    """Trajectory phases whose waypoints get samples."""
    position_noise: float = 0.03
    """Waypoint samples move uniformly within a ball of this radius."""
    rotation_noise_deg: float = 5.0
    """Waypoint samples turn about a uniformly random axis by up to this."""
    pregrasp_samples: int = 10
    """Samples around the pre-grasp pose per trajectory."""
    pregrasp_back: float = 0.08
    """Pre-grasp samples reach this far back from the object along the approach axis."""
    pregrasp_forward: float = 0.1
    """... and this far beyond the pre-grasp, nearer the object."""
    pregrasp_lateral: float = 0.05
    """... and this far to either side (along the pre-grasp frame's x and y)."""
    pregrasp_rotation_deg: float = 8.0
    """Pre-grasp samples turn about a uniformly random axis by up to this."""
    max_tries: int = 5
    """Draws per sample before a sample that keeps hitting the clearance filters is left out."""
    stop_label: Literal["pregrasp", "tolerance"] = "pregrasp"
    """Cls = 1 at the exact pre-grasp pose only (the paper), or wherever stopping succeeds with margin."""
    stop_position_tolerance: float = 0.04
    """'tolerance': at most this far from the pre-grasp position."""
    stop_rotation_tolerance_deg: float = 10.0
    """'tolerance': turned at most this far from the pre-grasp rotation."""
    stop_band: tuple[float, float] = (0.36, 0.44)
    """'tolerance': distance from the gripper origin to the object's nearest point (the evaluation's
    success band is 0.35-0.45 m)."""
    stop_center_deg: float = 3.5
    """'tolerance': the object's nearest point to the viewing axis lies within this angle of it (the
    evaluation's 10% of the image side is 4.46 degrees with the default intrinsics)."""
    stop_d_s: float = 0.1
    """'tolerance': the straight approach (along +z until ``stop_grasp_standoff`` from the object) keeps
    this far from every hand point (the evaluation's d_s)."""
    stop_grasp_standoff: float = 0.1
    """Where that approach ends: the gripper origin this far from the object's nearest point."""

    def __post_init__(self) -> None:  # from JSON / asdict round trips
        self.waypoint_phases = tuple(int(p) for p in self.waypoint_phases)
        self.stop_band = tuple(float(x) for x in self.stop_band)

    def validate(self) -> RecoveryConfig:
        """Raises ValueError naming the field for out-of-range settings; returns self."""
        checks = [
            ("waypoint_samples", self.waypoint_samples >= 0, "an integer >= 0"),
            (
                "waypoint_phases",
                all(p in (1, 2, 3) for p in self.waypoint_phases),
                "a tuple of trajectory phases 1, 2, 3",
            ),
            ("position_noise", self.position_noise >= 0, "a length >= 0 in metres"),
            ("rotation_noise_deg", 0 <= self.rotation_noise_deg < 90, "an angle in [0, 90) degrees"),
            ("pregrasp_samples", self.pregrasp_samples >= 0, "an integer >= 0"),
            ("pregrasp_back", self.pregrasp_back >= 0, "a length >= 0 in metres"),
            ("pregrasp_forward", self.pregrasp_forward >= 0, "a length >= 0 in metres"),
            ("pregrasp_lateral", self.pregrasp_lateral >= 0, "a length >= 0 in metres"),
            ("pregrasp_rotation_deg", 0 <= self.pregrasp_rotation_deg < 90, "an angle in [0, 90) degrees"),
            ("max_tries", self.max_tries >= 1, "an integer >= 1"),
            ("stop_label", self.stop_label in ("pregrasp", "tolerance"), "'pregrasp' or 'tolerance'"),
            ("stop_position_tolerance", self.stop_position_tolerance >= 0, "a length >= 0 in metres"),
            (
                "stop_rotation_tolerance_deg",
                0 <= self.stop_rotation_tolerance_deg <= 180,
                "an angle in [0, 180] degrees",
            ),
            (
                "stop_band",
                len(self.stop_band) == 2 and 0 <= self.stop_band[0] < self.stop_band[1],
                "(near, far) with 0 <= near < far, metres",
            ),
            ("stop_center_deg", 0 < self.stop_center_deg < 90, "an angle in (0, 90) degrees"),
            ("stop_d_s", self.stop_d_s >= 0, "a length >= 0 in metres"),
            ("stop_grasp_standoff", self.stop_grasp_standoff >= 0, "a length >= 0 in metres"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"RecoveryConfig.{name} = {getattr(self, name)!r}; expected {expected}")
        return self

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class RecoverySamples:
    """Recovery samples of one trajectory (N of them; N may be 0)."""

    poses: Tensor  # [N, 4, 4] float64 gripper-to-world
    actions: Tensor  # [N, 6] float64 the expert's step (euler xyz, translation), zero at the pre-grasp
    cls: Tensor  # [N] uint8 stop labels
    source: Tensor  # [N] int16 the waypoint perturbed, or PREGRASP_SOURCE
    phase: Tensor  # [N] uint8 the planner phase the expert step was taken in (1, 2, 3)
    clearance: Tensor  # [N, 2] float64 distance to the nearest (hand, object) point
    stop_label: str = "pregrasp"

    @property
    def num_samples(self) -> int:
        return int(self.poses.shape[0])

    @staticmethod
    def empty(stop_label: str = "pregrasp") -> RecoverySamples:
        f64 = torch.float64
        return RecoverySamples(
            torch.zeros(0, 4, 4, dtype=f64),
            torch.zeros(0, 6, dtype=f64),
            torch.zeros(0, dtype=torch.uint8),
            torch.zeros(0, dtype=torch.int16),
            torch.zeros(0, dtype=torch.uint8),
            torch.zeros(0, 2, dtype=f64),
            stop_label,
        )


def _random_rotations(rng: np.random.Generator, n: int, max_angle: float) -> np.ndarray:  # [n, 3, 3]
    axis = rng.normal(size=(n, 3))
    axis /= np.maximum(np.linalg.norm(axis, axis=1, keepdims=True), 1e-12)
    angle = rng.uniform(0.0, max_angle, size=n)
    return Rotation.from_rotvec(axis * angle[:, None]).as_matrix()


def _ball(rng: np.random.Generator, n: int, radius: float) -> np.ndarray:  # [n, 3] uniform in the ball
    v = rng.normal(size=(n, 3))
    v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    return v * (radius * rng.uniform(0.0, 1.0, size=n) ** (1.0 / 3.0))[:, None]


def _trajectory_rng(trajectory: Trajectory, pregrasp: Tensor) -> np.random.Generator:
    key = np.concatenate([trajectory.poses[0].numpy().ravel(), pregrasp.numpy().ravel()]).astype(np.float64)
    digest = hashlib.sha256(b"recovery\x1f" + key.tobytes()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def stop_labels(
    poses: Tensor | np.ndarray,  # [N, 4, 4] gripper-to-world
    pregrasp: Tensor | np.ndarray,  # [4, 4]
    clearance: PointClearance,
    cfg: RecoveryConfig,
    *,
    path_resolution: float = 0.005,
) -> np.ndarray:  # [N] uint8
    """The ``"tolerance"`` stop label (module docstring): 1 where stopping succeeds with margin."""
    P = np.asarray(poses, dtype=np.float64).reshape(-1, 4, 4)
    pre = np.asarray(pregrasp, dtype=np.float64)
    n = len(P)
    if n == 0:
        return np.zeros(0, np.uint8)
    near = np.linalg.norm(P[:, :3, 3] - pre[:3, 3], axis=1) <= cfg.stop_position_tolerance + 1e-12
    ang = angle_between_rotations(torch.from_numpy(P[:, :3, :3]), torch.from_numpy(pre[:3, :3])).numpy()
    near &= ang <= math.radians(cfg.stop_rotation_tolerance_deg) + 1e-12
    surface = clearance(torch.from_numpy(P[:, :3, 3]))[:, 1].numpy()
    ok = near & (surface >= cfg.stop_band[0]) & (surface <= cfg.stop_band[1])
    obj = clearance.object_points
    cos_lim = math.cos(math.radians(cfg.stop_center_deg))
    for i in np.flatnonzero(ok):
        p, z = P[i, :3, 3], P[i, :3, 2]
        rays = obj - p
        dist = np.linalg.norm(rays, axis=1)
        ahead = (rays @ z) > 1e-6
        if not ahead.any() or float(((rays[ahead] @ z) / dist[ahead]).max()) < cos_lim:
            ok[i] = False
            continue
        length = max(0.0, float(surface[i]) - cfg.stop_grasp_standoff)
        m = max(1, math.ceil(length / path_resolution))
        seg = p + np.linspace(0.0, length, m + 1)[:, None] * z
        if float(clearance(torch.from_numpy(seg))[:, 0].min()) < cfg.stop_d_s:
            ok[i] = False
    return ok.astype(np.uint8)


def _safe(clearance: PointClearance, plan: PlanConfig, positions: np.ndarray) -> np.ndarray:  # [n] bool
    pos = torch.from_numpy(positions)
    ok = clearance.min_distance(pos).numpy() > plan.d_min
    if plan.d_background > 0:
        ok &= clearance.background_distance(pos).numpy() > plan.d_background
    return ok


def recovery_samples(
    trajectory: Trajectory,
    pregrasp: Tensor,  # [4, 4]
    clearance: PointClearance,
    plan: PlanConfig,
    cfg: RecoveryConfig | None = None,
) -> RecoverySamples:
    """The recovery samples of one trajectory (module docstring); ``cfg`` defaults to ``plan.recovery``."""
    cfg = (cfg or plan.recovery).validate()
    pregrasp = torch.as_tensor(pregrasp, dtype=torch.float64)
    rng = _trajectory_rng(trajectory, pregrasp)
    rad = math.radians
    target = clearance.object_center.to(torch.float64)
    step_kw = plan.step_kwargs()
    T = trajectory.num_steps
    # What each sample perturbs: (base pose, source index, phase).
    bases: list[tuple[np.ndarray, int, int]] = []
    wp_poses = trajectory.poses.numpy()
    phases = trajectory.phase.numpy()
    for t in range(T - 1):
        if int(phases[t]) in cfg.waypoint_phases:
            bases += [(wp_poses[t], t, int(phases[t]))] * cfg.waypoint_samples
    bases += [(pregrasp.numpy(), PREGRASP_SOURCE, 3)] * cfg.pregrasp_samples

    poses, sources, used_phase = [], [], []
    for base, src, phase in bases:
        for _ in range(cfg.max_tries):
            pose = base.copy()
            if src == PREGRASP_SOURCE:
                local = np.array(
                    [
                        rng.uniform(-cfg.pregrasp_lateral, cfg.pregrasp_lateral),
                        rng.uniform(-cfg.pregrasp_lateral, cfg.pregrasp_lateral),
                        rng.uniform(-cfg.pregrasp_back, cfg.pregrasp_forward),
                    ]
                )
                pose[:3, 3] = base[:3, 3] + base[:3, :3] @ local
                R = _random_rotations(rng, 1, rad(cfg.pregrasp_rotation_deg))[0]
            else:
                pose[:3, 3] = base[:3, 3] + _ball(rng, 1, cfg.position_noise)[0]
                R = _random_rotations(rng, 1, rad(cfg.rotation_noise_deg))[0]
            pose[:3, :3] = base[:3, :3] @ R
            if _safe(clearance, plan, pose[None, :3, 3])[0]:
                poses.append(pose)
                sources.append(src)
                near = np.linalg.norm(pose[:3, 3] - pregrasp[:3, 3].numpy()) < plan.d
                used_phase.append(3 if near else phase)  # the planner is in phase 3 within d
                break
    if not poses:
        return RecoverySamples.empty(cfg.stop_label)
    P = torch.from_numpy(np.stack(poses))
    nxt = torch.stack([expert_step(P[i], pregrasp, target, used_phase[i], **step_kw) for i in range(len(P))])
    actions = pose_to_action(P, nxt)
    if cfg.stop_label == "tolerance":
        cls = stop_labels(P, pregrasp, clearance, cfg)
    else:
        cls = np.zeros(len(P), np.uint8)
    return RecoverySamples(
        poses=P,
        actions=actions,
        cls=torch.from_numpy(cls),
        source=torch.tensor(sources, dtype=torch.int16),
        phase=torch.tensor(used_phase, dtype=torch.uint8),
        clearance=clearance(P[:, :3, 3]),
        stop_label=cfg.stop_label,
    )


def relabel_trajectory(
    trajectory: Trajectory, pregrasp: Tensor, clearance: PointClearance, cfg: RecoveryConfig
) -> Tensor:  # [T] uint8
    """The trajectory's stop labels under ``cfg.stop_label`` (the pre-grasp frame always 1)."""
    if cfg.stop_label != "tolerance":
        return trajectory.cls.clone()
    cls = torch.from_numpy(stop_labels(trajectory.poses, pregrasp, clearance, cfg))
    cls[-1] = 1
    return cls
