"""Tests for recon/losses.py, recon/densify.py and recon/optimize.py on tiny rendered scenes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recon.densify import DensifyConfig, accumulate, densify_and_prune, init_state
from recon.losses import depth_l1, gaussian_window_1d, label_bce, photometric_loss, psnr, ssim
from recon.optimize import (
    PARAM_NAMES,
    OptimConfig,
    TrainView,
    _make_optimizer,
    _scene_to_params,
    frustum_indices,
    load_checkpoint,
    optimize,
    render_view,
    resolve_background,
    revote_labels,
    save_checkpoint,
    view_loss,
)
from splatsim.conventions import c2w_to_viewmat, intrinsics_matrix, look_at
from splatsim.scene import LABEL_HAND, LABEL_OBJECT, object_like_scene

W, H = 48, 36


# --------------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------------


def _ssim_dense(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Straightforward SSIM with a full 11x11 2-D window (the slow reference)."""
    w1 = gaussian_window_1d(11, 1.5, torch.float64)
    w2 = (w1[:, None] * w1[None, :])[None, None].expand(3, 1, 11, 11)
    x, y = a.permute(0, 3, 1, 2).double(), b.permute(0, 3, 1, 2).double()

    def blur(t):
        return F.conv2d(t, w2, padding=5, groups=3)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    return (((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))).mean()


def test_ssim_matches_a_dense_window_and_is_one_for_equal_images():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 20, 27, 3, generator=g)
    b = (a + 0.1 * torch.randn(2, 20, 27, 3, generator=g)).clamp(0, 1)
    assert float(ssim(a, a)) == pytest.approx(1.0, abs=1e-6)
    assert float(ssim(a.double(), b.double())) == pytest.approx(float(_ssim_dense(a, b)), abs=1e-10)
    assert float(ssim(a, b)) < 0.99
    assert ssim(a, b, reduce=False).shape == (2, 20, 27)
    with pytest.raises(ValueError, match="ssim expects"):
        ssim(a, b[:, :10])


def test_photometric_depth_label_losses():
    g = torch.Generator().manual_seed(1)
    a = torch.rand(1, 16, 16, 3, generator=g)
    b = torch.rand(1, 16, 16, 3, generator=g)
    assert float(photometric_loss(a, a)) == pytest.approx(0.0, abs=1e-6)
    l1 = (a - b).abs().mean()
    assert float(photometric_loss(a, b, 0.0)) == pytest.approx(float(l1))
    assert float(photometric_loss(a, b, 0.2)) == pytest.approx(float(0.8 * l1 + 0.2 * (1 - ssim(a, b))))
    target = torch.tensor([[[1.0, 0.0], [2.0, 0.0]]])  # 0 = missing
    rendered = torch.tensor([[[1.5, 9.0], [1.0, 9.0]]])
    assert float(depth_l1(rendered, target)) == pytest.approx(0.75)  # only valid pixels count
    assert float(depth_l1(rendered, torch.zeros_like(target))) == 0.0
    mask = torch.tensor([[[0, 1], [2, 2]]])
    perfect = F.one_hot(mask, 3).float()
    assert float(label_bce(perfect, mask)) < 1e-3
    assert float(label_bce(1 - perfect, mask)) > 5.0
    assert psnr(a, a) == math.inf
    assert psnr(torch.zeros(4, 3), torch.full((4, 3), 0.1)) == pytest.approx(20.0)


# --------------------------------------------------------------------------------------------------
# A tiny rendered scene and its views
# --------------------------------------------------------------------------------------------------


def _views(scene, n: int = 3) -> list[TrainView]:
    K = intrinsics_matrix(40.0, 40.0, W / 2, H / 2).float()
    views = []
    for i in range(n):
        eye = torch.tensor([0.08 * (i - (n - 1) / 2), 0.02 * i, 0.0], dtype=torch.float64)
        c2w = look_at(eye, torch.tensor([0.0, 0.0, 0.6], dtype=torch.float64), up=(0.0, -1.0, 0.0))
        vm = c2w_to_viewmat(c2w).float()
        view = TrainView(
            f"v{i}", torch.zeros(1, H, W, 3), torch.zeros(1, H, W), None, vm[None], K[None], W, H
        )
        with torch.no_grad():
            out = render_view(scene, view, "cpu")
        view.rgb = out.rgb.clamp(0, 1)
        view.depth = torch.where(out.alpha > 0.5, out.depth, torch.zeros_like(out.depth))
        view.mask = out.label_map().long()
        views.append(view)
    return views


@pytest.fixture(scope="module")
def tiny():
    scene = object_like_scene(1500, seed=3)
    return scene, _views(scene)


