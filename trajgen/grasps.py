"""The grasp stage: safe grasps on the reconstructed object, away from the person's hand (METHOD.md §2).

`run_grasps(cfg, scene_dir, out_path)` reads ``scene_dir/object.ply`` and ``scene_dir/hand.ply`` (3DGS
PLYs: the Gaussian means are the points; any PLY with vertex ``x y z`` works), and writes ``out_path``
(grasps.json, `trajgen.grasp_io`) and, beside it, a picture (``grasps.png``). `compute_grasps` does
the same on arrays in memory and writes nothing.

1. Eq. 2's object-centred frame: the object points minus their mean (scene axes).
2. Candidates: the antipodal sampler (`trajgen.grasp_sampler`, normals from open3d) or, optionally,
   Contact-GraspNet (`trajgen.contact_graspnet`); placed along their approach so the gripper misses the
   object (and, where it can, the hand).
3. Eq. 2: into the scene frame (translation plus the object's mean).
4. Filters, in order, each candidate carrying the first that rejects it: ``exceeds_stroke``,
   ``object_collision``, ``min_score``, ``eq1_distance`` (Eq. 1, d_s), ``non_intrusion``,
   ``swept_volume`` (straight approach from the pre-grasp pose at s), ``authors_box`` (optional), then
   ``nms`` among the safe ones ranked by score and clearance from the hand; the best ``top_k`` kept are
   the targets.

No safe grasp raises `NoSafeGraspError` (counts per filter and what to do) and writes nothing.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from trajgen.grasp_io import (
    FILTERS,
    FORMAT_NAME,
    FORMAT_VERSION,
    STATUS_KEPT,
    load_points,
    scene_fingerprint,
    write_grasps_json,
)
from trajgen.grasp_safety import (
    HandIndex,
    authors_box_clear,
    beyond_fractions,
    clearances,
    eq1_distances,
    object_to_scene,
    rank_values,
    swept_volume_clear,
)
from trajgen.grasp_sampler import GraspCandidates, SamplerStats, nms_se3, sample_antipodal_grasps
from trajgen.gripper import GripperModel

__all__ = [
    "GRASPS_PNG",
    "GraspConfig",
    "GraspResult",
    "NoSafeGraspError",
    "compute_grasps",
    "estimate_normals",
    "grasps_document",
    "run_grasps",
]

GRASPS_PNG = "grasps.png"
MIN_OBJECT_POINTS = 10
"""Fewest object points the sampler works on (normals, antipodal pairs)."""
CONVENTION = (
    "pose: 4x4 grasp-to-scene transform; grasp frame +z approach, +x finger closing, +y = z x x, origin at "
    "the gripper base on the approach axis (Contact-GraspNet's convention); the contacts' midpoint "
    "('center') lies on +z, gripper.depth ahead of the origin or up to pad_margin short of the fingertips; "
    "pre-grasp = pose translated by -s along +z (Eq. 7)"
)


@dataclass
class GraspConfig:
    """Grasps: antipodal sampling on the object, hand-safety filters (METHOD.md §2), ranking, grasps.json."""

    d_s: float = 0.1
    """Eq. 1 safety threshold: a grasp is unsafe if a hand point lies within this distance (metres) of the
    grasp frame's origin (the gripper base)."""
    pregrasp_distance: float = 0.3
    """s (Eq. 7): the pre-grasp pose lies this far back along the approach; the straight approach from it
    must sweep the gripper through no hand point (metres)."""
    non_intrusion_fraction: float = 0.8
    """At least this fraction of the hand points must lie beyond the plane through the grasp centre normal
    to the approach axis (the gripper comes from the side away from the person)."""
    authors_box: bool = False
    """Also reject a grasp if any hand point lies in the authors' gripper box (their code's extra test;
    defined for their Panda-like grasp frame)."""
    authors_box_min: tuple[float, float, float] = (-0.035, -0.01, -0.15)
    """The authors' box, minimum corner in the grasp frame (metres; symmetric in x)."""
    authors_box_max: tuple[float, float, float] = (0.035, 0.01, 0.20)
    """The authors' box, maximum corner in the grasp frame (metres)."""
    top_k: int = 5
    """How many of the best kept grasps become targets for the trajectories (the paper used the single
    best)."""
    min_score: float = 0.1
    """Reject candidates scoring below this (antipodal sampler: 0.7 antipodal quality + 0.3 centring;
    Contact-GraspNet: its confidence)."""
    clearance_weight: float = 0.5
    """Ranking: weight of the clearance from the hand against the score, in [0, 1]."""
    clearance_saturation: float = 0.1
    """Ranking: clearances beyond this (metres) count as fully safe."""
    sampler: Literal["antipodal", "contact_graspnet"] = "antipodal"
    """Candidate source: the geometric antipodal sampler (no weights), or Contact-GraspNet (optional
    install, see docs/grasps.md)."""
    num_contacts: int = 300
    """Antipodal sampler: contact points drawn on the object."""
    partners_per_contact: int = 2
    """Antipodal sampler: contact pairs per drawn contact (its best partner, then random valid ones)."""
    num_approach_angles: int = 12
    """Antipodal sampler: approach directions tried around each contact axis (evenly spaced)."""
    friction_coef: float = 0.5
    """Antipodal sampler: friction coefficient; both normals must lie within atan of it of the contact axis."""
    antipodal_weight: float = 0.7
    """Antipodal sampler: score = this x antipodal quality + (1 - this) x centring."""
    min_width: float = 0.002
    """Antipodal sampler: the narrowest object part to grasp (metres)."""
    opening_margin: float = 0.003
    """Free space kept between each finger and the object while approaching (metres); the widest
    graspable part is the stroke less twice this."""
    pad_margin: float = 0.008
    """The contacts stay this far from both ends of the finger pads (metres)."""
    hand_aware_placement: bool = True
    """Place each candidate along its approach (on the finger pads) so that its swept volume also misses
    the hand where possible, rather than only the object."""
    max_object_points: int = 4000
    """Object points used for sampling and collision checks (a random subset; metres-scale clouds of
    3DGS means typically hold more)."""
    normal_radius: float = 0.012
    """Radius of the neighbourhood for the open3d normal estimate (metres)."""
    normal_max_nn: int = 30
    """Most neighbours for the open3d normal estimate."""
    hand_voxel: float = 0.006
    """Voxel size grouping the hand points to accelerate the exact safety tests (metres)."""
    nms_distance: float = 0.02
    """Non-maximum suppression: grasps whose centres are closer than this (metres) ..."""
    nms_angle_deg: float = 30.0
    """... and whose orientations differ by less than this (degrees, the gripper's half-turn symmetry
    counted) keep only the better one."""
    cgn_checkpoint: str = ""
    """Contact-GraspNet: checkpoint (.pth); empty uses the one cgn-pytorch ships."""
    cgn_threshold: float = 0.8
    """Contact-GraspNet: confidence threshold (the paper kept 6-DOF GraspNet scores >= 0.8)."""
    cgn_max_points: int = 20000
    """Contact-GraspNet: object points fed to the network (a random subset)."""
    gripper: GripperModel = field(default_factory=GripperModel)
    """The gripper (default: Robotiq 2F-85, 85 mm stroke)."""
    seed: int = 0
    """Seeds the point subsets, contact draws and approach angles."""
    plot: bool = True
    """Write the picture (grasps.png beside grasps.json)."""

    def validate(self) -> None:
        """Raises ValueError naming the field for out-of-range settings."""
        positive = (
            "d_s",
            "pregrasp_distance",
            "clearance_saturation",
            "friction_coef",
            "normal_radius",
            "hand_voxel",
            "nms_distance",
        )
        for name in positive:
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"GraspConfig.{name} = {v}; expected a positive number.")
        for name in ("non_intrusion_fraction", "clearance_weight", "antipodal_weight"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"GraspConfig.{name} = {v}; expected a value in [0, 1].")
        for name in (
            "top_k",
            "num_contacts",
            "partners_per_contact",
            "num_approach_angles",
            "max_object_points",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"GraspConfig.{name} = {getattr(self, name)}; expected >= 1.")
        for name in ("min_width", "opening_margin", "pad_margin", "nms_angle_deg"):
            if getattr(self, name) < 0:
                raise ValueError(f"GraspConfig.{name} = {getattr(self, name)}; expected >= 0.")
        if self.sampler not in ("antipodal", "contact_graspnet"):
            raise ValueError(
                f"GraspConfig.sampler = {self.sampler!r}; expected 'antipodal' or 'contact_graspnet'."
            )
        if self.gripper.max_width - 2 * self.opening_margin <= self.min_width:
            raise ValueError(
                f"GraspConfig.opening_margin = {self.opening_margin} leaves no width to grasp with a "
                f"{self.gripper.max_width} m stroke."
            )


