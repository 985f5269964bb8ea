"""Rendering planned trajectories into episodes of (image, mask, action, cls) tuples.

`HandEyeRenderer` renders many hand-eye poses of one scene in batches (several cameras per
`splatsim.render.rasterize` call amortise its fixed costs). On the CPU backend each batch only gets the
Gaussians that can touch one of its images: the scene is bucketed once into a coarse grid of cells
with bounding spheres (each Gaussian's sphere reaches 3.5 standard deviations, beyond its 1/255 alpha
cut-off), and a batch keeps the cells that intersect the frustum of any of its cameras widened by a few
pixels (covering the renderer's 0.3 px² screen-space dilation). Culled Gaussians would contribute
nothing, so the images equal an unculled render up to float rounding.

Recovery samples (`trajgen.recovery`), when the trajectory carries them, are rendered with it and kept
beside its frames in `Episode.recovery` (`RecoveryFrames`), not among them: the episode's steps stay
the planned trajectory.

Masks: the renderer composites per-Gaussian labels like colour (occlusion-aware); the stored mask is the
hard label map (`RenderOutput.label_map`): 0 background, 1 object, 2 hand, where the winning label's
probability reaches ``mask_min_prob``, else 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from splatsim.conventions import rigid_inverse
from splatsim.render import rasterize, resolve_backend
from splatsim.scene import SH_C0, GaussianScene
from trajgen.handeye import HandEyeConfig, camera_poses_from_gripper, policy_intrinsics
from trajgen.trajectory import Trajectory, trajectory_actions

__all__ = ["Episode", "HandEyeRenderer", "RecoveryFrames", "build_episode", "depth_millimetres"]

_SIGMA_REACH = 3.5
"""Culling radius of a Gaussian in standard deviations (its alpha falls below 1/255 by 3.33)."""
_MARGIN_PX = 4.0
"""Frustum widening for culling, pixels (covers the 0.3 px² dilation's reach of ~1.8 px)."""


def depth_millimetres(depth_m: np.ndarray) -> np.ndarray:  # float metres -> uint16 millimetres
    """Float metres as episodes store depth: uint16 millimetres, rounded, 0 where there is no depth
    (non-finite or <= 0), saturating at 65535 mm (the capture format's depth unit)."""
    d = np.asarray(depth_m, np.float64)
    d = np.where(np.isfinite(d) & (d > 0), d, 0.0)
    return np.clip(np.round(d * 1000.0), 0, 65535).astype(np.uint16)


class _CullGrid:
    """Gaussians bucketed into cubic cells, each with a bounding sphere of its Gaussians' reach."""

    def __init__(self, means: np.ndarray, reach: np.ndarray, cell: float) -> None:
        lo = means.min(0)
        keys = np.floor((means - lo) / cell).astype(np.int64)
        dims = keys.max(0) + 1
        flat = (keys[:, 0] * dims[1] + keys[:, 1]) * dims[2] + keys[:, 2]
        self.order = np.argsort(flat, kind="stable")
        cells, self.starts, self.counts = np.unique(flat[self.order], return_index=True, return_counts=True)
        pmin = np.minimum.reduceat(means[self.order], self.starts)
        pmax = np.maximum.reduceat(means[self.order], self.starts)
        self.centers = 0.5 * (pmin + pmax)
        self.radii = 0.5 * np.linalg.norm(pmax - pmin, axis=1) + np.maximum.reduceat(
            reach[self.order], self.starts
        )

    def visible(
        self, viewmats: np.ndarray, K: np.ndarray, width: int, height: int, near: float
    ) -> np.ndarray:
        """Sorted indices of the Gaussians in cells that intersect any camera's widened frustum."""
        fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
        m = _MARGIN_PX
        planes = np.array(
            [[1.0, 0.0, (cx + m) / fx], [-1.0, 0.0, (width - cx + m) / fx],
             [0.0, 1.0, (cy + m) / fy], [0.0, -1.0, (height - cy + m) / fy]]
        )  # fmt: skip
        planes /= np.linalg.norm(planes, axis=1, keepdims=True)
        pc = np.einsum("cij,mj->cmi", viewmats[:, :3, :3], self.centers) + viewmats[:, None, :3, 3]
        dist = np.einsum("cmi,pi->cmp", pc, planes)  # [C, M, 4] signed distances (inside > 0)
        r = self.radii
        ok = (pc[..., 2] > near - r) & (dist > -r[None, :, None]).all(-1)
        cells = np.flatnonzero(ok.any(0))
        counts = self.counts[cells]
        base = np.repeat(self.starts[cells] - np.cumsum(counts) + counts, counts)
        idx = self.order[base + np.arange(int(counts.sum()))]
        idx.sort()
        return idx


class HandEyeRenderer:
    """Renders hand-eye RGB (uint8) and label masks (uint8) of one scene for batches of poses."""

    def __init__(
        self,
        scene: GaussianScene,
        camera: HandEyeConfig,
        *,
        backend: str = "auto",
        batch_size: int = 8,
        cull: bool = True,
        cull_cell: float = 0.1,
        mask_min_prob: float = 0.5,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"HandEyeRenderer: batch_size = {batch_size}; expected >= 1")
        camera.validate()
        self.camera = camera
        self.backend = resolve_backend(backend)
        self.device = torch.device("cuda" if self.backend == "gsplat" else "cpu")
        self.batch_size = batch_size
        self.mask_min_prob = mask_min_prob
        intr = policy_intrinsics(camera)
        self.width, self.height = intr.width, intr.height
        self.K = intr.K(torch.float32, self.device)
        scene = scene.detach().to(device=self.device, dtype=torch.float32)
        self.sh_degree = scene.sh_degree
        self.means = scene.means.contiguous()
        self.quats = scene.normalized_quats.contiguous()
        self.scales = scene.scales.contiguous()
        self.opacities = scene.opacities.contiguous()
        # Degree 0: view-independent colour, computed once (what `sh_to_rgb` does per call).
        self.colors = (
            scene.sh if self.sh_degree > 0 else (scene.sh[:, 0] * SH_C0 + 0.5).clamp_min(0.0)
        ).contiguous()
        self.labels = scene.labels.contiguous()
        self.background = torch.tensor(camera.background, dtype=torch.float32, device=self.device)
        self._grid = None
        if cull and self.backend != "gsplat" and scene.num_gaussians > 0:
            reach = _SIGMA_REACH * self.scales.amax(-1)
            self._grid = _CullGrid(self.means.cpu().double().numpy(), reach.cpu().double().numpy(), cull_cell)

    def render_cameras(
        self,
        camera_poses: Tensor,  # [T, 4, 4] camera-to-world
        *,
        with_depth: bool = False,
    ) -> tuple[np.ndarray, ...]:  # rgb [T, H, W, 3] uint8, mask [T, H, W] uint8 (, depth [T, H, W] uint16 mm)
        """Renders camera poses in batches of ``batch_size``; with ``with_depth`` also the expected depth
        along the camera's z axis as uint16 millimetres (`policy.data.depth_to_millimetres`: 0 where
        nothing is hit), what a RealSense's depth aligned to colour gives."""
        camera_poses = torch.as_tensor(camera_poses, dtype=torch.float64)
        T = camera_poses.shape[0]
        rgb = np.empty((T, self.height, self.width, 3), dtype=np.uint8)
        mask = np.empty((T, self.height, self.width), dtype=np.uint8)
        depth = np.empty((T, self.height, self.width), dtype=np.uint16) if with_depth else None
        with torch.no_grad():
            for b0 in range(0, T, self.batch_size):
                c2w = camera_poses[b0 : b0 + self.batch_size]
                viewmats = rigid_inverse(c2w)
                out = self._rasterize(viewmats)
                rgb[b0 : b0 + len(c2w)] = (out.rgb.clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()
                mask[b0 : b0 + len(c2w)] = out.label_map(self.mask_min_prob).cpu().numpy()
                if depth is not None:
                    depth[b0 : b0 + len(c2w)] = depth_millimetres(out.depth.cpu().numpy())
        return (rgb, mask) if depth is None else (rgb, mask, depth)

    def _rasterize(self, viewmats: Tensor):
        C = viewmats.shape[0]
        Ks = self.K.expand(C, 3, 3)
        vm = viewmats.to(device=self.device, dtype=torch.float32)
        fields = (self.means, self.quats, self.scales, self.opacities, self.colors, self.labels)
        if self._grid is not None:
            idx = self._grid.visible(
                viewmats.double().cpu().numpy(), self.K.double().cpu().numpy(), self.width, self.height, 0.01
            )
            idx_t = torch.from_numpy(idx)
            fields = tuple(f.index_select(0, idx_t) for f in fields)
        means, quats, scales, opacities, colors, labels = fields
        return rasterize(
            means,
            quats,
            scales,
            opacities,
            colors,
            vm,
            Ks,
            self.width,
            self.height,
            labels=labels,
            sh_degree=self.sh_degree if self.sh_degree > 0 else None,
            backgrounds=self.background,
            backend=self.backend,
            near_plane=0.01,
            check=False,
        )


@dataclass
class RecoveryFrames:
    """An episode's rendered recovery samples (`trajgen.recovery.RecoverySamples`), N tuples."""

    rgb: np.ndarray  # [N, H, W, 3] uint8
    mask: np.ndarray  # [N, H, W] uint8 labels
    actions: np.ndarray  # [N, 6] float64 the expert's step from the sample
    cls: np.ndarray  # [N] uint8 stop labels
    poses: np.ndarray  # [N, 4, 4] float64 gripper-to-world
    camera_poses: np.ndarray  # [N, 4, 4] float64 camera-to-world
    clearance: np.ndarray  # [N, 2] float32
    phase: np.ndarray  # [N] uint8 the planner phase of the expert step
    source: np.ndarray  # [N] int16 the waypoint perturbed, -1 around the pre-grasp pose
    depth: np.ndarray | None = None  # [N, H, W] uint16 millimetres (camera recording depth only)

    @property
    def num_samples(self) -> int:
        return int(self.actions.shape[0])


@dataclass
class Episode:
    """One rendered trajectory: T tuples (image, mask, action, cls) plus what produced them."""

    rgb: np.ndarray  # [T, H, W, 3] uint8
    mask: np.ndarray  # [T, H, W] uint8 labels: 0 background, 1 object, 2 hand
    actions: np.ndarray  # [T, 6] float64 (euler xyz, translation) of the gripper; last row zero
    cls: np.ndarray  # [T] uint8, 1 at the pre-grasp pose (last step)
    poses: np.ndarray  # [T, 4, 4] float64 gripper-to-world (scene frame)
    camera_poses: np.ndarray  # [T, 4, 4] float64 camera-to-world
    clearance: np.ndarray  # [T, 2] float32 distance to the nearest (hand, object) point, metres
    phase: np.ndarray  # [T] uint8 in {1, 2, 3}
    grasp_pose: np.ndarray  # [4, 4] float64
    pregrasp_pose: np.ndarray  # [4, 4] float64
    attrs: dict[str, Any] = field(default_factory=dict)
    """Identifiers and metadata (scene_id, grasp_id, grasp_rank, start_id, t1, t2, ...)."""
    recovery: RecoveryFrames | None = None
    """Recovery samples rendered with the trajectory (None: planned without them)."""
    depth: np.ndarray | None = None
    """[T, H, W] uint16 millimetres, the expected depth along the camera's z axis (0: nothing hit); only
    when the camera records depth (`trajgen.handeye.HandEyeConfig.depth`)."""

    @property
    def num_samples(self) -> int:
        """Steps of the trajectory (recovery samples not counted)."""
        return int(self.actions.shape[0])


def build_episode(
    trajectory: Trajectory,
    clearance: Tensor,  # [T, 2]
    grasp_pose: Tensor,  # [4, 4]
    pregrasp_pose: Tensor,  # [4, 4]
    renderer: HandEyeRenderer,
    attrs: dict[str, Any],
) -> Episode:
    """Renders every step of ``trajectory`` and records the action to the next step; its recovery
    samples too, when it carries them (``trajectory.recovery``)."""
    poses = trajectory.poses.to(torch.float64)
    cams = camera_poses_from_gripper(poses, renderer.camera)
    with_depth = bool(renderer.camera.depth)
    rgb, mask, *depth = renderer.render_cameras(cams, with_depth=with_depth)
    meta = dict(attrs)
    meta.update(t1=int(trajectory.t1), t2=int(trajectory.t2))
    recovery = None
    rec = trajectory.recovery
    if rec is not None:  # rendered apart, so the trajectory's frames do not depend on them
        meta["stop_label"] = rec.stop_label
        rec_poses = rec.poses.to(torch.float64)
        rec_cams = camera_poses_from_gripper(rec_poses, renderer.camera)
        rec_rgb, rec_mask, *rec_depth = renderer.render_cameras(rec_cams, with_depth=with_depth)
        recovery = RecoveryFrames(
            rgb=rec_rgb,
            mask=rec_mask,
            actions=rec.actions.to(torch.float64).numpy(),
            cls=rec.cls.numpy().astype(np.uint8),
            poses=rec_poses.numpy(),
            camera_poses=rec_cams.numpy(),
            clearance=rec.clearance.to(torch.float32).numpy(),
            phase=rec.phase.numpy().astype(np.uint8),
            source=rec.source.numpy().astype(np.int16),
            depth=rec_depth[0] if rec_depth else None,
        )
    return Episode(
        rgb=rgb,
        mask=mask,
        actions=trajectory_actions(poses).numpy(),
        cls=trajectory.cls.numpy().astype(np.uint8),
        poses=poses.numpy(),
        camera_poses=cams.numpy(),
        clearance=clearance.to(torch.float32).numpy(),
        phase=trajectory.phase.numpy().astype(np.uint8),
        grasp_pose=torch.as_tensor(grasp_pose, dtype=torch.float64).numpy(),
        pregrasp_pose=torch.as_tensor(pregrasp_pose, dtype=torch.float64).numpy(),
        attrs=meta,
        recovery=recovery,
        depth=depth[0] if depth else None,
    )
