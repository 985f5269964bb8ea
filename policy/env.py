"""The hand-eye environment over a splat: render at a gripper pose, apply a relative action.

The environment holds the scene and the camera the policy was trained with (intrinsics, the mount
``gripper_T_camera``, the background colour and the label threshold of the masks) and renders with
the demonstrations' own renderer (`trajgen.episodes.HandEyeRenderer`: frustum culling, batched
rasterisation), so it produces exactly what the demonstrations stored: RGB as uint8
(``round(255 * clamp(rgb, 0, 1))``) and the hard label map (`splatsim.render.RenderOutput.label_map`).
Poses are gripper-to-world 4x4 in the scene frame; the camera pose is ``gripper_pose @
gripper_T_camera`` (identity by default).

`SceneGeometry` holds what the evaluation measures against: the hand and object points (the labelled
Gaussians' centres) and the object's centre.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor

from splatsim.conventions import PinholeIntrinsics, apply_action
from splatsim.scene import LABEL_HAND, LABEL_OBJECT, GaussianScene

__all__ = ["SceneGeometry", "SplatEnv", "camera_from_meta", "load_scene_dir"]


@dataclass
class SceneGeometry:
    """Hand and object points of a scene (metres, scene frame) with nearest-point queries."""

    hand_points: np.ndarray  # [M, 3]
    object_points: np.ndarray  # [P, 3]
    background_points: np.ndarray | None = (
        None  # [B, 3] solid background (trajgen.planning.background_points)
    )

    def __post_init__(self) -> None:
        self.hand_points = np.asarray(self.hand_points, np.float64).reshape(-1, 3)
        self.object_points = np.asarray(self.object_points, np.float64).reshape(-1, 3)
        if self.background_points is not None:
            self.background_points = np.asarray(self.background_points, np.float64).reshape(-1, 3)
        self._background = (
            cKDTree(self.background_points)
            if self.background_points is not None and len(self.background_points)
            else None
        )
        if len(self.hand_points) == 0 or len(self.object_points) == 0:
            raise ValueError(
                f"SceneGeometry needs hand and object points; got {len(self.hand_points)} hand and "
                f"{len(self.object_points)} object points (does the scene label Gaussians 2 = hand, 1 = object?)"
            )
        self._hand = cKDTree(self.hand_points)
        self._object = cKDTree(self.object_points)

    @classmethod
    def from_scene(cls, scene: GaussianScene) -> SceneGeometry:
        from trajgen.planning import background_points

        means = scene.means.detach().cpu().double().numpy()
        labels = scene.labels.cpu().numpy()
        return cls(means[labels == LABEL_HAND], means[labels == LABEL_OBJECT], background_points(scene))

    @property
    def object_center(self) -> np.ndarray:  # [3]
        return self.object_points.mean(0)

    @property
    def hand_center(self) -> np.ndarray:  # [3]
        return self.hand_points.mean(0)

    def hand_distance(self, points: np.ndarray) -> np.ndarray:  # [n, 3] -> [n]
        """Distance from each point to the nearest hand point."""
        return self._hand.query(np.asarray(points, np.float64).reshape(-1, 3))[0]

    def object_distance(self, points: np.ndarray) -> np.ndarray:  # [n, 3] -> [n]
        return self._object.query(np.asarray(points, np.float64).reshape(-1, 3))[0]

    def background_distance(self, points: np.ndarray) -> np.ndarray:  # [n, 3] -> [n]
        """Distance to the nearest solid background point (+inf without background points)."""
        p = np.asarray(points, np.float64).reshape(-1, 3)
        if self._background is None:
            return np.full(len(p), np.inf)
        return self._background.query(p)[0]

    def min_clearance(self, positions: Tensor) -> Tensor:  # [n, 3] -> [n]
        """Distance to the union of hand and object points (Eq. 14's left-hand side)."""
        p = positions.detach().cpu().double().numpy()
        return torch.from_numpy(np.minimum(self.hand_distance(p), self.object_distance(p)))


def camera_from_meta(
    camera: dict[str, Any],
) -> tuple[PinholeIntrinsics, np.ndarray, tuple[float, float, float], float]:
    """Intrinsics, mount [4, 4], background RGB and mask threshold from a policy's ``config.json`` camera."""
    try:
        intr = PinholeIntrinsics(
            float(camera["fx"]),
            float(camera["fy"]),
            float(camera["cx"]),
            float(camera["cy"]),
            int(camera["width"]),
            int(camera["height"]),
        )
    except KeyError as exc:
        raise ValueError(f"policy camera lacks {exc}; expected fx, fy, cx, cy, width, height") from exc
    mount = np.asarray(camera.get("gripper_T_camera", np.eye(4)), dtype=np.float64).reshape(4, 4)
    background = tuple(float(v) for v in camera.get("background", (0.0, 0.0, 0.0)))
    return intr, mount, background, float(camera.get("mask_min_prob", 0.5))


class SplatEnv:
    """Renders hand-eye images of a scene at gripper poses (module docstring)."""

    def __init__(
        self,
        scene: GaussianScene,
        intrinsics: PinholeIntrinsics,
        *,
        gripper_T_camera: np.ndarray | None = None,
        background: tuple[float, float, float] = (0.0, 0.0, 0.0),
        mask_min_prob: float = 0.5,
        backend: str = "cpu",
        geometry: SceneGeometry | None = None,
        batch_size: int = 16,
    ) -> None:
        from trajgen.episodes import HandEyeRenderer
        from trajgen.handeye import HandEyeConfig

        self.scene = scene.detach().to(dtype=torch.float32)
        self.intrinsics = intrinsics
        self.mount = torch.as_tensor(
            np.eye(4) if gripper_T_camera is None else np.asarray(gripper_T_camera), dtype=torch.float64
        )
        self.mask_min_prob = float(mask_min_prob)
        self.backend = backend
        self.geometry = geometry if geometry is not None else SceneGeometry.from_scene(self.scene)
        # The policy image's own intrinsics as an uncropped "sensor" of the same size.
        camera = HandEyeConfig(
            width=intrinsics.width,
            height=intrinsics.height,
            sensor_width=intrinsics.width,
            sensor_height=intrinsics.height,
            sensor_fx=intrinsics.fx,
            sensor_fy=intrinsics.fy,
            sensor_cx=intrinsics.cx,
            sensor_cy=intrinsics.cy,
            crop="none",
            background=tuple(float(v) for v in background),
        )
        self._renderer = HandEyeRenderer(
            self.scene, camera, backend=backend, batch_size=batch_size, mask_min_prob=self.mask_min_prob
        )

    @property
    def width(self) -> int:
        return self.intrinsics.width

    @property
    def height(self) -> int:
        return self.intrinsics.height

    def camera_pose(self, gripper_pose: Tensor | np.ndarray) -> Tensor:  # [..., 4, 4]
        return torch.as_tensor(np.asarray(gripper_pose), dtype=torch.float64) @ self.mount

    def render(
        self,
        gripper_poses: Tensor | np.ndarray,  # [C, 4, 4] or [4, 4]
        *,
        with_depth: bool = False,
    ) -> tuple[np.ndarray, ...]:  # rgb [C, H, W, 3] uint8, mask [C, H, W] uint8 (, depth [C, H, W] uint16 mm)
        """Renders RGB and label masks at the gripper poses (several cameras per call); with
        ``with_depth`` also the depth, uint16 millimetres as the demonstrations store it."""
        poses = torch.as_tensor(np.asarray(gripper_poses), dtype=torch.float64)
        if poses.dim() == 2:
            poses = poses[None]
        return self._renderer.render_cameras(poses @ self.mount, with_depth=with_depth)

    @staticmethod
    def step_pose(gripper_pose: np.ndarray, action: np.ndarray) -> np.ndarray:  # [4, 4], [6] -> [4, 4]
        """The pose after a relative action (`splatsim.conventions.apply_action`)."""
        T = torch.as_tensor(np.asarray(gripper_pose), dtype=torch.float64)
        a = torch.as_tensor(np.asarray(action), dtype=torch.float64)
        return apply_action(T, a).numpy()


def load_scene_dir(scene_dir: str | Path) -> GaussianScene:
    """The labelled splat of a reconstruction folder (``scene.ply``) or a ``.ply`` file."""
    from splatsim.ply import read_ply
    from splatsim.scene_folder import check_scene_folder

    p = Path(scene_dir)
    path = p / "scene.ply" if p.is_dir() else p
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no scene; expected a reconstruction folder holding scene.ply")
    check_scene_folder(path.parent, files=(path.name,))
    scene = read_ply(path)
    return scene.validate(str(path))