class NoSafeGraspError(ValueError):
    """No candidate survived the filters; ``summary`` holds the counts per filter."""

    def __init__(self, message: str, summary: dict[str, Any]) -> None:
        super().__init__(message)
        self.summary = summary


@dataclass
class GraspResult:
    """All candidates (scene frame) with what the filters found; the kept ones ranked; the targets."""

    candidates: GraspCandidates
    status: np.ndarray  # [C] str: "kept" or the rejecting filter
    eq1_distance: np.ndarray  # [C] NaN where not measured
    beyond_fraction: np.ndarray  # [C] NaN where not measured
    clearance: np.ndarray  # [C] NaN where not measured
    rank_value: np.ndarray  # [C] NaN where not ranked
    kept: np.ndarray  # [K] candidate indices, best first
    targets: np.ndarray  # [T] = kept[:top_k]
    summary: dict[str, Any]
    fingerprint: dict[str, Any]
    object_mean: np.ndarray  # [3]
    sampler_stats: SamplerStats
    timings: dict[str, float]
    json_path: Path | None = None
    png_path: Path | None = None

    def target_poses(self) -> np.ndarray:  # [T, 4, 4] grasp -> scene
        return self.candidates.poses[self.targets]

    def kept_poses(self) -> np.ndarray:  # [K, 4, 4]
        return self.candidates.poses[self.kept]


