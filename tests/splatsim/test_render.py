"""The compiled CPU rasterizer against the dense reference: images, gradients, edge cases, bad input."""

from __future__ import annotations

import pytest
import torch

from splatsim.render import RenderOutput, rasterize, render, resolve_backend
from splatsim.render.projection import project_gaussians, screen_extents, sh_to_rgb
from splatsim.render.reference import composite_reference
from splatsim.scene import GaussianScene, random_scene

IMG_TOL = 1e-4


def _cams(C: int, W: int, H: int, seed: int = 0, focal: float | None = None):
    g = torch.Generator().manual_seed(seed)
    viewmats = torch.eye(4).repeat(C, 1, 1)
    for c in range(1, C):
        # small rotation about y and a shift: a batch of different views of the same scene
        a = float(torch.rand(1, generator=g) * 0.3 - 0.15)
        ca, sa = torch.cos(torch.tensor(a)), torch.sin(torch.tensor(a))
        viewmats[c, :3, :3] = torch.tensor([[ca, 0, sa], [0, 1, 0], [-sa, 0, ca]])
        viewmats[c, :3, 3] = torch.rand(3, generator=g) * 0.2 - 0.1
    f = focal if focal is not None else 0.9 * W
    Ks = torch.tensor([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]]).repeat(C, 1, 1)
    return viewmats, Ks


def _params(scene: GaussianScene, requires_grad: bool = False):
    ps = [
        scene.means.clone(),
        scene.quats.clone(),
        scene.scales.clone(),
        scene.opacities.clone(),
        scene.sh.clone(),
    ]
    for p in ps:
        p.requires_grad_(requires_grad)
    return ps


def _reference_with_ambiguity(scene, viewmats, Ks, W, H):
    """Reference images plus the mask of pixels whose result hinges on a float-rounding tie."""
    proj = project_gaussians(scene.means, scene.quats, scene.scales, viewmats, Ks, W, H)
    C = viewmats.shape[0]
    opac = scene.opacities[None].expand(C, -1)
    ext = screen_extents(proj.cov2d, opac)
    centres = torch.linalg.inv(viewmats)[:, :3, 3]
    rgb = sh_to_rgb(scene.sh, scene.means, centres, scene.sh_degree)
    onehot = torch.nn.functional.one_hot(scene.labels, 3).float()
    feats = torch.cat([rgb, proj.depths[..., None], onehot[None].expand(C, -1, -1)], -1)
    _, _, amb = composite_reference(
        proj.means2d, proj.conics, opac, feats, ext, proj.depths, proj.valid, W, H, return_ambiguous=True
    )
    return amb


def _compare(a: RenderOutput, b: RenderOutput, keep: torch.Tensor):
    for name in ("rgb", "alpha", "labels"):
        x, y = getattr(a, name), getattr(b, name)
        k = keep[..., None] if x.ndim == 4 else keep
        diff = ((x - y).abs() * k).max().item()
        assert diff <= IMG_TOL, f"{name}: max |cpu − reference| = {diff:.2e}"
    # expected depth is a ratio acc/alpha: compare where alpha is not tiny, relative to depth
    ok = keep & (b.alpha > 0.05)
    rel = ((a.depth - b.depth).abs() / b.depth.clamp(min=1e-3))[ok]
    assert rel.numel() == 0 or rel.max().item() <= 1e-3


@pytest.mark.parametrize(
    "W,H,N,C,degree,seed",
    [
        (64, 48, 400, 1, 0, 0),
        (37, 23, 300, 2, 1, 1),  # non-square, not a multiple of the tile size, a batch of cameras
        (16, 16, 200, 1, 3, 2),
        (50, 70, 600, 3, 2, 3),  # portrait
        (1, 1, 50, 1, 0, 4),  # a single pixel
    ],
)
@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_images_match_reference(W, H, N, C, degree, seed, backend):
    scene = random_scene(N, seed=seed, sh_degree=degree, focal_px=0.9 * W, sigma_px_range=(0.5, 8.0))
    viewmats, Ks = _cams(C, W, H, seed)
    kw = dict(labels=scene.labels, sh_degree=degree)
    ref = rasterize(*_params(scene), viewmats, Ks, W, H, backend="reference", **kw)
    out = rasterize(*_params(scene), viewmats, Ks, W, H, backend=backend, **kw)
    amb = _reference_with_ambiguity(scene, viewmats, Ks, W, H)
    assert amb.float().mean() < 0.005  # ties are rare; the comparison below covers ≥ 99.5% of pixels
    _compare(out, ref, ~amb)
    assert ref.alpha.max() > 0.1  # the scene is actually visible


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradients_match_reference(seed):
    """Every parameter's gradient within 1e-3 of the reference's largest entry (relative).

    Why 1e-3: both sides run in float32; the kernel sums per-pixel contributions in a different order,
    rewinds transmittance by division (gsplat's scheme) instead of storing it, and uses a polynomial
    exp with < 3e-6 relative error. Observed differences are ~1e-5 relative; 1e-3 leaves room for
    summation order over thousands of pixels without admitting a wrong term (a wrong or missing
    term shows up at the 1e-1 level).
    """
    W, H, C = 40, 32, 2
    scene = random_scene(250, seed=10 + seed, sh_degree=1, focal_px=0.9 * W, sigma_px_range=(0.7, 6.0))
    viewmats, Ks = _cams(C, W, H, seed)
    g = torch.Generator().manual_seed(seed)
    w_rgb = torch.randn(C, H, W, 3, generator=g)
    w_alpha = torch.randn(C, H, W, generator=g)
    w_depth = torch.randn(C, H, W, generator=g) * 0.1
    keep = (~_reference_with_ambiguity(scene, viewmats, Ks, W, H)).float()
    grads = {}
    for backend in ("reference", "cpu", "torch"):
        ps = _params(scene, requires_grad=True)
        out = rasterize(*ps, viewmats, Ks, W, H, labels=scene.labels, sh_degree=1, backend=backend)
        loss = ((out.rgb * w_rgb).sum(-1) * keep).sum() + (out.alpha * w_alpha * keep).sum()
        loss = loss + (out.depth * w_depth * keep).sum()
        grads[backend] = torch.autograd.grad(loss, ps)
    names = ["means", "quats", "scales", "opacities", "sh"]
    for backend in ("cpu", "torch"):
        for name, a, b in zip(names, grads[backend], grads["reference"]):
            scale = b.abs().max().item()
            assert scale > 0, name
            err = (a - b).abs().max().item() / scale
            assert err < 1e-3, f"{backend} d{name}: relative error {err:.2e}"


