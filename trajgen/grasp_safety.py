"""Hand-safety tests of grasp poses (METHOD.md §2), ranking, and Eq. 2.

All tests take grasp poses in the grasp frame of `trajgen.gripper` (+z approach, +x closing, origin at
the gripper base), expressed in the scene frame, and the hand point cloud in the same frame:

- Eq. 1: with ``p'_h = G^-1 p_h``, the grasp is unsafe if any ``|p'_h| < d_s`` (d_s = 0.1 m): no hand
  point within ``d_s`` of the grasp frame's origin.
- Swept volume: unsafe if any hand point lies inside the gripper's volume (body, fingers and the
  closing region between them) swept along the straight approach from the pre-grasp pose, ``s`` back
  along the approach axis (Eq. 7), to the grasp.
- The authors' box (their code, optional): unsafe if any hand point lies in ``x in [-0.035, 0.035]``,
  ``y in [-0.01, 0.01]``, ``z in [-0.15, 0.20]`` of the grasp frame.
- Non-intrusion: at least a fraction (0.8) of the hand points must lie beyond the plane through the
  grasp centre normal to the approach axis, ``(p_h - c) . z > 0``: the gripper comes from the side away
  from the person.
- Clearance (for ranking, farther is safer): the smallest distance from a hand point to the gripper's
  volume at the grasp pose.

Pure numpy/scipy; no I/O.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from trajgen.gripper import GripperModel

__all__ = [
    "AUTHORS_BOX",
    "HandIndex",
    "authors_box_clear",
    "beyond_fractions",
    "boxes_clear",
    "clearances",
    "eq1_distances",
    "object_to_scene",
    "rank_values",
    "scene_to_object",
    "swept_volume_clear",
    "voxel_representatives",
]

AUTHORS_BOX = ((-0.035, -0.01, -0.15), (0.035, 0.01, 0.20))
"""The authors' gripper box in the grasp frame, (min xyz, max xyz), metres."""


class HandIndex:
    """The hand point cloud prepared for the safety tests: a KD-tree and a voxel grouping.

    Each voxel is represented by one of its own points, and every point lies within ``delta`` of its
    voxel's representative. So a box that contains a hand point has a representative inside the box
    grown by ``delta``, and a representative inside a box is a hand point inside it: the box tests run on
    the few representatives and settle the undecided grasps exactly on those voxels' members.
    """

    def __init__(self, points: np.ndarray, voxel: float = 0.008) -> None:
        points = np.asarray(points, np.float64).reshape(-1, 3)
        if not np.isfinite(points).all():
            raise ValueError("hand points contain NaN or inf.")
        if voxel <= 0:
            raise ValueError(f"voxel = {voxel}; expected > 0 metres.")
        self.points = points
        self.tree = cKDTree(points) if len(points) else None
        if len(points) == 0:
            self.reps = np.zeros((0, 3))
            self.order = self.counts = self.starts = np.zeros(0, np.int64)
            self.delta = 0.0
            return
        keys = np.floor(points / voxel).astype(np.int64)
        _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
        self.reps = points[first]
        self.order = np.argsort(inverse, kind="stable")
        self.counts = np.bincount(inverse, minlength=first.size)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)[:-1]])
        self.delta = float(np.linalg.norm(points - self.reps[inverse], axis=1).max())

    def __len__(self) -> int:
        return int(self.points.shape[0])

    def members(
        self,
        rows: np.ndarray,  # [K] any labels (e.g. grasp indices)
        voxels: np.ndarray,  # [K] voxel indices
    ) -> tuple[np.ndarray, np.ndarray]:  # labels [P], point indices [P]
        """Every member point of each listed voxel, with the label of its row."""
        lens = self.counts[voxels]
        total = int(lens.sum())
        firsts = np.concatenate([[0], np.cumsum(lens)[:-1]])
        offsets = np.repeat(self.starts[voxels] - firsts, lens) + np.arange(total)
        return np.repeat(rows, lens), self.order[offsets]


def voxel_representatives(
    points: np.ndarray,  # [M, 3]
    voxel: float,
) -> tuple[np.ndarray, float]:  # representatives [V, 3], delta
    """One point per ``voxel`` and the largest distance from any point to its voxel's representative."""
    index = HandIndex(points, voxel)
    return index.reps, index.delta


def _inside_any(
    local: np.ndarray,  # [..., M, 3] grasp-frame points, x replaced by |x|
    lo: np.ndarray,  # [..., B, 3]
    hi: np.ndarray,  # [..., B, 3]
    grow: float = 0.0,
) -> np.ndarray:  # [..., M] bool
    inside = np.zeros(local.shape[:-1], dtype=bool)
    for b in range(lo.shape[-2]):
        l_, h_ = lo[..., b, :] - grow, hi[..., b, :] + grow
        if local.ndim == lo.ndim:  # batched per grasp: [c, M, 3] with [c, B, 3]
            l_, h_ = l_[..., None, :], h_[..., None, :]
        inside |= ((local >= l_) & (local <= h_)).all(axis=-1)
    return inside