def estimate_normals(
    points: np.ndarray,  # [N, 3]
    radius: float,
    max_nn: int,
) -> np.ndarray:  # [N, 3] unit, orientation arbitrary
    """open3d's PCA normals over a hybrid (radius, k-nearest) neighbourhood."""
    import open3d as o3d

    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(points, np.float64)))
    pcd.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=radius, max_nn=max_nn))
    normals = np.asarray(pcd.normals, dtype=np.float64)
    bad = ~np.isfinite(normals).all(axis=1) | (np.linalg.norm(normals, axis=1) < 0.5)
    normals[bad] = 0.0  # isolated points: no normal, never antipodal
    return normals


def _check_points(points: np.ndarray, name: str, minimum: int) -> np.ndarray:
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"{name} points must have shape [N, 3], got {list(arr.shape)}.")
    if arr.shape[0] < minimum:
        raise ValueError(f"{name} point cloud has {arr.shape[0]} points; expected at least {minimum}.")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} points contain NaN or inf.")
    return arr


def _advice(summary: dict[str, Any], cfg: GraspConfig) -> str:
    rej = summary["rejected"]
    safety = sum(rej[f] for f in ("eq1_distance", "non_intrusion", "swept_volume", "authors_box"))
    geometric = rej["exceeds_stroke"] + rej["object_collision"] + rej["min_score"]
    reach = cfg.gripper.max_width - 2 * cfg.opening_margin
    if summary["candidates"] == 0:
        return (
            f"No two object points face each other within the gripper's reach ({reach * 1000:.0f} mm = the "
            f"{cfg.gripper.max_width * 1000:.0f} mm stroke less 2 x opening_margin) inside the friction cone: "
            "the object is wider than the gripper opens everywhere it has opposing faces. Use a gripper with a "
            "wider stroke (`splatsim grasps --gripper-model robotiq_2f_140`; in Python GraspConfig.gripper = "
            "trajgen.gripper.robotiq_2f_140()), or check that the "
            "object's scale is metres and its point cloud dense enough for normals (GraspConfig.normal_radius)."
        )
    if safety >= geometric:
        return (
            "Increase d_s? No: the hand envelopes the object, so every way in passes near or through it. "
            "Hold the object so part of it is free (e.g. by its lower half, fingers and thumb below the top) "
            "and capture again; lowering d_s or non_intrusion_fraction trades away the person's safety."
        )
    return (
        "The gripper cannot close on the object without touching it elsewhere: the object may be wider than "
        f"the {cfg.gripper.max_width * 1000:.0f} mm stroke where it has opposing faces, or its point cloud noisy. "
        "Try more samples (GraspConfig.num_contacts) or a larger gripper (`splatsim grasps --gripper-model "
        "robotiq_2f_140`, GraspConfig.gripper)."
    )


