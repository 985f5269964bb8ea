"""Tiny scenes and grasps for the trajectory, dataset and batch tests (helpers; the one test checks them).

`object_like_scene` (splatsim.scene) lives in a camera frame: the objects sit ~0.6 m along +z, a hand blob
in front of the cylinder, a background plane behind, and world "up" is -y. Two hand-made grasps approach
the sphere (along +z) and the box (from above, along +y); both are far from the hand.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from splatsim.ply import write_ply
from splatsim.scene import LABEL_HAND, LABEL_OBJECT, object_like_scene
from trajgen.grasp_io import FILTERS, scene_fingerprint, write_grasps_json
from trajgen.handeye import HandEyeConfig
from trajgen.planning import PlanConfig

UP = (0.0, -1.0, 0.0)


def view_angle_deg(pose, target) -> float:
    """Degrees between a pose's viewing axis (+z) and the direction from it to ``target`` (an independent
    check of `trajgen.trajectory`'s own view angle)."""
    d = target - pose[:3, 3]
    cos = float(pose[:3, 2] @ d / float(np.linalg.norm(np.asarray(d, dtype=np.float64))))
    return math.degrees(math.acos(max(-1.0, min(1.0, cos))))


def grasp_poses() -> np.ndarray:  # [2, 4, 4]
    sphere = np.eye(4)
    sphere[:3, 3] = [-0.12, 0.0, 0.50]  # approach +z, closing +x
    box = np.eye(4)
    box[:3, :3] = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])  # columns x, y, z=(0,1,0)
    box[:3, 3] = [0.0, -0.07, 0.60]
    return np.stack([sphere, box])


def write_run(root: Path, name: str = "run_a", num: int = 3000, seed: int = 0) -> Path:
    """A run folder: scene/{scene,hand,object}.ply and grasps.json (two targets)."""
    run = Path(root) / name
    scene_dir = run / "scene"
    scene_dir.mkdir(parents=True, exist_ok=True)
    scene = object_like_scene(num, seed=seed)
    write_ply(scene, scene_dir / "scene.ply")
    hand, obj = scene.select_label(LABEL_HAND), scene.select_label(LABEL_OBJECT)
    write_ply(hand, scene_dir / "hand.ply")
    write_ply(obj, scene_dir / "object.ply")
    poses = grasp_poses()
    obj_pts = obj.means.double().numpy()
    hand_pts = hand.means.double().numpy()
    candidates = [
        {"id": i, "status": "kept", "rank": i, "pose": p.tolist(), "width": 0.05, "opening": 0.06,
         "center": (p[:3, 3] + 0.045 * p[:3, 2]).tolist(), "score": 0.9 - 0.1 * i, "antipodal": 0.9,
         "centring": 0.9, "clearance": 0.2, "eq1_distance": 0.2, "beyond_fraction": 1.0}
        for i, p in enumerate(poses)
    ]  # fmt: skip
    doc = {
        "format": "splatsim.grasps",
        "version": 1,
        "fingerprint": scene_fingerprint(obj_pts, hand_pts),
        "object_mean": obj_pts.mean(0).tolist(),
        "gripper": {},
        "config": {},
        "summary": {"candidates": len(poses), "kept": len(poses), "rejected": dict.fromkeys(FILTERS, 0)},
        "targets": list(range(len(poses))),
        "candidates": candidates,
    }
    write_grasps_json(run / "grasps.json", doc)
    return run


def small_plan(**kw) -> PlanConfig:
    """Paper parameters, but 3 starts per grasp and coarse steps (short episodes)."""
    args = dict(k=3, up=UP, translation_step=0.08, rotation_step_deg=15.0)
    args.update(kw)
    return PlanConfig(**args)


def small_camera() -> HandEyeConfig:
    return HandEyeConfig(width=32, height=32)


def test_fixture_run_reads_back(tmp_path):
    from trajgen.grasp_io import read_grasps

    run = write_run(tmp_path)
    grasps = read_grasps(run / "grasps.json", scene_dir=run / "scene")
    assert grasps.targets.tolist() == [0, 1]
    R = grasps.poses[:, :3, :3]
    assert np.allclose(R @ R.transpose(0, 2, 1), np.eye(3)) and np.allclose(np.linalg.det(R), 1.0)
