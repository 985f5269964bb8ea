"""The hand-eye camera: a D435 colour stream cropped and scaled to the policy resolution, mounted on the
gripper.

Frames (`splatsim.conventions`): poses are camera-to-world / gripper-to-world 4x4 transforms in the scene
frame, OpenCV camera axes. The gripper frame is the grasp frame of ARCHITECTURE.md (approach +z, closing
+x). The mount ``T_gripper_camera`` is the camera's pose in the gripper frame, so
``camera_pose = gripper_pose @ T_gripper_camera``. Trajectories are planned for the gripper; the
camera only decides what is rendered. With the default identity mount the two coincide.

Intrinsics: the sensor's intrinsics at its native size (RealSense D435 colour at 640x480 by default,
fx = fy = 615 px, principal point at the image centre in the project's pixel-centre-at-``+0.5``
convention), then the largest centred crop with the policy image's aspect ratio (480x480 for a square
policy image), then a resize to the policy size: 128x128 gives fx = fy = 164 px, cx = cy = 64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from splatsim.conventions import PinholeIntrinsics, euler_xyz_to_rotmat, se3_from_rt

__all__ = ["HandEyeConfig", "camera_poses_from_gripper", "gripper_T_camera", "policy_intrinsics"]


@dataclass
class HandEyeConfig:
    """Hand-eye camera: sensor intrinsics, crop/resize to the policy resolution, mount on the gripper."""

    width: int = 128
    """Rendered (policy) image width, pixels."""
    height: int = 128
    """Rendered (policy) image height, pixels."""
    sensor_width: int = 640
    """Native sensor image width, pixels (RealSense D435 colour stream)."""
    sensor_height: int = 480
    """Native sensor image height, pixels."""
    sensor_fx: float = 615.0
    """Sensor focal length along columns at the native size, pixels (D435 colour at 640x480)."""
    sensor_fy: float = 615.0
    """Sensor focal length along rows at the native size, pixels."""
    sensor_cx: float = 320.0
    """Sensor principal point column, continuous pixel coordinates (RealSense ``ppx + 0.5``)."""
    sensor_cy: float = 240.0
    """Sensor principal point row, continuous pixel coordinates (RealSense ``ppy + 0.5``)."""
    crop: Literal["aspect", "none"] = "aspect"
    """'aspect': crop the largest centred region with the policy image's aspect ratio, then resize (no
    distortion); 'none': resize the whole sensor image (anisotropic if the aspect ratios differ)."""
    camera_offset_xyz: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Camera position in the gripper frame, metres (the mount's translation)."""
    camera_offset_euler_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Camera orientation in the gripper frame: extrinsic x-y-z Euler angles, degrees."""
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """RGB in [0, 1] where the splat leaves the image uncovered."""
    depth: bool = False
    """Also record depth aligned to the colour image (a RealSense's depth aligned to colour): episodes
    store ``obs/depth``, uint16 millimetres, for a policy with a depth channel (`policy.model.ModelConfig.depth`)."""

    def validate(self) -> HandEyeConfig:
        """Raises ValueError naming the field for impossible settings; returns self."""
        for name in ("width", "height", "sensor_width", "sensor_height"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value > 0):
                raise ValueError(f"HandEyeConfig.{name} = {value!r}; expected a positive integer pixel count")
        if self.crop not in ("aspect", "none"):
            raise ValueError(f"HandEyeConfig.crop = {self.crop!r}; expected 'aspect' or 'none'")
        for name in ("background", "camera_offset_xyz", "camera_offset_euler_deg"):
            value = getattr(self, name)
            if len(value) != 3 or not all(math.isfinite(float(v)) for v in value):
                raise ValueError(f"HandEyeConfig.{name} = {value!r}; expected 3 finite numbers")
        policy_intrinsics(self)  # checks the intrinsics
        return self


def policy_intrinsics(cfg: HandEyeConfig) -> PinholeIntrinsics:
    """Intrinsics of the rendered policy image (see the module docstring for the crop and resize)."""
    sensor = PinholeIntrinsics(
        cfg.sensor_fx, cfg.sensor_fy, cfg.sensor_cx, cfg.sensor_cy, cfg.sensor_width, cfg.sensor_height
    )
    if cfg.crop == "none":
        return sensor.resized(cfg.width, cfg.height)
    aspect = cfg.width / cfg.height
    crop_w = min(float(sensor.width), sensor.height * aspect)
    crop_h = crop_w / aspect
    x0 = 0.5 * (sensor.width - crop_w)
    y0 = 0.5 * (sensor.height - crop_h)
    sx, sy = cfg.width / crop_w, cfg.height / crop_h
    return PinholeIntrinsics(
        sensor.fx * sx, sensor.fy * sy, (sensor.cx - x0) * sx, (sensor.cy - y0) * sy, cfg.width, cfg.height
    )


def gripper_T_camera(cfg: HandEyeConfig, dtype: torch.dtype = torch.float64) -> Tensor:  # [4, 4]
    """The mount: the camera's pose in the gripper frame."""
    euler = torch.tensor([math.radians(float(a)) for a in cfg.camera_offset_euler_deg], dtype=dtype)
    t = torch.tensor([float(x) for x in cfg.camera_offset_xyz], dtype=dtype)
    return se3_from_rt(euler_xyz_to_rotmat(euler), t)


def camera_poses_from_gripper(
    gripper_poses: Tensor,  # [..., 4, 4] gripper-to-world
    cfg: HandEyeConfig,
) -> Tensor:  # [..., 4, 4] camera-to-world
    """``gripper_pose @ T_gripper_camera``."""
    return gripper_poses @ gripper_T_camera(cfg, gripper_poses.dtype).to(gripper_poses.device)
