"""Image losses and metrics of the reconstruction: L1, SSIM / D-SSIM, PSNR, masked depth L1, labels.

All functions are pure torch over batched images ``[C, H, W, ...]`` (channels last, as the renderer
returns them) and differentiable where a loss needs it. SSIM is the usual one (Wang et al. 2004) with
an 11x11 Gaussian window of sigma 1.5, zero padding to keep the image size, and the constants
``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2`` for a data range ``L = 1``, as in the 3DGS code; the window
is applied as two 1-D passes, which is exactly the 2-D Gaussian window and ~5x cheaper.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "SSIM_SIGMA",
    "SSIM_WINDOW",
    "depth_l1",
    "gaussian_window_1d",
    "label_bce",
    "l1",
    "photometric_loss",
    "psnr",
    "ssim",
]

SSIM_WINDOW = 11
"""SSIM Gaussian window size, pixels."""
SSIM_SIGMA = 1.5
"""SSIM Gaussian window standard deviation, pixels."""


def gaussian_window_1d(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA, dtype=torch.float32) -> Tensor:
    """Normalised 1-D Gaussian weights [size], centred."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    w = torch.exp(-(x**2) / (2.0 * sigma**2))
    return (w / w.sum()).to(dtype)


def _blur(x: Tensor, window: Tensor) -> Tensor:
    """Separable Gaussian blur of [B, Ch, H, W] with zero padding, same size out."""
    ch = x.shape[1]
    k = window.numel()
    wx = window.reshape(1, 1, 1, k).expand(ch, 1, 1, k)
    wy = window.reshape(1, 1, k, 1).expand(ch, 1, k, 1)
    x = F.conv2d(x, wx, padding=(0, k // 2), groups=ch)
    return F.conv2d(x, wy, padding=(k // 2, 0), groups=ch)


def ssim(
    a: Tensor,  # [C, H, W, 3] in [0, 1]
    b: Tensor,  # [C, H, W, 3] in [0, 1]
    window_size: int = SSIM_WINDOW,
    sigma: float = SSIM_SIGMA,
    reduce: bool = True,
) -> Tensor:  # [] mean SSIM, or [C, H, W] per-pixel (mean over channels) when reduce is False
    """Structural similarity of two image batches (Gaussian window, zero padding, data range 1)."""
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"ssim expects two [C, H, W, Ch] images of one shape, got {a.shape} and {b.shape}")
    x = a.permute(0, 3, 1, 2)
    y = b.permute(0, 3, 1, 2)
    w = gaussian_window_1d(window_size, sigma, dtype=x.dtype).to(x.device)
    ch = x.shape[1]
    stats = _blur(torch.cat([x, y, x * x, y * y, x * y], dim=1), w)
    mu_x, mu_y, e_xx, e_yy, e_xy = stats.split(ch, dim=1)
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    var_x, var_y, cov = e_xx - mu_xx, e_yy - mu_yy, e_xy - mu_xy
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_xy + c1) * (2 * cov + c2)) / ((mu_xx + mu_yy + c1) * (var_x + var_y + c2))
    return s.mean() if reduce else s.mean(dim=1)


def l1(a: Tensor, b: Tensor) -> Tensor:
    """Mean absolute difference."""
    return (a - b).abs().mean()


def photometric_loss(
    rendered: Tensor,  # [C, H, W, 3]
    target: Tensor,  # [C, H, W, 3]
    ssim_lambda: float = 0.2,
) -> Tensor:  # []
    """The 3DGS colour loss ``(1 - lambda) * L1 + lambda * (1 - SSIM)``."""
    loss = (1.0 - ssim_lambda) * l1(rendered, target)
    if ssim_lambda > 0:
        loss = loss + ssim_lambda * (1.0 - ssim(rendered, target))
    return loss


def depth_l1(
    rendered: Tensor,  # [C, H, W] metres
    target: Tensor,  # [C, H, W] metres, 0 = missing
) -> Tensor:  # [] mean |error| over valid target pixels (0 if none)
    """L1 between rendered expected depth and sensor depth, on pixels where the sensor has depth."""
    valid = target > 0
    n = valid.sum()
    if int(n) == 0:
        return rendered.sum() * 0.0
    return ((rendered - target).abs() * valid).sum() / n


def label_bce(
    rendered: Tensor,  # [C, H, W, L] composited label probabilities
    target: Tensor,  # [C, H, W] int64 label ids
    weight: Tensor | None = None,  # [L] per-class weight, default 1
) -> Tensor:  # []
    """Binary cross-entropy between each rendered label probability and the one-hot mask.

    Per-class BCE (not softmax cross-entropy) because the rendered probabilities are alpha-composited
    and need not sum to one; a class weight lets rare classes (hand, object) count as much as the
    background.
    """
    L = rendered.shape[-1]
    onehot = F.one_hot(target.long(), L).to(rendered.dtype)
    p = rendered.clamp(1e-4, 1.0 - 1e-4)
    bce = -(onehot * torch.log(p) + (1.0 - onehot) * torch.log1p(-p))
    if weight is not None:
        bce = bce * weight.to(bce)
    return bce.mean()


def psnr(
    a: Tensor,  # [..., 3] in [0, 1]
    b: Tensor,  # [..., 3] in [0, 1]
) -> float:
    """Peak signal-to-noise ratio in dB for data range 1 (inf for identical images)."""
    mse = float(((a.detach().double() - b.detach().double()) ** 2).mean())
    return math.inf if mse == 0 else -10.0 * math.log10(mse)
