"""Recovery samples (`trajgen.recovery`): off changes nothing, the expert's actions lead back to the
pre-grasp pose within the step limits, the stop labels follow their tolerance, the samples keep the
plan's clearance, and the HDF5 round trip (with validation catching bad recovery data)."""

from __future__ import annotations

import math
from dataclasses import replace

import h5py
import numpy as np
import pytest
import torch
from test_traj_fixtures import UP, grasp_poses, view_angle_deg

from splatsim.conventions import angle_between_rotations, apply_action
from splatsim.scene import LABEL_HAND, LABEL_OBJECT, object_like_scene
from trajgen.dataset import DemoDataset, read_episode, validate_episode, write_episode
from trajgen.episodes import HandEyeRenderer, build_episode
from trajgen.handeye import HandEyeConfig
from trajgen.planning import PlanConfig, PointClearance, plan_grasp, plan_seed
from trajgen.recovery import PREGRASP_SOURCE, RecoveryConfig, recovery_samples, stop_labels
from trajgen.trajectory import expert_step, plan_three_phase

STEP_T, STEP_R_DEG = 0.06, 10.0


@pytest.fixture(scope="module")
def scene():
    return object_like_scene(3000, seed=0)


@pytest.fixture(scope="module")
def clearance(scene):
    return PointClearance(
        scene.select_label(LABEL_HAND).means.double().numpy(),
        scene.select_label(LABEL_OBJECT).means.double().numpy(),
    )


def _plan_cfg(**recovery) -> PlanConfig:
    return PlanConfig(
        k=3,
        up=UP,
        translation_step=STEP_T,
        rotation_step_deg=STEP_R_DEG,
        recovery=RecoveryConfig(**recovery),
    )


def _tolerance_cfg(clearance, pre, **kw) -> RecoveryConfig:
    """'tolerance' labels with the band put around this toy scene's pre-grasp distance."""
    d = float(clearance(pre[None, :3, 3])[0, 1])
    return RecoveryConfig(
        add_recovery=True,
        stop_label="tolerance",
        stop_band=(d - 0.04, d + 0.04),
        pregrasp_samples=40,
        **kw,
    )


@pytest.fixture(scope="module")
def plan_on(clearance):
    grasp = torch.from_numpy(grasp_poses()[0])
    base = _plan_cfg()
    pre = plan_grasp(grasp, clearance, base, plan_seed(1)).pregrasp_pose
    cfg = replace(base, recovery=_tolerance_cfg(clearance, pre))
    return cfg, plan_grasp(grasp, clearance, cfg, plan_seed(1))


def test_off_changes_nothing(clearance, plan_on):
    """Recovery off (whatever its other fields) plans exactly what the paper's planner plans, and on it
    leaves the trajectories (the start-pose stream) untouched: only extra samples and labels."""
    grasp = torch.from_numpy(grasp_poses()[0])
    paper = plan_grasp(grasp, clearance, _plan_cfg(), plan_seed(1))
    off = plan_grasp(
        grasp,
        clearance,
        _plan_cfg(add_recovery=False, stop_label="tolerance", pregrasp_samples=50),
        plan_seed(1),
    )
    _, on = plan_on
    assert len(paper.trajectories) == len(off.trajectories) == len(on.trajectories) == 3
    for a, b, c in zip(paper.trajectories, off.trajectories, on.trajectories):
        assert torch.equal(a.poses, b.poses) and torch.equal(a.cls, b.cls) and torch.equal(a.phase, b.phase)
        assert a.recovery is None and b.recovery is None
        assert torch.equal(a.poses, c.poses) and c.recovery is not None and c.recovery.num_samples > 0
        assert a.cls.tolist() == [0] * (a.num_steps - 1) + [1]
    assert paper.counts == off.counts == on.counts


