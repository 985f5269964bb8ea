"""Tests for the grasp stage (trajgen/grasps.py) with known answers, and grasps.json (trajgen/grasp_io.py).

Scenes are small synthetic point clouds: a cylinder held around its lower half, a ball inside an
enveloping hand. The safety re-checks here are written independently of trajgen/grasp_safety.py.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from plyfile import PlyData, PlyElement

from splatsim.ply import write_ply
from splatsim.scene import GaussianScene
from trajgen.grasp_io import (
    FILTERS,
    GraspFileError,
    load_points,
    read_grasps,
    scene_fingerprint,
)
from trajgen.grasps import GRASPS_PNG, GraspConfig, NoSafeGraspError, compute_grasps, run_grasps
from trajgen.gripper import GripperModel

FAST = dict(num_contacts=150, max_object_points=2500)


# --------------------------------------------------------------------------------------------------
# Synthetic point clouds


def cylinder_side(
    radius: float, z0: float, z1: float, spacing: float, rng: np.random.Generator
) -> np.ndarray:
    n = max(8, int(2 * math.pi * radius * (z1 - z0) / spacing**2))
    theta = rng.random(n) * 2 * math.pi
    return np.stack([radius * np.cos(theta), radius * np.sin(theta), z0 + (z1 - z0) * rng.random(n)], axis=1)


def disc(radius: float, z: float, spacing: float, rng: np.random.Generator) -> np.ndarray:
    n = max(8, int(math.pi * radius**2 / spacing**2))
    r = radius * np.sqrt(rng.random(n))
    theta = rng.random(n) * 2 * math.pi
    return np.stack([r * np.cos(theta), r * np.sin(theta), np.full(n, z)], axis=1)


def sphere(radius: float, spacing: float, rng: np.random.Generator) -> np.ndarray:
    n = max(8, int(4 * math.pi * radius**2 / spacing**2))
    v = rng.normal(size=(n, 3))
    return radius * v / np.linalg.norm(v, axis=1, keepdims=True)


CYL_R, CYL_Z0, CYL_Z1 = 0.03, 0.30, 0.46  # a 16 cm tall cylinder, 6 cm across; its middle at z = 0.38
CYL_MID = (CYL_Z0 + CYL_Z1) / 2


def held_cylinder(spacing: float = 0.004, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A closed cylinder (axis z) and a hand wrapped around its lower half with a forearm toward -y."""
    rng = np.random.default_rng(seed)
    obj = np.concatenate(
        [
            cylinder_side(CYL_R, CYL_Z0, CYL_Z1, spacing, rng),
            disc(CYL_R, CYL_Z0, spacing, rng),
            disc(CYL_R, CYL_Z1, spacing, rng),
        ]
    )
    ring = cylinder_side(CYL_R + 0.012, CYL_Z0 - 0.01, CYL_MID, spacing, rng)  # fingers and palm
    # Forearm: a 3 cm tube from the hand toward the person (-y), sloping down.
    t = rng.random(2000)
    theta = rng.random(2000) * 2 * math.pi
    axis = np.array([0.0, -math.cos(0.3), -math.sin(0.3)])
    start = np.array([0.0, -(CYL_R + 0.04), CYL_Z0 + 0.03])
    u = np.array([1.0, 0.0, 0.0])
    v = np.cross(axis, u)
    arm = start + 0.25 * t[:, None] * axis + 0.03 * (np.cos(theta)[:, None] * u + np.sin(theta)[:, None] * v)
    return obj, np.concatenate([ring, arm])


def eq1_min_distance(pose: np.ndarray, hand: np.ndarray) -> float:
    """Eq. 1, independently: smallest |G^-1 p_h| over every hand point."""
    inv = np.linalg.inv(pose)
    local = hand @ inv[:3, :3].T + inv[:3, 3]
    return float(np.linalg.norm(local, axis=1).min())


def swept_hits(pose: np.ndarray, opening: float, hand: np.ndarray, g: GripperModel, s: float) -> int:
    """Hand points inside the gripper swept back by s, built here from the gripper's fields."""
    inv = np.linalg.inv(pose)
    p = hand @ inv[:3, :3].T + inv[:3, 3]
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    palm = g.tip_depth - g.finger_length
    body = (np.abs(x) <= g.body_width / 2) & (np.abs(y) <= g.body_thickness / 2) & (z >= -s) & (z <= palm)
    jaw_x = opening / 2 + g.finger_thickness  # both fingers and the closing region between them
    jaws = (np.abs(x) <= jaw_x) & (np.abs(y) <= g.finger_breadth / 2) & (z >= palm - s) & (z <= g.tip_depth)
    return int((body | jaws).sum())


