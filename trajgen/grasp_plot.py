"""Picture of the grasps: hand and object points with kept grasps in green and rejected ones in red.

Three orthographic projections of the scene frame (top: x-y, front: x-z, side: y-z), drawn with
matplotlib's Agg backend (no display needed) and written as a PNG atomically.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from trajgen.gripper import GripperModel

__all__ = ["plot_grasps"]

_VIEWS = (("top (x-y)", 0, 1), ("front (x-z)", 0, 2), ("side (y-z)", 1, 2))
_HAND_COLOR = "#d9468f"
_OBJECT_COLOR = "#3b6fb6"
_KEPT_COLOR = "#1a9e3a"
_TARGET_COLOR = "#0b5d1e"
_REJECTED_COLOR = "#d62728"


def _subsample(points: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    if points.shape[0] <= n:
        return points
    return points[rng.choice(points.shape[0], n, replace=False)]


def _segments(poses: np.ndarray, openings: np.ndarray, gripper: GripperModel) -> np.ndarray:
    """Gripper outlines in the scene frame, [G, K, 2, 3]."""
    out = []
    for T, o in zip(poses, openings):
        seg = gripper.outline(float(o))  # [K, 2, 3]
        out.append(seg @ T[:3, :3].T + T[:3, 3])
    return np.asarray(out).reshape(-1, 4, 2, 3) if out else np.zeros((0, 4, 2, 3))


def plot_grasps(
    path: str | os.PathLike,
    object_points: np.ndarray,  # [N, 3] scene frame
    hand_points: np.ndarray,  # [M, 3] scene frame
    gripper: GripperModel,
    kept_poses: np.ndarray,  # [K, 4, 4]
    kept_openings: np.ndarray,  # [K]
    rejected_poses: np.ndarray,  # [R, 4, 4]
    rejected_openings: np.ndarray,  # [R]
    *,
    num_targets: int = 0,
    title: str = "",
    max_points: int = 4000,
    max_rejected: int = 80,
    seed: int = 0,
    dpi: int = 110,
) -> Path:
    """Writes the picture to ``path`` (PNG) and returns the path.

    The first ``num_targets`` kept poses (the targets, best first) are drawn darker and thicker; at most
    ``max_rejected`` rejected grasps are drawn (a fixed random subset).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection
    from matplotlib.lines import Line2D

    path = Path(path)
    rng = np.random.default_rng(seed)
    obj = _subsample(np.asarray(object_points, np.float64).reshape(-1, 3), max_points, rng)
    hand = _subsample(np.asarray(hand_points, np.float64).reshape(-1, 3), max_points, rng)
    rej_idx = np.arange(len(rejected_poses))
    if rej_idx.size > max_rejected:
        rej_idx = np.sort(rng.choice(rej_idx.size, max_rejected, replace=False))
    rejected = _segments(np.asarray(rejected_poses)[rej_idx], np.asarray(rejected_openings)[rej_idx], gripper)
    kept = _segments(np.asarray(kept_poses), np.asarray(kept_openings), gripper)

    # Frame the object, its grasps and the hand near it (not the whole forearm).
    focus = np.concatenate([obj, kept.reshape(-1, 3)]) if kept.size else obj
    lo, hi = focus.min(axis=0), focus.max(axis=0)
    centre, half = (lo + hi) / 2, max(float((hi - lo).max()) / 2 * 1.15, 0.05)

    fig, axes = plt.subplots(1, 3, figsize=(15, 5.4))
    for ax, (name, i, j) in zip(axes, _VIEWS):
        ax.scatter(hand[:, i], hand[:, j], s=1.5, c=_HAND_COLOR, alpha=0.5, linewidths=0)
        ax.scatter(obj[:, i], obj[:, j], s=1.5, c=_OBJECT_COLOR, alpha=0.6, linewidths=0)
        groups: Sequence[tuple[np.ndarray, str, float, float]] = (
            (rejected, _REJECTED_COLOR, 0.5, 0.3),
            (kept[num_targets:], _KEPT_COLOR, 1.0, 0.8),
            (kept[:num_targets], _TARGET_COLOR, 2.2, 1.0),
        )
        for segs, color, width, alpha in groups:
            if segs.size:
                lines = segs.reshape(-1, 2, 3)[:, :, [i, j]]
                ax.add_collection(LineCollection(lines, colors=color, linewidths=width, alpha=alpha))
        ax.set_xlim(centre[i] - half, centre[i] + half)
        ax.set_ylim(centre[j] - half, centre[j] + half)
        ax.set_aspect("equal")
        ax.set_title(name)
        ax.set_xlabel("xyz"[i] + " (m)")
        ax.set_ylabel("xyz"[j] + " (m)")
        ax.grid(alpha=0.25)
    legend = [
        Line2D([], [], color=_TARGET_COLOR, lw=2.2, label=f"targets ({min(num_targets, len(kept_poses))})"),
        Line2D([], [], color=_KEPT_COLOR, lw=1.0, label=f"kept ({len(kept_poses)})"),
        Line2D(
            [],
            [],
            color=_REJECTED_COLOR,
            lw=0.8,
            label=f"rejected ({len(rejected_poses)}, {rej_idx.size} drawn)",
        ),
        Line2D([], [], color=_HAND_COLOR, marker="o", lw=0, label="hand points"),
        Line2D([], [], color=_OBJECT_COLOR, marker="o", lw=0, label="object points"),
    ]
    fig.legend(handles=legend, loc="lower center", ncol=5, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.08, 1, 0.96))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.png")
    try:
        fig.savefig(tmp, dpi=dpi, format="png")
    finally:
        plt.close(fig)
    os.replace(tmp, path)
    return path