def test_gradients_finite_difference_sanity():
    """The reference's autograd itself against a float64 central difference on one opacity."""
    W, H = 24, 20
    scene = random_scene(40, seed=5, focal_px=0.9 * W).to(dtype=torch.float64)
    viewmats, Ks = _cams(1, W, H)
    viewmats, Ks = viewmats.double(), Ks.double()
    ps = _params(scene, requires_grad=True)
    out = rasterize(*ps, viewmats, Ks, W, H, backend="cpu")
    out.rgb.sum().backward()
    i = int(torch.argmax(ps[3].grad.abs()))
    eps = 1e-4

    def f(delta):
        q = [p.detach().clone() for p in ps]
        q[3][i] += delta
        return rasterize(*q, viewmats, Ks, W, H, backend="reference").rgb.sum().item()

    fd = (f(eps) - f(-eps)) / (2 * eps)
    assert abs(fd - ps[3].grad[i].item()) <= 1e-2 * abs(fd) + 1e-4


def test_empty_scene_and_background():
    scene = GaussianScene.empty()
    viewmats, Ks = _cams(2, 20, 10)
    bg = torch.tensor([0.1, 0.2, 0.3])
    c2w = torch.linalg.inv(viewmats)
    out = render(scene, c2w, Ks, 20, 10, backend="cpu", background=bg)
    assert out.rgb.shape == (2, 10, 20, 3)
    assert torch.allclose(out.rgb, bg.expand(2, 10, 20, 3))
    assert (out.alpha == 0).all() and (out.depth == 0).all() and (out.labels == 0).all()


def test_gaussians_behind_camera_and_off_screen_render_nothing():
    means = torch.tensor([[0.0, 0.0, -2.0], [0.0, 0.0, 0.005], [50.0, 0.0, 2.0], [0.0, -40.0, 1.0]])
    quats = torch.tensor([[1.0, 0, 0, 0]]).repeat(4, 1)
    scales = torch.full((4, 3), 0.05)
    opac = torch.full((4,), 0.9)
    cols = torch.ones(4, 3)
    viewmats, Ks = _cams(1, 32, 24)
    for backend in ("cpu", "reference", "torch"):
        out = rasterize(means, quats, scales, opac, cols, viewmats, Ks, 32, 24, backend=backend)
        assert out.alpha.abs().max() == 0, backend


def test_batch_equals_individual_renders():
    W, H = 48, 40
    scene = random_scene(500, seed=9, focal_px=0.9 * W)
    viewmats, Ks = _cams(3, W, H, seed=4)
    c2w = torch.linalg.inv(viewmats)
    batch = render(scene, c2w, Ks, W, H, backend="cpu")
    for c in range(3):
        one = render(scene, c2w[c], Ks[c], W, H, backend="cpu")
        torch.testing.assert_close(one.rgb[0], batch.rgb[c], atol=1e-5, rtol=0)
        torch.testing.assert_close(one.depth[0], batch.depth[c], atol=1e-4, rtol=1e-5)