def compute_grasps(
    object_points: np.ndarray,  # [N, 3] scene frame, metres
    hand_points: np.ndarray,  # [M, 3] scene frame, metres (may be empty)
    cfg: GraspConfig,
    *,
    scene_info: dict[str, Any] | None = None,
) -> GraspResult:
    """Samples, filters and ranks grasps on arrays in memory; writes nothing.

    Raises:
        ValueError: For malformed inputs or configs.
        NoSafeGraspError: When no candidate survives, with the counts per filter and what to do.
    """
    cfg.validate()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    obj = _check_points(object_points, "object", MIN_OBJECT_POINTS)
    hand_arr = _check_points(np.asarray(hand_points, np.float64).reshape(-1, 3), "hand", 0)
    g = cfg.gripper
    rng = np.random.default_rng(cfg.seed)

    # Eq. 2's object-centred frame.
    mean = obj.mean(axis=0)
    centred = obj - mean
    sub = centred
    if sub.shape[0] > cfg.max_object_points:
        sub = centred[np.sort(rng.choice(centred.shape[0], cfg.max_object_points, replace=False))]
    hand = HandIndex(hand_arr, cfg.hand_voxel)
    obstacles = hand.reps - mean if (cfg.hand_aware_placement and len(hand)) else None
    timings["prepare_s"] = time.perf_counter() - t0

    t = time.perf_counter()
    common = dict(
        opening_margin=cfg.opening_margin,
        pad_margin=cfg.pad_margin,
        sweep=cfg.pregrasp_distance,
        obstacles=obstacles,
        obstacle_grow=hand.delta,
        centroid=np.zeros(3),
    )
    if cfg.sampler == "antipodal":
        normals = estimate_normals(sub, cfg.normal_radius, cfg.normal_max_nn)
        timings["normals_s"] = time.perf_counter() - t
        t = time.perf_counter()
        cand_obj, stats = sample_antipodal_grasps(
            sub,
            normals,
            g,
            rng,
            num_contacts=cfg.num_contacts,
            partners_per_contact=cfg.partners_per_contact,
            friction_coef=cfg.friction_coef,
            num_approach_angles=cfg.num_approach_angles,
            min_width=cfg.min_width,
            antipodal_weight=cfg.antipodal_weight,
            **common,
        )
    else:
        from trajgen.contact_graspnet import contact_graspnet_candidates, load_contact_graspnet_predictor

        predictor = load_contact_graspnet_predictor(cfg.cgn_checkpoint or None, cfg.cgn_threshold)
        cand_obj, stats = contact_graspnet_candidates(
            centred, g, predictor, rng, max_points=cfg.cgn_max_points, **common
        )
    timings["sample_s"] = time.perf_counter() - t

    # Eq. 2: object-centred frame -> scene frame.
    t = time.perf_counter()
    cand = GraspCandidates(
        **{k: getattr(cand_obj, k) for k in GraspCandidates.__dataclass_fields__}  # type: ignore[attr-defined]
    )
    cand.poses = object_to_scene(cand_obj.poses, mean)
    cand.centers = cand_obj.centers + mean
    cand.contacts = cand_obj.contacts + mean
    c = len(cand)
    status = np.full(c, STATUS_KEPT, dtype=object)
    eq1 = np.full(c, np.nan)
    beyond = np.full(c, np.nan)
    clear_m = np.full(c, np.nan)
    rank_v = np.full(c, np.nan)

    def reject(mask: np.ndarray, name: str) -> None:
        status[mask & (status == STATUS_KEPT)] = name

    reject(cand.exceeds_stroke, "exceeds_stroke")
    reject(cand.object_collision, "object_collision")
    reject(cand.scores < cfg.min_score, "min_score")
    live = np.nonzero(status == STATUS_KEPT)[0]
    eq1[live] = eq1_distances(cand.poses[live], hand)
    reject(np.nan_to_num(eq1, nan=np.inf) < cfg.d_s, "eq1_distance")
    beyond[live] = beyond_fractions(cand.poses[live], cand.centers[live], hand)
    reject(np.nan_to_num(beyond, nan=1.0) < cfg.non_intrusion_fraction, "non_intrusion")
    live = np.nonzero(status == STATUS_KEPT)[0]
    clear_m[live] = clearances(cand.poses[live], cand.openings[live], hand, g)
    swept = np.ones(c, dtype=bool)
    swept[live] = swept_volume_clear(cand.poses[live], cand.openings[live], hand, g, cfg.pregrasp_distance)
    reject(~swept, "swept_volume")
    if cfg.authors_box:
        live = np.nonzero(status == STATUS_KEPT)[0]
        box = np.ones(c, dtype=bool)
        box[live] = authors_box_clear(cand.poses[live], hand, (cfg.authors_box_min, cfg.authors_box_max))
        reject(~box, "authors_box")
    safe = np.nonzero(status == STATUS_KEPT)[0]
    rank_v[safe] = rank_values(
        cand.scores[safe], clear_m[safe], cfg.clearance_weight, cfg.clearance_saturation
    )
    order = safe[np.lexsort((safe, -rank_v[safe]))]  # best first; ties by index, deterministic
    kept = nms_se3(
        cand.centers, cand.poses[:, :3, :3], order, cfg.nms_distance, math.radians(cfg.nms_angle_deg)
    )
    nms_mask = np.zeros(c, dtype=bool)
    nms_mask[safe] = True
    nms_mask[kept] = False
    reject(nms_mask, "nms")
    targets = kept[: cfg.top_k]
    timings["filter_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0

    rejected = {f: int((status == f).sum()) for f in FILTERS}
    summary: dict[str, Any] = {
        "sampler": cfg.sampler,
        "object_points": int(obj.shape[0]),
        "hand_points": int(hand_arr.shape[0]),
        "contacts": stats.contacts,
        "contacts_without_partner": stats.no_partner,
        "pairs": stats.pairs,
        "candidates": c,
        "rejected": rejected,
        "safe_before_nms": int(safe.size),
        "kept": int(kept.size),
        "targets": int(targets.size),
    }
    if hand_arr.shape[0] == 0:
        summary["warning"] = "no hand points: the safety filters had nothing to test against"
    if kept.size == 0:
        counts = ", ".join(f"{k} {v}" for k, v in rejected.items() if v)
        raise NoSafeGraspError(
            f"No safe grasp: of {c} candidates ({stats.contacts} contacts, {stats.pairs} antipodal pairs) none "
            f"survived the filters ({counts or 'no candidates at all'}). {_advice(summary, cfg)}",
            summary,
        )
    fingerprint = scene_fingerprint(object_points, hand_arr, scene_info)
    return GraspResult(
        candidates=cand,
        status=status,
        eq1_distance=eq1,
        beyond_fraction=beyond,
        clearance=clear_m,
        rank_value=rank_v,
        kept=kept,
        targets=targets,
        summary=summary,
        fingerprint=fingerprint,
        object_mean=mean,
        sampler_stats=stats,
        timings=timings,
    )


def _config_dict(cfg: GraspConfig) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(cfg), default=str))


