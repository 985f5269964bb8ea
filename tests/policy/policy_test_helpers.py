"""Helpers shared by the policy tests (a uniquely named module: test folders are not packages)."""

from __future__ import annotations

import numpy as np
import torch

from splatsim.conventions import PinholeIntrinsics, look_at

SIZE = 32
"""Image size of the fixtures' episodes (pixels)."""


def tiny_intrinsics(size: int = SIZE) -> PinholeIntrinsics:
    return PinholeIntrinsics.from_fov(0.8, size, size)


def approach_poses(start: np.ndarray, target: np.ndarray, steps: int) -> torch.Tensor:
    """Cameras on the straight line from ``start`` toward ``target``, stopping 0.43 m short, looking at it."""
    direction = (target - start) / np.linalg.norm(target - start)
    end = target - 0.43 * direction
    eyes = torch.from_numpy(np.linspace(start, end, steps))
    return look_at(eyes, torch.from_numpy(target).expand(steps, 3), up=(0.0, -1.0, 0.0))
