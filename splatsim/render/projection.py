"""EWA projection of 3D Gaussians and spherical-harmonic colours, in plain torch (autograd-friendly).

This is the part of rasterization that is cheap (milliseconds for 50k Gaussians) and stays in torch so
autograd differentiates it; only compositing has a hand-written backward. The math follows gsplat's
`fully_fused_projection` (pinhole model) exactly: world→camera, the perspective Jacobian with gsplat's
1.3×FoV clamp, the 2D covariance dilated by `eps2d` = 0.3 px², its inverse (the conic), and the near/far
culling on the mean's depth. `tests/splatsim/test_projection.py` checks it against gsplat's
`_torch_impl`.

Pixel coordinates: the intrinsics map camera points to continuous pixel coordinates in which pixel
column i spans [i, i+1), so pixel centres sit at (i + 0.5, j + 0.5) — gsplat's convention.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

ALPHA_THRESHOLD = 1.0 / 255.0
"""A Gaussian contributes to a pixel only where its alpha reaches this (gsplat's value)."""
MAX_ALPHA = 0.999
"""Alpha is clamped to this so a single Gaussian never makes a pixel fully opaque (gsplat's value)."""
TRANSMITTANCE_EPS = 1e-4
"""Compositing stops (and the stopping Gaussian is excluded) once transmittance would fall to this."""

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (
    1.0925484305920792,
    -1.0925484305920792,
    0.31539156525252005,
    -1.0925484305920792,
    0.5462742152960396,
)
SH_C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)


def quat_wxyz_to_rotmat_unnormalized(quats: Tensor) -> Tensor:
    """Rotation matrices [..., 3, 3] from quaternions [..., 4] (wxyz), normalised here (gsplat does too)."""
    q = quats / quats.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    r = torch.stack(
        [
            1 - 2 * (y * y + z * z),
            2 * (x * y - w * z),
            2 * (x * z + w * y),
            2 * (x * y + w * z),
            1 - 2 * (x * x + z * z),
            2 * (y * z - w * x),
            2 * (x * z - w * y),
            2 * (y * z + w * x),
            1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    )
    return r.reshape(quats.shape[:-1] + (3, 3))


def covariance_factor(quats: Tensor, scales: Tensor) -> Tensor:
    """M = R·diag(s) [N, 3, 3], so that the 3D covariance is M Mᵀ."""
    return quat_wxyz_to_rotmat_unnormalized(quats) * scales[..., None, :]


@dataclass
class Projected:
    """Per-camera screen-space Gaussians. Shapes: C cameras, N Gaussians."""

    means2d: Tensor  # [C, N, 2] pixel coordinates
    conics: Tensor  # [C, N, 3] inverse 2D covariance (a, b, c): sigma = ½(a dx² + c dy²) + b dx dy
    cov2d: Tensor  # [C, N, 3] dilated 2D covariance (xx, xy, yy)
    depths: Tensor  # [C, N] camera-frame z of the mean
    valid: Tensor  # [C, N] bool: in front of the near plane, behind the far plane, non-degenerate


def project_gaussians(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4] wxyz
    scales: Tensor,  # [N, 3]
    viewmats: Tensor,  # [C, 4, 4] world-to-camera
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    eps2d: float = 0.3,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
) -> Projected:
    """EWA-project Gaussians into C pinhole cameras (gsplat's pinhole `fully_fused_projection`)."""
    N = means.shape[0]
    C = viewmats.shape[0]
    assert means.shape == (N, 3), means.shape
    assert quats.shape == (N, 4), quats.shape
    assert scales.shape == (N, 3), scales.shape
    assert viewmats.shape == (C, 4, 4), viewmats.shape
    assert Ks.shape == (C, 3, 3), Ks.shape

    Rv = viewmats[:, :3, :3]  # [C, 3, 3]
    tv = viewmats[:, :3, 3]  # [C, 3]
    means_c = torch.einsum("cij,nj->cni", Rv, means) + tv[:, None, :]  # [C, N, 3]
    tx, ty, tz = means_c.unbind(-1)

    fx = Ks[:, 0, 0, None]
    fy = Ks[:, 1, 1, None]
    cx = Ks[:, 0, 2, None]
    cy = Ks[:, 1, 2, None]
    tan_fovx = 0.5 * width / fx
    tan_fovy = 0.5 * height / fy
    lim_x_pos = (width - cx) / fx + 0.3 * tan_fovx
    lim_x_neg = cx / fx + 0.3 * tan_fovx
    lim_y_pos = (height - cy) / fy + 0.3 * tan_fovy
    lim_y_neg = cy / fy + 0.3 * tan_fovy
    # Guard the division for Gaussians at z == 0 (they are culled below, but must not poison autograd).
    safe_tz = torch.where(tz.abs() > 1e-12, tz, torch.full_like(tz, 1e-12))
    txc = safe_tz * torch.minimum(torch.maximum(tx / safe_tz, -lim_x_neg), lim_x_pos)
    tyc = safe_tz * torch.minimum(torch.maximum(ty / safe_tz, -lim_y_neg), lim_y_pos)
    rz = 1.0 / safe_tz
    rz2 = rz * rz

    # T = J @ Rv: the 2x3 map from world-frame offsets to pixel offsets, then A = T @ M.
    j00 = fx * rz
    j02 = -fx * txc * rz2
    j11 = fy * rz
    j12 = -fy * tyc * rz2
    T0 = j00[..., None] * Rv[:, None, 0, :] + j02[..., None] * Rv[:, None, 2, :]  # [C, N, 3]
    T1 = j11[..., None] * Rv[:, None, 1, :] + j12[..., None] * Rv[:, None, 2, :]  # [C, N, 3]
    M = covariance_factor(quats, scales)  # [N, 3, 3]
    A0 = torch.einsum("cnj,njk->cnk", T0, M)
    A1 = torch.einsum("cnj,njk->cnk", T1, M)
    cxx = (A0 * A0).sum(-1) + eps2d
    cxy = (A0 * A1).sum(-1)
    cyy = (A1 * A1).sum(-1) + eps2d
    det = (cxx * cyy - cxy * cxy).clamp(min=1e-10)
    inv_det = 1.0 / det
    conics = torch.stack([cyy * inv_det, -cxy * inv_det, cxx * inv_det], dim=-1)

    means2d = torch.stack([fx * tx * rz + cx, fy * ty * rz + cy], dim=-1)
    valid = (tz > near_plane) & (tz < far_plane) & torch.isfinite(det)
    cov2d = torch.stack([cxx, cxy, cyy], dim=-1)
    return Projected(means2d=means2d, conics=conics, cov2d=cov2d, depths=tz, valid=valid)