def grasps_document(result: GraspResult, cfg: GraspConfig) -> dict[str, Any]:
    """The grasps.json content (`trajgen.grasp_io` describes the format)."""
    cand = result.candidates
    rank = np.full(len(cand), -1, dtype=np.int64)
    rank[result.kept] = np.arange(result.kept.size)

    def opt(x: float) -> float | None:
        return None if not np.isfinite(x) else float(x)

    candidates = [
        {
            "id": i,
            "status": str(result.status[i]),
            "rank": int(rank[i]) if rank[i] >= 0 else None,
            "pose": cand.poses[i].tolist(),
            "width": float(cand.widths[i]),
            "opening": float(cand.openings[i]),
            "center": cand.centers[i].tolist(),
            "score": float(cand.scores[i]),
            "antipodal": float(cand.antipodal[i]),
            "centring": float(cand.centring[i]),
            "clearance": opt(result.clearance[i]),
            "eq1_distance": opt(result.eq1_distance[i]),
            "beyond_fraction": opt(result.beyond_fraction[i]),
        }
        for i in range(len(cand))
    ]
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "convention": CONVENTION,
        "units": "metres",
        "frame": "scene",
        "fingerprint": result.fingerprint,
        "object_mean": result.object_mean.tolist(),
        "gripper": asdict(cfg.gripper),
        "config": _config_dict(cfg),
        "summary": result.summary,
        "targets": [int(i) for i in result.targets],
        "candidates": candidates,
    }


