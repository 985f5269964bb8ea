"""Pictures of the demonstrations: a trajectory plot like the paper's Fig. 3 and an episode video.

- `plot_trajectories`: hand and object points (blue shades), the target grasp as a yellow gripper, its
  pre-grasp pose, and every camera path colour-coded from dark red (start) to yellow (pre-grasp), with
  the viewing direction drawn at the start of each path (matplotlib, PNG).
- `write_episode_video`: an episode's hand-eye frames, plain RGB beside RGB with the object (blue) and
  hand (orange) masks overlaid, upscaled with nearest-neighbour sampling (mp4 through imageio-ffmpeg).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["overlay_masks", "plot_trajectories", "write_episode_video"]

_MASK_COLORS = {1: (40, 120, 255), 2: (255, 120, 40)}
"""Overlay colours by label: object blue, hand orange (as `splatsim render-check`)."""


def _gripper_lines(pose: np.ndarray, width: float = 0.085, depth: float = 0.045) -> list[np.ndarray]:
    """Line strips of a parallel gripper in the grasp frame (approach +z, closing +x), in the scene."""
    w = 0.5 * width
    local = [
        np.array([[0.0, 0.0, -0.06], [0.0, 0.0, 0.0]]),  # stem
        np.array([[-w, 0.0, depth], [-w, 0.0, 0.0], [w, 0.0, 0.0], [w, 0.0, depth]]),  # palm + fingers
    ]
    return [strip @ pose[:3, :3].T + pose[:3, 3] for strip in local]


def _up_to_z(up: np.ndarray) -> np.ndarray:
    """The smallest rotation taking the unit ``up`` to +z."""
    u = up / np.linalg.norm(up)
    z = np.array([0.0, 0.0, 1.0])
    v, c = np.cross(u, z), float(u @ z)
    if np.linalg.norm(v) < 1e-12:
        return np.eye(3) if c > 0 else np.diag([1.0, -1.0, -1.0])
    K = np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])
    return np.eye(3) + K + K @ K / (1.0 + c)


def _subsample(points: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if len(points) <= n:
        return points
    return points[np.random.default_rng(seed).choice(len(points), n, replace=False)]


def plot_trajectories(
    path: Path | str,
    hand_points: np.ndarray,  # [M, 3]
    object_points: np.ndarray,  # [P, 3]
    grasp_pose: np.ndarray,  # [4, 4]
    trajectories: Sequence[np.ndarray],  # each [T, 4, 4] gripper (or camera) poses
    *,
    pregrasp_pose: np.ndarray | None = None,
    up: Sequence[float] = (0.0, 0.0, 1.0),
    title: str = "",
    max_points: int = 3000,
) -> Path:
    """Writes a Fig.-3-like 3D plot of the camera paths to one grasp (PNG, atomically).

    The scene is turned so that its ``up`` points up in the plot (axes are then labelled x', y', z').
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib import colormaps

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    R = _up_to_z(np.asarray(up, dtype=np.float64))
    T = np.eye(4)
    T[:3, :3] = R
    grasp_pose = T @ np.asarray(grasp_pose)
    pregrasp_pose = None if pregrasp_pose is None else T @ np.asarray(pregrasp_pose)
    trajectories = [T @ np.asarray(traj) for traj in trajectories]
    fig = plt.figure(figsize=(7.5, 6.5), dpi=120)
    ax = fig.add_subplot(projection="3d")
    hand = _subsample(hand_points, max_points, 1) @ R.T
    obj = _subsample(object_points, max_points, 2) @ R.T
    ax.scatter(*hand.T, s=1, c="#6fa8dc", alpha=0.5, label="hand", depthshade=False)
    ax.scatter(*obj.T, s=1, c="#1f4e9a", alpha=0.6, label="object", depthshade=False)
    for strip in _gripper_lines(np.asarray(grasp_pose)):
        ax.plot(*strip.T, color="#f2c200", lw=3)
    ax.plot([], [], color="#f2c200", lw=3, label="grasp")
    if pregrasp_pose is not None:
        for strip in _gripper_lines(np.asarray(pregrasp_pose)):
            ax.plot(*strip.T, color="#f2c200", lw=1.5, ls="--")
    cmap = colormaps["YlOrRd_r"]  # dark red (start) -> yellow (pre-grasp)
    reach = [hand, obj]
    for traj in trajectories:
        traj = np.asarray(traj)
        p = traj[:, :3, 3]
        reach.append(p)
        colors = cmap(np.linspace(0.0, 0.85, max(len(p) - 1, 1)))
        for t in range(len(p) - 1):
            ax.plot(*p[t : t + 2].T, color=colors[t], lw=1.6)
        ax.scatter(*p[0], color=colors[0], s=12)
        view = traj[0, :3, 2] * 0.06
        ax.quiver(*p[0], *view, color=colors[0], lw=1)
    pts = np.concatenate(reach)
    lo, hi = pts.min(0), pts.max(0)
    c, r = 0.5 * (lo + hi), 0.5 * float((hi - lo).max()) + 1e-3
    ax.set_xlim(c[0] - r, c[0] + r)
    ax.set_ylim(c[1] - r, c[1] + r)
    ax.set_zlim(c[2] - r, c[2] + r)
    ax.set_box_aspect((1, 1, 1))
    turned = not np.allclose(R, np.eye(3))
    for axis, name in zip("xyz", "xyz"):
        getattr(ax, f"set_{axis}label")(f"{name}{chr(39) if turned else ''} (m)")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(
        title or f"{len(trajectories)} trajectories: dark red (start) to yellow (pre-grasp)", fontsize=9
    )
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def overlay_masks(
    rgb: np.ndarray,  # [..., H, W, 3] uint8
    mask: np.ndarray,  # [..., H, W] uint8 labels
    strength: float = 0.55,
) -> np.ndarray:  # [..., H, W, 3] uint8
    """Blends the object (blue) and hand (orange) labels over the RGB."""
    out = rgb.astype(np.float32)
    for label, color in _MASK_COLORS.items():
        m = (mask == label)[..., None] * strength
        out = out * (1 - m) + np.asarray(color, np.float32) * m
    return np.clip(out, 0, 255).astype(np.uint8)


def write_episode_video(
    path: Path | str,
    rgb: np.ndarray,  # [T, H, W, 3] uint8
    mask: np.ndarray,  # [T, H, W] uint8
    *,
    fps: float = 5.0,
    scale: int = 3,
) -> Path:
    """Writes RGB | RGB with masks overlaid, ``scale`` times upscaled, as an H.264 mp4 (atomically)."""
    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = np.concatenate([rgb, overlay_masks(rgb, mask)], axis=2)
    frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    H, W = frames.shape[1:3]
    pad_h, pad_w = (-H) % 16, (-W) % 16  # H.264 wants multiples of 16
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.mp4")
    imageio.mimwrite(tmp, list(frames), fps=fps, codec="libx264", quality=8, macro_block_size=16)
    os.replace(tmp, path)
    return path


def write_episode_strip(
    path: Path | str,
    rgb: np.ndarray,  # [T, H, W, 3] uint8
    mask: np.ndarray,  # [T, H, W] uint8
    *,
    num: int = 6,
    scale: int = 2,
) -> Path:
    """A PNG of ``num`` evenly spaced steps (first to pre-grasp): RGB above, masks overlaid below."""
    import imageio.v3 as iio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    idx = np.unique(np.linspace(0, len(rgb) - 1, min(num, len(rgb))).round().astype(int))
    top = np.concatenate(list(rgb[idx]), axis=1)
    bottom = np.concatenate(list(overlay_masks(rgb[idx], mask[idx])), axis=1)
    img = np.concatenate([top, bottom], axis=0).repeat(scale, axis=0).repeat(scale, axis=1)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    iio.imwrite(tmp, img)
    os.replace(tmp, path)
    return path
