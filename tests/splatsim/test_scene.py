"""Tests for splatsim.scene: validation, conversions, transformations, synthetic scenes."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from splatsim.scene import (
    LABEL_BACKGROUND,
    LABEL_HAND,
    LABEL_NAMES,
    LABEL_OBJECT,
    NUM_LABELS,
    SH_C0,
    GaussianScene,
    num_sh_coeffs,
    object_like_scene,
    random_scene,
    rgb_to_sh_dc,
    sh_dc_to_rgb,
    sh_degree_from_coeffs,
)

FIELDS = ("means", "quats", "log_scales", "logit_opacities", "sh", "labels")


def scenes_equal(a: GaussianScene, b: GaussianScene) -> bool:
    return all(torch.equal(getattr(a, f), getattr(b, f)) for f in FIELDS)


def test_label_constants() -> None:
    assert (LABEL_BACKGROUND, LABEL_OBJECT, LABEL_HAND, NUM_LABELS) == (0, 1, 2, 3)
    assert LABEL_NAMES == ("background", "object", "hand")


def test_sh_coeff_counts() -> None:
    assert [num_sh_coeffs(d) for d in range(4)] == [1, 4, 9, 16]
    assert [sh_degree_from_coeffs(k) for k in (1, 4, 9, 16)] == [0, 1, 2, 3]
    for k in (0, 2, 5, 25):
        with pytest.raises(ValueError):
            sh_degree_from_coeffs(k)
    with pytest.raises(ValueError):
        num_sh_coeffs(4)


def test_properties() -> None:
    s = random_scene(30, seed=0, sh_degree=2)
    assert s.num_gaussians == 30 and s.sh_degree == 2
    assert torch.equal(s.scales, torch.exp(s.log_scales))
    assert torch.equal(s.opacities, torch.sigmoid(s.logit_opacities))
    s.quats.mul_(3.0)
    q = s.normalized_quats
    torch.testing.assert_close(q.norm(dim=-1), torch.ones(30))
    torch.testing.assert_close(s.colors, SH_C0 * s.sh[:, 0] + 0.5)


# --------------------------------------------------------------------------------------------------
# validate()


def test_random_scenes_validate() -> None:
    for degree in range(4):
        assert random_scene(20, seed=degree, sh_degree=degree).validate() is not None
    object_like_scene(200, seed=0, sh_degree=3).validate()
    GaussianScene.empty().validate()


def _corrupt(field: str, value) -> GaussianScene:
    s = random_scene(8, seed=0, sh_degree=1)
    setattr(s, field, value(getattr(s, field)) if callable(value) else value)
    return s


@pytest.mark.parametrize(
    ("field", "value", "pattern"),
    [
        ("means", lambda t: t[:, :2], r"'means' has shape \(8, 2\).*expected \[N, 3\]"),
        ("means", lambda t: t.to(torch.int32), r"'means' has dtype torch.int32.*floating"),
        ("means", lambda t: t.double(), r"'quats' has dtype torch.float32.*expected torch.float64"),
        ("means", [[0.0, 0.0, 0.0]], r"'means' is a list.*torch.Tensor"),
        ("quats", lambda t: t[:, :3], r"'quats' has shape \(8, 3\).*expected \[N, 4\]"),
        ("quats", lambda t: t[:5], r"'quats' has shape \(5, 4\).*N=8"),
        ("log_scales", lambda t: t.T, r"'log_scales' has shape \(3, 8\)"),
        ("logit_opacities", lambda t: t[:, None], r"'logit_opacities' has shape \(8, 1\).*expected \[N\]"),
        ("logit_opacities", lambda t: t.half(), r"'logit_opacities' has dtype torch.float16"),
        ("sh", lambda t: torch.zeros(8, 5, 3), r"'sh' has K=5.*1, 4, 9 or 16"),
        ("sh", lambda t: torch.zeros(8, 4, 2), r"'sh' has shape \(8, 4, 2\).*\[N, K, 3\]"),
        ("labels", lambda t: t.to(torch.int32), r"'labels' has dtype torch.int32.*int64"),
        ("labels", lambda t: t[:7], r"'labels' has shape \(7,\)"),
    ],
)
def test_validate_rejects_bad_shapes_and_dtypes(field: str, value, pattern: str) -> None:
    s = _corrupt(field, value)
    with pytest.raises(ValueError, match=r"^my_source: .*" + pattern):
        s.validate("my_source")


@pytest.mark.parametrize("field", ["means", "quats", "log_scales", "logit_opacities", "sh"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_validate_rejects_non_finite(field: str, bad: float) -> None:
    s = random_scene(8, seed=0, sh_degree=1)
    t = getattr(s, field)
    t.view(-1)[t.numel() // t.shape[0] * 5 + (1 if t.ndim > 1 else 0)] = bad  # Gaussian 5
    with pytest.raises(ValueError, match=rf"^src: field '{field}' has non-finite value .* \(Gaussian 5\)"):
        s.validate("src")


@pytest.mark.parametrize("bad", [3, -1, 7])
def test_validate_rejects_bad_labels(bad: int) -> None:
    s = random_scene(8, seed=0)
    s.labels[6] = bad
    with pytest.raises(ValueError, match=rf"'labels' has value {bad} at index 6.*expected one of 0"):
        s.validate()


def test_validate_rejects_zero_quaternion_only() -> None:
    s = random_scene(8, seed=0)
    s.quats[2] *= 17.0  # unnormalised is fine
    s.validate()
    s.quats[4] = 0.0
    with pytest.raises(ValueError, match=r"^scene: field 'quats' has a zero-norm quaternion at index 4"):
        s.validate()


# --------------------------------------------------------------------------------------------------
# from_activated()


def test_from_activated_inverts_activations() -> None:
    ref = random_scene(40, seed=2)
    s = GaussianScene.from_activated(ref.means, ref.quats, ref.scales, ref.opacities, colors_rgb=ref.colors)
    torch.testing.assert_close(s.log_scales, ref.log_scales)
    torch.testing.assert_close(s.logit_opacities, ref.logit_opacities, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(s.sh, ref.sh, rtol=1e-5, atol=1e-5)
    assert torch.equal(s.labels, torch.zeros(40, dtype=torch.int64))
    s2 = GaussianScene.from_activated(
        ref.means, ref.quats, ref.scales, ref.opacities, sh=ref.sh, labels=ref.labels
    )
    assert torch.equal(s2.sh, ref.sh) and torch.equal(s2.labels, ref.labels)


def test_from_activated_clamps_opacities() -> None:
    n = 3
    s = GaussianScene.from_activated(
        torch.zeros(n, 3),
        torch.tensor([[1.0, 0, 0, 0]] * n),
        torch.full((n, 3), 0.01),
        torch.tensor([1e-12, 0.5, 1 - 1e-7]),  # both outside [1e-6, 1 - 1e-6]
        colors_rgb=torch.full((n, 3), 0.5),
    )
    assert torch.isfinite(s.logit_opacities).all()
    bound = math.log((1 - 1e-6) / 1e-6)
    assert s.logit_opacities.abs().max() <= bound + 1e-3


@pytest.mark.parametrize(
    ("scale", "opacity", "pattern"),
    [
        (0.0, 0.5, r"'scales' has value 0.0 at index \[1, 2\].*> 0"),
        (-0.2, 0.5, r"'scales' has value -0.2\d* at index \[1, 2\]"),
        (float("nan"), 0.5, r"'scales' has value nan"),
        (0.01, 0.0, r"'opacities' has value 0.0 at index \[1\].*\(0, 1\)"),
        (0.01, 1.0, r"'opacities' has value 1.0 at index \[1\]"),
        (0.01, 1.5, r"'opacities' has value 1.5 at index \[1\]"),
    ],
)
def test_from_activated_rejects_bad_values(scale: float, opacity: float, pattern: str) -> None:
    n = 3
    scales = torch.full((n, 3), 0.01)
    scales[1, 2] = scale
    opacities = torch.full((n,), 0.5)
    opacities[1] = opacity
    with pytest.raises(ValueError, match=r"^GaussianScene.from_activated: " + pattern):
        GaussianScene.from_activated(
            torch.zeros(n, 3),
            torch.tensor([[1.0, 0, 0, 0]] * n),
            scales,
            opacities,
            colors_rgb=torch.full((n, 3), 0.5),
        )


def test_from_activated_needs_exactly_one_colour_source() -> None:
    ref = random_scene(4, seed=0)
    args = (ref.means, ref.quats, ref.scales, ref.opacities)
    with pytest.raises(ValueError, match="exactly one"):
        GaussianScene.from_activated(*args)
    with pytest.raises(ValueError, match="exactly one"):
        GaussianScene.from_activated(*args, colors_rgb=ref.colors, sh=ref.sh)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.0, 1.0, width=32), min_size=3, max_size=3))
def test_rgb_sh_dc_round_trip(rgb: list[float]) -> None:
    x = torch.tensor(rgb)
    torch.testing.assert_close(sh_dc_to_rgb(rgb_to_sh_dc(x)), x, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# Transformations


def test_subset_mask_index_slice() -> None:
    s = random_scene(10, seed=0, sh_degree=1)
    mask = torch.arange(10) % 3 == 0
    a = s.subset(mask)
    b = s.subset(torch.tensor([0, 3, 6, 9]))
    c = s.subset([0, 3, 6, 9])
    d = s.subset(slice(0, 10, 3))
    assert a.num_gaussians == 4
    assert scenes_equal(a, b) and scenes_equal(a, c) and scenes_equal(a, d)
    with pytest.raises(ValueError, match=r"mask has shape \(9,\); expected \[10\]"):
        s.subset(mask[:9])
    with pytest.raises(ValueError, match="1-D integer index"):
        s.subset(torch.tensor([0.0, 1.0]))


def test_select_label() -> None:
    s = random_scene(100, seed=0)
    parts = [s.select_label(lab) for lab in range(NUM_LABELS)]
    assert sum(p.num_gaussians for p in parts) == 100
    for lab, p in enumerate(parts):
        assert (p.labels == lab).all()
    with pytest.raises(ValueError, match="label 3"):
        s.select_label(3)


def test_concat_pads_sh() -> None:
    a = random_scene(5, seed=0, sh_degree=0)
    b = random_scene(7, seed=1, sh_degree=2)
    c = GaussianScene.concat([a, b])
    assert c.num_gaussians == 12 and c.sh_degree == 2
    assert torch.equal(c.sh[:5, :1], a.sh) and (c.sh[:5, 1:] == 0).all()
    assert torch.equal(c.sh[5:], b.sh)
    assert torch.equal(c.labels, torch.cat([a.labels, b.labels]))
    c.validate()
    with pytest.raises(ValueError, match="no scenes"):
        GaussianScene.concat([])
    with pytest.raises(ValueError, match="scene 1 is torch.float64"):
        GaussianScene.concat([a, b.to(dtype=torch.float64)])


def test_with_sh_degree() -> None:
    s = random_scene(6, seed=0, sh_degree=2)
    t = s.with_sh_degree(1)
    assert t.sh_degree == 1 and torch.equal(t.sh, s.sh[:, :4])
    u = s.with_sh_degree(3)
    assert u.sh.shape == (6, 16, 3) and torch.equal(u.sh[:, :9], s.sh) and (u.sh[:, 9:] == 0).all()
    assert s.with_sh_degree(2).sh is s.sh
    with pytest.raises(ValueError):
        s.with_sh_degree(4)


def test_to_detach_clone() -> None:
    s = random_scene(6, seed=0, sh_degree=1)
    d = s.to(dtype=torch.float64)
    assert d.means.dtype == torch.float64 and d.sh.dtype == torch.float64 and d.labels.dtype == torch.int64
    d.validate()
    with pytest.raises(ValueError, match="floating"):
        s.to(dtype=torch.int32)
    c = s.clone()
    c.means += 1
    assert not torch.equal(c.means, s.means)
    p = s.clone()
    p.means.requires_grad_(True)
    assert p.detach().means.requires_grad is False
    assert p.detach().means.data_ptr() == p.means.data_ptr()


def test_bounds() -> None:
    s = random_scene(500, seed=0, extent=0.5, depth_range=(1.0, 2.0))
    lo, hi = s.bounds()
    assert torch.equal(lo, s.means.amin(0)) and torch.equal(hi, s.means.amax(0))
    assert (lo >= torch.tensor([-0.5, -0.5, 1.0])).all() and (hi <= torch.tensor([0.5, 0.5, 2.0])).all()
    lo3, hi3 = s.bounds(sigmas=3.0)
    assert (lo3 < lo).all() and (hi3 > hi).all()
    with pytest.raises(ValueError, match="no Gaussians"):
        GaussianScene.empty().bounds()


# --------------------------------------------------------------------------------------------------
# Synthetic scenes


@pytest.mark.parametrize("make", [random_scene, object_like_scene])
def test_synthetic_scenes_are_deterministic(make) -> None:
    a, b, c = make(300, seed=5), make(300, seed=5), make(300, seed=6)
    assert scenes_equal(a, b)
    for f in ("means", "quats", "log_scales", "logit_opacities", "sh"):
        assert not torch.equal(getattr(a, f), getattr(c, f)), f


def test_random_scene_distribution() -> None:
    s = random_scene(4000, seed=0, sh_degree=3, depth_range=(2.0, 5.0), focal_px=300.0)
    assert s.sh_degree == 3 and s.means.dtype == torch.float32
    assert (s.means[:, :2].abs() <= 1).all() and (s.means[:, 2] >= 2).all() and (s.means[:, 2] <= 5).all()
    sigma_px = 300.0 * s.scales / s.means[:, 2:3]
    assert sigma_px.min() >= 0.5 - 1e-4 and sigma_px.max() <= 16 + 1e-3
    assert 0.02 < s.opacities.min() < 0.1 and 0.9 < s.opacities.max() < 0.96
    assert torch.bincount(s.labels, minlength=3).min() > 1000
    torch.testing.assert_close(s.quats.norm(dim=-1), torch.ones(4000))


def test_object_like_scene_layout() -> None:
    s = object_like_scene(2000, seed=0)
    counts = torch.bincount(s.labels, minlength=3)
    assert (counts > 0).all()
    assert (s.scales >= 0.002 - 1e-6).all() and (s.scales <= 0.008 + 1e-6).all()
    assert (s.opacities > 0.5).float().mean() > 0.8
    obj = s.select_label(LABEL_OBJECT)
    lo, hi = obj.bounds()
    size = hi - lo
    assert (size > 0.05).all() and (size < 0.4).all()
    centre = (lo + hi) / 2
    assert torch.allclose(centre, torch.tensor([0.0, 0.0, 0.6]), atol=0.05)
    plane = s.select_label(LABEL_BACKGROUND)
    assert plane.means[:, 2].min() > hi[2]  # the plane lies behind the objects
    hand = s.select_label(LABEL_HAND)
    assert hand.num_gaussians == 200
    with pytest.raises(ValueError, match="num=4"):
        object_like_scene(4)