def write_points_ply(path: Path, points: np.ndarray) -> None:
    vertex = np.empty(len(points), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4")])
    vertex["x"], vertex["y"], vertex["z"] = points.T
    PlyData([PlyElement.describe(vertex, "vertex")]).write(str(path))


def write_splat_ply(path: Path, points: np.ndarray, label: int) -> None:
    """A 3DGS PLY (the reconstruction's hand.ply / object.ply layout) whose means are the points."""
    n = len(points)
    scene = GaussianScene(
        means=torch.as_tensor(points, dtype=torch.float32),
        quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1),
        log_scales=torch.full((n, 3), math.log(0.002)),
        logit_opacities=torch.full((n,), 2.0),
        sh=torch.zeros(n, 1, 3),
        labels=torch.full((n,), label, dtype=torch.int64),
    )
    write_ply(scene, path)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The stage run end to end on a scene folder (3DGS PLYs) of the held cylinder."""
    root = tmp_path_factory.mktemp("grasps")
    obj, hand = held_cylinder()
    scene = root / "scene"
    scene.mkdir()
    write_splat_ply(scene / "object.ply", obj, label=1)
    write_splat_ply(scene / "hand.ply", hand, label=2)
    (scene / "scene.json").write_text(json.dumps({"config_hash": "abc123", "units": "metres"}))
    out = root / "run" / "grasps.json"
    result = run_grasps(GraspConfig(**FAST), scene, out)
    return scene, out, result, obj, hand


@pytest.fixture(scope="module")
def cylinder_result(written):
    """(object points, hand points as the stage read them, config, result)."""
    scene, out, result, obj, hand = written
    return load_points(scene / "object.ply"), load_points(scene / "hand.ply"), GraspConfig(**FAST), result


# --------------------------------------------------------------------------------------------------
# Known answers


def test_held_cylinder_keeps_only_upper_half_grasps_approaching_away_from_the_hand(cylinder_result):
    obj, hand, cfg, result = cylinder_result
    assert result.kept.size >= 3, result.summary
    centers = result.candidates.centers[result.kept]
    assert (centers[:, 2] > CYL_MID + 0.01).all(), centers[:, 2].min()
    # The gripper comes from the side away from the hand: its base is farther from the hand than the
    # grasp centre is, and it does not come from below the hand.
    hand_centre = hand.mean(axis=0)
    origins = result.kept_poses()[:, :3, 3]
    assert (
        np.linalg.norm(origins - hand_centre, axis=1) > np.linalg.norm(centers - hand_centre, axis=1)
    ).all()
    assert (result.kept_poses()[:, 2, 2] < 0.5).all()  # approach never points up from under the hand
    # Every rejected-for-safety candidate exists too (the filters had work to do).
    assert sum(result.summary["rejected"][f] for f in ("eq1_distance", "non_intrusion", "swept_volume")) > 0


def test_every_kept_grasp_satisfies_eq1_and_the_swept_volume_rechecked_on_the_full_hand(cylinder_result):
    obj, hand, cfg, result = cylinder_result
    for i in result.kept:
        pose = result.candidates.poses[i]
        assert eq1_min_distance(pose, hand) >= cfg.d_s
        assert swept_hits(pose, result.candidates.openings[i], hand, cfg.gripper, cfg.pregrasp_distance) == 0
        beyond = ((hand - result.candidates.centers[i]) @ pose[:3, 2] > 0).mean()
        assert beyond >= cfg.non_intrusion_fraction


def test_rejections_name_the_first_failing_filter(cylinder_result):
    obj, hand, cfg, result = cylinder_result
    st = result.status
    for i in np.nonzero(st == "eq1_distance")[0][:50]:
        assert eq1_min_distance(result.candidates.poses[i], hand) < cfg.d_s
    for i in np.nonzero(st == "swept_volume")[0][:50]:
        c = result.candidates
        assert swept_hits(c.poses[i], c.openings[i], hand, cfg.gripper, cfg.pregrasp_distance) > 0
    counts = result.summary["rejected"]
    assert sum(counts.values()) + result.summary["kept"] == result.summary["candidates"]
    assert set(counts) == set(FILTERS)


def test_kept_grasps_are_diverse_and_ranked(cylinder_result):
    obj, hand, cfg, result = cylinder_result
    kept = result.kept
    assert np.all(np.diff(result.rank_value[kept]) <= 1e-12)  # best first
    assert np.array_equal(result.targets, kept[: cfg.top_k])
    c = result.candidates
    for a in range(len(kept)):
        for b in range(a):
            i, j = kept[a], kept[b]
            near = np.linalg.norm(c.centers[i] - c.centers[j]) < cfg.nms_distance
            Ri, Rj = c.poses[i, :3, :3], c.poses[j, :3, :3]
            M = Ri.T @ Rj
            flipped = M[2, 2] - M[0, 0] - M[1, 1]  # trace of M diag(-1, -1, 1): the half-turn twin
            ang = np.arccos(np.clip((max(np.trace(M), flipped) - 1) / 2, -1, 1))
            assert not (near and ang < math.radians(cfg.nms_angle_deg) - 1e-6)


def test_enveloping_hand_raises_a_clear_error_and_writes_nothing(tmp_path):
    rng = np.random.default_rng(1)
    obj = sphere(0.03, 0.004, rng)
    hand = sphere(0.05, 0.004, rng)  # a closed shell around the ball: no way in
    scene = tmp_path / "scene"
    scene.mkdir()
    write_points_ply(scene / "object.ply", obj)
    write_points_ply(scene / "hand.ply", hand)
    out = tmp_path / "grasps.json"
    with pytest.raises(NoSafeGraspError) as info:
        run_grasps(GraspConfig(**FAST), scene, out)
    msg = str(info.value)
    assert "so part of it is free" in msg and "Increase d_s? No" in msg
    assert "eq1_distance" in msg  # the counts per filter are in the message
    assert info.value.summary["kept"] == 0
    assert not out.exists() and not (tmp_path / GRASPS_PNG).exists()


def test_object_wider_than_the_stroke_says_so():
    rng = np.random.default_rng(2)
    obj = sphere(0.06, 0.005, rng)  # 12 cm ball, 85 mm stroke
    with pytest.raises(NoSafeGraspError, match="wider than the gripper opens"):
        compute_grasps(obj, np.zeros((0, 3)), GraspConfig(**FAST))


def test_no_hand_points_keeps_grasps_with_a_warning():
    rng = np.random.default_rng(3)
    obj = sphere(0.025, 0.004, rng)
    result = compute_grasps(obj, np.zeros((0, 3)), GraspConfig(**FAST))
    assert result.kept.size > 0 and "warning" in result.summary


def test_same_seed_same_grasps_other_seed_other_grasps():
    obj, hand = held_cylinder(spacing=0.006)
    cfg = GraspConfig(num_contacts=60, max_object_points=1500)
    a, b = compute_grasps(obj, hand, cfg), compute_grasps(obj, hand, cfg)
    assert np.array_equal(a.candidates.poses, b.candidates.poses) and np.array_equal(a.status, b.status)
    c = compute_grasps(obj, hand, replace(cfg, seed=1))
    assert not np.array_equal(
        a.candidates.poses[: len(c.candidates)], c.candidates.poses[: len(a.candidates)]
    )


def test_authors_box_option_rejects_more_or_equal(cylinder_result):
    obj, hand, cfg, result = cylinder_result
    boxed = compute_grasps(obj, hand, replace(cfg, authors_box=True))
    assert boxed.summary["safe_before_nms"] <= result.summary["safe_before_nms"]
    assert boxed.summary["rejected"]["authors_box"] >= 0
    lo, hi = np.array(cfg.authors_box_min), np.array(cfg.authors_box_max)
    for i in boxed.kept:
        inv = np.linalg.inv(boxed.candidates.poses[i])
        p = hand @ inv[:3, :3].T + inv[:3, 3]
        assert not ((p >= lo) & (p <= hi)).all(axis=1).any()


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="d_s"):
        compute_grasps(np.zeros((20, 3)), np.zeros((0, 3)), GraspConfig(d_s=-1.0))
    with pytest.raises(ValueError, match="non_intrusion_fraction"):
        GraspConfig(non_intrusion_fraction=1.5).validate()
    with pytest.raises(ValueError, match="object point cloud has 3 points"):
        compute_grasps(np.zeros((3, 3)), np.zeros((0, 3)), GraspConfig())


# --------------------------------------------------------------------------------------------------
# The stage on a scene folder, grasps.json and its reader


def test_run_grasps_writes_json_and_picture(written):
    scene, out, result, obj, hand = written
    assert result.json_path == out and out.is_file()
    assert result.png_path == out.with_name(GRASPS_PNG)
    assert result.png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.parent.glob(".*.tmp*"))  # atomic writes leave no temporaries
    doc = json.loads(out.read_text())
    assert doc["fingerprint"]["scene_json"] == {"config_hash": "abc123"}
    assert len(doc["candidates"]) == result.summary["candidates"]


def test_read_grasps_round_trip_and_scene_check(written):
    scene, out, result, obj, hand = written
    gf = read_grasps(out, scene_dir=scene)
    assert np.allclose(gf.poses, result.candidates.poses)  # full precision in the file
    assert np.array_equal(gf.kept, result.kept)
    assert np.array_equal(gf.targets, result.targets)
    assert gf.statuses == list(result.status)
    assert np.allclose(gf.object_mean, np.asarray(obj, np.float32).mean(axis=0), atol=1e-6)
    for i in gf.kept:  # what is read back is still safe (Eq. 1 re-checked on the file's poses)
        assert eq1_min_distance(gf.poses[i], hand) >= 0.1


def test_grasps_from_another_scene_are_refused(written, tmp_path):
    scene, out, result, obj, hand = written
    other = tmp_path / "other"
    other.mkdir()
    write_splat_ply(other / "object.ply", obj + [0.0, 0.0, 0.01], label=1)
    write_splat_ply(other / "hand.ply", hand, label=2)
    with pytest.raises(GraspFileError, match="computed for another scene"):
        read_grasps(out, scene_dir=other)
    with pytest.raises(GraspFileError, match="another scene"):
        read_grasps(out, fingerprint=scene_fingerprint(obj, hand[:-1]))


@pytest.mark.parametrize(
    "corrupt, match",
    [
        (lambda d: d.update(format="other"), "not a grasps file"),
        (lambda d: d.update(version=99), "version"),
        (lambda d: d["candidates"][0].update(pose=[[1, 0], [0, 1]]), "4x4"),
        (lambda d: d["candidates"][0]["pose"][0].__setitem__(0, 2.0), "rigid"),
        (lambda d: d["candidates"][0].update(status="maybe"), "status"),
        (lambda d: d["summary"].update(kept=0), "summary"),
        (lambda d: d.update(targets=[10**6]), "targets"),
    ],
)
def test_reader_rejects_malformed_files(written, tmp_path, corrupt, match):
    scene, out, result, obj, hand = written
    doc = json.loads(out.read_text())
    corrupt(doc)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(GraspFileError, match=match):
        read_grasps(bad)


def test_missing_point_cloud_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="hand.ply|object.ply"):
        run_grasps(GraspConfig(), tmp_path, tmp_path / "grasps.json")


def test_load_points_reads_splat_and_plain_plys(tmp_path, written):
    scene, out, result, obj, hand = written
    assert np.allclose(load_points(scene / "object.ply"), obj.astype(np.float32))
    write_points_ply(tmp_path / "p.ply", hand[:10])
    assert load_points(tmp_path / "p.ply").shape == (10, 3)
    (tmp_path / "junk.ply").write_bytes(b"not a ply")
    with pytest.raises(ValueError, match="junk.ply"):
        load_points(tmp_path / "junk.ply")


def test_contact_graspnet_sampler_without_the_package_says_what_to_install(tmp_path, written):
    from trajgen.contact_graspnet import ContactGraspNetUnavailable, contact_graspnet_available

    if contact_graspnet_available():
        pytest.skip("cgn_pytorch is installed here")
    scene = written[0]
    with pytest.raises(ContactGraspNetUnavailable, match="cgn-pytorch"):
        run_grasps(GraspConfig(sampler="contact_graspnet"), scene, tmp_path / "g.json")
    assert not (tmp_path / "g.json").exists()


def test_catalogue_objects_name_a_builtin_gripper_and_only_the_wide_ones_leave_the_2f85():
    from recon.catalogue import get_object, object_names
    from trajgen.gripper import GRIPPERS, gripper_by_name

    wide = {n for n in object_names() if get_object(n).gripper != "robotiq_2f_85"}
    assert wide == {"master_chef_can", "wood_block"}
    for name in object_names():
        obj = get_object(name)
        assert obj.gripper in GRIPPERS
        # an object moved off the 2F-85 is at least as wide as its stroke on both horizontal axes
        if name in wide:
            assert obj.size[:2].min() >= gripper_by_name("robotiq_2f_85").max_width - 1e-6
    with pytest.raises(ValueError, match="Unknown gripper 'robotiq_3f'"):
        gripper_by_name("robotiq_3f")


def test_a_can_wider_than_the_2f85_gets_grasps_from_the_2f140_within_its_stroke():
    from trajgen.gripper import robotiq_2f_140

    rng = np.random.default_rng(5)
    side = cylinder_side(0.051, -0.07, 0.07, 0.005, rng)  # the master chef can: 102 mm across
    with pytest.raises(NoSafeGraspError, match="--gripper-model robotiq_2f_140"):
        compute_grasps(side, np.zeros((0, 3)), GraspConfig(**FAST))
    res = compute_grasps(side, np.zeros((0, 3)), GraspConfig(**FAST, gripper=robotiq_2f_140()))
    assert res.kept.size >= 5
    widths = res.candidates.widths[res.kept]
    assert np.all(widths > 0.085) and np.all(widths <= 0.140)
    assert np.allclose(widths, 0.102, atol=0.01)  # across the diameter


def test_cli_gripper_model_replaces_the_gripper(tmp_path, written):
    from ui.cli import Grasps

    scene_dir = written[0]
    out = tmp_path / "g" / "grasps.json"
    Grasps(scene=scene_dir, out=out, config=GraspConfig(**FAST), gripper_model="robotiq_2f_140").run()
    assert json.loads(out.read_text())["config"]["gripper"]["name"] == "robotiq_2f_140"