def test_off_episode_has_no_recovery_and_on_leaves_frames_alone(tmp_path, scene, clearance, plan_on):
    cfg, on = plan_on
    off = plan_grasp(torch.from_numpy(grasp_poses()[0]), clearance, _plan_cfg(), plan_seed(1))
    renderer = HandEyeRenderer(scene, HandEyeConfig(width=32, height=24), backend="cpu", batch_size=4)
    attrs = {"scene_id": "s", "grasp_rank": 0, "start_id": 0}
    ep_off = build_episode(
        off.trajectories[0], off.clearances[0], off.grasp_pose, off.pregrasp_pose, renderer, attrs
    )
    ep_on = build_episode(
        on.trajectories[0], on.clearances[0], on.grasp_pose, on.pregrasp_pose, renderer, attrs
    )
    assert ep_off.recovery is None and "stop_label" not in ep_off.attrs
    np.testing.assert_array_equal(ep_off.rgb, ep_on.rgb)
    np.testing.assert_array_equal(ep_off.mask, ep_on.mask)
    np.testing.assert_array_equal(ep_off.actions, ep_on.actions)
    path = write_episode(tmp_path / "off.hdf5", ep_off)
    with h5py.File(path, "r") as f:
        assert "recovery" not in f["data/demo_0"]
    assert read_episode(path).recovery is None
    assert len(DemoDataset([path])) == ep_off.num_samples


def _sample_steps(traj, pre):
    """Each recovery sample of ``traj`` with its action applied: (samples, i, pose, next pose, distance to
    the pre-grasp position), after checking the step limits."""
    rec = traj.recovery
    nxt = apply_action(rec.poses, rec.actions)
    for i in range(rec.num_samples):
        p, q = rec.poses[i], nxt[i]
        assert _step_ok(p, q)
        yield rec, i, p, q, float(torch.linalg.vector_norm(p[:3, 3] - pre[:3, 3]))


def _step_ok(a: torch.Tensor, b: torch.Tensor) -> bool:
    dt = float(torch.linalg.vector_norm(b[:3, 3] - a[:3, 3]))
    dr = float(angle_between_rotations(a[:3, :3], b[:3, :3]))
    return dt <= STEP_T + 1e-9 and dr <= math.radians(STEP_R_DEG) + 1e-9


def _follow_expert(pose, phase, pre, target, kw, max_steps=60):
    """The expert alone from ``pose`` in ``phase``, each step within the step limits, until it stays or
    ``max_steps`` run out; returns the last pose. (`expert_step` itself takes phase 3 within ``d`` of the
    pre-grasp position, whatever the phase passed, so the phase need not be switched here.)"""
    for _ in range(max_steps):
        nxt_pose = expert_step(pose, pre, target, phase, **kw)
        assert _step_ok(pose, nxt_pose)
        if torch.equal(nxt_pose, pose):
            break
        pose = nxt_pose
    return pose


def test_actions_reintegrate_toward_the_pregrasp(clearance, plan_on):
    """Each sample's action, applied to its pose, is one expert step within the step limits: around the
    pre-grasp and in phase 3 it gets strictly closer to the pre-grasp position (a step back from beyond
    it), in phase 2 exactly one translation step closer; following the expert from any sample reaches
    the pre-grasp pose exactly."""
    cfg, plan = plan_on
    pre = plan.pregrasp_pose
    target = clearance.object_center
    kw = {"d": cfg.d, "phi": 0.0, "translation_step": STEP_T, "rotation_step": math.radians(STEP_R_DEG)}
    seen_beyond = False
    for traj in plan.trajectories:
        rec = traj.recovery
        for _, i, p, q, d0 in _sample_steps(traj, pre):
            d1 = float(torch.linalg.vector_norm(q[:3, 3] - pre[:3, 3]))
            if int(rec.phase[i]) == 3:
                assert d1 < d0 - 1e-9 or d1 < 1e-9
            elif int(rec.phase[i]) == 2:
                assert d1 == pytest.approx(d0 - STEP_T, abs=1e-9)
            if int(rec.source[i]) == PREGRASP_SOURCE:
                # beyond the pre-grasp (nearer the object along the approach axis): the step backs off
                ahead = float((p[:3, 3] - pre[:3, 3]) @ pre[:3, 2])
                if ahead > 0.02:
                    seen_beyond = True
                    assert float((q[:3, 3] - p[:3, 3]) @ pre[:3, 2]) < 0
        for i in range(0, rec.num_samples, 5):  # closed loop on the expert alone
            pose = _follow_expert(rec.poses[i], int(rec.phase[i]), pre, target, kw)
            assert torch.allclose(pose, pre, atol=1e-9), (
                f"sample {i} (phase {int(rec.phase[i])}) did not reach the pre-grasp"
            )
    assert seen_beyond