def screen_extents(cov2d: Tensor, opacities: Tensor) -> Tensor:
    """Half-widths [..., 2] (pixels) of the box outside which `opacity·exp(−σ)` < 1/255.

    The ellipse ½ dᵀΣ⁻¹d ≤ t has |dx| ≤ sqrt(2 t Σxx) and |dy| ≤ sqrt(2 t Σyy), with t = ln(255·opacity).
    A Gaussian whose opacity is below 1/255 never reaches the threshold and gets extent −1 (culled).
    A relative margin keeps float rounding on the safe side (extra pixels are evaluated and rejected).
    """
    with torch.no_grad():
        t = torch.log(opacities.clamp(min=1e-30) / ALPHA_THRESHOLD)
        t = t * (1.0 + 1e-4) + 1e-4
        ext = torch.sqrt(2.0 * t.clamp(min=0.0)[..., None] * cov2d[..., [0, 2]].clamp(min=0.0)) + 1e-3
        ext = torch.where((opacities >= ALPHA_THRESHOLD)[..., None], ext, torch.full_like(ext, -1.0))
    return ext


def eval_sh(sh: Tensor, dirs: Tensor, degree: int) -> Tensor:
    """Evaluate real SH of `degree` (0–3). sh [..., K, 3], dirs [..., 3] unit vectors → [..., 3].

    Same basis and signs as the INRIA 3DGS code and gsplat; the caller adds 0.5 and clamps at 0.
    """
    result = SH_C0 * sh[..., 0, :]
    if degree < 1:
        return result
    x, y, z = dirs[..., 0:1], dirs[..., 1:2], dirs[..., 2:3]
    result = result - SH_C1 * y * sh[..., 1, :] + SH_C1 * z * sh[..., 2, :] - SH_C1 * x * sh[..., 3, :]
    if degree < 2:
        return result
    xx, yy, zz = x * x, y * y, z * z
    xy, yz, xz = x * y, y * z, x * z
    result = (
        result
        + SH_C2[0] * xy * sh[..., 4, :]
        + SH_C2[1] * yz * sh[..., 5, :]
        + SH_C2[2] * (2.0 * zz - xx - yy) * sh[..., 6, :]
        + SH_C2[3] * xz * sh[..., 7, :]
        + SH_C2[4] * (xx - yy) * sh[..., 8, :]
    )
    if degree < 3:
        return result
    result = (
        result
        + SH_C3[0] * y * (3 * xx - yy) * sh[..., 9, :]
        + SH_C3[1] * xy * z * sh[..., 10, :]
        + SH_C3[2] * y * (4 * zz - xx - yy) * sh[..., 11, :]
        + SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy) * sh[..., 12, :]
        + SH_C3[4] * x * (4 * zz - xx - yy) * sh[..., 13, :]
        + SH_C3[5] * z * (xx - yy) * sh[..., 14, :]
        + SH_C3[6] * x * (xx - 3 * yy) * sh[..., 15, :]
    )
    return result


def sh_to_rgb(sh: Tensor, means: Tensor, cam_centers: Tensor, degree: int) -> Tensor:
    """View-dependent colour [C, N, 3] = max(SH(dir) + 0.5, 0), dir from each camera centre to the mean."""
    if degree == 0:
        rgb = (SH_C0 * sh[:, 0, :] + 0.5).clamp(min=0.0)
        return rgb[None].expand(cam_centers.shape[0], -1, -1)
    dirs = means[None, :, :] - cam_centers[:, None, :]
    dirs = dirs / dirs.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    K = (degree + 1) ** 2
    return (eval_sh(sh[None, :, :K, :], dirs, degree) + 0.5).clamp(min=0.0)


def fast_exp_neg_reference(s: float) -> float:
    """Python twin of the kernel's exp(−s) polynomial (documentation and tests)."""
    s = min(max(s, 0.0), 8.0)
    y = -s / 32.0
    p = 1.0 + y * (1.0 + y * (0.5 + y * (1 / 6 + y * (1 / 24 + y * (1 / 120 + y / 720)))))
    for _ in range(5):
        p = p * p
    return p
