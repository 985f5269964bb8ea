"""Training augmentations for the policy input, on batches, seeded by an explicit generator.

What matters for a real camera: colour (exposure, white balance, saturation), small framing changes
(crops, i.e. shifts and zooms of a few per cent), and imperfect segmentation (masks dilated or eroded by
a pixel or two). Each is an option of `AugmentConfig`; all are off when ``enabled`` is False.

With a depth channel: the crop moves the depth with the masks, and stereo-like noise and holes
(`depth_noise`) come last.

Order: crop (image and masks together) -> mask dilation/erosion -> colour jitter -> background removal
(`policy.data.assemble_input`), so an eroded mask also removes the RGB it no longer covers, as a real
segmenter's error would.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["AugmentConfig", "augment_batch", "color_jitter", "depth_noise", "morph_masks", "random_crop"]


@dataclass
class AugmentConfig:
    """Augmentations for real cameras (all optional)."""

    enabled: bool = True
    """Master switch."""
    brightness: float = 0.2
    """Colour jitter: multiply RGB by a factor uniform in [1 - b, 1 + b]."""
    contrast: float = 0.2
    """Colour jitter: scale about the image mean by a factor uniform in [1 - c, 1 + c]."""
    saturation: float = 0.2
    """Colour jitter: blend with the grey image by a factor uniform in [1 - s, 1 + s]."""
    hue_gain: float = 0.05
    """Colour jitter: per-channel gain uniform in [1 - h, 1 + h] (white balance)."""
    crop_scale: float = 0.08
    """Small crops: zoom in by up to this fraction and shift within the margin it leaves (0 = off)."""
    crop_prob: float = 0.5
    """Probability that an image is cropped."""
    mask_morph_prob: float = 0.3
    """Probability that an image's masks are dilated or eroded (equally likely)."""
    mask_morph_px: int = 1
    """Dilation/erosion radius in pixels."""
    depth_noise_1m: float = 0.0025
    """Depth noise (a policy with a depth channel only): Gaussian, per pixel, with a standard deviation of
    this many metres at 1 m growing with the square of the depth (stereo depth's error, about 2.5 mm at
    1 m and 0.4 mm at 0.4 m for a D435 at 848x480; 0 = off)."""
    depth_hole_prob: float = 0.02
    """Depth holes: the probability that a pixel's depth reads 0 (no depth), as stereo sensors leave
    along edges and on dark or shiny surfaces (0 = off)."""

    def validate(self) -> AugmentConfig:
        for name in ("brightness", "contrast", "saturation", "hue_gain", "crop_scale"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise ValueError(f"AugmentConfig.{name} = {v}; expected a fraction in [0, 1)")
        for name in ("crop_prob", "mask_morph_prob"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"AugmentConfig.{name} = {v}; expected a probability in [0, 1]")
        if self.mask_morph_px < 0:
            raise ValueError(f"AugmentConfig.mask_morph_px = {self.mask_morph_px}; expected >= 0 pixels")
        if not (0.0 <= self.depth_noise_1m <= 0.1):
            raise ValueError(
                f"AugmentConfig.depth_noise_1m = {self.depth_noise_1m}; expected metres in [0, 0.1]"
            )
        if not 0.0 <= self.depth_hole_prob < 1.0:
            raise ValueError(
                f"AugmentConfig.depth_hole_prob = {self.depth_hole_prob}; expected a probability in [0, 1)"
            )
        return self


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def random_crop(
    rgb: Tensor,  # [B, 3, H, W] float
    masks: Tensor,  # [B, 2, H, W] float {0, 1}
    scale: float,
    prob: float,
    g: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """Zooms each chosen image in by up to ``scale`` at a random offset (bilinear RGB, nearest masks)."""
    B = rgb.shape[0]
    if scale <= 0 or prob <= 0 or B == 0:
        return rgb, masks
    chosen = torch.rand(B, generator=g) < prob
    s = torch.where(chosen, 1.0 - _uniform(B, 0.0, scale, g), torch.ones(B))  # crop side / image side
    tx = (torch.rand(B, generator=g) * 2 - 1) * (1 - s)
    ty = (torch.rand(B, generator=g) * 2 - 1) * (1 - s)
    theta = torch.zeros(B, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, 0, 2], theta[:, 1, 2] = s, s, tx, ty
    theta = theta.to(rgb.dtype)
    grid = F.affine_grid(theta, list(rgb.shape), align_corners=False)
    rgb = F.grid_sample(rgb, grid, mode="bilinear", padding_mode="border", align_corners=False)
    masks = F.grid_sample(masks, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return rgb, masks


def morph_masks(
    masks: Tensor,  # [B, 2, H, W] float {0, 1}
    prob: float,
    radius: int,
    g: torch.Generator,
) -> Tensor:
    """Dilates (half of the chosen images) or erodes (the other half) both masks by ``radius`` px."""
    B = masks.shape[0]
    if radius <= 0 or prob <= 0 or B == 0:
        return masks
    u = torch.rand(B, generator=g)
    dilate = (u < prob / 2)[:, None, None, None]
    erode = ((u >= prob / 2) & (u < prob))[:, None, None, None]
    k = 2 * radius + 1
    dilated = F.max_pool2d(masks, k, 1, radius)
    eroded = -F.max_pool2d(-masks, k, 1, radius)
    out = torch.where(dilate, dilated, torch.where(erode, eroded, masks))
    # A pixel cannot be both hand and object: the hand wins where a dilation made them overlap.
    out[:, 1] = out[:, 1] * (1 - out[:, 0])
    return out


def color_jitter(
    rgb: Tensor,  # [B, 3, H, W] float in [0, 1]
    cfg: AugmentConfig,
    g: torch.Generator,
) -> Tensor:
    """Brightness, contrast, saturation and per-channel gain, per image; clamped to [0, 1]."""
    B = rgb.shape[0]
    if B == 0:
        return rgb
    b = _uniform(B, 1 - cfg.brightness, 1 + cfg.brightness, g)[:, None, None, None]
    c = _uniform(B, 1 - cfg.contrast, 1 + cfg.contrast, g)[:, None, None, None]
    s = _uniform(B, 1 - cfg.saturation, 1 + cfg.saturation, g)[:, None, None, None]
    gain = (1 - cfg.hue_gain + 2 * cfg.hue_gain * torch.rand(B, 3, generator=g))[:, :, None, None]
    x = rgb * b * gain.to(rgb.dtype)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * c + mean
    grey = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).expand_as(x)
    x = (x - grey) * s + grey
    return x.clamp(0.0, 1.0)


def depth_noise(
    depth: Tensor,  # [B, 1, H, W] depth channel (`policy.data.depth_channel`: metres / DEPTH_RANGE_M)
    noise_1m: float,
    hole_prob: float,
    g: torch.Generator,
) -> Tensor:
    """Stereo-like depth errors: Gaussian noise of std ``noise_1m * z**2`` metres at depth ``z`` and holes
    (0) with probability ``hole_prob``, on pixels that have depth; the channel's units in and out."""
    from policy.data import DEPTH_RANGE_M

    if depth.numel() == 0 or (noise_1m <= 0 and hole_prob <= 0):
        return depth
    z = depth * DEPTH_RANGE_M
    has = z > 0
    if noise_1m > 0:
        z = z + noise_1m * z * z * torch.randn(depth.shape, generator=g, dtype=depth.dtype)
    if hole_prob > 0:
        has = has & (torch.rand(depth.shape, generator=g) >= hole_prob)
    return torch.where(has, z.clamp(0.0, DEPTH_RANGE_M) / DEPTH_RANGE_M, torch.zeros_like(z))


def augment_batch(
    rgb: Tensor,  # [B, 3, H, W] float in [0, 1], background not yet removed
    masks: Tensor,  # [B, 2, H, W] float {0, 1}: hand, object
    cfg: AugmentConfig,
    g: torch.Generator,
    *,
    depth: Tensor | None = None,  # [B, 1, H, W] depth channel, background not yet removed
) -> tuple[Tensor, ...]:
    """Applies the configured augmentations (module docstring order); identity when disabled.

    Returns ``(rgb, masks)``, or ``(rgb, masks, depth)`` when ``depth`` is given: the crop moves the depth
    with the masks (nearest neighbour; a zoom changes an object's image size, not its depth), the rest
    leaves it alone, and last `depth_noise` adds a stereo camera's noise and holes. The draws of the
    other augmentations do not depend on ``depth`` (its noise is drawn after them)."""
    if not cfg.enabled:
        return (rgb, masks) if depth is None else (rgb, masks, depth)
    if depth is None:
        rgb, masks = random_crop(rgb, masks, cfg.crop_scale, cfg.crop_prob, g)
    else:
        rgb, both = random_crop(rgb, torch.cat([masks, depth], dim=1), cfg.crop_scale, cfg.crop_prob, g)
        masks, depth = both[:, :2], both[:, 2:]
    masks = morph_masks(masks, cfg.mask_morph_prob, cfg.mask_morph_px, g)
    rgb = color_jitter(rgb, cfg, g)
    if depth is None:
        return rgb, masks
    return rgb, masks, depth_noise(depth, cfg.depth_noise_1m, cfg.depth_hole_prob, g)
