"""Planning invariants: start poses (Eq. 3-6, 14) re-checked independently, three-phase trajectories
(Eq. 7-13), clearance filtering, actions, the hand-eye camera model."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from test_traj_fixtures import UP, grasp_poses, view_angle_deg

from splatsim.conventions import angle_between_rotations, apply_action, interpolate_pose, look_at, se3_from_rt
from splatsim.scene import LABEL_HAND, LABEL_OBJECT, object_like_scene
from trajgen.handeye import HandEyeConfig, camera_poses_from_gripper, gripper_T_camera, policy_intrinsics
from trajgen.planning import (
    PLAN_COUNTERS,
    PlanConfig,
    PointClearance,
    background_points,
    plan_grasp,
    plan_seed,
    planned_pregrasp,
)
from trajgen.start_poses import line_of_sight_clear
from trajgen.trajectory import face_target_rotation, plan_three_phase, pregrasp_pose, trajectory_actions


@pytest.fixture(scope="module")
def scene_points():
    scene = object_like_scene(3000, seed=0)
    hand = scene.select_label(LABEL_HAND).means.double().numpy()
    obj = scene.select_label(LABEL_OBJECT).means.double().numpy()
    return hand, obj


@pytest.fixture(scope="module")
def plans(scene_points):
    hand, obj = scene_points
    clearance = PointClearance(hand, obj)
    cfg = PlanConfig(up=UP)  # the paper's parameters, k = 15
    out = [
        plan_grasp(torch.from_numpy(g), clearance, cfg, plan_seed(0, "scene", i))
        for i, g in enumerate(grasp_poses())
    ]
    return cfg, out


def _brute_min_distance(points: np.ndarray, cloud: np.ndarray) -> np.ndarray:
    return np.linalg.norm(points[:, None] - cloud[None], axis=-1).min(1)


def _rx(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _ry(b):
    c, s = math.cos(b), math.sin(b)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def test_every_start_pose_satisfies_eq3_to_6_and_14(plans, scene_points):
    hand, obj = scene_points
    cfg, grasp_plans = plans
    T_o, T_h = obj.mean(0), hand.mean(0)
    up = np.asarray(UP)
    for plan in grasp_plans:
        assert plan.skipped is None
        assert len(plan.trajectories) == cfg.k
        grasp = plan.grasp_pose.numpy()
        for traj in plan.trajectories:
            start = traj.poses[0].numpy()
            T_i, R_i = start[:3, 3], start[:3, :3]
            assert abs(np.linalg.norm(T_i - grasp[:3, 3]) - cfg.radius) < 1e-9  # Eq. 3
            a, b = T_h - T_o, T_i - T_o
            alpha = math.degrees(math.acos(a @ b / np.linalg.norm(a) / np.linalg.norm(b)))
            assert alpha > cfg.alpha_min_deg  # Eq. 4
            z0 = (T_o - T_i) / np.linalg.norm(T_o - T_i)  # Eq. 5: a look-at turned about its own x, y
            x0 = np.cross(z0, up)
            x0 /= np.linalg.norm(x0)
            R_look = np.stack([x0, np.cross(z0, x0), z0], 1)
            zl = R_look.T @ R_i[:, 2]
            ty, tx = math.asin(zl[0]), math.atan2(-zl[1], zl[2])
            assert max(abs(tx), abs(ty)) <= math.radians(cfg.jitter_deg) + 1e-9
            np.testing.assert_allclose(R_look @ _rx(tx) @ _ry(ty), R_i, atol=1e-9)
            assert R_i[:, 2] @ grasp[:3, 2] >= math.cos(math.radians(cfg.theta_max_deg))  # Eq. 6
            # Eq. 14 on every waypoint, not only the start.
            d = _brute_min_distance(traj.poses[:, :3, 3].numpy(), np.concatenate([hand, obj]))
            assert d.min() > cfg.d_min


def test_reject_counts_add_up_and_name_each_filter(plans, scene_points):
    _, grasp_plans = plans
    for plan in grasp_plans:
        c = plan.counts
        assert set(c) == set(PLAN_COUNTERS)
        rejected = sum(c[k] for k in PLAN_COUNTERS if k not in ("candidates", "accepted", "unused"))
        assert c["candidates"] == rejected + c["accepted"] + c["unused"]
        assert c["eq4_alpha_min"] > 0 and c["eq6_theta_max"] > 0
    hand, obj = scene_points
    strict = PlanConfig(up=UP, alpha_min_deg=179.9, max_candidates=128)
    plan = plan_grasp(torch.from_numpy(grasp_poses()[0]), PointClearance(hand, obj), strict, plan_seed(1))
    assert plan.trajectories == [] and plan.counts["eq4_alpha_min"] == 128


def test_trajectories_end_exactly_at_pregrasp_with_cls_there_only(plans):
    cfg, grasp_plans = plans
    rot_step, trans_step = math.radians(cfg.rotation_step_deg), cfg.translation_step
    for plan in grasp_plans:
        pre = plan.pregrasp_pose
        expected_pre = plan.grasp_pose.clone()
        expected_pre[:3, 3] -= cfg.s * plan.grasp_pose[:3, 2]  # Eq. 7
        assert torch.equal(pre, expected_pre)
        target = torch.from_numpy(plan_target(plan))
        for traj in plan.trajectories:
            P = traj.poses
            assert torch.equal(P[-1], pre)
            assert traj.cls.tolist() == [0] * (len(P) - 1) + [1]
            phase = traj.phase.tolist()
            assert phase == sorted(phase) and set(phase) <= {1, 2, 3} and phase[-1] == 3
            steps = torch.linalg.vector_norm(P[1:, :3, 3] - P[:-1, :3, 3], dim=-1)
            turns = angle_between_rotations(P[:-1, :3, :3], P[1:, :3, :3])
            assert float(steps.max()) <= trans_step + 1e-9
            assert float(turns.max()) <= rot_step + 1e-9
            # Phase 1 turns in place and ends facing the object.
            assert torch.allclose(P[: traj.t1 + 1, :3, 3], P[0, :3, 3].expand(traj.t1 + 1, 3))
            view = P[traj.t1, :3, 2]
            to_obj = (target - P[traj.t1, :3, 3]) / torch.linalg.vector_norm(target - P[traj.t1, :3, 3])
            assert float(view @ to_obj) > math.cos(1e-6)
            # Phase 2: exact translation steps, no rotation, ends within d of the pre-grasp (Eq. 8-9).
            if traj.t2 > traj.t1:
                seg = slice(traj.t1 + 1, traj.t2 + 1)
                assert torch.allclose(
                    steps[seg.start - 1 : seg.stop - 1], torch.tensor(trans_step, dtype=torch.float64)
                )
                assert float(turns[seg.start - 1 : seg.stop - 1].max()) < 1e-9
                assert float(torch.linalg.vector_norm(P[traj.t2, :3, 3] - pre[:3, 3])) < cfg.d
                assert float(torch.linalg.vector_norm(P[traj.t2 - 1, :3, 3] - pre[:3, 3])) >= cfg.d


def plan_target(plan) -> np.ndarray:
    """The object centre the planner aimed at (the mean of the object points)."""
    scene = object_like_scene(3000, seed=0)
    return scene.select_label(LABEL_OBJECT).means.double().numpy().mean(0)


def test_actions_reintegrate_to_the_poses(plans):
    _, grasp_plans = plans
    for traj in grasp_plans[0].trajectories[:5]:
        actions = trajectory_actions(traj.poses)
        assert torch.equal(actions[-1], torch.zeros(6, dtype=torch.float64))
        pose = traj.poses[0]
        for t in range(len(actions) - 1):
            pose = apply_action(pose, actions[t])
            assert torch.allclose(pose, traj.poses[t + 1], atol=1e-9)


def test_trajectories_through_the_hand_are_dropped_and_counted():
    grasp = torch.eye(4, dtype=torch.float64)  # at the origin, approach +z; pre-grasp at z = -0.3
    obj = np.random.default_rng(0).normal(0.0, 0.01, (200, 3)) + [0.0, 0.0, 0.03]
    dirs = np.random.default_rng(1).normal(size=(4000, 3))
    shell = 0.2 * dirs / np.linalg.norm(dirs, axis=1, keepdims=True) + [0.0, 0.0, -0.3]
    hand = shell[shell[:, 0] > 0.05]  # half a shell around the pre-grasp: blocks paths from +x
    cfg = PlanConfig(k=6, up=(0.0, 1.0, 0.0), alpha_min_deg=0.0, max_candidates=512)
    plan = plan_grasp(grasp, PointClearance(hand, obj), cfg, plan_seed(2))
    assert plan.counts["trajectory_near_hand"] > 0
    assert len(plan.trajectories) == cfg.k
    for traj in plan.trajectories:
        assert (
            _brute_min_distance(traj.poses[:, :3, 3].numpy(), np.concatenate([hand, obj])).min() > cfg.d_min
        )


def test_trajectories_through_the_background_are_dropped_and_counted():
    """A wall of background points across half the start sphere: paths into it are dropped, the rest
    keep d_background from every wall point; with d_background = 0 the wall is ignored."""
    grasp = torch.eye(4, dtype=torch.float64)
    obj = np.random.default_rng(0).normal(0.0, 0.01, (200, 3)) + [0.0, 0.0, 0.03]
    hand = np.random.default_rng(3).normal(0.0, 0.01, (200, 3)) + [0.0, 0.0, 0.12]
    yy, zz = np.meshgrid(np.linspace(-1.0, 1.0, 81), np.linspace(-1.2, 0.6, 73))
    wall = np.stack([np.full(yy.size, 0.35), yy.ravel(), zz.ravel()], 1)  # the plane x = 0.35
    cfg = PlanConfig(k=8, up=(0.0, 1.0, 0.0), alpha_min_deg=0.0, max_candidates=1024, line_of_sight=False)
    plan = plan_grasp(grasp, PointClearance(hand, obj, wall), cfg, plan_seed(4))
    assert plan.counts["trajectory_near_background"] > 0
    assert len(plan.trajectories) == cfg.k
    for traj in plan.trajectories:
        assert _brute_min_distance(traj.poses[:, :3, 3].numpy(), wall).min() > cfg.d_background
    off = PlanConfig(k=8, up=(0.0, 1.0, 0.0), alpha_min_deg=0.0, max_candidates=1024, d_background=0.0)
    plan_off = plan_grasp(grasp, PointClearance(hand, obj, wall), off, plan_seed(4))
    assert plan_off.counts["trajectory_near_background"] == 0
    assert any(
        _brute_min_distance(t.poses[:, :3, 3].numpy(), wall).min() <= cfg.d_background
        for t in plan_off.trajectories
    )


def test_starts_without_a_line_of_sight_to_the_object_are_dropped_and_counted():
    """The same wall: starts behind it (x > 0.35) cannot see the object and are dropped under
    ``line_of_sight``; every kept start's segment to the object centre keeps d_background from the wall
    (checked densely here, independently of the filter's own spacing)."""
    grasp = torch.eye(4, dtype=torch.float64)
    obj = np.random.default_rng(0).normal(0.0, 0.01, (200, 3)) + [0.0, 0.0, 0.03]
    hand = np.random.default_rng(3).normal(0.0, 0.01, (200, 3)) + [0.0, 0.0, 0.12]
    yy, zz = np.meshgrid(np.linspace(-1.0, 1.0, 81), np.linspace(-1.2, 0.6, 73))
    wall = np.stack([np.full(yy.size, 0.35), yy.ravel(), zz.ravel()], 1)
    clearance = PointClearance(hand, obj, wall)
    cfg = PlanConfig(k=12, up=(0.0, 1.0, 0.0), alpha_min_deg=0.0, max_candidates=2048)
    plan = plan_grasp(grasp, clearance, cfg, plan_seed(4))
    assert plan.counts["line_of_sight"] > 0 and len(plan.trajectories) == cfg.k
    center = obj.mean(0)
    for traj in plan.trajectories:
        start = traj.poses[0, :3, 3].numpy()
        assert start[0] < 0.35
        seg = start + np.linspace(0.0, 1.0, 400)[:, None] * (center - start)
        assert _brute_min_distance(seg, wall).min() > cfg.d_background
    # the filter itself, on two hand-picked positions: one in front of the wall, one behind it
    ok = line_of_sight_clear(
        torch.tensor([[-0.5, 0.0, 0.0], [0.7, 0.0, 0.03]], dtype=torch.float64),
        torch.from_numpy(center),
        clearance.background_distance,
        0.05,
    )
    assert ok.tolist() == [True, False]
    # off, or without background points, it rejects nothing
    off = plan_grasp(grasp, clearance, replace(cfg, line_of_sight=False), plan_seed(4))
    bare = plan_grasp(grasp, PointClearance(hand, obj), cfg, plan_seed(4))
    assert off.counts["line_of_sight"] == 0 and bare.counts["line_of_sight"] == 0


def test_pregrasp_inside_the_background_skips_the_grasp():
    grasp = torch.eye(4, dtype=torch.float64)  # pre-grasp at z = -0.3
    obj = np.random.default_rng(0).normal(0.0, 0.01, (200, 3))
    hand = obj + [0.0, 0.0, 0.15]
    wall = np.array([[0.0, 0.02, -0.3]])  # 2 cm from the pre-grasp position
    plan = plan_grasp(grasp, PointClearance(hand, obj, wall), PlanConfig(k=2), plan_seed(5))
    assert plan.trajectories == [] and "d_background" in plan.skipped and plan.counts["candidates"] == 0


def test_background_points_keep_only_solid_background():
    scene = object_like_scene(3000, seed=0)
    pts = background_points(scene)
    bg = scene.select_label(0)
    solid = torch.sigmoid(bg.opacities) >= 0.5
    assert pts.shape == (int(solid.sum()), 3)
    assert 0 < len(pts) < len(bg.means) or bool(solid.all())
    assert PointClearance(pts[:1], pts[:1]).background_distance(torch.zeros(2, 3)).isinf().all()


def test_min_height_keeps_starts_above_and_planning_is_seeded(scene_points):
    hand, obj = scene_points
    clearance = PointClearance(hand, obj)
    g = torch.from_numpy(grasp_poses()[1])  # the box grasp, from above (up is -y)
    cfg = PlanConfig(k=5, up=UP, min_height=0.2)
    a = plan_grasp(g, clearance, cfg, plan_seed(0, "s", 1))
    b = plan_grasp(g, clearance, cfg, plan_seed(0, "s", 1))
    c = plan_grasp(g, clearance, cfg, plan_seed(1, "s", 1))
    assert a.counts["min_height"] > 0
    for traj in a.trajectories:
        assert float(traj.poses[0, :3, 3] @ torch.tensor(UP, dtype=torch.float64)) >= 0.2
    assert all(torch.equal(x.poses, y.poses) for x, y in zip(a.trajectories, b.trajectories))
    assert not torch.equal(a.trajectories[0].poses, c.trajectories[0].poses)


def test_phase_three_follows_eq12_13():
    """Each phase-3 rotation is SLERP(R_update, R_pre, tau) (Eq. 13), R_update facing the object from the
    step's position (phi = 0, Eq. 12) or the phase-2 rotation (phi large), unless the step is capped at
    the rotation step while catching up."""
    target = torch.tensor([0.0, 0.0, 0.0], dtype=torch.float64)
    start = look_at(torch.tensor([0.6, 0.3, -0.4], dtype=torch.float64), target, up=(0.0, -1.0, 0.0))
    grasp = torch.eye(4, dtype=torch.float64)
    grasp[:3, 3] = torch.tensor([0.0, 0.0, -0.02])
    pre = pregrasp_pose(grasp, 0.3)
    step = math.radians(5)
    for phi in (0.0, math.radians(179)):
        traj = plan_three_phase(start, pre, target, d=0.5, phi=phi, translation_step=0.03, rotation_step=step)
        P, t2 = traj.poses, traj.t2
        n3 = len(P) - 1 - t2
        matched = 0
        for j in range(t2 + 1, len(P)):
            tau = (j - t2) / n3
            p = P[j, :3, 3]
            if phi == 0.0:
                R_update = face_target_rotation(pre[:3, :3], p, target)
            else:
                R_update = P[t2, :3, :3]
            want = interpolate_pose(se3_from_rt(R_update, p), se3_from_rt(pre[:3, :3], p), tau)
            capped = abs(float(angle_between_rotations(P[j - 1, :3, :3], P[j, :3, :3])) - step) < 1e-9
            if torch.allclose(P[j], want, atol=1e-9):
                matched += 1
            else:
                assert capped, (phi, j)
        assert matched >= n3 // 2
        assert torch.equal(P[-1], pre)


def test_hand_eye_camera_model():
    intr = policy_intrinsics(HandEyeConfig())  # D435 colour 640x480, centre crop 480x480 -> 128x128
    assert (intr.width, intr.height) == (128, 128)
    assert intr.fx == pytest.approx(615 * 128 / 480) and intr.fy == pytest.approx(615 * 128 / 480)
    assert (intr.cx, intr.cy) == (pytest.approx(64.0), pytest.approx(64.0))
    wide = policy_intrinsics(HandEyeConfig(crop="none"))
    assert wide.fx == pytest.approx(615 * 128 / 640) and wide.fy == pytest.approx(615 * 128 / 480)
    cfg = HandEyeConfig(camera_offset_xyz=(0.0, -0.05, 0.02), camera_offset_euler_deg=(10.0, 0.0, 0.0))
    X = gripper_T_camera(cfg)
    G = look_at(torch.tensor([0.3, 0.1, 0.2], dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
    cam = camera_poses_from_gripper(G[None], cfg)[0]
    assert torch.allclose(cam, G @ X)
    assert torch.allclose(
        cam[:3, 3], G[:3, 3] + G[:3, :3] @ torch.tensor([0.0, -0.05, 0.02], dtype=torch.float64)
    )
    assert torch.equal(gripper_T_camera(HandEyeConfig()), torch.eye(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="HandEyeConfig.width"):
        HandEyeConfig(width=0).validate()
    with pytest.raises(ValueError, match="PlanConfig.d "):
        PlanConfig(d=0.01).validate()


def test_final_approach_slows_down_near_the_pregrasp_and_off_is_the_paper():
    """``final_distance`` > 0: phase 3 covers its last metres in steps of at most ``final_step`` on the same
    straight line, ends exactly at the pre-grasp pose, keeps the rotation step, and tau (Eq. 13) is the
    fraction of the distance covered; 0 gives the paper's plan bit for bit (the default)."""
    from trajgen.trajectory import expert_step

    target = torch.tensor([0.0, 0.0, 0.0], dtype=torch.float64)
    start = look_at(torch.tensor([0.5, 0.3, -0.6], dtype=torch.float64), target, up=(0.0, -1.0, 0.0))
    grasp = torch.eye(4, dtype=torch.float64)
    grasp[:3, 3] = torch.tensor([0.0, 0.0, -0.02])
    pre = pregrasp_pose(grasp, 0.3)
    kw = dict(d=0.5, phi=0.0, translation_step=0.06, rotation_step=math.radians(12))
    paper = plan_three_phase(start, pre, target, **kw)
    assert torch.equal(
        plan_three_phase(start, pre, target, **kw, final_distance=0.0, final_step=0.02).poses, paper.poses
    )
    for fd, fs in ((0.1, 0.025), (0.12, 0.02), (2.0, 0.03)):  # 2 m: all of phase 3 is the final approach
        traj = plan_three_phase(start, pre, target, **kw, final_distance=fd, final_step=fs)
        P = traj.poses
        assert torch.equal(P[-1], pre) and traj.num_steps > paper.num_steps
        assert torch.equal(P[: traj.t2 + 1], paper.poses[: paper.t2 + 1])  # phases 1-2 unchanged
        pos = P[traj.t2 :, :3, 3]
        steps = torch.linalg.vector_norm(pos[1:] - pos[:-1], dim=1)
        left = torch.linalg.vector_norm(pos[:-1] - pre[:3, 3], dim=1)  # distance left before each step
        near = left <= fd + 1e-9
        assert near.any() and bool((steps[near] <= fs + 1e-9).all()) and bool((steps <= 0.06 + 1e-9).all())
        # the far part's steps are equal, and so are the final approach's
        for part in (steps[~near], steps[near]):
            if len(part) > 1:
                assert float(part.max() - part.min()) < 1e-9
        # one straight line from the start of phase 3 to the pre-grasp position
        u = (pre[:3, 3] - pos[0]) / torch.linalg.vector_norm(pre[:3, 3] - pos[0])
        off_line = torch.linalg.vector_norm(torch.linalg.cross(pos - pos[0], u.expand_as(pos), dim=1), dim=1)
        assert float(off_line.max()) < 1e-9
        rot = [float(angle_between_rotations(P[i, :3, :3], P[i + 1, :3, :3])) for i in range(len(P) - 1)]
        assert max(rot) <= math.radians(12) + 1e-9
        # the expert's next step from a pose inside the final approach is a final-approach step
        j = len(P) - 3
        nxt = expert_step(P[j], pre, target, 3, **kw, final_distance=fd, final_step=fs)
        assert float(torch.linalg.vector_norm(nxt[:3, 3] - P[j, :3, 3])) <= fs + 1e-9
    with pytest.raises(ValueError, match="final_approach_step"):
        PlanConfig(translation_step=0.03, final_approach_step=0.05).validate()
    with pytest.raises(ValueError, match="final_approach_distance"):
        PlanConfig(final_approach_distance=-0.1).validate()


def test_pregrasp_distance_slides_the_pregrasp_along_the_approach_axis(scene_points):
    hand, obj = scene_points
    clearance = PointClearance(hand, obj)
    paper = PlanConfig(up=UP, k=3)
    fixed = replace(paper, pregrasp_distance=0.33).validate()
    for i, g in enumerate(grasp_poses()):
        grasp = torch.from_numpy(g)
        assert torch.equal(planned_pregrasp(grasp, clearance, paper), pregrasp_pose(grasp, paper.s))  # Eq. 7
        pre = planned_pregrasp(grasp, clearance, fixed)
        # at the asked distance from the nearest object point (brute force), same rotation, on the axis behind
        d = _brute_min_distance(pre[None, :3, 3].numpy(), obj)[0]
        assert d == pytest.approx(0.33, abs=1e-6)
        assert torch.equal(pre[:3, :3], grasp[:3, :3])
        offset = grasp[:3, 3] - pre[:3, 3]
        back = float(offset @ grasp[:3, 2])
        assert back > 0 and float(torch.linalg.vector_norm(offset - back * grasp[:3, 2])) < 1e-9
        # the planner flies there
        plan = plan_grasp(grasp, clearance, fixed, plan_seed(0, "scene", i))
        assert torch.equal(plan.pregrasp_pose, pre)
        assert plan.trajectories and all(torch.equal(t.poses[-1], pre) for t in plan.trajectories)
    with pytest.raises(ValueError, match="pregrasp_distance"):
        replace(paper, pregrasp_distance=paper.d_min).validate()


def test_phase2_aim_keeps_the_object_centred_and_off_is_the_paper():
    """``phase2_aim``: phase 2 takes the same positions as the paper's (Eq. 8-9) but each pose faces the
    object (view angle 0) by the smallest turn of the one before, at most ``rotation_step`` a step; phase
    1 is unchanged and the plan still ends exactly at the pre-grasp pose. Off (the default), phase 2 keeps
    phase 1's rotation. The expert's phase-2 step from a phase-2 pose is the plan's next pose."""
    from trajgen.trajectory import expert_step

    target = torch.tensor([0.0, 0.0, 0.0], dtype=torch.float64)
    # far from the pre-grasp position (phase 2 runs several steps) and on another side of the object
    start = look_at(torch.tensor([0.7, 0.5, 0.4], dtype=torch.float64), target, up=(0.0, 0.0, 1.0))
    grasp = torch.eye(4, dtype=torch.float64)
    grasp[:3, 3] = torch.tensor([0.0, 0.0, -0.02])
    pre = pregrasp_pose(grasp, 0.3)
    kw = dict(d=0.5, phi=0.0, translation_step=0.06, rotation_step=math.radians(12))
    paper = plan_three_phase(start, pre, target, **kw)
    aimed = plan_three_phase(start, pre, target, **kw, phase2_aim=True)
    assert torch.equal(plan_three_phase(start, pre, target, **kw, phase2_aim=False).poses, paper.poses)
    assert (aimed.t1, aimed.t2) == (paper.t1, paper.t2) and aimed.t2 - aimed.t1 >= 5
    assert torch.equal(aimed.poses[: aimed.t1 + 1], paper.poses[: paper.t1 + 1])
    P, Q = aimed.poses, paper.poses
    assert torch.allclose(P[: aimed.t2 + 1, :3, 3], Q[: paper.t2 + 1, :3, 3], atol=1e-12)  # same positions
    paper_angles = [view_angle_deg(Q[j], target) for j in range(paper.t1 + 1, paper.t2 + 1)]
    assert max(paper_angles) > 10.0  # the paper's phase 2 lets the object drift off-centre...
    for j in range(aimed.t1 + 1, aimed.t2 + 1):  # ...the aimed one keeps facing it
        assert view_angle_deg(P[j], target) < 1e-4  # acos near 1: ~1e-6 degrees of rounding
        # the smallest turn: the new viewing axis is the old one swung toward the object, no roll added
        R_want = face_target_rotation(P[j - 1, :3, :3], P[j, :3, 3], target)
        assert torch.allclose(P[j, :3, :3], R_want, atol=1e-9)
        nxt = expert_step(P[j - 1], pre, target, 2, **kw, phase2_aim=True)
        assert torch.allclose(nxt, P[j], atol=1e-9)
    assert torch.equal(P[-1], pre)
    rot = [float(angle_between_rotations(P[i, :3, :3], P[i + 1, :3, :3])) for i in range(len(P) - 1)]
    assert max(rot) <= math.radians(12) + 1e-9
    # a small rotation step caps the turn: the camera lags behind and catches up
    tiny = plan_three_phase(start, pre, target, **{**kw, "rotation_step": math.radians(0.5)}, phase2_aim=True)
    P = tiny.poses
    turns = [float(angle_between_rotations(P[i, :3, :3], P[i + 1, :3, :3])) for i in range(tiny.t1, tiny.t2)]
    assert max(turns) <= math.radians(0.5) + 1e-9 and view_angle_deg(P[tiny.t2], target) > 1.0
    # PlanConfig passes it through
    assert PlanConfig(phase2_aim=True).step_kwargs()["phase2_aim"] is True
    assert PlanConfig().step_kwargs()["phase2_aim"] is False