def _perturbed(scene, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    s = scene.clone()
    s.means = s.means + 0.004 * torch.randn(s.means.shape, generator=g)
    s.sh = s.sh + 0.5 * torch.randn(s.sh.shape, generator=g)
    return s


def _total_loss(scene, views, cfg) -> float:
    with torch.no_grad():
        return sum(float(view_loss(render_view(scene, v, "cpu"), v, cfg)[0]) for v in views)


def test_optimizer_reduces_the_loss(tiny):
    scene, views = tiny
    start = _perturbed(scene)
    cfg = OptimConfig(iterations=24, checkpoint_every=0, background=(0.0, 0.0, 0.0), lr_sh0=0.03)
    before = _total_loss(start, views, cfg)
    res = optimize(start, views, cfg, DensifyConfig(enabled=False), backend="cpu", progress=False)
    after = _total_loss(res.scene, views, cfg)
    assert res.steps == 24 and res.resumed_from is None
    assert after < 0.7 * before, (before, after)
    assert len(res.losses) == 3  # one mean per 10 steps, plus the last partial window
    assert res.scene.num_gaussians == scene.num_gaussians
    assert torch.equal(res.scene.labels, scene.labels)


def test_optimizer_with_densification_runs_and_keeps_tensors_consistent(tiny):
    scene, views = tiny
    cfg = OptimConfig(iterations=6, checkpoint_every=0)
    dens = DensifyConfig(
        enabled=True, start_step=2, stop_step=4, every=2, grow_grad2d=0.0, grow_scale_m=0.004
    )
    res = optimize(_perturbed(scene), views, cfg, dens, backend="cpu", progress=False)
    assert res.densify_log and res.densify_log[0]["step"] == 2
    assert res.scene.num_gaussians > scene.num_gaussians
    res.scene.validate()


def test_background_defaults_to_the_mean_training_colour(tiny):
    _, views = tiny
    bg = resolve_background(None, views)
    expected = torch.stack([v.rgb.reshape(-1, 3).mean(0) for v in views]).mean(0)
    np.testing.assert_allclose(bg, expected.numpy(), rtol=1e-6)
    assert resolve_background((0.1, 0.2, 0.3), views) == (0.1, 0.2, 0.3)
    with pytest.raises(ValueError, match="background"):
        resolve_background((2.0, 0.0, 0.0), views)


# --------------------------------------------------------------------------------------------------
# Densification
# --------------------------------------------------------------------------------------------------


def test_densify_clones_small_splits_large_and_prunes_transparent():
    scene = object_like_scene(40, seed=0)
    params = _scene_to_params(scene)
    with torch.no_grad():
        params["log_scales"][:10] = math.log(0.001)  # small: cloned
        params["log_scales"][10:20] = math.log(0.01)  # large: split
        params["log_scales"][20:] = math.log(0.001)
        params["logit_opacities"][:] = 2.0
        params["logit_opacities"][30:] = -10.0  # transparent: pruned
    opt = _make_optimizer(params, OptimConfig())
    sum(params[k].sum() for k in PARAM_NAMES).backward()
    opt.step()  # creates Adam state to be carried along
    state = init_state(40)
    grad = torch.zeros(1, 40, 2)
    grad[0, :20, 0] = 1.0  # the first 20 have high screen-space gradients
    accumulate(state, grad, torch.ones(1, 40, 2), 100, 100)
    assert state["count"].tolist() == [1.0] * 40
    labels_before = params["labels"].clone()
    cfg = DensifyConfig(
        enabled=True,
        start_step=1,
        stop_step=10,
        every=1,
        grow_grad2d=0.1,
        grow_scale_m=0.004,
        prune_opacity=0.01,
    )
    counts = densify_and_prune(params, opt, state, cfg, step=1, generator=torch.Generator().manual_seed(0))
    assert counts == {"cloned": 10, "split": 10, "pruned": 10}
    n = 40 + 10 + 10 - 10
    for name, t in params.items():
        assert t.shape[0] == n, name
    for group in opt.param_groups:
        p = group["params"][0]
        assert p is params[group["name"]] and p.requires_grad
        assert opt.state[p]["exp_avg"].shape == p.shape
    # Order: the 20 untouched-or-cloned-source Gaussians kept (10 split removed, 10 pruned), then clones,
    # then split children; labels travel with them.
    assert torch.equal(params["labels"][20:30], labels_before[:10])
    assert torch.equal(params["labels"][30:40], labels_before[10:20])
    # Children have the parent's scale (after one Adam step of at most lr_scales) divided by 1.6.
    np.testing.assert_allclose(params["log_scales"][30:].exp().detach().numpy(), 0.01 / 1.6, rtol=1e-2)
    assert (state["grad2d"] == 0).all() and state["grad2d"].shape == (n,)
    # Off-schedule steps do nothing.
    assert densify_and_prune(params, opt, state, cfg, step=11, generator=torch.Generator()) == {
        "cloned": 0,
        "split": 0,
        "pruned": 0,
    }


# --------------------------------------------------------------------------------------------------
# Checkpoints and labels
# --------------------------------------------------------------------------------------------------


def test_checkpoint_round_trip(tmp_path):
    scene = object_like_scene(30, seed=1)
    params = _scene_to_params(scene)
    opt = _make_optimizer(params, OptimConfig())
    params["means"].square().sum().backward()
    opt.step()
    gen = torch.Generator().manual_seed(5)
    state = init_state(30)
    save_checkpoint(tmp_path, 7, params, opt, state, gen, {"config_hash": "abc", "losses": [1.0]})
    save_checkpoint(tmp_path, 9, params, opt, state, gen, {"config_hash": "abc", "losses": [1.0]})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.json", "checkpoint_0000009.safetensors"]
    info, tensors = load_checkpoint(tmp_path)
    assert info["step"] == 9 and info["config_hash"] == "abc" and info["num_gaussians"] == 30
    assert torch.equal(tensors["param.means"], params["means"].detach())
    assert torch.equal(tensors["adam.means.exp_avg"], opt.state[params["means"]]["exp_avg"])
    assert torch.equal(tensors["rng.generator"], gen.get_state())
    assert load_checkpoint(tmp_path / "nothing") is None
    (tmp_path / "checkpoint_0000009.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="delete"):
        load_checkpoint(tmp_path)


def test_revote_labels_recovers_labels_from_masks(tiny):
    scene, views = tiny
    wrong = scene.clone()
    obj = torch.nonzero(scene.labels == LABEL_OBJECT).squeeze(1)
    corrupted = obj[::2]
    wrong.labels[corrupted] = LABEL_HAND  # corrupt half of the object's labels
    fixed = revote_labels(wrong, views, backend="cpu")
    # Gaussians on the sides the cameras see get their label back (those behind keep theirs) ...
    repaired = float((fixed.labels[corrupted] == LABEL_OBJECT).float().mean())
    assert repaired > 0.3, repaired
    # ... and correct labels stay correct.
    intact = torch.ones(scene.num_gaussians, dtype=torch.bool)
    intact[corrupted] = False
    kept = float((fixed.labels[intact] == scene.labels[intact]).float().mean())
    assert kept > 0.98, kept


def test_frustum_culling_renders_the_same_image(tiny):
    scene, views = tiny
    params = _scene_to_params(scene)
    with torch.no_grad():
        params["means"][::7, 0] += 0.5  # push some Gaussians out of view
        for v in views:
            idx = frustum_indices(params, v)
            assert 0 < idx.numel() < scene.num_gaussians
            full = render_view(params, v, "cpu")
            culled = render_view({k: t[idx] for k, t in params.items()}, v, "cpu")
            torch.testing.assert_close(culled.rgb, full.rgb, atol=1e-5, rtol=0)
            torch.testing.assert_close(culled.depth, full.depth, atol=1e-5, rtol=0)
            torch.testing.assert_close(culled.labels, full.labels, atol=1e-5, rtol=0)


def test_interrupt_inside_a_step_checkpoints_the_last_finished_step(tiny, tmp_path, monkeypatch):
    import recon.optimize as opt_mod

    scene, views = tiny
    cfg = OptimConfig(iterations=6, checkpoint_every=0)
    kwargs = dict(backend="cpu", progress=False, config_hash="h", log=lambda _: None)
    ref = optimize(scene, views, cfg, DensifyConfig(), ckpt_dir=tmp_path / "ref", **kwargs)

    calls = {"n": 0}
    real = opt_mod.render_view

    def flaky(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 4:  # inside step 4: Ctrl-C while rendering
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(opt_mod, "render_view", flaky)
    with pytest.raises(KeyboardInterrupt):
        optimize(scene, views, cfg, DensifyConfig(), ckpt_dir=tmp_path / "run", **kwargs)
    monkeypatch.setattr(opt_mod, "render_view", real)
    info, _ = load_checkpoint(tmp_path / "run")
    assert info["step"] == 3
    res = optimize(scene, views, cfg, DensifyConfig(), ckpt_dir=tmp_path / "run", **kwargs)
    assert res.resumed_from == 3 and res.steps == 6
    torch.testing.assert_close(res.scene.means, ref.scene.means, atol=1e-6, rtol=0)
    torch.testing.assert_close(res.scene.sh, ref.scene.sh, atol=1e-5, rtol=0)
