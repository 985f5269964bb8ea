"""Recovery samples seen from the policy side: the 'tolerance' stop label is the evaluation's success
(`policy.metrics`) at matching thresholds, and recovery frames reach training on their episode's side of
the split, read from disk exactly as built in memory."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from policy.data import episode_from_trajgen, geometry_targets, load_demos, split_episodes
from policy.env import SceneGeometry
from policy.metrics import MetricsConfig, episode_metrics
from splatsim.conventions import PinholeIntrinsics, apply_action
from splatsim.scene import LABEL_HAND, LABEL_OBJECT, object_like_scene
from trajgen.dataset import write_episode
from trajgen.episodes import HandEyeRenderer, build_episode
from trajgen.handeye import HandEyeConfig
from trajgen.planning import PlanConfig, PointClearance, plan_grasp, plan_seed
from trajgen.recovery import RecoveryConfig, stop_labels

UP = (0.0, -1.0, 0.0)  # object_like_scene's world up


@pytest.fixture(scope="module")
def setup():
    scene = object_like_scene(3000, seed=0)
    clearance = PointClearance(
        scene.select_label(LABEL_HAND).means.double().numpy(),
        scene.select_label(LABEL_OBJECT).means.double().numpy(),
    )
    grasp = np.eye(4)
    grasp[:3, 3] = [-0.12, 0.0, 0.50]  # the sphere, approached along +z
    base = PlanConfig(k=2, up=UP, translation_step=0.06, rotation_step_deg=10.0)
    pre = plan_grasp(torch.from_numpy(grasp), clearance, base, plan_seed(0)).pregrasp_pose
    d = float(clearance(pre[None, :3, 3])[0, 1])
    rc = RecoveryConfig(
        add_recovery=True,
        stop_label="tolerance",
        stop_position_tolerance=1.0,  # no pose tolerance: the label is the success test alone
        stop_rotation_tolerance_deg=180.0,
        stop_band=(d - 0.03, d + 0.03),
        pregrasp_samples=60,
        pregrasp_rotation_deg=10.0,
    )
    cfg = PlanConfig(k=2, up=UP, translation_step=0.06, rotation_step_deg=10.0, recovery=rc)
    plan = plan_grasp(torch.from_numpy(grasp), clearance, cfg, plan_seed(0))
    return scene, clearance, cfg, plan


def test_tolerance_label_is_the_evaluations_success(setup):
    scene, clearance, cfg, plan = setup
    rc = cfg.recovery
    intr = PinholeIntrinsics.from_fov(0.9, 64, 64)
    mcfg = MetricsConfig(
        success_min=rc.stop_band[0],
        success_max=rc.stop_band[1],
        center_radius_frac=intr.fx * math.tan(math.radians(rc.stop_center_deg)) / 64,
        d_s=rc.stop_d_s,
        grasp_standoff=rc.stop_grasp_standoff,
        path_resolution=0.002,
    )
    geo = SceneGeometry.from_scene(scene)
    poses = torch.cat([t.recovery.poses for t in plan.trajectories] + [t.poses for t in plan.trajectories])
    labels = stop_labels(poses, plan.pregrasp_pose, clearance, rc)
    success = np.array([episode_metrics(p[None].numpy(), True, geo, intr, mcfg)["success"] for p in poses])
    assert 0 < labels.sum() < len(labels)
    np.testing.assert_array_equal(labels.astype(bool), success)


def test_recovery_frames_reach_training_with_their_episode(tmp_path, setup):
    scene, _, _, plan = setup
    renderer = HandEyeRenderer(scene, HandEyeConfig(width=32, height=32), backend="cpu", batch_size=8)
    built = []
    for j, (traj, clear) in enumerate(zip(plan.trajectories, plan.clearances)):
        attrs = {"scene_id": "toy", "grasp_rank": 0, "start_id": j, "episode_key": f"toy/g000_s{j:03d}"}
        ep = build_episode(traj, clear, plan.grasp_pose, plan.pregrasp_pose, renderer, attrs)
        write_episode(tmp_path / f"e{j}.hdf5", ep, env_args={"scene_id": "toy"})
        built.append(ep)
    demos = load_demos([tmp_path])
    assert [e.key for e in demos.episodes] == [b.attrs["episode_key"] for b in built]
    for e, b in zip(demos.episodes, built):
        mem = episode_from_trajgen(b)
        n = b.num_samples + b.recovery.num_samples
        assert e.num_frames == mem.num_frames == n and e.attrs["recovery_frames"] == b.recovery.num_samples
        for key in ("rgb", "mask", "actions", "cls", "geometry"):
            np.testing.assert_array_equal(getattr(e, key), getattr(mem, key))
        np.testing.assert_array_equal(e.actions[b.num_samples :], b.recovery.actions.astype(np.float32))
        np.testing.assert_array_equal(e.cls[: b.num_samples], b.cls.astype(np.float32))
    train, val = split_episodes([e.key for e in demos.episodes], 0.5, 0)
    assert sorted(train + val) == [0, 1]  # whole episodes (with their recovery frames) on one side


def test_geometry_targets_are_the_object_distance_and_the_step_to_the_pregrasp_pose(setup):
    _, clearance, _, plan = setup
    for traj, clear in zip(plan.trajectories, plan.clearances):
        for poses, c in ((traj.poses, clear), (traj.recovery.poses, traj.recovery.clearance)):
            g = geometry_targets(poses.numpy(), plan.pregrasp_pose.numpy(), c.numpy())
            assert g.shape == (len(poses), 7) and g.dtype == np.float32
            # the distance column is the nearest object point, measured afresh here
            np.testing.assert_allclose(g[:, 0], clearance(poses[:, :3, 3])[:, 1].numpy(), atol=1e-6)
            # the rest is the one step that reaches the pre-grasp pose
            reached = apply_action(poses, torch.from_numpy(g[:, 1:]).double())
            torch.testing.assert_close(reached, plan.pregrasp_pose.expand_as(reached), atol=2e-6, rtol=0)
        assert 0.25 < g[:, 0].min() < g[:, 0].max() < 1.5
    with pytest.raises(ValueError, match=r"\[T, 4, 4\], \[4, 4\], \[T, 2\]"):
        geometry_targets(np.eye(4)[None], np.eye(4), np.ones((2, 2)))
