"""Geometric antipodal grasp sampler on an object point cloud, and non-maximum suppression in SE(3).

No learned weights: contacts are paired by the friction-cone test, each contact axis is tried at
several approach angles, and the gripper's volume (`trajgen.gripper`) is kept free of object points
except between the fingers. Poses follow the grasp frame of `trajgen.gripper` (+z approach, +x
closing, origin at the gripper base) and are expressed in the frame of the input points.

Normals are an input (estimated with open3d by the stage, `trajgen.grasps`) and may be unoriented:
the antipodal test uses ``|n . axis|``, and a pair that would put a finger inside the object (e.g.
across a cavity) is removed by the collision test instead.

Pure numpy/scipy; no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from trajgen.gripper import GripperModel

__all__ = [
    "GraspCandidates",
    "SamplerStats",
    "centring_scores",
    "grasp_poses_from_axes",
    "nms_se3",
    "place_along_approach",
    "rotation_distance_symmetric",
    "sample_antipodal_grasps",
]


@dataclass
class GraspCandidates:
    """Grasp candidates, one row per (contact pair, approach angle); frame of the input points."""

    poses: np.ndarray  # [C, 4, 4] grasp frame -> points' frame
    widths: np.ndarray  # [C] distance between the two contacts (metres)
    openings: np.ndarray  # [C] finger opening used for the approach (metres)
    centers: np.ndarray  # [C, 3] grasp centre: midpoint of the contacts
    contacts: np.ndarray  # [C, 2, 3] the two contact points
    antipodal: np.ndarray  # [C] antipodal quality in [0, 1]: 1 = both normals along the axis
    centring: np.ndarray  # [C] in [0, 1]: 1 = the closing line passes through the object's centroid
    scores: np.ndarray  # [C] weighted sum of antipodal and centring
    object_collision: np.ndarray  # [C] bool: no depth along the approach keeps the gripper free of the object
    exceeds_stroke: (
        np.ndarray
    )  # [C] bool: the object is wider there than the gripper opens (learned samplers)

    def __len__(self) -> int:
        return int(self.poses.shape[0])

    def select(self, mask_or_index: np.ndarray) -> GraspCandidates:
        """The candidates at a boolean mask or an index array."""
        return GraspCandidates(
            **{k: getattr(self, k)[mask_or_index] for k in self.__dataclass_fields__}  # type: ignore[attr-defined]
        )

    @staticmethod
    def empty() -> GraspCandidates:
        return GraspCandidates(
            poses=np.zeros((0, 4, 4)),
            widths=np.zeros(0),
            openings=np.zeros(0),
            centers=np.zeros((0, 3)),
            contacts=np.zeros((0, 2, 3)),
            antipodal=np.zeros(0),
            centring=np.zeros(0),
            scores=np.zeros(0),
            object_collision=np.zeros(0, dtype=bool),
            exceeds_stroke=np.zeros(0, dtype=bool),
        )

    @staticmethod
    def concat(parts: list[GraspCandidates]) -> GraspCandidates:
        if not parts:
            return GraspCandidates.empty()
        return GraspCandidates(
            **{
                k: np.concatenate([getattr(p, k) for p in parts])
                for k in GraspCandidates.__dataclass_fields__  # type: ignore[attr-defined]
            }
        )


@dataclass
class SamplerStats:
    """What happened to the sampled contacts (for the per-filter summary and error messages)."""

    contacts: int = 0
    """Contact points drawn on the object."""
    no_partner: int = 0
    """Contacts with no second point within the stroke whose normals both lie in the friction cone."""
    pairs: int = 0
    """Distinct antipodal contact pairs (each gives ``num_approach_angles`` candidates)."""
    widest_gap: float = 0.0
    """The widest contact pair the gripper can take: the stroke less twice the opening margin (metres)."""


def _perpendicular_basis(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors a, b with (x, a, b) right-handed and orthonormal, for unit x [P, 3]."""
    helper = np.eye(3)[np.argmin(np.abs(x), axis=1)]
    a = np.cross(x, helper)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b = np.cross(x, a)
    return a, b


