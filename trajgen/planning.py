"""Planning for one target grasp: start poses (Eq. 3-6, 14) and three-phase trajectories (Eq. 7-13).

`plan_grasp` draws start-pose candidates in blocks (`trajgen.start_poses`), plans a trajectory from each
survivor (`trajgen.trajectory`), measures every waypoint's clearance to the hand and object points, and
keeps the first ``k`` trajectories that stay more than ``d_min`` from both (Eq. 14 along the whole
path) and, beyond the paper, more than ``d_background`` from the solid background (the person's body, a
wall, a table), so that no camera path runs through the rest of the scene. Every rejection is counted under the filter that made it. The result depends only on the inputs
and the seed, so every shard and worker of a batch job plans identically.

With ``PlanConfig.recovery.add_recovery`` each kept trajectory also carries recovery samples
(`trajgen.recovery`: perturbed poses labelled with the planner's next step) and, with ``stop_label =
"tolerance"``, stop labels wherever stopping would succeed; off (the default) nothing changes.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor

from trajgen.recovery import RecoveryConfig, recovery_samples, relabel_trajectory
from trajgen.start_poses import START_POSE_FILTERS, sample_start_candidates
from trajgen.trajectory import Trajectory, plan_three_phase, pregrasp_pose

__all__ = [
    "PLAN_COUNTERS",
    "GraspPlan",
    "PlanConfig",
    "PointClearance",
    "background_points",
    "grasp_problem",
    "plan_grasp",
    "plan_seed",
    "planned_pregrasp",
    "pregrasp_problem",
]

PLAN_COUNTERS = (
    "candidates",
    *START_POSE_FILTERS,
    "trajectory_near_hand",
    "trajectory_near_object",
    "trajectory_near_background",
    "accepted",
    "unused",
)
"""Keys of `GraspPlan.counts`: candidates drawn, rejections per filter in order, trajectories kept, and
candidates that passed the start filters after ``k`` were kept (the candidates add up to the rest)."""


@dataclass
class PlanConfig:
    """Start-pose sampling and trajectory parameters (paper defaults; angles in degrees, lengths in metres)."""

    k: int = 15
    """Start poses (and so trajectories) per target grasp (Eq. 3)."""
    radius: float = 0.7
    """r: radius of the sphere around the grasp position the start positions lie on (Eq. 3)."""
    alpha_min_deg: float = 60.0
    """alpha_min: smallest angle at the object centre between the hand and the start camera (Eq. 4)."""
    jitter_deg: float = 20.0
    """Start orientations look at the object, turned about their own x and y axes by up to this (Eq. 5)."""
    theta_max_deg: float = 100.0
    """theta_max: largest angle between the start and the pre-grasp viewing axes (Eq. 6)."""
    d_min: float = 0.1
    """d_min: every waypoint keeps more than this from every hand and object point (Eq. 14)."""
    d_background: float = 0.05
    """Every waypoint keeps more than this from the solid background points (`background_points`: the
    person's body, walls, a table). Not in the paper, whose Eq. 14 guards only hand and object; 0 turns
    it off."""
    line_of_sight: bool = True
    """Keep only starts whose straight line to the object centre keeps more than ``d_background`` from
    the solid background (`trajgen.start_poses`): the camera starts in front of the person, not behind
    them or under the table, where it would see neither hand nor object. Not in the paper; needs
    ``d_background > 0`` and background points."""
    s: float = 0.3
    """s: the pre-grasp pose is this far back along the grasp's approach axis (Eq. 7)."""
    pregrasp_distance: float | None = None
    """Slide the pre-grasp pose along the approach axis until it is this far from the nearest object point
    (metres; the closed-loop evaluation's distance), instead of ``s`` behind the grasp pose. With ``s`` alone
    the pre-grasp's distance to the object depends on the grasp (0.405-0.445 m over the catalogue at
    s = 0.3), so demonstrations stop at object-dependent distances; None: Eq. 7 as written."""
    d: float = 0.5
    """d: phase 2 ends once the distance to the pre-grasp position is below this (Eq. 8)."""
    phi_deg: float = 0.0
    """phi: phase 3 re-aims at the object when the view is off by more than this (Eq. 12)."""
    phase2_aim: bool = False
    """Phase 2 turns to keep facing the object as it translates (at most ``rotation_step_deg`` a step),
    instead of keeping its rotation (Eq. 8-9, the paper). Not in the paper: with it the object stays at the
    image centre in every demonstrated view, so an off-centre object always means "turn back to it"
    (`trajgen.trajectory`)."""
    translation_step: float = 0.03
    """Largest translation per step (phase 2 uses exactly this), metres."""
    rotation_step_deg: float = 5.0
    """Largest rotation per step in phases 1 and 3, degrees."""
    final_approach_distance: float = 0.0
    """The final approach (not in the paper; 0 turns it off): phase 3 covers the last this many metres
    before the pre-grasp position in steps of at most ``final_approach_step``, so the camera slows down
    where it has to stop and the demonstrations hold more views near the pre-grasp pose
    (`trajgen.trajectory.plan_phase3`)."""
    final_approach_step: float = 0.02
    """Largest translation per step of the final approach, metres (at most ``translation_step``)."""
    up: tuple[float, float, float] = (0.0, 0.0, 1.0)
    """World up in the scene frame (image up of the start cameras, and the axis of min_height)."""
    min_height: float | None = None
    """Reject start and pre-grasp positions lower than this along `up` (scene metres), e.g. just above
    a table top; None disables it (the paper has no such filter)."""
    max_candidates: int = 2000
    """Give up on a grasp after drawing this many start-pose candidates."""
    block: int = 64
    """Candidates drawn at a time (part of the random stream: changing it changes the samples)."""
    recovery: RecoveryConfig = field(default_factory=RecoveryConfig)
    """Recovery (noise-injected) samples around every trajectory and the stop-label rule
    (`trajgen.recovery`); off by default (the paper's demonstrations)."""

    def __post_init__(self) -> None:  # from JSON / asdict round trips
        if isinstance(self.recovery, dict):
            self.recovery = RecoveryConfig(**self.recovery)

    def validate(self) -> PlanConfig:
        """Raises ValueError naming the field for out-of-range settings; returns self."""
        checks = [
            ("k", self.k >= 1, "an integer >= 1"),
            ("radius", self.radius > 0, "a positive length in metres"),
            ("alpha_min_deg", 0 <= self.alpha_min_deg < 180, "an angle in [0, 180) degrees"),
            ("jitter_deg", 0 <= self.jitter_deg < 90, "an angle in [0, 90) degrees"),
            ("theta_max_deg", 0 < self.theta_max_deg <= 180, "an angle in (0, 180] degrees"),
            ("d_min", self.d_min >= 0, "a length >= 0 in metres"),
            ("d_background", self.d_background >= 0, "a length >= 0 in metres"),
            ("s", self.s > 0, "a positive length in metres"),
            (
                "pregrasp_distance",
                self.pregrasp_distance is None or self.pregrasp_distance > self.d_min,
                f"None or a length > d_min ({self.d_min} m)",
            ),
            ("translation_step", self.translation_step > 0, "a positive length in metres"),
            ("d", self.d > self.translation_step, f"a length > translation_step ({self.translation_step} m)"),
            ("phi_deg", 0 <= self.phi_deg < 180, "an angle in [0, 180) degrees"),
            ("rotation_step_deg", 0 < self.rotation_step_deg <= 90, "an angle in (0, 90] degrees"),
            ("final_approach_distance", self.final_approach_distance >= 0, "a length >= 0 in metres"),
            (
                "final_approach_step",
                0 < self.final_approach_step <= self.translation_step,
                f"a positive length <= translation_step ({self.translation_step} m)",
            ),
            ("max_candidates", self.max_candidates >= 1, "an integer >= 1"),
            ("block", self.block >= 1, "an integer >= 1"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"PlanConfig.{name} = {getattr(self, name)!r}; expected {expected}")
        if len(self.up) != 3 or not any(abs(float(u)) > 0 for u in self.up):
            raise ValueError(f"PlanConfig.up = {self.up!r}; expected a non-zero 3-vector")
        self.recovery.validate()
        return self

    def as_dict(self) -> dict:
        return asdict(self)

    def step_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of `trajgen.trajectory.plan_three_phase` and `expert_step` (radians)."""
        return {
            "d": self.d,
            "phi": math.radians(self.phi_deg),
            "translation_step": self.translation_step,
            "rotation_step": math.radians(self.rotation_step_deg),
            "final_distance": self.final_approach_distance,
            "final_step": self.final_approach_step,
            "phase2_aim": self.phase2_aim,
        }


def background_points(scene, min_opacity: float = 0.5) -> np.ndarray:
    """Centres of the scene's solid background Gaussians (label 0, opacity >= ``min_opacity``), [B, 3].

    Faint Gaussians (floaters, soft edges) are left out so that they do not block camera paths.
    """
    from splatsim.scene import LABEL_BACKGROUND

    bg = scene.select_label(LABEL_BACKGROUND)
    keep = torch.sigmoid(bg.opacities.detach().reshape(-1)) >= min_opacity
    return bg.means.detach()[keep].double().cpu().numpy().reshape(-1, 3)


class PointClearance:
    """Distances from positions to the hand, object (and optionally background) point clouds.

    KD-trees, built once per scene. The background cloud is optional: without it (or when empty)
    `background_distance` is +inf everywhere.
    """

    def __init__(
        self,
        hand_points: np.ndarray | Tensor,  # [M, 3] scene frame
        object_points: np.ndarray | Tensor,  # [P, 3]
        background_points: np.ndarray | Tensor | None = None,  # [B, 3]
    ) -> None:
        hand = np.asarray(hand_points, dtype=np.float64).reshape(-1, 3)
        obj = np.asarray(object_points, dtype=np.float64).reshape(-1, 3)
        bg = (
            np.zeros((0, 3))
            if background_points is None
            else np.asarray(background_points, dtype=np.float64).reshape(-1, 3)
        )
        if len(hand) == 0 or len(obj) == 0:
            raise ValueError(
                f"PointClearance needs hand and object points; got {len(hand)} hand and {len(obj)} object "
                "points (does the scene label any Gaussians as hand (2) and object (1)?)"
            )
        self.hand_points, self.object_points = hand, obj
        self.hand_center = torch.from_numpy(hand.mean(0))
        self.object_center = torch.from_numpy(obj.mean(0))
        self._hand = cKDTree(hand)
        self._object = cKDTree(obj)
        self.background_points = bg
        self._background = cKDTree(bg) if len(bg) else None

    def __call__(self, positions: Tensor) -> Tensor:  # [n, 3] -> [n, 2] (hand, object) metres
        p = np.asarray(positions.detach().cpu(), dtype=np.float64).reshape(-1, 3)
        dh = self._hand.query(p)[0]
        do = self._object.query(p)[0]
        return torch.from_numpy(np.stack([dh, do], -1))

    def min_distance(self, positions: Tensor) -> Tensor:  # [n, 3] -> [n]
        """Distance to the union of hand and object points (Eq. 14's left-hand side)."""
        return self(positions).amin(-1)

    def background_distance(self, positions: Tensor) -> Tensor:  # [n, 3] -> [n]
        """Distance to the nearest background point (+inf without a background cloud)."""
        p = np.asarray(positions.detach().cpu(), dtype=np.float64).reshape(-1, 3)
        if self._background is None:
            return torch.full((len(p),), math.inf, dtype=torch.float64)
        return torch.from_numpy(self._background.query(p)[0])


@dataclass
class GraspPlan:
    """The trajectories planned for one target grasp."""

    grasp_pose: Tensor  # [4, 4]
    pregrasp_pose: Tensor  # [4, 4]
    trajectories: list[Trajectory]
    clearances: list[Tensor]  # per trajectory [T, 2] (hand, object) metres
    counts: dict[str, int] = field(default_factory=dict)
    """Candidates drawn, rejections per filter (`PLAN_COUNTERS`), trajectories accepted."""
    skipped: str | None = None
    """Why the grasp has no trajectory at all (its pre-grasp pose is unusable), else None."""


def plan_seed(seed: int, *keys: object) -> np.random.Generator:
    """A generator seeded from ``seed`` and identifying keys (scene id, grasp id), stable across runs."""
    text = "\x1f".join([str(int(seed)), *(str(k) for k in keys)])
    digest = hashlib.sha256(text.encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def pregrasp_problem(pre: Tensor, clearance: PointClearance, cfg: PlanConfig) -> str | None:
    """Why a pre-grasp pose [4, 4] cannot be flown to (too near the hand, the object or the background,
    or below ``min_height``), or None when it can."""
    pre = torch.as_tensor(pre, dtype=torch.float64)
    pre_clear = clearance(pre[None, :3, 3])[0]
    if float(pre_clear.min()) <= cfg.d_min:
        return (
            f"pre-grasp pose within d_min = {cfg.d_min} m of the {'hand' if pre_clear[0] <= pre_clear[1] else 'object'}"
            f" (hand {float(pre_clear[0]):.3f} m, object {float(pre_clear[1]):.3f} m)"
        )
    if cfg.d_background > 0:
        pre_bg = float(clearance.background_distance(pre[None, :3, 3])[0])
        if pre_bg <= cfg.d_background:
            return (
                f"pre-grasp pose within d_background = {cfg.d_background} m of the background (the person's "
                f"body, a wall or a table: {pre_bg:.3f} m)"
            )
    up = torch.tensor(cfg.up, dtype=torch.float64)
    if cfg.min_height is not None and float(pre[:3, 3] @ (up / up.norm())) < cfg.min_height:
        return f"pre-grasp position below min_height = {cfg.min_height} m"
    return None


def grasp_problem(grasp_pose: Tensor, clearance: PointClearance, cfg: PlanConfig) -> str | None:
    """Why the planner cannot fly to a grasp's pre-grasp pose (`planned_pregrasp`, then
    `pregrasp_problem`), or None when it can: what `splatsim demos`' backfill and `plan_grasp` check."""
    return pregrasp_problem(planned_pregrasp(grasp_pose, clearance, cfg), clearance, cfg)


def planned_pregrasp(
    grasp_pose: Tensor,  # [4, 4] scene frame, approach +z
    clearance: PointClearance,
    cfg: PlanConfig,
) -> Tensor:  # [4, 4]
    """The pre-grasp pose the planner flies to: Eq. 7 (``s`` back along the approach axis) or, with
    ``cfg.pregrasp_distance``, the point on that axis behind the grasp at that distance from the nearest
    object point (bisection; the distance grows as the camera backs away along the axis)."""
    grasp_pose = torch.as_tensor(grasp_pose, dtype=torch.float64)
    if cfg.pregrasp_distance is None:
        return pregrasp_pose(grasp_pose, cfg.s)
    target = float(cfg.pregrasp_distance)

    def excess(back: float) -> float:
        p = grasp_pose[:3, 3] - back * grasp_pose[:3, 2]
        return float(clearance(p[None])[0, 1]) - target

    lo, hi = 0.0, cfg.s + 2.0 * target
    if excess(hi) < 0.0:
        raise ValueError(
            f"PlanConfig.pregrasp_distance = {target} m: no point within {hi:.2f} m behind the grasp along its "
            "approach axis is that far from the object; expected a smaller distance"
        )
    if excess(lo) >= 0.0:  # the grasp pose itself is already that far: stay on it
        return grasp_pose.clone()
    for _ in range(48):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if excess(mid) < 0.0 else (lo, mid)
    return pregrasp_pose(grasp_pose, hi)


def plan_grasp(
    grasp_pose: Tensor,  # [4, 4] scene frame, approach +z
    clearance: PointClearance,
    cfg: PlanConfig,
    rng: np.random.Generator,
) -> GraspPlan:
    """Plans up to ``cfg.k`` trajectories to the grasp's pre-grasp pose (module docstring)."""
    grasp_pose = torch.as_tensor(grasp_pose, dtype=torch.float64)
    if grasp_pose.shape != (4, 4) or not bool(torch.isfinite(grasp_pose).all()):
        raise ValueError(
            f"plan_grasp: grasp_pose must be a finite 4x4 matrix, got shape {tuple(grasp_pose.shape)}"
        )
    pre = planned_pregrasp(grasp_pose, clearance, cfg)
    counts = dict.fromkeys(PLAN_COUNTERS, 0)
    plan = GraspPlan(grasp_pose, pre, [], [], counts)

    plan.skipped = pregrasp_problem(pre, clearance, cfg)
    if plan.skipped is not None:
        return plan

    rad = math.radians
    while counts["accepted"] < cfg.k and counts["candidates"] < cfg.max_candidates:
        n = min(cfg.block, cfg.max_candidates - counts["candidates"])
        starts, rejects = sample_start_candidates(
            grasp_pose,
            clearance.object_center,
            clearance.hand_center,
            clearance.min_distance,
            rng,
            num=n,
            radius=cfg.radius,
            alpha_min=rad(cfg.alpha_min_deg),
            jitter=rad(cfg.jitter_deg),
            theta_max=rad(cfg.theta_max_deg),
            d_min=cfg.d_min,
            up=cfg.up,
            min_height=cfg.min_height,
            background_distance=clearance.background_distance,
            sight_clearance=cfg.d_background if cfg.line_of_sight else 0.0,
        )
        counts["candidates"] += n
        for key, value in rejects.items():
            counts[key] += value
        for start in starts:
            if counts["accepted"] >= cfg.k:
                counts["unused"] += 1
                continue
            traj = plan_three_phase(start, pre, clearance.object_center, **cfg.step_kwargs())
            clear = clearance(traj.poses[:, :3, 3])
            if float(clear[:, 0].min()) <= cfg.d_min:
                counts["trajectory_near_hand"] += 1
            elif float(clear[:, 1].min()) <= cfg.d_min:
                counts["trajectory_near_object"] += 1
            elif (
                cfg.d_background > 0
                and float(clearance.background_distance(traj.poses[:, :3, 3]).min()) <= cfg.d_background
            ):
                counts["trajectory_near_background"] += 1
            else:
                counts["accepted"] += 1
                if cfg.recovery.add_recovery:
                    traj.cls = relabel_trajectory(traj, pre, clearance, cfg.recovery)
                    traj.recovery = recovery_samples(traj, pre, clearance, cfg, cfg.recovery)
                plan.trajectories.append(traj)
                plan.clearances.append(clear)
    return plan