def test_expert_step_matches_the_planner_on_its_own_trajectory(clearance, plan_on):
    """On a planned trajectory's phase-3 waypoints the expert's step is the trajectory's next pose."""
    cfg, plan = plan_on
    kw = {"d": cfg.d, "phi": 0.0, "translation_step": STEP_T, "rotation_step": math.radians(STEP_R_DEG)}
    traj = plan.trajectories[0]
    full = plan_three_phase(traj.poses[0], plan.pregrasp_pose, clearance.object_center, **{**kw, "d": cfg.d})
    assert torch.equal(full.poses, traj.poses)
    last = traj.num_steps - 2  # the final phase-3 step lands exactly on the pre-grasp
    nxt = expert_step(traj.poses[last], plan.pregrasp_pose, clearance.object_center, 3, **kw)
    assert torch.allclose(nxt, traj.poses[-1], atol=1e-9)
    with pytest.raises(ValueError, match="phase"):
        expert_step(traj.poses[0], plan.pregrasp_pose, clearance.object_center, 4, **kw)


def _brute_labels(poses, pre, clearance, cfg: RecoveryConfig) -> np.ndarray:
    """The 'tolerance' rule computed independently (brute-force distances, per point angles)."""
    obj, hand = clearance.object_points, clearance.hand_points
    out = []
    for P in np.asarray(poses):
        p, R, z = P[:3, 3], P[:3, :3], P[:3, 2]
        cos = np.clip((np.trace(R.T @ pre[:3, :3]) - 1) / 2, -1, 1)
        near = (
            np.linalg.norm(p - pre[:3, 3]) <= cfg.stop_position_tolerance
            and math.degrees(math.acos(cos)) <= cfg.stop_rotation_tolerance_deg + 1e-6
        )
        surface = np.linalg.norm(obj - p, axis=1).min()
        band = cfg.stop_band[0] <= surface <= cfg.stop_band[1]
        rays = obj - p
        ahead = rays @ z > 0
        ang = np.degrees(np.arccos(np.clip((rays[ahead] @ z) / np.linalg.norm(rays[ahead], axis=1), -1, 1)))
        centred = ahead.any() and ang.min() <= cfg.stop_center_deg
        length = max(0.0, surface - cfg.stop_grasp_standoff)
        seg = p + np.linspace(0, length, 200)[:, None] * z
        safe = np.linalg.norm(seg[:, None] - hand[None], axis=-1).min() >= cfg.stop_d_s - 2e-3
        out.append(int(near and band and centred and safe))
    return np.array(out)


def test_stop_labels_follow_the_tolerance(clearance, plan_on):
    cfg, plan = plan_on
    pre = plan.pregrasp_pose.numpy()
    rc = cfg.recovery
    poses = torch.cat([t.recovery.poses for t in plan.trajectories]).numpy()
    cls = np.concatenate([t.recovery.cls.numpy() for t in plan.trajectories])
    np.testing.assert_array_equal(cls, _brute_labels(poses, pre, clearance, rc))
    assert 0 < cls.sum() < len(cls)  # both labels occur
    # every positive is within the tolerance of the pre-grasp pose; tightening it removes positives
    pos = poses[cls == 1]
    assert (np.linalg.norm(pos[:, :3, 3] - pre[:3, 3], axis=1) <= rc.stop_position_tolerance + 1e-12).all()
    tight = replace(rc, stop_position_tolerance=0.01)
    tight_cls = stop_labels(poses, pre, clearance, tight)
    assert (tight_cls <= cls).all() and tight_cls.sum() < cls.sum()
    assert stop_labels(pre[None], pre, clearance, rc).tolist() == [1]
    # the trajectories: 1 at the pre-grasp and wherever the rule says so, consistent with the samples
    for t in plan.trajectories:
        expect = _brute_labels(t.poses.numpy(), pre, clearance, rc)
        expect[-1] = 1
        np.testing.assert_array_equal(t.cls.numpy(), expect)


