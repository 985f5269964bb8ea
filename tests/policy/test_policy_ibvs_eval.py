"""Tests for the IBVS-MASK baseline and the closed-loop evaluation (ONNX through the splat robot)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from policy.data import make_policy_input
from policy.env import SceneGeometry
from policy.evaluate import EvalConfig, EvalObject, StartConfig, run_eval, sample_eval_starts
from policy.ibvs import IBVSConfig, IBVSMaskPolicy, calibrate_area_fraction
from policy.robot import ControlConfig, run_control_loop
from policy.robot_splat import SplatCamera, SplatRobot
from splatsim.conventions import look_at


def centroid_error(env, pose) -> float:
    _, mask = env.render(pose)
    rows, cols = np.nonzero(mask[0] == 1)
    u, v = cols.mean() + 0.5, rows.mean() + 0.5
    return float(np.hypot(u - env.intrinsics.cx, v - env.intrinsics.cy))


@pytest.mark.parametrize("mode", ["translate", "rotate"])
def test_ibvs_moves_the_centroid_toward_the_centre(tiny_env, mode) -> None:
    target = tiny_env.geometry.object_center
    eye = target + np.array([0.0, 0.0, -0.7])
    pose = look_at(
        torch.from_numpy(eye), torch.from_numpy(target + np.array([0.08, 0.05, 0.0])), up=(0.0, -1.0, 0.0)
    ).numpy()
    policy = IBVSMaskPolicy(IBVSConfig(area_fraction=0.9, mode=mode), tiny_env.intrinsics)
    err0 = centroid_error(tiny_env, pose)
    assert err0 > 3
    for _ in range(4):
        rgb, mask = tiny_env.render(pose)
        action, score = policy(make_policy_input(rgb[0], mask[0])[None].numpy())
        assert score < 0.7
        pose = tiny_env.step_pose(pose, action)
    assert centroid_error(tiny_env, pose) < 0.5 * err0


def test_ibvs_stops_on_area_and_calibration() -> None:
    from splatsim.conventions import PinholeIntrinsics

    intr = PinholeIntrinsics.from_fov(1.0, 10, 10)
    x = np.zeros((1, 5, 10, 10), np.float32)
    x[0, 4, 2:8, 2:8] = 1  # 36% object
    assert IBVSMaskPolicy(IBVSConfig(area_fraction=0.3), intr)(x)[1] == 1.0
    assert IBVSMaskPolicy(IBVSConfig(area_fraction=0.5), intr)(x)[1] < 0.7
    assert IBVSMaskPolicy(IBVSConfig(), intr)(np.zeros((1, 5, 10, 10), np.float32)) == (
        pytest.approx(np.zeros(6)),
        0.0,
    )
    masks = np.zeros((3, 10, 10), np.uint8)
    masks[0, :1] = 1
    masks[1, :2] = 1
    masks[2, :3] = 1
    assert calibrate_area_fraction(masks) == pytest.approx(0.2)


def test_held_out_starts_are_seeded_and_valid(tiny_env) -> None:
    geo = tiny_env.geometry
    grasp = look_at(
        torch.from_numpy(geo.object_center - np.array([0, 0, 0.13])),
        torch.from_numpy(geo.object_center),
        up=(0.0, -1.0, 0.0),
    ).numpy()
    cfg = StartConfig(up=(0.0, -1.0, 0.0))
    a = sample_eval_starts(geo, grasp[None], 3, seed=1, name="toy", cfg=cfg)
    b = sample_eval_starts(geo, grasp[None], 3, seed=1, name="toy", cfg=cfg)
    c = sample_eval_starts(geo, grasp[None], 3, seed=2, name="toy", cfg=cfg)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.allclose(a[0], c[0])
    for s in a:
        assert np.linalg.norm(s[:3, 3] - grasp[:3, 3]) == pytest.approx(0.7)
        assert geo.min_clearance(torch.from_numpy(s[None, :3, 3]))[0] > 0.1


def test_held_out_starts_keep_clear_of_the_background(tiny_env) -> None:
    """A solid block (the person's body, say) filling x > 0.2 m beside the object: every start keeps
    start_d_background from it; without the filter some starts lie inside it."""
    geo0 = tiny_env.geometry
    c = geo0.object_center
    g = np.arange(-1.0, 1.0001, 0.05)
    xx, yy, zz = np.meshgrid(np.arange(0.2, 1.0001, 0.05), g, g, indexing="ij")
    wall = c + np.stack([xx.ravel(), yy.ravel(), zz.ravel()], 1)
    geo = SceneGeometry(geo0.hand_points, geo0.object_points, wall)
    grasp = look_at(
        torch.from_numpy(c - np.array([0, 0, 0.13])), torch.from_numpy(c), up=(0.0, -1.0, 0.0)
    ).numpy()
    cfg = StartConfig(up=(0.0, -1.0, 0.0), start_d_background=0.1)
    starts = sample_eval_starts(geo, grasp[None], 16, seed=3, name="toy", cfg=cfg)
    assert min(float(geo.background_distance(s[None, :3, 3])[0]) for s in starts) > 0.1
    off = sample_eval_starts(
        geo, grasp[None], 16, seed=3, name="toy", cfg=StartConfig(up=(0.0, -1.0, 0.0), start_d_background=0)
    )
    assert min(float(geo.background_distance(s[None, :3, 3])[0]) for s in off) <= 0.1


def test_held_out_starts_see_the_object(tiny_env) -> None:
    """A thin wall (the person's back, say) in the plane x = c + 0.25: with line_of_sight (the default)
    no start lies behind it, and each start's segment to the object keeps start_d_background from it;
    without the filter some starts do lie behind it, facing the wall."""
    geo0 = tiny_env.geometry
    c = geo0.object_center
    g = np.arange(-1.0, 1.0001, 0.02)
    yy, zz = np.meshgrid(g, g, indexing="ij")
    wall = c + np.stack([np.full(yy.size, 0.25), yy.ravel(), zz.ravel()], 1)
    geo = SceneGeometry(geo0.hand_points, geo0.object_points, wall)
    grasp = look_at(
        torch.from_numpy(c - np.array([0, 0, 0.13])), torch.from_numpy(c), up=(0.0, -1.0, 0.0)
    ).numpy()
    cfg = StartConfig(up=(0.0, -1.0, 0.0), start_d_background=0.05, alpha_min_deg=0.0)
    starts = sample_eval_starts(geo, grasp[None], 24, seed=3, name="toy", cfg=cfg)
    for s in starts:
        assert s[0, 3] < c[0] + 0.25
        seg = s[:3, 3] + np.linspace(0.0, 1.0, 300)[:, None] * (c - s[:3, 3])
        assert geo.background_distance(seg).min() > 0.05
    off = sample_eval_starts(
        geo, grasp[None], 24, seed=3, name="toy", cfg=StartConfig(**{**vars(cfg), "line_of_sight": False})
    )
    assert any(s[0, 3] > c[0] + 0.25 for s in off)


def test_run_eval_end_to_end(tmp_path, tiny_scene, tiny_env, trained_policy, exported_policy) -> None:
    geo = tiny_env.geometry
    grasp = look_at(
        torch.from_numpy(geo.object_center - np.array([0, 0, 0.13])),
        torch.from_numpy(geo.object_center),
        up=(0.0, -1.0, 0.0),
    ).numpy()
    objects = [EvalObject("toy_a", tiny_scene, grasp[None]), EvalObject("toy_new", tiny_scene, grasp[None])]
    cfg = EvalConfig(
        policy=trained_policy,
        out=tmp_path,
        onnx=exported_policy / "policy.onnx",
        starts_per_object=2,
        max_steps=3,
        starts=StartConfig(up=(0.0, -1.0, 0.0), from_policy=False),
        videos_per_object=1,
        progress=False,
    )
    res = run_eval(cfg, objects=objects)
    report = json.loads((tmp_path / "eval_report.json").read_text())
    assert len(res.episodes) == 2 * 2 * 2  # objects x starts x methods
    assert {e["method"] for e in res.episodes} == {"policy", "ibvs_mask"}
    seen = {o["name"]: o["seen"] for o in report["objects"]}
    assert seen == {"toy_a": True, "toy_new": False}  # from the policy's training scenes
    for e in res.episodes:
        assert e["outcome"] in ("success", "human_contact", "timeout", "other_failure")
        assert e["steps"] <= 3
    assert "| Seen | toy_a |" in res.table_md and "| Unseen | toy_new |" in res.table_md
    assert (tmp_path / "episodes.jsonl").read_text().count("\n") == 8
    assert (tmp_path / "table.md").is_file()
    assert res.videos and all(v.stat().st_size > 0 for v in res.videos)
    assert set(report["summary"]) == {"policy", "ibvs_mask"}


def test_splat_loop_onnx_matches_torch(tiny_env, trained_policy, exported_policy) -> None:
    """End-to-end export parity: the same rollout through the robot loop with either runtime."""
    from policy_test_helpers import approach_poses

    from policy.checkpoint import load_policy
    from policy.runtime import OnnxPolicy, TorchPolicy

    net, _ = load_policy(trained_policy)
    start = approach_poses(
        tiny_env.geometry.object_center + np.array([0.1, 0.0, -0.7]), tiny_env.geometry.object_center, 2
    )[0].numpy()
    runs = []
    for fn in (TorchPolicy(net), OnnxPolicy(exported_policy / "policy.onnx")):
        robot = SplatRobot(start)
        res = run_control_loop(
            fn, robot, SplatCamera(tiny_env, robot), ControlConfig(max_steps=4), clock=robot.clock
        )
        runs.append(res)
    assert runs[0].steps == runs[1].steps
    for p, q in zip(runs[0].poses, runs[1].poses):
        np.testing.assert_allclose(p, q, atol=1e-4)


def test_run_eval_from_run_folders(tmp_path, tiny_scene, trained_policy) -> None:
    """`splatsim eval`'s path: scene.ply + grasps.json on disk, the torch runtime, no baseline."""
    from splatsim.ply import write_ply
    from trajgen.grasps import GraspConfig, run_grasps

    scene_dir = tmp_path / "run_toy" / "scene"
    scene_dir.mkdir(parents=True)
    write_ply(tiny_scene, scene_dir / "scene.ply")
    write_ply(tiny_scene.select_label(1), scene_dir / "object.ply")
    write_ply(tiny_scene.select_label(2), scene_dir / "hand.ply")
    run_grasps(GraspConfig(plot=False, top_k=2), scene_dir, scene_dir.parent / "grasps.json")
    cfg = EvalConfig(
        policy=trained_policy,
        scenes=(tmp_path / "run_toy",),
        out=tmp_path / "eval",
        runtime="torch",
        starts_per_object=1,
        max_steps=2,
        ibvs=False,
        videos_per_object=0,
        starts=StartConfig(from_policy=False, up=(0.0, -1.0, 0.0)),
        progress=False,
    )
    res = run_eval(cfg)
    assert [o["name"] for o in res.report["objects"]] == ["run_toy"]
    assert res.report["objects"][0]["seen"] is False  # not among the policy's training scenes
    assert len(res.episodes) == 1 and res.episodes[0]["method"] == "policy"


@pytest.mark.parametrize("config", ["train", "eval", "export"])
def test_configs_parse_without_prefixes(config) -> None:
    """`splatsim train|eval|export` flatten the configs (OmitArgPrefixes): no two fields may share a name."""
    import tyro

    from policy.export import ExportConfig
    from policy.train import TrainConfig

    cls = {"train": TrainConfig, "eval": EvalConfig, "export": ExportConfig}[config]
    assert isinstance(tyro.cli(tyro.conf.OmitArgPrefixes[cls], args=[]), cls)