def _scene_info(scene_dir: Path) -> dict[str, Any] | None:
    """``scene.json`` of a whole scene folder (`splatsim.scene_folder.check_scene_folder`), or None."""
    from splatsim.scene_folder import check_scene_folder

    return check_scene_folder(scene_dir, files=("object.ply", "hand.ply"))


def run_grasps(cfg: GraspConfig, scene_dir: Path, out_path: Path) -> GraspResult:
    """The stage: ``scene_dir/object.ply`` + ``scene_dir/hand.ply`` in, ``out_path`` (grasps.json) out.

    Also writes ``grasps.png`` beside ``out_path`` when ``cfg.plot``. Nothing is written when no grasp is
    safe.

    Raises:
        FileNotFoundError: If a point cloud is missing (run the reconstruction first).
        ValueError: For unreadable point clouds or bad configs.
        NoSafeGraspError: When no candidate survives the filters (counts per filter and what to do).
    """
    scene_dir, out_path = Path(scene_dir), Path(out_path)
    paths = {name: scene_dir / f"{name}.ply" for name in ("object", "hand")}
    for name, path in paths.items():
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: no {name} point cloud; expected the reconstruction's {name}.ply in {scene_dir} "
                "(run `splatsim recon` first)"
            )
    t = time.perf_counter()
    object_points = load_points(paths["object"])
    hand_points = load_points(paths["hand"])
    if len(object_points) < MIN_OBJECT_POINTS:
        raise ValueError(
            f"{paths['object']}: {len(object_points)} object points; expected at least {MIN_OBJECT_POINTS}. "
            "The reconstruction labelled (almost) no Gaussian as object: check that the capture's masks "
            "label the object (1) in the training views, then run `splatsim recon` again"
        )
    load_s = time.perf_counter() - t
    try:
        result = compute_grasps(object_points, hand_points, cfg, scene_info=_scene_info(scene_dir))
    except NoSafeGraspError as exc:
        if out_path.exists():
            exc.args = (f"{exc.args[0]} ({out_path} from an earlier run was left as it was.)",)
        raise
    result.timings["load_s"] = load_s
    t = time.perf_counter()
    result.json_path = write_grasps_json(out_path, grasps_document(result, cfg))
    result.timings["write_json_s"] = time.perf_counter() - t
    if cfg.plot:
        from trajgen.grasp_plot import plot_grasps

        t = time.perf_counter()
        cand = result.candidates
        rejected = np.nonzero(
            np.isin(result.status, ("eq1_distance", "non_intrusion", "swept_volume", "authors_box"))
        )[0]
        result.png_path = plot_grasps(
            out_path.with_name(GRASPS_PNG),
            object_points,
            hand_points,
            cfg.gripper,
            cand.poses[result.kept],
            cand.openings[result.kept],
            cand.poses[rejected],
            cand.openings[rejected],
            num_targets=int(result.targets.size),
            title=f"{result.kept.size} safe grasps kept (green; the {result.targets.size} targets darker), "
            f"{rejected.size} rejected by the hand-safety filters (red)",
            seed=cfg.seed,
        )
        result.timings["plot_s"] = time.perf_counter() - t
    return result