def test_pregrasp_labels_and_sample_counts(clearance):
    """'pregrasp' (the paper's single frame): no recovery sample is positive; the counts follow the config."""
    grasp = torch.from_numpy(grasp_poses()[0])
    cfg = _plan_cfg(add_recovery=True, waypoint_samples=2, waypoint_phases=(3,), pregrasp_samples=7)
    plan = plan_grasp(grasp, clearance, cfg, plan_seed(1))
    for t in plan.trajectories:
        rec = t.recovery
        assert rec.cls.sum() == 0 and t.cls.tolist() == [0] * (t.num_steps - 1) + [1]
        n3 = int((t.phase[:-1] == 3).sum())
        assert rec.num_samples <= 2 * n3 + 7
        assert int((rec.source == PREGRASP_SOURCE).sum()) <= 7
        src = rec.source[rec.source >= 0].long()
        assert (t.phase[src] == 3).all()
        # the waypoint samples stay within the noise of their waypoint
        off = torch.linalg.vector_norm(rec.poses[rec.source >= 0, :3, 3] - t.poses[src, :3, 3], dim=-1)
        assert float(off.max()) <= cfg.recovery.position_noise + 1e-12
        ang = angle_between_rotations(rec.poses[rec.source >= 0, :3, :3], t.poses[src, :3, :3])
        assert float(ang.max()) <= math.radians(cfg.recovery.rotation_noise_deg) + 1e-9
        # and every sample keeps the plan's clearance (Eq. 14)
        assert float(clearance.min_distance(rec.poses[:, :3, 3]).min()) > cfg.d_min
    # deterministic: the same plan twice gives the same samples
    again = plan_grasp(grasp, clearance, cfg, plan_seed(1))
    assert all(
        torch.equal(a.recovery.poses, b.recovery.poses) for a, b in zip(plan.trajectories, again.trajectories)
    )


def test_config_validation_and_round_trip():
    with pytest.raises(ValueError, match="RecoveryConfig.stop_label"):
        RecoveryConfig(stop_label="near").validate()
    with pytest.raises(ValueError, match="RecoveryConfig.stop_band"):
        RecoveryConfig(stop_band=(0.45, 0.35)).validate()
    with pytest.raises(ValueError, match="RecoveryConfig.waypoint_phases"):
        RecoveryConfig(waypoint_phases=(0, 3)).validate()
    with pytest.raises(ValueError, match="RecoveryConfig.position_noise"):
        PlanConfig(recovery=RecoveryConfig(position_noise=-0.01)).validate()
    cfg = PlanConfig(recovery=RecoveryConfig(add_recovery=True, stop_band=(0.3, 0.5), waypoint_phases=(2,)))
    back = PlanConfig(**cfg.as_dict())  # what a JSON round trip of the plan gives
    assert back == cfg and isinstance(back.recovery, RecoveryConfig)


def test_recovery_round_trip_and_validation(tmp_path, scene, plan_on):
    cfg, plan = plan_on
    renderer = HandEyeRenderer(scene, HandEyeConfig(width=32, height=24), backend="cpu", batch_size=8)
    traj = plan.trajectories[1]
    ep = build_episode(
        traj,
        plan.clearances[1],
        plan.grasp_pose,
        plan.pregrasp_pose,
        renderer,
        {"scene_id": "s", "start_id": 1},
    )
    rec = ep.recovery
    assert rec.rgb.shape == (traj.recovery.num_samples, 24, 32, 3) and ep.attrs["stop_label"] == "tolerance"
    assert (rec.mask == LABEL_OBJECT).any()
    path = write_episode(tmp_path / "on.hdf5", ep)
    assert validate_episode(path, image_size=(32, 24)) == []
    back = read_episode(path)
    for key in ("rgb", "mask", "actions", "cls", "poses", "camera_poses", "clearance", "phase", "source"):
        np.testing.assert_array_equal(getattr(back.recovery, key), getattr(rec, key))
    ds = DemoDataset([path])
    assert len(ds) == ep.num_samples + rec.num_samples
    item = ds[ep.num_samples + 2]
    assert item["recovery"] and torch.equal(
        item["action"], torch.from_numpy(rec.actions[2].astype(np.float32))
    )
    ds.close()
    assert len(DemoDataset([path], include_recovery=False)) == ep.num_samples
    with h5py.File(path, "r+") as f:
        f["data/demo_0/recovery/actions"][0, 0] = np.nan
    assert any("recovery/actions contains NaN" in e for e in validate_episode(path))
    # a 'pregrasp'-labelled episode may not carry positive recovery samples
    path2 = write_episode(tmp_path / "on2.hdf5", ep)
    with h5py.File(path2, "r+") as f:
        del f["data/demo_0"].attrs["stop_label"]
        f["data/demo_0/cls"][...] = 0
        f["data/demo_0/cls"][-1] = 1
        f["data/demo_0/recovery/cls"][0] = 1
    assert any("recovery/cls" in e for e in validate_episode(path2))