def _box_distance(local: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Distance from grasp-frame points (x = |x|) to the nearest box (0 inside); shapes as `_inside_any`."""
    best = None
    for b in range(lo.shape[-2]):
        l_, h_ = lo[..., b, :], hi[..., b, :]
        if local.ndim == lo.ndim:
            l_, h_ = l_[..., None, :], h_[..., None, :]
        gap = np.maximum(np.maximum(l_ - local, local - h_), 0.0)
        d = np.sqrt((gap * gap).sum(axis=-1))
        best = d if best is None else np.minimum(best, d)
    return best


def _local(points: np.ndarray, poses: np.ndarray) -> np.ndarray:  # [c, M, 3]
    """Shared scene points [M, 3] into each grasp frame [c, 4, 4], x replaced by |x|."""
    local = np.matmul(points[None, :, :] - poses[:, None, :3, 3], poses[:, :3, :3])
    local[..., 0] = np.abs(local[..., 0])
    return local


def _local_paired(points: np.ndarray, poses: np.ndarray) -> np.ndarray:  # [P, 3]
    """One scene point per grasp frame ([P, 3] with [P, 4, 4]), x replaced by |x|."""
    local = np.einsum("pj,pjk->pk", points - poses[:, :3, 3], poses[:, :3, :3])
    local[:, 0] = np.abs(local[:, 0])
    return local


def eq1_distances(
    poses: np.ndarray,  # [C, 4, 4] grasp -> scene
    hand: HandIndex,
) -> np.ndarray:  # [C] smallest |G^-1 p_h| over the hand points (inf without any)
    """Eq. 1: the distance from each grasp frame's origin to the nearest hand point."""
    poses = np.asarray(poses, np.float64).reshape(-1, 4, 4)
    if hand.tree is None:
        return np.full(poses.shape[0], np.inf)
    return hand.tree.query(poses[:, :3, 3], k=1)[0]


def beyond_fractions(
    poses: np.ndarray,  # [C, 4, 4]
    centers: np.ndarray,  # [C, 3] grasp centres
    hand: HandIndex,
) -> np.ndarray:  # [C] in [0, 1] (1 without hand points)
    """Non-intrusion: the fraction of hand points beyond the plane through the grasp centre normal to the
    approach axis, ``(p_h - c) . z > 0``."""
    poses = np.asarray(poses, np.float64).reshape(-1, 4, 4)
    c = poses.shape[0]
    if len(hand) == 0:
        return np.ones(c)
    z = poses[:, :3, 2]
    centers = np.asarray(centers, np.float64).reshape(-1, 3)
    out = np.empty(c)
    for s in range(0, c, 256):
        e = min(s + 256, c)
        along = z[s:e] @ hand.points.T  # [c, M]
        out[s:e] = np.count_nonzero(along > np.einsum("cj,cj->c", centers[s:e], z[s:e])[:, None], axis=1)
    return out / len(hand)


def boxes_clear(
    poses: np.ndarray,  # [C, 4, 4]
    lo: np.ndarray,  # [C, B, 3] boxes in the grasp frame, x bounds on |x|
    hi: np.ndarray,  # [C, B, 3]
    hand: HandIndex,
    *,
    chunk: int = 128,
) -> np.ndarray:  # [C] bool: no hand point inside any of the grasp's boxes
    """Exact test that every hand point lies outside each grasp's boxes."""
    poses = np.asarray(poses, np.float64).reshape(-1, 4, 4)
    c = poses.shape[0]
    clear = np.ones(c, dtype=bool)
    if len(hand) == 0:
        return clear
    for s in range(0, c, chunk):
        e = min(s + chunk, c)
        local = _local(hand.reps, poses[s:e])  # [c, V, 3]
        surely = _inside_any(local, lo[s:e], hi[s:e]).any(axis=1)
        maybe = _inside_any(local, lo[s:e], hi[s:e], grow=hand.delta) & ~surely[:, None]
        rows, vox = np.nonzero(maybe)
        hit = surely.copy()
        if rows.size:
            g, idx = hand.members(rows, vox)
            pts = _local_paired(hand.points[idx], poses[s:e][g])
            inside = _inside_any(pts, lo[s:e][g], hi[s:e][g])
            hit[np.unique(g[inside])] = True
        clear[s:e] = ~hit
    return clear


def clearances(
    poses: np.ndarray,  # [C, 4, 4]
    openings: np.ndarray,  # [C]
    hand: HandIndex,
    gripper: GripperModel,
    *,
    chunk: int = 128,
) -> np.ndarray:  # [C] metres (inf without hand points)
    """Exact smallest distance from a hand point to the gripper (body, fingers, closing region) at the
    grasp pose: how far the hand stays from the robot once it holds the object."""
    poses = np.asarray(poses, np.float64).reshape(-1, 4, 4)
    c = poses.shape[0]
    out = np.full(c, np.inf)
    if len(hand) == 0 or c == 0:
        return out
    lo, hi = gripper.boxes(openings, sweep=0.0)
    for s in range(0, c, chunk):
        e = min(s + chunk, c)
        d_rep = _box_distance(_local(hand.reps, poses[s:e]), lo[s:e], hi[s:e])  # [c, V]
        best = d_rep.min(axis=1)
        rows, vox = np.nonzero(d_rep <= best[:, None] + hand.delta)
        g, idx = hand.members(rows, vox)
        d = _box_distance(_local_paired(hand.points[idx], poses[s:e][g]), lo[s:e][g], hi[s:e][g])
        part = np.full(e - s, np.inf)
        np.minimum.at(part, g, d)
        out[s:e] = part
    return out


def swept_volume_clear(
    poses: np.ndarray,  # [C, 4, 4]
    openings: np.ndarray,  # [C]
    hand: HandIndex,
    gripper: GripperModel,
    pregrasp_distance: float,
) -> np.ndarray:  # [C] bool
    """No hand point inside the gripper's volume (closing region included) swept along the straight
    approach from the pre-grasp pose, ``pregrasp_distance`` back along the approach axis."""
    lo, hi = gripper.boxes(openings, sweep=pregrasp_distance)
    return boxes_clear(poses, lo, hi, hand)


def authors_box_clear(
    poses: np.ndarray,  # [C, 4, 4]
    hand: HandIndex,
    box: tuple[tuple[float, float, float], tuple[float, float, float]] = AUTHORS_BOX,
) -> np.ndarray:  # [C] bool
    """No hand point inside the authors' box (symmetric in x) in the grasp frame."""
    b_lo, b_hi = np.asarray(box[0], np.float64), np.asarray(box[1], np.float64)
    if b_lo[0] != -b_hi[0] or b_hi[0] < 0 or (b_lo > b_hi).any():
        raise ValueError(f"The authors' box must be symmetric in x with min <= max; got {box}.")
    c = np.asarray(poses).reshape(-1, 4, 4).shape[0]
    lo = np.broadcast_to(np.array([0.0, b_lo[1], b_lo[2]]), (c, 1, 3))
    hi = np.broadcast_to(b_hi, (c, 1, 3))
    return boxes_clear(poses, lo, hi, hand)


def rank_values(
    scores: np.ndarray,  # [C]
    clearance: np.ndarray,  # [C] metres
    clearance_weight: float,
    clearance_saturation: float,
) -> np.ndarray:  # [C] higher is better
    """``(1 - w) * score + w * min(clearance / saturation, 1)``: good grasps far from the hand first."""
    if not 0.0 <= clearance_weight <= 1.0:
        raise ValueError(f"clearance_weight = {clearance_weight}; expected a value in [0, 1].")
    if clearance_saturation <= 0:
        raise ValueError(f"clearance_saturation = {clearance_saturation}; expected > 0 metres.")
    c = np.minimum(np.asarray(clearance, np.float64) / clearance_saturation, 1.0)
    return (1.0 - clearance_weight) * np.asarray(scores, np.float64) + clearance_weight * c


def object_to_scene(
    poses_obj: np.ndarray,  # [..., 4, 4] grasps in the object-centred frame
    object_mean: np.ndarray,  # [3] mean of the object points in the scene
) -> np.ndarray:  # [..., 4, 4] grasps in the scene frame
    """Eq. 2: object-centred grasps (origin at the object's mean, scene axes) into the scene frame.

    The paper writes ``G_GS = G_o - Mean_o``; with the object-centred frame defined as
    ``p_obj = p_scene - Mean_o`` the scene pose is ``G_o`` with ``Mean_o`` added to its translation.
    """
    out = np.array(poses_obj, dtype=np.float64, copy=True)
    out[..., :3, 3] += np.asarray(object_mean, np.float64)
    return out


def scene_to_object(
    poses_scene: np.ndarray,  # [..., 4, 4]
    object_mean: np.ndarray,  # [3]
) -> np.ndarray:  # [..., 4, 4]
    """Inverse of `object_to_scene`."""
    out = np.array(poses_scene, dtype=np.float64, copy=True)
    out[..., :3, 3] -= np.asarray(object_mean, np.float64)
    return out
