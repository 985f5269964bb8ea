"""RGB-D fusion: from the training views' depth maps to a labelled metric point cloud and Gaussians.

1. `split_views` picks the training and held-out views (held-out views are never fused nor optimised).
2. `view_points` back-projects one view's valid depth into world points (`splatsim.conventions`: pixel
   centres at ``+0.5``, camera-to-world poses, OpenCV axes), each with its pixel's colour and mask label.
3. `fuse_views` concatenates them, `voxel_downsample`s (centroid position and colour per voxel, label by
   majority vote over every point that fell in the voxel, from every view), and removes statistical
   outliers (open3d).
4. `init_gaussians` turns the cloud into a `GaussianScene`: means at the points, scales from the mean
   distance to the nearest neighbours, a constant initial opacity, colour as the SH DC term.

Units are metres throughout; the cloud is in the capture's scene frame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import open3d as o3d
import torch
from scipy import ndimage
from scipy.spatial import cKDTree

from recon.capture import Capture, ViewData
from splatsim.conventions import depth_to_world_points, rotmat_to_quat_wxyz
from splatsim.scene import NUM_LABELS, GaussianScene, num_sh_coeffs, rgb_to_sh_dc

__all__ = [
    "FusedCloud",
    "FusionConfig",
    "FusionError",
    "ViewSplit",
    "fuse_views",
    "init_gaussians",
    "remove_outliers",
    "split_views",
    "unseen_fractions",
    "view_points",
    "voxel_downsample",
]


class FusionError(ValueError):
    """The chosen views cannot be fused into a usable point cloud (no depth, bad view choice, ...)."""


@dataclass
class FusionConfig:
    """How depth maps become the point cloud and the initial Gaussians."""

    voxel_size_m: float = 0.004
    """Voxel edge for downsampling the fused cloud, metres (one Gaussian per occupied voxel)."""
    background_voxel_size_m: float = 0.006
    """Voxel edge for background points (label 0), metres; coarser than hand and object to keep the
    Gaussian count (and the CPU time) down where detail matters least. 0 = same as voxel_size_m."""
    min_depth_m: float = 0.1
    """Depth below this (metres) is treated as missing."""
    max_depth_m: float = 4.0
    """Depth above this (metres) is treated as missing."""
    max_depth_jump: float = 0.03
    """Drop pixels whose depth differs from a 4-neighbour's by more than this fraction of their depth
    (flying pixels at depth edges, where a sensor mixes foreground and background); 0 = keep all."""
    fill_holes_px: int = 4
    """Fill missing depth within this many pixels of valid depth with the nearest valid depth of the same
    mask label (sensor holes at grazing angles and edges would otherwise leave gaps that a nearby
    held-out view sees); filled pixels add points but never enter the depth loss. 0 = off."""
    outlier_neighbors: int = 16
    """Neighbours for statistical outlier removal (open3d); 0 disables it."""
    outlier_std_ratio: float = 3.0
    """A point whose mean neighbour distance exceeds the cloud's mean by this many standard deviations
    is removed."""
    init_neighbors: int = 3
    """Initial scale = mean distance to this many nearest neighbours."""
    init_scale_factor: float = 0.7
    """Multiplies the neighbour distance to give the initial standard deviation."""
    init_flat_ratio: float = 1.0
    """Initial scale along the local surface normal relative to the tangent scales (1 = isotropic
    Gaussians; < 1 gives surfel-like discs oriented by open3d normals)."""
    init_opacity: float = 0.8
    """Initial opacity of every Gaussian, in (0, 1)."""


@dataclass
class ViewSplit:
    """Which capture views train the scene and which are held out for evaluation (indices)."""

    train: list[int]
    heldout: list[int]
    names: list[str] = field(default_factory=list)
    """All view names of the capture, indexed like ``train`` and ``heldout``."""

    @property
    def train_names(self) -> list[str]:
        return [self.names[i] for i in self.train]

    @property
    def heldout_names(self) -> list[str]:
        return [self.names[i] for i in self.heldout]


@dataclass
class FusedCloud:
    """A labelled, coloured point cloud in the scene frame."""

    points: np.ndarray  # [M, 3] float64 metres
    colors: np.ndarray  # [M, 3] float32 RGB in [0, 1]
    labels: np.ndarray  # [M] int64 in {0, 1, 2}
    stats: dict[str, int] = field(default_factory=dict)
    """Point counts after each fusion step (for the report)."""

    def __len__(self) -> int:
        return int(self.points.shape[0])


# --------------------------------------------------------------------------------------------------
# Choosing views
# --------------------------------------------------------------------------------------------------


UNSEEN_TIE = 0.01
"""Held-out candidates whose unseen fractions differ by at most this count as equally covered."""


def _nearest(centres: np.ndarray, refs: Sequence[int], pool: Sequence[int], k: int) -> list[int]:
    """The ``k`` cameras of ``pool`` nearest to any camera in ``refs`` (ties by index), sorted."""
    dist = np.linalg.norm(centres[:, None, :] - centres[list(refs)][None], axis=-1).min(1)
    return sorted(sorted(pool, key=lambda i: (float(dist[i]), i))[:k])


def unseen_fractions(
    views: Sequence[ViewData],
    num_train: int,
    cfg: FusionConfig | None = None,
    cell_px: int = 4,
) -> np.ndarray:  # [V] in [0, 1]
    """For each view, the fraction of its image that its ``num_train`` nearest cameras (all others if
    0) never see: the back-projected valid depth of those views, projected into this view, leaves
    these ``cell_px`` x ``cell_px`` pixel cells empty. Uses only this view's pose and intrinsics, never
    its images."""
    cfg = cfg or FusionConfig()
    n = len(views)
    centres = np.stack([np.asarray(v.c2w, dtype=np.float64)[:3, 3] for v in views])
    points = []
    for v in views:  # every other pixel is plenty for coverage
        d = np.asarray(v.depth, dtype=np.float64)[::2, ::2]
        valid = valid_depth_mask(d, cfg.min_depth_m, cfg.max_depth_m)
        K = v.K.copy()
        K[:2] /= 2.0
        world = depth_to_world_points(
            torch.from_numpy(d), torch.from_numpy(K), torch.from_numpy(v.c2w)
        ).numpy()
        points.append(world[valid])
    out = np.ones(n)
    for h, v in enumerate(views):
        others = [i for i in range(n) if i != h]
        train = others if num_train <= 0 else _nearest(centres, [h], others, num_train)
        if not train:
            continue
        p = np.concatenate([points[i] for i in train])
        w2c = np.linalg.inv(np.asarray(v.c2w, dtype=np.float64))
        cam = p @ w2c[:3, :3].T + w2c[:3, 3]
        z = cam[:, 2]
        front = z > 1e-6
        u = v.fx * cam[front, 0] / z[front] + v.cx
        r = v.fy * cam[front, 1] / z[front] + v.cy
        gw, gh = -(-v.width // cell_px), -(-v.height // cell_px)
        inside = (u >= 0) & (u < v.width) & (r >= 0) & (r < v.height)
        cells = (r[inside] // cell_px).astype(np.int64) * gw + (u[inside] // cell_px).astype(np.int64)
        out[h] = 1.0 - np.unique(cells).size / (gw * gh)
    return out


def split_views(
    capture: Capture,
    num_train: int = 0,
    num_holdout: int = 1,
    train_views: Sequence[str] = (),
    holdout_views: Sequence[str] = (),
    views: Sequence[ViewData] | None = None,
    cfg: FusionConfig | None = None,
) -> ViewSplit:
    """Deterministically chooses held-out and training views.

    Held out (unless named): with the loaded ``views`` (all of the capture's, in order), the views
    that their training cameras cover best (smallest `unseen_fractions`; within `UNSEEN_TIE` of the
    best, the camera nearest the centroid of the camera centres), so the held-out view is an interpolation between training viewpoints rather
    than a look at what no training view saw; without ``views``, the cameras nearest the centroid of
    the camera centres. On the default 8-camera synthetic rig both pick the same camera; on a
    two-row 9-camera rig the centroid rule picks a top-row camera that sees wall regions hidden from
    its neighbours (4-view held-out PSNR 24.5 dB).
    Training (unless named): all remaining views if ``num_train`` is 0; otherwise the ``num_train``
    remaining cameras nearest to a held-out camera, so the held-out view is surrounded by training
    viewpoints (on the default synthetic rig this leaves ~0.2% of the held-out image unseen by the
    training views, against ~6% for farthest-point sampling of the rig).

    Raises:
        FusionError: For unknown or repeated names, a held-out count that leaves no training view, or
            training and held-out views that overlap.
    """
    names = capture.names
    n = len(names)
    centres = np.stack([np.asarray(v.c2w, dtype=np.float64)[:3, 3] for v in capture.views])

    def index(name: str, what: str) -> int:
        if name not in names:
            raise FusionError(
                f"{capture.json_path}: {what} view {name!r} is not in the capture; views: {names}"
            )
        return names.index(name)

    if holdout_views:
        heldout = [index(s, "held-out") for s in holdout_views]
    else:
        if num_holdout < 0:
            raise FusionError(f"ReconConfig.holdout = {num_holdout}; expected a count >= 0")
        if num_holdout >= n:
            raise FusionError(
                f"{capture.json_path}: holdout = {num_holdout} but the capture has only {n} views; hold out "
                f"at most {n - 1} so at least one view is left to train on"
            )
        central = np.linalg.norm(centres - centres.mean(0), axis=1)
        if views is not None:
            if [v.name for v in views] != names:
                raise FusionError(f"split_views: views must be all of the capture's views in order: {names}")
            unseen = unseen_fractions(views, num_train, cfg)
            # Coverage within one percent of the best counts as equal; then the more central camera.
            near_best = unseen <= unseen.min() + UNSEEN_TIE
            order = np.lexsort((central, np.where(near_best, 0.0, unseen), ~near_best))
        else:
            order = np.argsort(central, kind="stable")
        heldout = [int(i) for i in order[:num_holdout]]
    if len(set(heldout)) != len(heldout):
        raise FusionError(f"held-out views repeat a view: {[names[i] for i in heldout]}")

    if train_views:
        train = [index(s, "training") for s in train_views]
        if len(set(train)) != len(train):
            raise FusionError(f"training views repeat a view: {list(train_views)}")
        both = sorted(set(train) & set(heldout))
        if both:
            raise FusionError(
                f"views {[names[i] for i in both]} are both training and held-out; a held-out view must "
                "never be trained on: remove it from one of the lists"
            )
    else:
        rest = [i for i in range(n) if i not in heldout]
        if not rest:
            raise FusionError(
                f"{capture.json_path}: all {n} views are held out; at least one view must be left to train on"
            )
        if num_train < 0:
            raise FusionError(f"ReconConfig.num_train_views = {num_train}; expected >= 0 (0 = all)")
        if num_train == 0 or num_train >= len(rest):
            train = rest
        elif heldout:
            train = _nearest(centres, heldout, rest, num_train)
        else:
            central = np.linalg.norm(centres - centres.mean(0), axis=1)
            train = sorted(sorted(rest, key=lambda i: (float(central[i]), i))[:num_train])
    if not train:
        raise FusionError(f"{capture.json_path}: no training views were chosen")
    return ViewSplit(train=train, heldout=heldout, names=list(names))


# --------------------------------------------------------------------------------------------------
# Back-projection
# --------------------------------------------------------------------------------------------------


def valid_depth_mask(
    depth: np.ndarray,  # [H, W] metres, 0 = missing
    min_depth_m: float,
    max_depth_m: float,
    max_depth_jump: float = 0.0,
) -> np.ndarray:  # [H, W] bool
    """Pixels with usable depth: finite, within range, and (optionally) not at a depth discontinuity."""
    d = np.asarray(depth, dtype=np.float64)
    valid = np.isfinite(d) & (d >= min_depth_m) & (d <= max_depth_m)
    if max_depth_jump > 0:
        p = np.pad(np.where(valid, d, np.nan), 1, mode="constant", constant_values=np.nan)
        c = p[1:-1, 1:-1]
        with np.errstate(invalid="ignore"):
            for nb in (p[:-2, 1:-1], p[2:, 1:-1], p[1:-1, :-2], p[1:-1, 2:]):
                valid &= ~(np.abs(nb - c) > max_depth_jump * c)  # NaN neighbours compare False
    return valid


def fill_depth_holes(
    depth: np.ndarray,  # [H, W] metres
    valid: np.ndarray,  # [H, W] bool: trusted depth
    mask: np.ndarray | None,  # [H, W] labels, or None
    max_px: int,
) -> tuple[np.ndarray, np.ndarray]:  # filled depth [H, W], filled-or-valid [H, W] bool
    """Gives each invalid pixel within ``max_px`` of a valid pixel of the same label that pixel's depth."""
    depth = np.where(valid, depth, 0.0).astype(np.float64)
    out_valid = valid.copy()
    if max_px <= 0:
        return depth, out_valid
    groups = [np.ones_like(valid)] if mask is None else [mask == lab for lab in np.unique(mask)]
    for g in groups:
        src = valid & g
        if not src.any():
            continue
        dist, (ri, ci) = ndimage.distance_transform_edt(~src, return_indices=True)
        fill = g & ~valid & (dist <= max_px)
        depth[fill] = depth[ri[fill], ci[fill]]
        out_valid |= fill
    return depth, out_valid


def view_points(
    view: ViewData,
    min_depth_m: float = 0.1,
    max_depth_m: float = 4.0,
    max_depth_jump: float = 0.0,
    fill_holes_px: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World points of a view's valid (and, optionally, hole-filled) depth pixels, with colours and labels.

    Returns:
        points [M, 3] float64 metres (scene frame), colors [M, 3] float32 in [0, 1], labels [M] int64
        (the mask's label, or -1 where the view has no mask: such points do not vote).
    """
    valid = valid_depth_mask(view.depth, min_depth_m, max_depth_m, max_depth_jump)
    depth, valid = fill_depth_holes(np.asarray(view.depth), valid, view.mask, fill_holes_px)
    depth = torch.from_numpy(depth)
    K = torch.from_numpy(view.K)
    c2w = torch.from_numpy(np.asarray(view.c2w, dtype=np.float64))
    world = depth_to_world_points(depth, K, c2w).numpy()  # [H, W, 3]
    points = world[valid]
    colors = (np.asarray(view.rgb)[valid].astype(np.float32)) / 255.0
    if view.mask is None:
        labels = np.full(points.shape[0], -1, dtype=np.int64)
    else:
        labels = np.asarray(view.mask)[valid].astype(np.int64)
    return points, colors, labels


# --------------------------------------------------------------------------------------------------
# Downsampling and cleaning
# --------------------------------------------------------------------------------------------------


def voxel_downsample(
    points: np.ndarray,  # [M, 3]
    colors: np.ndarray,  # [M, 3]
    labels: np.ndarray,  # [M] in {-1 (no vote), 0, 1, 2}
    voxel_size: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One point per occupied voxel: centroid, mean colour, and the majority label of its points.

    Positions and colours average like open3d's ``voxel_down_sample``; labels are voted instead of
    averaged (a label mean is meaningless). Ties go to the lower label id; a voxel without votes is
    background. The output is ordered by voxel key, so it is deterministic.
    """
    if voxel_size <= 0:
        raise FusionError(f"FusionConfig.voxel_size_m = {voxel_size}; expected a positive size in metres")
    if points.shape[0] == 0:
        return points.reshape(0, 3), colors.reshape(0, 3), labels.reshape(0)
    keys = np.floor((points - points.min(0)) / voxel_size).astype(np.int64)
    dims = keys.max(0) + 1
    lin = (keys[:, 0] * dims[1] + keys[:, 1]) * dims[2] + keys[:, 2]
    _, inv, counts = np.unique(lin, return_inverse=True, return_counts=True)
    m = counts.shape[0]
    pts = np.stack([np.bincount(inv, points[:, k], minlength=m) for k in range(3)], 1) / counts[:, None]
    col = np.stack([np.bincount(inv, colors[:, k], minlength=m) for k in range(3)], 1) / counts[:, None]
    voting = labels >= 0
    votes = np.bincount(inv[voting] * NUM_LABELS + labels[voting], minlength=m * NUM_LABELS)
    lab = votes.reshape(m, NUM_LABELS).argmax(1).astype(np.int64)
    return pts, col.astype(np.float32), lab


def remove_outliers(points: np.ndarray, neighbors: int, std_ratio: float) -> np.ndarray:
    """Indices of the points kept by open3d's statistical outlier removal (all if ``neighbors`` is 0)."""
    if neighbors <= 0 or points.shape[0] <= neighbors:
        return np.arange(points.shape[0])
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
    _, kept = pcd.remove_statistical_outlier(nb_neighbors=int(neighbors), std_ratio=float(std_ratio))
    return np.sort(np.asarray(kept, dtype=np.int64))


def fuse_views(views: Sequence[ViewData], cfg: FusionConfig | None = None) -> FusedCloud:
    """Fuses the views' valid depth into one labelled point cloud (see the module docstring).

    Raises:
        FusionError: If no view has valid depth in range, or nothing survives cleaning.
    """
    cfg = cfg or FusionConfig()
    if not views:
        raise FusionError("fuse_views got no views; pass at least one training view")
    parts = []
    per_view: dict[str, int] = {}
    for v in views:
        p, c, lab = view_points(v, cfg.min_depth_m, cfg.max_depth_m, cfg.max_depth_jump, cfg.fill_holes_px)
        per_view[v.name] = int(p.shape[0])
        parts.append((p, c, lab))
    points = np.concatenate([p for p, _, _ in parts])
    colors = np.concatenate([c for _, c, _ in parts])
    labels = np.concatenate([lab for _, _, lab in parts])
    if points.shape[0] == 0:
        raise FusionError(
            f"the training views {list(per_view)} have no valid depth between min_depth_m = "
            f"{cfg.min_depth_m} and max_depth_m = {cfg.max_depth_m} metres: the fused cloud is empty. "
            "Check the depth files and the capture's depth_scale, or widen the depth range"
        )
    stats = {"backprojected": int(points.shape[0])}
    stats.update({f"view_{k}": n for k, n in per_view.items()})

    bg_voxel = cfg.background_voxel_size_m or cfg.voxel_size_m
    if bg_voxel != cfg.voxel_size_m:
        # Vote first at the fine voxel so a point's class decides which grid it goes to.
        p, c, lab = voxel_downsample(points, colors, labels, cfg.voxel_size_m)
        fg = lab != 0
        pb, cb, lb = voxel_downsample(p[~fg], c[~fg], lab[~fg], bg_voxel)
        p, c, lab = np.concatenate([p[fg], pb]), np.concatenate([c[fg], cb]), np.concatenate([lab[fg], lb])
    else:
        p, c, lab = voxel_downsample(points, colors, labels, cfg.voxel_size_m)
    stats["voxelized"] = int(p.shape[0])
    keep = remove_outliers(p, cfg.outlier_neighbors, cfg.outlier_std_ratio)
    p, c, lab = p[keep], c[keep], lab[keep]
    stats["after_outliers"] = int(p.shape[0])
    if p.shape[0] < 4:
        raise FusionError(
            f"only {p.shape[0]} fused points survive voxel downsampling and outlier removal (from "
            f"{stats['backprojected']} back-projected); the training views {list(per_view)} see too little "
            "valid depth: check the depth images, or lower voxel_size_m / outlier_std_ratio"
        )
    return FusedCloud(points=p, colors=c, labels=lab, stats=stats)


# --------------------------------------------------------------------------------------------------
# Initial Gaussians
# --------------------------------------------------------------------------------------------------


def _normal_quats(points: np.ndarray, radius: float) -> torch.Tensor:
    """wxyz quaternions whose rotation maps +z to each point's estimated surface normal."""
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
    pcd.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=radius, max_nn=16))
    n = np.asarray(pcd.normals, dtype=np.float64)
    n = n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    # Orthonormal frame (t1, t2, n) per point; any tangent choice works for a disc.
    helper = np.where(np.abs(n[:, :1]) < 0.9, np.array([[1.0, 0, 0]]), np.array([[0, 1.0, 0]]))
    t1 = np.cross(helper, n)
    t1 /= np.linalg.norm(t1, axis=1, keepdims=True)
    t2 = np.cross(n, t1)
    R = torch.from_numpy(np.stack([t1, t2, n], axis=-1))  # columns
    return rotmat_to_quat_wxyz(R).float()


def init_gaussians(cloud: FusedCloud, sh_degree: int = 0, cfg: FusionConfig | None = None) -> GaussianScene:
    """Initial Gaussians from a fused cloud: one per point (see the module docstring)."""
    cfg = cfg or FusionConfig()
    if not 0.0 < cfg.init_opacity < 1.0:
        raise FusionError(f"FusionConfig.init_opacity = {cfg.init_opacity}; expected a value in (0, 1)")
    n = len(cloud)
    if n < cfg.init_neighbors + 1:
        raise FusionError(f"the fused cloud has {n} points; need at least {cfg.init_neighbors + 1}")
    tree = cKDTree(cloud.points)
    dist, _ = tree.query(cloud.points, k=cfg.init_neighbors + 1)
    nn = dist[:, 1:].mean(1)
    floor = 0.25 * cfg.voxel_size_m
    s = np.maximum(nn, floor) * cfg.init_scale_factor
    scales = torch.from_numpy(np.repeat(s[:, None], 3, axis=1)).float()
    if cfg.init_flat_ratio < 1.0:
        quats = _normal_quats(cloud.points, radius=4.0 * max(cfg.voxel_size_m, cfg.background_voxel_size_m))
        scales[:, 2] *= max(cfg.init_flat_ratio, 1e-3)
    else:
        quats = torch.zeros(n, 4)
        quats[:, 0] = 1.0
    sh = torch.zeros(n, num_sh_coeffs(sh_degree), 3)
    sh[:, 0] = rgb_to_sh_dc(torch.from_numpy(np.clip(cloud.colors, 0.0, 1.0)).float())
    logit = math.log(cfg.init_opacity / (1.0 - cfg.init_opacity))
    return GaussianScene(
        means=torch.from_numpy(cloud.points).float(),
        quats=quats,
        log_scales=torch.log(scales),
        logit_opacities=torch.full((n,), logit),
        sh=sh,
        labels=torch.from_numpy(cloud.labels).long(),
    )
