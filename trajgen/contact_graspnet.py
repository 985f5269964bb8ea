"""Optional Contact-GraspNet adapter: its grasps, converted into our grasp frame, as grasp candidates.

The default grasp path (`trajgen.grasp_sampler`) needs no weights; this adapter is used only with
``GraspConfig.sampler = "contact_graspnet"`` and a Contact-GraspNet PyTorch install (see
docs/grasps.md for what it needs and how to install it). Everything here except
`load_contact_graspnet_predictor` is plain numpy, so the conversion is tested without the network.

Contact-GraspNet's grasp convention (``build_6d_grasp`` in NVlabs/contact_graspnet and its PyTorch
ports): rotation columns ``[b, a x b, a]`` with ``b`` the closing ("base") direction from one contact
to the other and ``a`` the approach direction; translation ``contact + (width / 2) b - d a`` with
``d = gripper_depth = 0.1034`` m (its Panda gripper). So its axes are ours (+x closing, +z approach)
and the contacts' midpoint lies ``d`` ahead of its origin. Conversion keeps the axes and the midpoint
(the grasp centre) and re-places the origin for our gripper with `place_along_approach`, which also
checks our gripper's volume against the object (the network was trained for another gripper).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np

from trajgen.grasp_sampler import (
    GraspCandidates,
    SamplerStats,
    centring_scores,
    grasp_poses_from_axes,
    place_along_approach,
)
from trajgen.gripper import GripperModel

__all__ = [
    "CGN_GRIPPER_DEPTH",
    "ContactGraspNetUnavailable",
    "Predictor",
    "cgn_to_grasp_axes",
    "contact_graspnet_available",
    "contact_graspnet_candidates",
    "load_contact_graspnet_predictor",
]

CGN_GRIPPER_DEPTH = 0.1034
"""Contact-GraspNet's distance from its grasp origin to the contacts' midpoint (Panda gripper)."""

Predictor = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray | None]]
"""``points [N, 3] -> (poses [G, 4, 4] in its convention, scores [G], widths [G] or None)``."""

INSTALL_HINT = (
    "GraspConfig.sampler = 'contact_graspnet' needs a Contact-GraspNet PyTorch install: "
    "`pip install --no-deps cgn-pytorch==0.4.3` (it ships a pretrained checkpoint and runs on the CPU) plus "
    "torch-geometric 2.4 and torch-cluster built from source; see docs/grasps.md. "
    "The default sampler ('antipodal') needs none of this."
)


class ContactGraspNetUnavailable(ImportError):
    """Contact-GraspNet (the ``cgn_pytorch`` package or its dependencies) cannot be imported."""


def contact_graspnet_available() -> bool:
    """Whether the ``cgn_pytorch`` package is installed (its dependencies are checked on loading)."""
    return importlib.util.find_spec("cgn_pytorch") is not None


def cgn_to_grasp_axes(
    poses_cgn: np.ndarray,  # [G, 4, 4] Contact-GraspNet grasps
    gripper_depth: float = CGN_GRIPPER_DEPTH,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # centres [G, 3], closing [G, 3], approach [G, 3]
    """Grasp centres (contacts' midpoint) and unit closing/approach axes of Contact-GraspNet poses.

    The rotation is re-orthonormalised (nearest rotation, by SVD) since network outputs in float32 are
    only approximately orthonormal.
    """
    poses = np.asarray(poses_cgn, np.float64).reshape(-1, 4, 4)
    if not np.isfinite(poses).all():
        raise ValueError("Contact-GraspNet returned non-finite grasp poses.")
    u, _, vt = np.linalg.svd(poses[:, :3, :3])
    d = np.sign(np.linalg.det(u @ vt))
    u[:, :, 2] *= d[:, None]
    R = u @ vt
    approach = R[:, :, 2]
    closing = R[:, :, 0]
    centers = poses[:, :3, 3] + gripper_depth * approach
    return centers, closing, approach


def _to_numpy(x) -> np.ndarray | None:
    if x is None:
        return None
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def load_contact_graspnet_predictor(
    checkpoint: str | Path | None = None,
    threshold: float = 0.8,
    device: str = "cpu",
) -> Predictor:
    """A predictor around ``cgn_pytorch`` (PyPI ``cgn-pytorch``): its ``from_pretrained`` and ``inference``.

    Args:
        checkpoint: A ``.pth`` checkpoint; None or empty uses the one the package ships.
        threshold: Keep grasps whose confidence is at least this.
        device: ``cpu`` (or ``cuda`` when available).

    Raises:
        ContactGraspNetUnavailable: With what to install, if the package or its dependencies are missing.
    """
    try:
        import cgn_pytorch
        import torch
    except ImportError as exc:
        raise ContactGraspNetUnavailable(f"{INSTALL_HINT} (import failed: {exc})") from exc
    kwargs = {"checkpoint_path": str(checkpoint)} if checkpoint else {}
    try:
        model, _, _ = cgn_pytorch.from_pretrained(cpu=device == "cpu", **kwargs)
    except TypeError:  # releases differ: some take device= instead of cpu=
        model, _, _ = cgn_pytorch.from_pretrained(device=device, **kwargs)
    model.eval()

    def predict(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        with torch.no_grad():
            out = cgn_pytorch.inference(model, np.asarray(points, np.float32), threshold=threshold)
        poses, scores = _to_numpy(out[0]), _to_numpy(out[1])
        widths = _to_numpy(out[2]) if len(out) > 2 else None
        if widths is not None and widths.reshape(-1).shape[0] != poses.reshape(-1, 4, 4).shape[0]:
            widths = None  # some releases return the downsampled cloud third, not widths
        return poses.reshape(-1, 4, 4), scores.reshape(-1), None if widths is None else widths.reshape(-1)

    return predict


def _widths_from_points(
    points: np.ndarray, centers: np.ndarray, closing: np.ndarray, approach: np.ndarray, gripper: GripperModel
) -> np.ndarray:
    """Object width across the fingers where the network gave none: twice the farthest point along x within
    the finger pads' reach around each centre."""
    y_axis = np.cross(approach, closing)
    out = np.empty(centers.shape[0])
    for i in range(centers.shape[0]):
        rel = points - centers[i]
        near = (np.abs(rel @ y_axis[i]) <= gripper.finger_breadth / 2) & (
            np.abs(rel @ approach[i]) <= gripper.finger_length / 2
        )
        out[i] = 2.0 * float(np.abs(rel[near] @ closing[i]).max()) if near.any() else 0.0
    return out


def contact_graspnet_candidates(
    points: np.ndarray,  # [N, 3] object points (object-centred frame)
    gripper: GripperModel,
    predictor: Predictor,
    rng: np.random.Generator,
    *,
    max_points: int = 20000,
    opening_margin: float = 0.003,
    pad_margin: float = 0.008,
    sweep: float = 0.3,
    obstacles: np.ndarray | None = None,
    obstacle_grow: float = 0.0,
    cgn_gripper_depth: float = CGN_GRIPPER_DEPTH,
    centroid: np.ndarray | None = None,
) -> tuple[GraspCandidates, SamplerStats]:
    """Contact-GraspNet's grasps on ``points`` as candidates in our grasp frame.

    Each keeps the network's closing and approach axes and contacts' midpoint; its origin is placed for
    our gripper by `place_along_approach` (flagging ``object_collision`` where our gripper would touch
    the object), grasps wider than the stroke less ``2 opening_margin`` are flagged ``exceeds_stroke``,
    and the network's confidence is the score (and the ``antipodal`` quality field).
    """
    points = np.asarray(points, np.float64).reshape(-1, 3)
    sub = (
        points
        if points.shape[0] <= max_points
        else points[rng.choice(points.shape[0], max_points, replace=False)]
    )
    poses_cgn, scores, widths = predictor(sub)
    poses_cgn = np.asarray(poses_cgn, np.float64).reshape(-1, 4, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    stats = SamplerStats(contacts=int(sub.shape[0]), pairs=int(poses_cgn.shape[0]))
    stats.widest_gap = gripper.max_width - 2 * opening_margin
    if poses_cgn.shape[0] == 0:
        return GraspCandidates.empty(), stats
    if scores.shape[0] != poses_cgn.shape[0]:
        raise ValueError(
            f"Contact-GraspNet returned {poses_cgn.shape[0]} poses but {scores.shape[0]} scores."
        )
    centers, closing, approach = cgn_to_grasp_axes(poses_cgn, cgn_gripper_depth)
    if widths is None:
        widths = _widths_from_points(points, centers, closing, approach, gripper)
    widths = np.asarray(widths, np.float64).reshape(-1)
    exceeds = widths > stats.widest_gap
    openings = gripper.opening_for(np.minimum(widths, stats.widest_gap), opening_margin)
    depth, collision, _ = place_along_approach(
        points,
        centers,
        closing,
        approach,
        openings,
        gripper,
        sweep=sweep,
        pad_margin=pad_margin,
        obstacles=obstacles,
        obstacle_grow=obstacle_grow,
    )
    centroid = points.mean(axis=0) if centroid is None else np.asarray(centroid, np.float64)
    radius = float(np.linalg.norm(points - centroid, axis=1).max())
    half = (widths / 2)[:, None] * closing
    return (
        GraspCandidates(
            poses=grasp_poses_from_axes(closing, approach, centers, depth),
            widths=widths,
            openings=openings,
            centers=centers,
            contacts=np.stack([centers - half, centers + half], axis=1),
            antipodal=np.clip(scores, 0.0, 1.0),
            centring=centring_scores(centers, closing, centroid, radius),
            scores=scores,
            object_collision=collision & ~exceeds,
            exceeds_stroke=exceeds,
        ),
        stats,
    )