def test_recovery_samples_default_to_the_plans_config(clearance, plan_on):
    cfg, plan = plan_on
    t = plan.trajectories[0]
    again = recovery_samples(t, plan.pregrasp_pose, clearance, cfg)
    assert torch.equal(again.poses, t.recovery.poses) and torch.equal(again.cls, t.recovery.cls)


def test_final_approach_reaches_the_samples_labels(clearance, plan_on):
    """With the plan's final approach on, the planned trajectories and every recovery sample's action
    follow it: within ``final_approach_distance`` of the pre-grasp a step moves at most
    ``final_approach_step`` (and strictly closer), and the expert alone still reaches the pre-grasp."""
    cfg0, _ = plan_on
    cfg = replace(cfg0, final_approach_distance=0.08, final_approach_step=0.015).validate()
    grasp = torch.from_numpy(grasp_poses()[0])
    plan = plan_grasp(grasp, clearance, cfg, plan_seed(1))
    pre, target = plan.pregrasp_pose, clearance.object_center
    kw = {"d": cfg.d, "phi": 0.0, "translation_step": STEP_T, "rotation_step": math.radians(STEP_R_DEG)}
    fin = {"final_distance": 0.08, "final_step": 0.015}
    checked = 0
    for traj in plan.trajectories:
        assert torch.equal(plan_three_phase(traj.poses[0], pre, target, **kw, **fin).poses, traj.poses)
        rec = traj.recovery
        for _, i, p, q, d0 in _sample_steps(traj, pre):
            if int(rec.phase[i]) == 3 and d0 <= 0.08:
                checked += 1
                assert float(torch.linalg.vector_norm(q[:3, 3] - p[:3, 3])) <= 0.015 + 1e-9
                assert float(torch.linalg.vector_norm(q[:3, 3] - pre[:3, 3])) < d0 - 1e-9 or d0 < 1e-9
        pose = _follow_expert(rec.poses[0], int(rec.phase[0]), pre, target, {**kw, **fin}, max_steps=80)
        assert torch.allclose(pose, pre, atol=1e-9)
    assert checked > 0


def test_phase2_aim_recovery_labels_turn_back_to_the_object(clearance, plan_on):
    """With `PlanConfig.phase2_aim` the phase-2 recovery samples (perturbed off their waypoint, object
    off-centre) are labelled with a step that is one translation step closer to the pre-grasp position
    and faces the object again (turns within the limit allowing), and following the expert from every
    sample still lands exactly on the pre-grasp pose."""
    cfg0, _ = plan_on
    grasp = torch.from_numpy(grasp_poses()[0])
    cfg = replace(cfg0, phase2_aim=True, recovery=replace(cfg0.recovery, waypoint_phases=(1, 2, 3)))
    plan = plan_grasp(grasp, clearance, cfg, plan_seed(1))
    pre, target = plan.pregrasp_pose, clearance.object_center
    kw = cfg.step_kwargs()
    assert kw["phase2_aim"] is True

    phase2 = 0
    for traj in plan.trajectories:
        for j in range(traj.t1 + 1, traj.t2 + 1):  # the waypoints themselves face the object
            assert view_angle_deg(traj.poses[j], target) < math.degrees(1e-6)
        rec = traj.recovery
        for _, i, p, q, d0 in _sample_steps(traj, pre):
            if int(rec.phase[i]) != 2:
                continue
            phase2 += 1
            d1 = float(torch.linalg.vector_norm(q[:3, 3] - pre[:3, 3]))
            assert d1 == pytest.approx(d0 - STEP_T, abs=1e-9)
            turn = float(angle_between_rotations(p[:3, :3], q[:3, :3]))
            assert view_angle_deg(q, target) < math.degrees(1e-6) or turn == pytest.approx(
                math.radians(STEP_R_DEG), abs=1e-9
            )
            assert torch.allclose(_follow_expert(p, 2, pre, target, kw), pre, atol=1e-9)
    assert phase2 > 0