def test_labels_are_occlusion_aware():
    """A hand Gaussian in front of an object Gaussian: the overlap reads as hand, the rest as object."""
    means = torch.tensor([[0.0, 0.0, 2.0], [0.05, 0.0, 1.5]])  # object behind, hand in front, shifted right
    quats = torch.tensor([[1.0, 0, 0, 0]]).repeat(2, 1)
    scales = torch.tensor([[0.1, 0.1, 0.1], [0.03, 0.03, 0.03]])
    opac = torch.tensor([0.99, 0.99])
    cols = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])
    labels = torch.tensor([1, 2])
    viewmats, Ks = _cams(1, 64, 64, focal=100.0)
    out = rasterize(means, quats, scales, opac, cols, viewmats, Ks, 64, 64, labels=labels, backend="cpu")
    lab = out.label_map()[0]
    hand_px = (int(100 * 0.05 / 1.5 + 32), 32)
    assert lab[hand_px[1], hand_px[0]] == 2
    assert lab[32, 28] == 1  # left part of the object, not covered by the hand
    assert lab[2, 2] == 0  # empty corner
    # depth: the hand pixel is nearer
    assert out.depth[0, hand_px[1], hand_px[0]] < out.depth[0, 32, 28]
    assert abs(out.depth[0, 32, 28].item() - 2.0) < 0.02


def test_render_scene_matches_rasterize_with_sh():
    W, H = 40, 30
    scene = random_scene(300, seed=2, sh_degree=2, focal_px=0.9 * W)
    viewmats, Ks = _cams(2, W, H)
    a = render(scene, torch.linalg.inv(viewmats), Ks, W, H, backend="cpu")
    b = rasterize(*_params(scene), viewmats, Ks, W, H, labels=scene.labels, sh_degree=2, backend="cpu")
    assert torch.allclose(a.rgb, b.rgb, atol=1e-6)


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("means", float("nan"), "means contain NaN"),
        ("scales", -1.0, "scales must be positive"),
        ("scales", 0.0, "scales must be positive"),
        ("quats", 0.0, "zero quaternion"),
        ("opacities", 1.5, "opacities must lie in"),
    ],
)
def test_bad_gaussians_raise(field, value, match):
    scene = random_scene(10, seed=0)
    ps = dict(zip(["means", "quats", "scales", "opacities", "colors"], _params(scene)))
    ps[field] = ps[field].clone()
    ps[field][3] = value
    viewmats, Ks = _cams(1, 16, 16)
    with pytest.raises(ValueError, match=match):
        rasterize(**ps, viewmats=viewmats, Ks=Ks, width=16, height=16, backend="cpu")


def test_bad_cameras_raise():
    scene = random_scene(10, seed=0)
    viewmats, Ks = _cams(1, 32, 24)
    _, K_big = _cams(1, 64, 48)
    with pytest.raises(ValueError, match="principal point"):
        rasterize(*_params(scene), viewmats, K_big, 16, 12, backend="cpu")  # K made for 64x48
    with pytest.raises(ValueError, match="image size"):
        rasterize(*_params(scene), viewmats, Ks, 0, 24, backend="cpu")
    bad = viewmats.clone()
    bad[0, 0, 0] = 2.0
    with pytest.raises(ValueError, match="orthonormal"):
        rasterize(*_params(scene), bad, Ks, 32, 24, backend="cpu")
    bad = viewmats.clone()
    bad[0, 1, 3] = float("inf")
    with pytest.raises(ValueError, match="NaN or inf"):
        rasterize(*_params(scene), bad, Ks, 32, 24, backend="cpu")


def test_backend_resolution_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("machine has CUDA")
    assert resolve_backend("auto") == "cpu"
    with pytest.raises(ValueError, match="needs CUDA"):
        resolve_backend("gsplat")
    with pytest.raises(ValueError, match="not one of"):
        resolve_backend("vulkan")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gsplat_backend_agrees_with_cpu():
    W, H = 64, 48
    scene = random_scene(2000, seed=0, focal_px=0.9 * W)
    viewmats, Ks = _cams(2, W, H)
    c2w = torch.linalg.inv(viewmats)
    cpu = render(scene, c2w, Ks, W, H, backend="cpu")
    gpu = render(scene.to("cuda"), c2w.cuda(), Ks.cuda(), W, H, backend="gsplat")
    # gsplat bins with a square 3.33σ box; contributions agree up to its float rounding
    assert (cpu.rgb - gpu.rgb.cpu()).abs().mean() < 1e-3
    assert (cpu.alpha - gpu.alpha.cpu()).abs().mean() < 1e-3
    # a background given on the CPU, and an empty scene, render on the GPU too
    bg = torch.tensor([0.2, 0.3, 0.4])
    cpu = render(scene, c2w, Ks, W, H, backend="cpu", background=bg)
    gpu = render(scene.to("cuda"), c2w.cuda(), Ks.cuda(), W, H, backend="gsplat", background=bg)
    assert (cpu.rgb - gpu.rgb.cpu()).abs().mean() < 1e-3
    empty = random_scene(0, seed=0, focal_px=0.9 * W).to("cuda")
    out = render(empty, c2w.cuda(), Ks.cuda(), W, H, backend="gsplat", background=bg)
    assert out.rgb.device.type == out.labels.device.type == "cuda"
    torch.testing.assert_close(out.rgb.cpu(), bg.expand(2, H, W, 3).to(out.rgb.dtype).cpu())
