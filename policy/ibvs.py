"""IBVS-MASK, the paper's baseline: servo the object mask's centroid to the image centre, stop on its area.

Each step (image-based visual servoing of one point feature with a guessed depth):

- the object mask's centroid ``(u, v)`` gives the normalised error ``e = ((u - cx) / fx, (v - cy) / fy)``;
- ``translate`` mode (the paper: "adjusts the robot position") moves the camera sideways by
  ``gain * e * depth_guess`` (at most ``max_lateral``), ``rotate`` mode pans and tilts by
  ``gain * atan(e)`` instead;
- it moves forward by ``forward_step``, scaled down to 0 as ``|e|`` grows to ``align_tolerance`` (align
  first, then approach);
- it stops (score 1) once the mask covers ``area_fraction`` of the image. An empty mask gives no motion.

It sees the same 5-channel input as the learned policy (it reads only the object-mask channel) and
runs through the same control loop, so both are evaluated under one protocol.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from splatsim.conventions import PinholeIntrinsics

__all__ = ["IBVSConfig", "IBVSMaskPolicy", "calibrate_area_fraction"]

OBJECT_CHANNEL = 4


@dataclass
class IBVSConfig:
    """The IBVS-MASK baseline's settings."""

    area_fraction: float = 0.06
    """Stop when the object mask covers this fraction of the image (calibrate it on the demonstrations'
    pre-grasp frames with `calibrate_area_fraction`)."""
    gain: float = 0.5
    """Fraction of the centring error corrected per step."""
    depth_guess: float = 0.5
    """Assumed distance to the object (metres) that turns the image error into a lateral motion."""
    forward_step: float = 0.03
    """Forward motion per step once aligned (metres)."""
    max_lateral: float = 0.03
    """Largest sideways motion per step (metres)."""
    align_tolerance: float = 0.15
    """Normalised centring error at which the forward motion has shrunk to zero."""
    mode: Literal["translate", "rotate"] = "translate"
    """Correct the centring error by moving sideways (the paper) or by panning and tilting."""

    def validate(self) -> IBVSConfig:
        checks = [
            ("area_fraction", 0 < self.area_fraction < 1, "a fraction in (0, 1)"),
            ("gain", 0 < self.gain <= 1, "in (0, 1]"),
            ("depth_guess", self.depth_guess > 0, "a positive distance"),
            ("forward_step", self.forward_step >= 0, ">= 0 metres"),
            ("max_lateral", self.max_lateral > 0, "a positive distance"),
            ("align_tolerance", self.align_tolerance > 0, "> 0"),
            ("mode", self.mode in ("translate", "rotate"), "'translate' or 'rotate'"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"IBVSConfig.{name} = {getattr(self, name)!r}; expected {expected}")
        return self


class IBVSMaskPolicy:
    """IBVS-MASK as a policy function (`policy.robot.PolicyFn`)."""

    def __init__(self, cfg: IBVSConfig, intrinsics: PinholeIntrinsics) -> None:
        self.cfg = cfg.validate()
        self.intrinsics = intrinsics

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        x = np.asarray(image)
        mask = x.reshape(-1, *x.shape[-3:])[0, OBJECT_CHANNEL] > 0.5  # [H, W]
        H, W = mask.shape
        area = float(mask.mean())
        action = np.zeros(6)
        if area >= self.cfg.area_fraction:
            return action, 1.0
        if area == 0.0:
            return action, 0.0
        rows, cols = np.nonzero(mask)
        s = W / self.intrinsics.width  # the policy input may be a resized image
        u, v = (cols.mean() + 0.5) / s, (rows.mean() + 0.5) / s
        ex = (u - self.intrinsics.cx) / self.intrinsics.fx
        ey = (v - self.intrinsics.cy) / self.intrinsics.fy
        c = self.cfg
        if c.mode == "translate":
            lateral = c.gain * c.depth_guess * np.array([ex, ey])
            n = float(np.linalg.norm(lateral))
            if n > c.max_lateral:
                lateral *= c.max_lateral / n
            action[3:5] = lateral
        else:
            action[0] = -c.gain * math.atan(ey)  # tilt: about x, negative turns the view down (+y)
            action[1] = c.gain * math.atan(ex)  # pan: about y, positive turns the view right (+x)
        err = math.hypot(ex, ey)
        action[5] = c.forward_step * max(0.0, 1.0 - err / c.align_tolerance)
        return action, area / c.area_fraction * 0.5  # a score below 0.5 until it stops


def calibrate_area_fraction(masks: np.ndarray, quantile: float = 0.5) -> float:
    """The object-mask area fraction at the demonstrations' pre-grasp frames (their ``quantile``).

    Args:
        masks: [N, H, W] uint8 label masks of the pre-grasp frames (label 1 = object).
    """
    masks = np.asarray(masks)
    if masks.ndim != 3 or len(masks) == 0:
        raise ValueError(f"calibrate_area_fraction: masks must be [N, H, W] with N >= 1, got {masks.shape}")
    areas = (masks == 1).reshape(len(masks), -1).mean(1)
    return float(np.quantile(areas, quantile))