def grasp_poses_from_axes(
    closing: np.ndarray,  # [C, 3] unit closing axis x
    approach: np.ndarray,  # [C, 3] unit approach axis z, perpendicular to x
    centers: np.ndarray,  # [C, 3] grasp centres
    contact_depths: np.ndarray,  # [C] z of the centre in the grasp frame
) -> np.ndarray:  # [C, 4, 4]
    """Grasp poses ``[x, z cross x, z | centre - depth z]``."""
    y = np.cross(approach, closing)
    poses = np.zeros((closing.shape[0], 4, 4))
    poses[:, :3, 0] = closing
    poses[:, :3, 1] = y
    poses[:, :3, 2] = approach
    poses[:, :3, 3] = centers - contact_depths[:, None] * approach
    poses[:, 3, 3] = 1.0
    return poses


def _antipodal_pairs(
    points: np.ndarray,
    normals: np.ndarray,
    tree: cKDTree,
    seeds: np.ndarray,
    max_width: float,
    min_width: float,
    cos_cone: float,
    partners: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Antipodal partners of each seed contact: its best one (smallest worse-normal angle) and up to
    ``partners - 1`` others drawn at random among the valid ones; (i [P], j [P], cos of the worse normal
    angle [P]), unordered duplicates removed, and how many seeds have a partner."""
    near = cKDTree(points[seeds]).sparse_distance_matrix(tree, max_width, output_type="ndarray")
    if near.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), 0
    I = seeds[near["i"].astype(np.int64)]
    J = near["j"].astype(np.int64)
    d = points[J] - points[I]
    dist = np.linalg.norm(d, axis=1)
    ok = dist >= max(min_width, 1e-9)
    I, J, d, dist = I[ok], J[ok], d[ok], dist[ok]
    u = d / dist[:, None]
    cos_i = np.abs(np.einsum("ij,ij->i", u, normals[I]))
    cos_j = np.abs(np.einsum("ij,ij->i", u, normals[J]))
    worse = np.minimum(cos_i, cos_j)
    ok = worse >= cos_cone
    I, J, worse = I[ok], J[ok], worse[ok]
    if I.size == 0:
        return I, J, worse, 0
    with_partner = int(np.unique(I).size)
    # Rank the partners of each seed: the best first (ties broken at random), then a random order.
    noise = rng.random(worse.shape[0])
    by_quality = np.lexsort((-(worse + 1e-6 * noise), I))
    is_best = np.zeros(I.size, dtype=bool)
    first = np.ones(by_quality.size, dtype=bool)
    first[1:] = I[by_quality][1:] != I[by_quality][:-1]
    is_best[by_quality[first]] = True
    order = np.lexsort((-(noise + 2.0 * is_best), I))
    group_start = np.ones(order.size, dtype=bool)
    group_start[1:] = I[order][1:] != I[order][:-1]
    starts = np.maximum.accumulate(np.where(group_start, np.arange(order.size), 0))
    chosen = order[np.arange(order.size) - starts < partners]
    I, J, worse = I[chosen], J[chosen], worse[chosen]
    lo, hi = np.minimum(I, J), np.maximum(I, J)
    _, unique = np.unique(lo * (points.shape[0] + 1) + hi, return_index=True)
    return I[unique], J[unique], worse[unique], with_partner


def centring_scores(
    centers: np.ndarray,  # [C, 3]
    closing: np.ndarray,  # [C, 3] unit closing axes
    centroid: np.ndarray,  # [3]
    radius: float,
) -> np.ndarray:  # [C] in [0, 1]
    """``1 - d / radius`` (floored at 0), ``d`` the distance from the centroid to the closing line: grasps
    whose fingers close through the object's centre of mass resist its weight best."""
    rel = np.asarray(centroid, np.float64) - centers
    d_line = np.linalg.norm(rel - np.einsum("ij,ij->i", rel, closing)[:, None] * closing, axis=1)
    return 1.0 - np.minimum(d_line / max(radius, 1e-9), 1.0)


def _depth_bounds(
    points: np.ndarray,  # [N, 3]
    centers: np.ndarray,  # [C, 3]
    closing: np.ndarray,  # [C, 3]
    y_axis: np.ndarray,  # [C, 3]
    approach: np.ndarray,  # [C, 3]
    openings: np.ndarray,  # [C]
    gripper: GripperModel,
    *,
    closing_region: bool,
    sweep: float,
    z_range: tuple[float, float],
    grow: float = 0.0,
    chunk: int = 128,
) -> tuple[np.ndarray, np.ndarray]:  # lower [C], upper [C]
    """Contact depths ``z`` in ``(lower, upper)`` keep every point out of the swept gripper boxes.

    A point at ``(x, y, zr)`` relative to the centre sits at ``zr + z`` in the grasp frame; inside a box's
    footprint it is hit for ``z`` in ``[z_lo_box - sweep - zr, z_hi_box - zr]``. That interval is longer
    than ``z_range`` (the finger pads), so within the range it forbids either the deep end (the point is
    in front: a lower bound) or the shallow end (the point is far behind: an upper bound). ``grow``
    enlarges the boxes (for representative points standing in for nearby ones).
    """
    g = gripper
    z_min, z_max = z_range
    boxes = [(g.body_width / 2, g.body_thickness / 2, 0.0, g.palm, None)]
    boxes.append((g.finger_thickness, g.finger_breadth / 2, g.palm, g.tip_depth, "finger"))
    if closing_region:
        boxes.append((0.0, g.finger_breadth / 2, g.palm, g.tip_depth, "closing"))
    lower = np.full(centers.shape[0], -np.inf)
    upper = np.full(centers.shape[0], np.inf)
    basis = np.stack([closing, y_axis, approach], axis=2)  # [C, 3, 3], columns x, y, z
    offset = np.einsum("cj,cjk->ck", centers, basis)  # [C, 3]
    pts32 = np.asarray(points, np.float32)[None, :, :]
    for s in range(0, centers.shape[0], chunk):
        e = min(s + chunk, centers.shape[0])
        local = np.matmul(pts32, basis[s:e].astype(np.float32)) - offset[s:e, None, :].astype(np.float32)
        px, py, zr = np.abs(local[..., 0]), np.abs(local[..., 1]), local[..., 2]
        half_o = (openings[s:e, None] / 2).astype(np.float32)
        for x_extent, y_half, z_lo, z_hi, kind in boxes:
            if kind == "finger":
                fp = (px >= half_o - grow) & (px <= half_o + x_extent + grow)
            elif kind == "closing":
                fp = px <= half_o + grow
            else:
                fp = px <= x_extent + grow
            fp &= py <= y_half + grow
            # Forbidden z is [z_lo - sweep - grow - zr, z_hi + grow - zr]. It covers z_min (a lower bound on
            # z) for zr in [z_lo - sweep - grow - z_min, z_hi + grow - z_min]; it starts inside the range
            # (an upper bound) for zr in [z_lo - sweep - grow - z_max, z_lo - sweep - grow - z_min).
            k = z_lo - sweep - grow
            deep = fp & (zr >= k - z_min) & (zr <= z_hi + grow - z_min)
            shallow = fp & (zr < k - z_min) & (zr >= k - z_max)
            lower[s:e] = np.maximum(lower[s:e], z_hi + grow - np.where(deep, zr, np.inf).min(axis=1))
            upper[s:e] = np.minimum(upper[s:e], k - np.where(shallow, zr, -np.inf).max(axis=1))
    return lower, upper


def place_along_approach(
    points: np.ndarray,  # [N, 3] object points
    centers: np.ndarray,  # [C, 3] grasp centres
    closing: np.ndarray,  # [C, 3] unit closing axes x
    approach: np.ndarray,  # [C, 3] unit approach axes z (perpendicular to x)
    openings: np.ndarray,  # [C] finger openings
    gripper: GripperModel,
    *,
    sweep: float = 0.3,
    pad_margin: float = 0.008,
    obstacles: np.ndarray | None = None,  # [M, 3] points to avoid too (e.g. the hand), or None
    obstacle_grow: float = 0.0,
    chunk: int = 128,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # depth [C], object collision [C], obstacle free [C]
    """Where the grasp centre sits on the finger pads so that the gripper misses the object.

    The contact depth (z of the grasp centre in the grasp frame) may range over the finger pads less
    ``pad_margin`` at each end. Within it, the gripper's body and fingers swept back by ``sweep`` along
    the approach must contain no object point (the object belongs between the fingers), and, where
    possible, the whole swept volume, closing region included, no ``obstacles`` point (grown by
    ``obstacle_grow``). The depth is the nominal ``gripper.depth`` when free, else the free depth nearest
    to it. ``object collision`` marks candidates that no depth frees of the object; ``obstacle free``
    those whose chosen depth also clears the obstacles.
    """
    g = gripper
    z_range = (g.palm + pad_margin, g.tip_depth - pad_margin)
    if z_range[0] > z_range[1]:
        raise ValueError(f"pad_margin = {pad_margin} leaves no room on {g.finger_length} m finger pads.")
    y_axis = np.cross(approach, closing)
    common = dict(sweep=sweep, z_range=z_range, chunk=chunk)
    lo, hi = _depth_bounds(
        points, centers, closing, y_axis, approach, openings, g, closing_region=False, **common
    )
    eps = 1e-4
    lo_z, hi_z = np.maximum(lo + eps, z_range[0]), np.minimum(hi - eps, z_range[1])
    collision = lo_z > hi_z
    nominal = min(max(g.depth, z_range[0]), z_range[1])
    depth = np.clip(nominal, lo_z, np.maximum(lo_z, hi_z))
    free = np.zeros(centers.shape[0], dtype=bool)
    todo = np.nonzero(~collision)[0]
    if obstacles is not None and len(obstacles) and todo.size:
        o_lo, o_hi = _depth_bounds(
            np.asarray(obstacles, np.float64).reshape(-1, 3),
            centers[todo],
            closing[todo],
            y_axis[todo],
            approach[todo],
            openings[todo],
            g,
            closing_region=True,
            grow=obstacle_grow,
            **common,
        )
        both_lo = np.maximum(lo_z[todo], o_lo + eps)
        both_hi = np.minimum(hi_z[todo], o_hi - eps)
        ok = both_lo <= both_hi
        depth[todo[ok]] = np.clip(nominal, both_lo[ok], both_hi[ok])
        free[todo[ok]] = True
    elif obstacles is None or not len(obstacles):
        free[todo] = True
    return np.minimum(depth, z_range[1]), collision, free


def sample_antipodal_grasps(
    points: np.ndarray,  # [N, 3] object points (metres)
    normals: np.ndarray,  # [N, 3] unit normals, orientation arbitrary
    gripper: GripperModel,
    rng: np.random.Generator,
    *,
    num_contacts: int = 200,
    partners_per_contact: int = 2,
    friction_coef: float = 0.5,
    num_approach_angles: int = 12,
    opening_margin: float = 0.003,
    min_width: float = 0.002,
    pad_margin: float = 0.008,
    antipodal_weight: float = 0.7,
    centroid: np.ndarray | None = None,  # [3] default: mean of points
    sweep: float = 0.3,
    obstacles: np.ndarray | None = None,  # [M, 3] e.g. hand points, same frame as points
    obstacle_grow: float = 0.0,
    chunk: int = 128,
) -> tuple[GraspCandidates, SamplerStats]:
    """Antipodal grasp candidates on an object point cloud.

    1. Draw ``num_contacts`` contact points uniformly. A partner is a point within reach (the stroke less
       ``2 opening_margin``) such that the contact axis lies in the friction cone ``atan(friction_coef)``
       of both normals. Pair each contact with its best partner (the smallest worse angle) and up to
       ``partners_per_contact - 1`` others drawn at random, for variety (e.g. horizontal chords across
       the free top of a ball, besides the diameter).
    2. Around each contact axis (the closing axis x), try ``num_approach_angles`` approach directions
       z, evenly spaced from a random start. Each is placed along its approach by
       `place_along_approach`: the grasp centre at the nominal ``gripper.depth`` on the finger pads, or
       the nearest depth at which the gripper's body and fingers, swept back by ``sweep`` along the
       approach, miss the object (and, where possible, the whole swept volume misses ``obstacles``,
       e.g. the hand); a candidate that no depth frees of the object is flagged ``object_collision``.
    3. Score: ``antipodal_weight * antipodal + (1 - antipodal_weight) * centring``, where
       ``antipodal = 1 - (worse normal angle) / (cone half-angle)`` and ``centring = 1 - d / R``
       (``d`` the distance from the centroid to the closing line, ``R`` the object's radius).

    Deterministic for a given ``rng`` state.
    """
    points = np.asarray(points, np.float64)
    normals = np.asarray(normals, np.float64)
    if points.ndim != 2 or points.shape[1] != 3 or normals.shape != points.shape:
        raise ValueError(f"points and normals must both be [N, 3]; got {points.shape} and {normals.shape}.")
    if not 0.0 <= antipodal_weight <= 1.0:
        raise ValueError(f"antipodal_weight = {antipodal_weight}; expected a value in [0, 1].")
    n = points.shape[0]
    stats = SamplerStats(widest_gap=gripper.max_width - 2 * opening_margin)
    if n < 2 or num_contacts <= 0 or num_approach_angles <= 0:
        return GraspCandidates.empty(), stats
    nrm = np.linalg.norm(normals, axis=1, keepdims=True)
    normals = normals / np.maximum(nrm, 1e-12)
    centroid = points.mean(axis=0) if centroid is None else np.asarray(centroid, np.float64)
    radius = max(float(np.linalg.norm(points - centroid, axis=1).max()), 1e-6)

    tree = cKDTree(points)
    seeds = rng.choice(n, size=min(num_contacts, n), replace=False)
    stats.contacts = int(seeds.size)
    cone = math.atan(friction_coef)
    I, J, worse, with_partner = _antipodal_pairs(
        points, normals, tree, seeds, stats.widest_gap, min_width, math.cos(cone), partners_per_contact, rng
    )
    stats.no_partner = stats.contacts - with_partner
    stats.pairs = int(I.size)
    if I.size == 0:
        return GraspCandidates.empty(), stats

    p, q = points[I], points[J]
    axis = q - p
    widths = np.linalg.norm(axis, axis=1)
    x = axis / widths[:, None]
    centers = (p + q) / 2
    openings = gripper.opening_for(widths, opening_margin)
    antipodal = np.clip(1.0 - np.arccos(np.clip(worse, -1.0, 1.0)) / cone, 0.0, 1.0)
    centring = centring_scores(centers, x, centroid, radius)
    score = antipodal_weight * antipodal + (1.0 - antipodal_weight) * centring

    a, b = _perpendicular_basis(x)
    k = num_approach_angles
    phi = rng.random(I.size)[:, None] * (2 * math.pi / k) + np.arange(k)[None, :] * (2 * math.pi / k)
    cphi, sphi = np.cos(phi), np.sin(phi)  # [P, K]

    rep = np.repeat(np.arange(I.size), num_approach_angles)
    approach = (cphi[..., None] * a[:, None, :] + sphi[..., None] * b[:, None, :]).reshape(-1, 3)
    contact_depth, collision, _ = place_along_approach(
        points,
        centers[rep],
        x[rep],
        approach,
        openings[rep],
        gripper,
        sweep=sweep,
        pad_margin=pad_margin,
        obstacles=obstacles,
        obstacle_grow=obstacle_grow,
        chunk=chunk,
    )
    poses = grasp_poses_from_axes(x[rep], approach, centers[rep], contact_depth)
    cand = GraspCandidates(
        poses=poses,
        widths=widths[rep],
        openings=openings[rep],
        centers=centers[rep],
        contacts=np.stack([p, q], axis=1)[rep],
        antipodal=antipodal[rep],
        centring=centring[rep],
        scores=score[rep],
        object_collision=collision,
        exceeds_stroke=np.zeros(collision.shape[0], dtype=bool),
    )
    return cand, stats


def rotation_distance_symmetric(
    R_a: np.ndarray,  # [3, 3]
    R_b: np.ndarray,  # [M, 3, 3]
) -> np.ndarray:  # [M] radians
    """Angle between grasp rotations, a gripper turned half a turn about its approach axis counting as equal."""
    M = np.einsum("ji,mjk->mik", R_a, R_b)  # R_a^T R_b
    tr = M[:, 0, 0] + M[:, 1, 1] + M[:, 2, 2]
    tr_flip = -M[:, 0, 0] - M[:, 1, 1] + M[:, 2, 2]  # R_a^T R_b diag(-1, -1, 1)
    best = np.maximum(tr, tr_flip)
    return np.arccos(np.clip((best - 1.0) / 2.0, -1.0, 1.0))


def nms_se3(
    centers: np.ndarray,  # [C, 3]
    rotations: np.ndarray,  # [C, 3, 3]
    order: np.ndarray,  # [C] candidate indices, best first
    min_distance: float,
    min_angle: float,  # radians
) -> np.ndarray:  # [K] kept indices, best first
    """Greedy non-maximum suppression in SE(3).

    A candidate is suppressed when a better kept one has its centre within ``min_distance`` *and* its
    rotation within ``min_angle`` (see `rotation_distance_symmetric`).
    """
    kept: list[int] = []
    for i in np.asarray(order, dtype=np.int64):
        if kept:
            k = np.asarray(kept)
            near = np.linalg.norm(centers[k] - centers[i], axis=1) < min_distance
            if near.any():
                ang = rotation_distance_symmetric(rotations[i], rotations[k[near]])
                if (ang < min_angle).any():
                    continue
        kept.append(int(i))
    return np.asarray(kept, dtype=np.int64)
