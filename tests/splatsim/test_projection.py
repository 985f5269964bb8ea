"""Projection, covariance and SH math against gsplat's pure-torch reference (`_torch_impl`, runs on CPU)."""

import pytest
import torch

from splatsim.render.projection import (
    covariance_factor,
    eval_sh,
    fast_exp_neg_reference,
    project_gaussians,
    screen_extents,
)
from splatsim.scene import random_scene

gs_impl = pytest.importorskip("gsplat.cuda._torch_impl")


def _cams(C: int, W: int, H: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(7)
    viewmats = torch.eye(4, dtype=dtype).repeat(C, 1, 1)
    for c in range(C):
        axis = torch.randn(3, generator=g, dtype=dtype) * 0.2
        angle = axis.norm()
        k = axis / angle
        Kx = torch.tensor([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]], dtype=dtype)
        viewmats[c, :3, :3] = (
            torch.eye(3, dtype=dtype) + torch.sin(angle) * Kx + (1 - torch.cos(angle)) * Kx @ Kx
        )
        viewmats[c, :3, 3] = torch.randn(3, generator=g, dtype=dtype) * 0.3
    Ks = torch.tensor([[0.9 * W, 0, W / 2], [0, 0.9 * W, H / 2], [0, 0, 1]], dtype=dtype).repeat(C, 1, 1)
    return viewmats, Ks


@pytest.mark.parametrize("W,H", [(64, 48), (37, 91)])
def test_projection_matches_gsplat_torch_impl(W, H):
    scene = random_scene(500, seed=3, focal_px=0.9 * W).to(dtype=torch.float64)
    viewmats, Ks = _cams(3, W, H)
    covars, _ = gs_impl._quat_scale_to_covar_preci(scene.quats, scene.scales, compute_preci=False)
    radii, means2d, depths, conics, _ = gs_impl._fully_fused_projection(
        scene.means, covars, viewmats, Ks, W, H, eps2d=0.3
    )
    ours = project_gaussians(scene.means, scene.quats, scene.scales, viewmats, Ks, W, H, eps2d=0.3)
    torch.testing.assert_close(ours.means2d, means2d, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ours.depths, depths, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours.conics, conics, rtol=1e-8, atol=1e-10)
    # gsplat's per-axis radius is ceil(3.33·sqrt(Σ)) = the alpha ≥ 1/255 box at opacity 1: ours is never larger.
    on = (radii > 0).all(-1)
    ext = screen_extents(ours.cov2d, torch.ones_like(ours.depths))
    assert (ext[on] <= radii[on].to(ext.dtype) + 1e-2).all()
    # everything gsplat keeps, we keep (we cull off-screen boxes later, in binning)
    assert ours.valid[on].all()


def test_covariance_matches_gsplat():
    scene = random_scene(200, seed=1).to(dtype=torch.float64)
    M = covariance_factor(scene.quats, scene.scales)
    covars, _ = gs_impl._quat_scale_to_covar_preci(scene.quats, scene.scales, compute_preci=False)
    torch.testing.assert_close(M @ M.transpose(-1, -2), covars, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_sh_matches_gsplat(degree):
    g = torch.Generator().manual_seed(degree)
    coeffs = torch.randn(100, 16, 3, generator=g, dtype=torch.float64)
    dirs = torch.nn.functional.normalize(torch.randn(100, 3, generator=g, dtype=torch.float64), dim=-1)
    ref = gs_impl._spherical_harmonics(degree, dirs, coeffs)
    ours = eval_sh(coeffs[:, : (degree + 1) ** 2], dirs, degree)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


def test_projection_gradients_finite_behind_camera():
    means = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.1, 0.0, 2.0]], requires_grad=True)
    quats = torch.tensor([[1.0, 0, 0, 0]] * 3, requires_grad=True)
    scales = torch.full((3, 3), 0.05, requires_grad=True)
    viewmats = torch.eye(4)[None]
    Ks = torch.tensor([[[50.0, 0, 32], [0, 50, 24], [0, 0, 1]]])
    p = project_gaussians(means, quats, scales, viewmats, Ks, 64, 48)
    assert p.valid.tolist() == [[False, False, True]]
    loss = (p.means2d[p.valid]).sum() + p.conics[p.valid].sum()
    loss.backward()
    for t in (means, quats, scales):
        assert torch.isfinite(t.grad).all()


def test_fast_exp_polynomial_accuracy():
    import math

    worst = max(abs(fast_exp_neg_reference(s) / math.exp(-s) - 1) for s in [i * 0.01 for i in range(801)])
    assert worst < 3e-6
