"""Tests for recon/fuse.py: back-projection, voxel label voting, outliers, view choice, initial Gaussians."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from recon.capture import Capture, CaptureView, ViewData
from recon.fuse import (
    FusedCloud,
    FusionConfig,
    FusionError,
    fill_depth_holes,
    fuse_views,
    init_gaussians,
    remove_outliers,
    split_views,
    unseen_fractions,
    valid_depth_mask,
    view_points,
    voxel_downsample,
)
from splatsim.conventions import look_at
from splatsim.scene import LABEL_BACKGROUND, LABEL_HAND, LABEL_OBJECT, SH_C0

H, W = 24, 32
FX = FY = 30.0


def _c2w(eye, target=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0)) -> np.ndarray:
    return look_at(
        torch.tensor(eye, dtype=torch.float64), torch.tensor(target, dtype=torch.float64), up
    ).numpy()


def _plane_view(name: str, c2w: np.ndarray, depth: float, mask: np.ndarray | None = None) -> ViewData:
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 0] = np.arange(W, dtype=np.uint8)[None] * 8  # red encodes the column
    rgb[..., 1] = np.arange(H, dtype=np.uint8)[:, None] * 8  # green the row
    return ViewData(name, rgb, np.full((H, W), depth, np.float32), mask, FX, FY, W / 2, H / 2, c2w)


def test_view_points_land_on_the_world_plane_at_the_pixel_rays():
    # Camera 1.5 m above the origin looking straight down: every pixel at depth 1.5 hits z = 0.
    c2w = _c2w((0.2, -0.1, 1.5), (0.2, -0.1, 0.0), up=(0.0, 1.0, 0.0))
    view = _plane_view("top", c2w, 1.5)
    points, colors, labels = view_points(view)
    assert points.shape == (H * W, 3)
    np.testing.assert_allclose(points[:, 2], 0.0, atol=1e-9)
    # Pixel (col, row) has its centre at (col + 0.5, row + 0.5): check the exact world position.
    R, t = c2w[:3, :3], c2w[:3, 3]
    for row, col in ((0, 0), (5, 17), (H - 1, W - 1)):
        cam = np.array([(col + 0.5 - W / 2) / FX * 1.5, (row + 0.5 - H / 2) / FY * 1.5, 1.5])
        i = row * W + col
        np.testing.assert_allclose(points[i], R @ cam + t, atol=1e-9)
        np.testing.assert_allclose(colors[i], [col * 8 / 255, row * 8 / 255, 0.0], atol=1e-6)
    assert (labels == -1).all()  # no mask: points do not vote


def test_missing_and_out_of_range_depth_is_dropped():
    view = _plane_view("v", np.eye(4), 1.0)
    view.depth[0, :] = 0.0
    view.depth[1, :] = 9.0
    points, _, _ = view_points(view, min_depth_m=0.1, max_depth_m=4.0)
    assert points.shape[0] == (H - 2) * W


def test_flying_pixels_at_depth_jumps_are_dropped():
    depth = np.full((H, W), 1.0, np.float32)
    depth[:, W // 2 :] = 2.0
    valid = valid_depth_mask(depth, 0.1, 4.0, max_depth_jump=0.05)
    assert not valid[:, W // 2 - 1 : W // 2 + 1].any()
    assert valid[:, : W // 2 - 1].all() and valid[:, W // 2 + 1 :].all()


def test_fill_depth_holes_copies_the_nearest_depth_of_the_same_label():
    depth = np.ones((H, W), np.float32)
    depth[:, W // 2 :] = 2.0
    mask = np.zeros((H, W), np.uint8)
    mask[:, W // 2 :] = LABEL_HAND
    valid = np.ones((H, W), bool)
    valid[:, W // 2 - 2 : W // 2 + 2] = False  # a hole across the label edge
    filled, ok = fill_depth_holes(depth, valid, mask, max_px=3)
    assert ok.all()
    np.testing.assert_array_equal(filled[:, : W // 2], 1.0)  # background side from background only
    np.testing.assert_array_equal(filled[:, W // 2 :], 2.0)
    _, ok = fill_depth_holes(depth, valid, mask, max_px=1)
    assert not ok[:, W // 2 - 1].any()  # beyond the reach


def test_voxel_downsample_averages_and_votes_labels():
    pts = np.array([[0.001, 0.001, 0.001], [0.002, 0.002, 0.002], [0.003, 0.001, 0.002], [0.051, 0.0, 0.0]])
    col = np.array([[0, 0, 0], [1, 1, 1], [0.5, 0.5, 0.5], [1, 0, 0]], np.float32)
    lab = np.array([LABEL_HAND, LABEL_HAND, LABEL_OBJECT, -1])
    p, c, lb = voxel_downsample(pts, col, lab, voxel_size=0.01)
    assert p.shape == (2, 3)
    i = int(np.argmin(p[:, 0]))
    np.testing.assert_allclose(p[i], pts[:3].mean(0))
    np.testing.assert_allclose(c[i], col[:3].mean(0), atol=1e-6)
    assert lb[i] == LABEL_HAND  # 2 votes against 1
    assert lb[1 - i] == LABEL_BACKGROUND  # no votes
    with pytest.raises(FusionError, match="voxel_size_m"):
        voxel_downsample(pts, col, lab, 0.0)


def test_fused_labels_follow_the_majority_of_views():
    # Two cameras see the same plane; three masks of the same patch: 2x hand, 1x object.
    c2w = _c2w((0.0, 0.0, 1.0), (0.0, 0.0, 0.0), up=(0.0, 1.0, 0.0))
    masks = []
    for lab in (LABEL_HAND, LABEL_HAND, LABEL_OBJECT):
        m = np.zeros((H, W), np.uint8)
        m[8:16, 10:20] = lab
        masks.append(m)
    views = [_plane_view(f"v{i}", c2w, 1.0, m) for i, m in enumerate(masks)]
    cfg = FusionConfig(voxel_size_m=0.01, background_voxel_size_m=0.0, outlier_neighbors=0, fill_holes_px=0)
    cloud = fuse_views(views, cfg)
    # The patch spans x in [-1/6, 1/6) m... any voxel whose centre is well inside is labelled hand.
    inside = (np.abs(cloud.points[:, 0] - (15 - 16) / 30) < 0.1) & (
        np.abs(cloud.points[:, 1] - (12 - 12) / 30) < 0.08
    )
    assert inside.any()
    assert (cloud.labels[inside] == LABEL_HAND).all()
    far = np.abs(cloud.points[:, 0]) > 0.3
    assert (cloud.labels[far] == LABEL_BACKGROUND).all()
    assert cloud.stats["backprojected"] == 3 * H * W


def test_remove_outliers_drops_an_isolated_point():
    rng = np.random.default_rng(0)
    pts = np.concatenate([rng.normal(0, 0.01, (300, 3)), [[1.0, 1.0, 1.0]]])
    kept = remove_outliers(pts, neighbors=8, std_ratio=2.0)
    assert 300 not in kept
    assert len(kept) > 250
    np.testing.assert_array_equal(remove_outliers(pts, 0, 2.0), np.arange(301))


def test_empty_cloud_is_a_clear_error():
    view = _plane_view("dark", np.eye(4), 0.0)  # no valid depth at all
    with pytest.raises(FusionError, match=r"\['dark'\] have no valid depth"):
        fuse_views([view])


def test_init_gaussians_scales_colours_opacity_labels():
    g = np.stack(np.meshgrid(np.arange(10), np.arange(10), indexing="ij"), -1).reshape(-1, 2) * 0.01
    pts = np.concatenate([g, np.zeros((100, 1))], 1)
    cols = np.full((100, 3), 0.25, np.float32)
    labels = np.full(100, LABEL_OBJECT)
    cfg = FusionConfig(init_neighbors=3, init_scale_factor=1.0, init_opacity=0.7)
    scene = init_gaussians(FusedCloud(pts, cols, labels), sh_degree=1, cfg=cfg).validate()
    assert scene.num_gaussians == 100 and scene.sh_degree == 1
    # Interior points of a 1 cm grid: the 3 nearest neighbours are all 1 cm away.
    np.testing.assert_allclose(scene.scales[55].numpy(), 0.01, rtol=1e-5)
    np.testing.assert_allclose(scene.opacities.numpy(), 0.7, rtol=1e-5)
    np.testing.assert_allclose(scene.colors.numpy(), 0.25, atol=1e-6)
    np.testing.assert_allclose(scene.sh[:, 0].numpy(), (0.25 - 0.5) / SH_C0, rtol=1e-5)
    assert (scene.sh[:, 1:] == 0).all()
    assert (scene.labels == LABEL_OBJECT).all()
    flat = init_gaussians(
        FusedCloud(pts, cols, labels), 0, FusionConfig(init_flat_ratio=0.1, init_scale_factor=1.0)
    )
    # Discs in the z = 0 plane: the normal axis is the short one and points along +-z.
    R = torch.stack([torch.tensor(_quat_to_R(q)) for q in flat.normalized_quats[:3]])
    np.testing.assert_allclose(np.abs(R[:, 2, 2].numpy()), 1.0, atol=1e-4)
    assert math.isclose(float(flat.scales[55, 2] / flat.scales[55, 0]), 0.1, rel_tol=1e-4)


def _quat_to_R(q: torch.Tensor) -> np.ndarray:
    w, x, y, z = (float(v) for v in q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def _rig(n: int = 5) -> Capture:
    """Cameras on an arc around the origin; view 2 is the middle one."""
    views = []
    for i in range(n):
        a = math.radians(-60 + 120 * i / (n - 1))
        c2w = _c2w((math.sin(a), -math.cos(a), 0.5))
        p = Path(f"/nonexistent/{i}.png")
        views.append(CaptureView(f"cam{i}", p, p, None, W, H, FX, FY, W / 2, H / 2, c2w))
    return Capture(root=Path("/nonexistent"), views=views)


def test_split_views_holds_out_the_central_camera_and_trains_on_its_neighbours():
    cap = _rig(5)
    s = split_views(cap, num_train=2, num_holdout=1)
    assert s.heldout_names == ["cam2"]
    assert s.train_names == ["cam1", "cam3"]
    assert split_views(cap, num_train=2, num_holdout=1).train == s.train  # deterministic
    everything = split_views(cap, num_train=0, num_holdout=1)
    assert everything.train == [0, 1, 3, 4]
    named = split_views(cap, train_views=["cam0", "cam4"], holdout_views=["cam1"])
    assert named.train == [0, 4] and named.heldout == [1]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_holdout": 5}, "holdout = 5 but the capture has only 5 views"),
        ({"holdout_views": ["cam9"]}, "held-out view 'cam9' is not in the capture"),
        ({"train_views": ["cam1", "cam2"], "holdout_views": ["cam2"]}, "both training and held-out"),
        ({"train_views": ["cam1", "cam1"]}, "repeat"),
    ],
)
def test_split_views_rejects_bad_choices(kwargs, match):
    with pytest.raises(FusionError, match=match):
        split_views(_rig(5), **kwargs)


def test_held_out_view_is_the_one_its_training_cameras_cover_best():
    # Four cameras side by side along x looking at a wall 1 m away; camera 0 has no depth at all.
    w, h, f = 64, 16, 60.0
    views, cviews = [], []
    for i, x in enumerate((-0.1, 0.1, 0.2, 0.3)):
        c2w = np.eye(4)
        c2w[0, 3] = x
        depth = np.full((h, w), 0.0 if i == 0 else 1.0, np.float32)
        views.append(ViewData(f"cam{i}", np.zeros((h, w, 3), np.uint8), depth, None, f, f, w / 2, h / 2, c2w))
        p = Path(f"/nonexistent/{i}.png")
        cviews.append(CaptureView(f"cam{i}", p, p, None, w, h, f, f, w / 2, h / 2, c2w))
    cap = Capture(root=Path("/nonexistent"), views=cviews)
    unseen = unseen_fractions(views, num_train=0)
    # cam2's image is covered by cam1 and cam3 on either side; the others see past their neighbours.
    assert unseen[2] == 0.0 and min(unseen[0], unseen[1], unseen[3]) > 0.05, unseen
    assert split_views(cap, num_train=0, num_holdout=1, views=views).heldout_names == ["cam2"]
    # Without the views: the camera nearest the centroid of the centres (x = 0.125: cam1).
    assert split_views(cap, num_train=0, num_holdout=1).heldout_names == ["cam1"]
