"""Tests for the procedural handover capture generator (`recon.synth`) and its catalogue."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import open3d as o3d
import pytest

from recon.capture import CaptureError, load_capture
from recon.catalogue import get_object, object_names
from recon.synth import SynthConfig, build_scene, contact_sheet, generate_capture, synthesize_views

# 320x240, one colour ray per pixel: the geometry is what most tests look at.
FAST = SynthConfig(resolution_scale=0.5, supersample=1, seed=3)


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory):
    return generate_capture(FAST, tmp_path_factory.mktemp("synth") / "capture")


def _raycaster(mesh: o3d.geometry.TriangleMesh) -> o3d.t.geometry.RaycastingScene:
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(mesh))
    return scene


def _pixel_rays(view) -> np.ndarray:
    """[H*W, 6] float32 world rays through the pixel centres (u + 0.5, v + 0.5)."""
    v, u = np.mgrid[0 : view.height, 0 : view.width]
    d_cam = np.stack([(u + 0.5 - view.cx) / view.fx, (v + 0.5 - view.cy) / view.fy, np.ones(u.shape)], -1)
    d = d_cam.reshape(-1, 3) @ view.c2w[:3, :3].T
    o = np.broadcast_to(view.c2w[:3, 3], d.shape)
    return np.concatenate([o, d], 1).astype(np.float32)


def _backproject(view, depth: np.ndarray, sel: np.ndarray) -> np.ndarray:
    """World points of the selected pixels: x = ((u + 0.5) - cx) / fx * z, ..., then c2w."""
    v, u = np.nonzero(sel)
    z = depth[v, u].astype(np.float64)
    cam = np.stack([(u + 0.5 - view.cx) / view.fx * z, (v + 0.5 - view.cy) / view.fy * z, z], 1)
    return cam @ view.c2w[:3, :3].T + view.c2w[:3, 3]


def _files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for sub in ("rgb", "depth", "masks")
        for p in sorted((root / sub).glob("*.png"))
    }


# --------------------------------------------------------------------------------------------------
# Catalogue
# --------------------------------------------------------------------------------------------------


def test_catalogue_has_ycb_like_objects_that_render():
    names = object_names()
    assert len(names) >= 12
    for name in names:
        obj = get_object(name)
        assert np.all(obj.size >= 0.02) and np.all(obj.size <= 0.35), (name, obj.size)
        lo, hi = obj.trimesh.bounds()
        np.testing.assert_allclose((lo + hi) / 2, 0.0, atol=1e-9, err_msg=name)
        assert obj.default_pose in ("wrap", "under", "pinch")
        assert obj.description
        mesh = obj.mesh()
        assert len(mesh.triangles) > 50 and mesh.has_vertex_colors()
        # Ray-cast the object alone (parallel rays along +y), texture the hits: visible and textured.
        scene = _raycaster(mesh)
        n = 64
        g = ((np.arange(n) + 0.5) / n - 0.5) * 1.2 * obj.size.max()
        x, z = np.meshgrid(g, g)
        rays = np.stack(
            [x, np.full_like(x, -0.5), z, np.zeros_like(x), np.ones_like(x), np.zeros_like(x)], -1
        )
        hit = scene.cast_rays(o3d.core.Tensor(rays.reshape(-1, 6).astype(np.float32)))
        t = hit["t_hit"].numpy()
        ok = np.isfinite(t)
        assert ok.sum() > 0.1 * n * n, name
        pts = rays.reshape(-1, 6)[ok, :3] + t[ok, None] * rays.reshape(-1, 6)[ok, 3:]
        albedo = obj.albedo(pts, hit["primitive_normals"].numpy()[ok])
        assert albedo.shape == (ok.sum(), 3) and np.isfinite(albedo).all()
        assert albedo.min() >= 0.0 and albedo.max() <= 1.0
        assert albedo.std(axis=0).max() > 0.01, f"{name} looks untextured"


def test_catalogue_reference_sizes():
    np.testing.assert_allclose(get_object("master_chef_can").size, [0.102, 0.102, 0.14], atol=2e-3)
    np.testing.assert_allclose(get_object("cracker_box").size, [0.16, 0.06, 0.21], atol=1e-9)
    with pytest.raises(ValueError, match="mustard_bottle"):
        get_object("no_such_object")


# --------------------------------------------------------------------------------------------------
# The capture
# --------------------------------------------------------------------------------------------------


def test_capture_loads_and_validates(capture):
    loaded = load_capture(capture.root)
    assert loaded.num_views == FAST.num_views == 8
    gt = loaded.ground_truth
    for key in ("object_mesh", "hand_mesh", "depth"):
        assert (loaded.root / gt[key]).is_file(), key
    assert gt["object_name"] == "mustard_bottle" and gt["hand_pose"] == "wrap"
    assert np.asarray(gt["hand_keypoints"]).shape == (21, 3)
    assert loaded.metadata["config"]["seed"] == FAST.seed
    with np.load(loaded.root / gt["depth"], allow_pickle=False) as npz:
        assert sorted(npz.files) == sorted(loaded.names)
    for view in loaded.views:
        assert (view.width, view.height) == (320, 240)


def test_cameras_face_the_handover(capture):
    gt = capture.ground_truth
    center = np.asarray(gt["object_pose"])[:3, 3]
    assert 0.3 <= center[2] - gt["table_height"] <= 0.5
    person = np.asarray(capture.metadata["config"]["person_azimuth_deg"])
    to_person = np.array([np.cos(np.radians(person)), np.sin(np.radians(person)), 0.0])
    for view in capture.views:
        eye = view.c2w[:3, 3]
        assert 0.8 - 1e-9 <= np.linalg.norm(eye - center) <= 1.2 + 1e-9
        assert np.dot(eye - center, to_person) < 0, "cameras sit on the side opposite the person"
        assert eye[2] > center[2], "cameras look down on the handover"
        # The object centre projects near the image centre (look-at jitter only).
        p = view.c2w[:3, :3].T @ (center - eye)
        u, v = view.fx * p[0] / p[2] + view.cx, view.fy * p[1] / p[2] + view.cy
        assert abs(u - view.width / 2) < 0.15 * view.width and abs(v - view.height / 2) < 0.15 * view.height


def test_masks_show_hand_and_object_and_the_hand_occludes(capture):
    object_scene = _raycaster(o3d.io.read_triangle_mesh(str(capture.ground_truth_path("object_mesh"))))
    both = 0
    occluding = 0
    for i in range(capture.num_views):
        view = capture.read_view(i)
        counts = np.bincount(view.mask.ravel(), minlength=3)
        both += counts[1] > 50 and counts[2] > 50
        # Pixels where the object alone would be seen but the mask says hand: the hand is in front.
        t = (
            object_scene.cast_rays(o3d.core.Tensor(_pixel_rays(view)))["t_hit"]
            .numpy()
            .reshape(view.mask.shape)
        )
        occluding += int((np.isfinite(t) & (view.mask == 2)).sum() > 20)
    assert both >= 0.75 * capture.num_views
    assert occluding >= 1
    assert capture.ground_truth["hand_object_min_distance"] < 0.003


def test_hand_touches_object_without_penetrating(capture):
    hand = o3d.io.read_triangle_mesh(str(capture.ground_truth_path("hand_mesh")))
    obj_scene = _raycaster(o3d.io.read_triangle_mesh(str(capture.ground_truth_path("object_mesh"))))
    q = o3d.core.Tensor(np.asarray(hand.vertices, np.float32))
    dist = obj_scene.compute_distance(q).numpy()
    inside = obj_scene.compute_occupancy(q, nsamples=3).numpy() > 0.5
    assert dist.min() < 0.003
    assert not inside.any()


def test_gt_depth_is_metric_on_the_object_surface(capture):
    object_scene = _raycaster(o3d.io.read_triangle_mesh(str(capture.ground_truth_path("object_mesh"))))
    with np.load(capture.ground_truth_path("depth"), allow_pickle=False) as npz:
        gt_depth = {k: npz[k] for k in npz.files}
    checked = 0
    for i in range(capture.num_views):
        view = capture.read_view(i)
        sel = (view.mask == 1) & (gt_depth[view.name] > 0)
        if not sel.any():
            continue
        pts = _backproject(view, gt_depth[view.name], sel)
        d = object_scene.compute_distance(o3d.core.Tensor(pts.astype(np.float32))).numpy()
        assert d.max() < 0.002, (view.name, d.max())
        checked += len(pts)
        # The sensor depth of the same pixels is metric too (noise of a few mm at ~1 m).
        noisy = view.depth[sel]
        ok = noisy > 0
        assert np.median(np.abs(noisy[ok] - gt_depth[view.name][sel][ok])) < 0.01
    assert checked > 1000


def test_sensor_depth_noise_grows_with_distance_and_is_quantised(capture):
    with np.load(capture.ground_truth_path("depth"), allow_pickle=False) as npz:
        gt_depth = {k: npz[k] for k in npz.files}
    errors, ranges, missing, total = [], [], 0, 0
    for i in range(capture.num_views):
        view = capture.read_view(i)
        gt = gt_depth[view.name].astype(np.float64)
        mm = view.depth.astype(np.float64) * 1000.0
        np.testing.assert_allclose(mm, np.rint(mm), atol=1e-3)  # whole millimetres
        ok = (view.depth > 0) & (gt > 0)
        errors.append(view.depth[ok] - gt[ok])
        ranges.append(gt[ok])
        missing += int(((view.depth == 0) & (gt > 0) & (gt < 3.5)).sum())
        total += int(((gt > 0) & (gt < 3.5)).sum())
    err, z = np.concatenate(errors), np.concatenate(ranges)
    near, far = (z > 0.6) & (z < 1.0), (z > 1.6) & (z < 2.2)
    assert near.sum() > 1000 and far.sum() > 1000
    std_near, std_far = err[near].std(), err[far].std()
    assert std_far > 1.5 * std_near
    sigma = lambda zz: FAST.depth_sigma0 + FAST.depth_sigma_quadratic * zz**2  # noqa: E731
    assert 0.6 < std_near / np.sqrt(np.mean(sigma(z[near]) ** 2 + 1 / 12e6)) < 1.5
    assert 0.6 < std_far / np.sqrt(np.mean(sigma(z[far]) ** 2 + 1 / 12e6)) < 1.5
    assert 0.002 < missing / total < 0.3  # holes at edges, grazing angles and random dropouts


def test_noise_off_gives_exact_depth():
    cfg = dataclasses.replace(FAST, noise=False, resolution_scale=0.25, num_views=2)
    views, gt_depth, _ = synthesize_views(cfg)
    for v in views:
        np.testing.assert_array_equal(v.depth, gt_depth[v.name])


def test_resolution_scale_gives_scaled_intrinsics(capture):
    full = SynthConfig()
    assert full.image_size() == (640, 480)
    np.testing.assert_allclose(full.intrinsics(), (615.0, 615.0, 320.0, 240.0))
    half = SynthConfig(resolution_scale=0.5)
    assert half.image_size() == (320, 240)
    np.testing.assert_allclose(half.intrinsics(), (307.5, 307.5, 160.0, 120.0))
    view = capture.read_view(0)
    assert view.rgb.shape == (240, 320, 3)
    np.testing.assert_allclose((view.fx, view.fy, view.cx, view.cy), (307.5, 307.5, 160.0, 120.0))


def test_deterministic_given_seed(tmp_path):
    cfg = SynthConfig(resolution_scale=0.25, num_views=2, seed=11)
    a = _files(generate_capture(cfg, tmp_path / "a").root)
    b = _files(generate_capture(cfg, tmp_path / "b").root)
    c = _files(generate_capture(dataclasses.replace(cfg, seed=12), tmp_path / "c").root)
    assert a.keys() == b.keys() and len(a) == 6
    for k in a:
        assert a[k] == b[k], k
    assert any(a[k] != c[k] for k in a if k.startswith("rgb/"))
    with np.load(tmp_path / "a/gt/depth.npz") as da, np.load(tmp_path / "b/gt/depth.npz") as db:
        for k in da.files:
            np.testing.assert_array_equal(da[k], db[k])


def test_other_poses_and_objects_hold_the_object():
    for obj, pose in (("bowl", "under"), ("foam_brick", "pinch"), ("power_drill", "wrap")):
        cfg = SynthConfig(object=obj, hand_pose=pose, resolution_scale=0.125, num_views=3, supersample=1)
        views, _, scene = synthesize_views(cfg)
        assert scene.hand_pose == pose
        assert sum((v.mask == 1).any() and (v.mask == 2).any() for v in views) >= 2, obj


@pytest.mark.parametrize(("obj", "scale"), [("mug", 0.8), ("gelatin_box", 1.25), ("apple", 1.25)])
def test_object_scale_scales_the_object_and_the_hand_closes_around_it(obj, scale):
    base = build_scene(SynthConfig(object=obj, seed=2))
    scaled = build_scene(SynthConfig(object=obj, seed=2, object_scale=scale))
    assert scaled.object_scale == scale and base.object_scale == 1.0
    ext = [np.ptp(s.surface("object").mesh.vertices @ s.object_pose[:3, :3], axis=0) for s in (base, scaled)]
    np.testing.assert_allclose(ext[1], scale * ext[0], rtol=1e-9)
    np.testing.assert_allclose(ext[0], get_object(obj).size, rtol=1e-9)
    np.testing.assert_allclose(scaled.object_pose, base.object_pose)  # same hold: only the size changes
    # the texture scales with the object: the same object-frame point has the same colour (but for
    # vertices on a decal's edge, where rounding picks either side)
    v0, v1 = base.surface("object").mesh.vertices, scaled.surface("object").mesh.vertices
    nrm = base.surface("object").mesh.vertex_normals()
    prim = np.zeros(len(v0), np.int64)
    c0, c1 = base.surface("object").albedo(v0, nrm, prim), scaled.surface("object").albedo(v1, nrm, prim)
    assert np.mean(np.abs(c1 - c0).max(axis=1) < 1e-6) > 0.95
    # the hand touches the scaled object and no hand vertex is inside it
    _hand_touches_without_penetrating(scaled)


def _hand_touches_without_penetrating(scene) -> None:
    om, hm = scene.surface("object").mesh, scene.surface("hand").mesh
    rc = o3d.t.geometry.RaycastingScene()
    rc.add_triangles(
        o3d.core.Tensor(om.vertices.astype(np.float32)), o3d.core.Tensor(om.triangles.astype(np.uint32))
    )
    q = o3d.core.Tensor(hm.vertices.astype(np.float32))
    assert rc.compute_distance(q).numpy().min() < 0.003
    assert not (rc.compute_occupancy(q, nsamples=3).numpy() > 0.5).any()


def test_procedural_objects_are_seeded_in_range_and_held():
    from recon.catalogue import PROCEDURAL_BOX, PROCEDURAL_CAN, is_known_object, procedural_name

    names = [procedural_name(k, i) for k in ("box", "can") for i in range(12)]
    assert names[0] == "procedural_box_000" and all(is_known_object(n) for n in names)
    assert not any(n in object_names() for n in names)  # training material, not catalogue objects
    sizes = {n: get_object(n).size for n in names}
    assert len({tuple(np.round(v, 4)) for v in sizes.values()}) == len(names)  # each index its own object
    for n, ext in sizes.items():
        if "box" in n:
            (wl, wh), (dl, dh), (hl, hh) = PROCEDURAL_BOX
            assert dl - 1e-9 <= ext[1] <= dh + 1e-9 and ext[0] >= ext[1] and hl - 1e-9 <= ext[2] <= hh + 1e-9
            assert ext[0] <= wh + 1e-9 and get_object(n).gripper == "robotiq_2f_85"
        else:
            (rl, rh), (hl, hh) = PROCEDURAL_CAN
            r = ext[0] / 2
            assert rl - 1e-9 <= r <= rh + 1e-9 and hl - 1e-9 <= ext[2] <= hh + 1e-9
            assert get_object(n).gripper == ("robotiq_2f_140" if 2 * r > 0.075 else "robotiq_2f_85")
    get_object.cache_clear()  # built again from the name alone: the same object
    np.testing.assert_allclose(get_object(names[3]).size, sizes[names[3]])
    for n in (names[1], names[14]):  # a box and a can in a hand
        scene = build_scene(SynthConfig(object=n, seed=1))
        ext = np.ptp(scene.surface("object").mesh.vertices @ scene.object_pose[:3, :3], axis=0)
        np.testing.assert_allclose(ext, sizes[n], rtol=1e-9)
        _hand_touches_without_penetrating(scene)
    for bad in ("procedural_ball_000", "procedural_box_7", "procedural_box_x01"):
        assert not is_known_object(bad)
        with pytest.raises(ValueError, match="procedural"):
            SynthConfig(object=bad).validate()
    with pytest.raises(ValueError, match="kind"):
        procedural_name("ball", 0)


def test_refuses_to_overwrite(capture):
    with pytest.raises(CaptureError, match="overwrite"):
        generate_capture(FAST, capture.root)


def test_bad_config_raises():
    with pytest.raises(ValueError, match="object"):
        SynthConfig(object="anvil").validate()
    with pytest.raises(ValueError, match="hand_pose"):
        SynthConfig(hand_pose="fist").validate()  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_views"):
        SynthConfig(num_views=0).validate()
    for bad in (0.0, 3.0, float("nan")):
        with pytest.raises(ValueError, match="object_scale"):
            SynthConfig(object_scale=bad).validate()


def test_contact_sheet(capture, tmp_path):
    sheet = contact_sheet(capture, tile_width=160)
    assert sheet.dtype == np.uint8 and sheet.ndim == 3 and sheet.shape[2] == 3
    # 8 views in 2 columns of (rgb | depth | overlay) triplets.
    assert sheet.shape[1] >= 2 * 3 * 160 and sheet.shape[0] >= 4 * 120
    path = tmp_path / "sheet.png"
    iio.imwrite(path, sheet)
    assert iio.imread(path).shape == sheet.shape
