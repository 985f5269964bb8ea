"""Helpers shared by the policy tests (a uniquely named module: test folders are not packages)."""

from __future__ import annotations

import numpy as np
import torch

from splatsim.conventions import PinholeIntrinsics, look_at

SIZE = 32
"""Image size of the fixtures' episodes (pixels)."""


def tiny_intrinsics(size: int = SIZE) -> PinholeIntrinsics:
    return PinholeIntrinsics.from_fov(0.8, size, size)


def approach_poses(start: np.ndarray, target: np.ndarray, steps: int) -> torch.Tensor:
    """Cameras on the straight line from ``start`` toward ``target``, stopping 0.43 m short, looking at it."""
    direction = (target - start) / np.linalg.norm(target - start)
    end = target - 0.43 * direction
    eyes = torch.from_numpy(np.linspace(start, end, steps))
    return look_at(eyes, torch.from_numpy(target).expand(steps, 3), up=(0.0, -1.0, 0.0))


def toy_env_args(env, **extra) -> dict:
    """A shard's ``/data`` env_args for episodes rendered by ``env`` (a `policy.env.SplatEnv`)."""
    intr = env.intrinsics
    return {
        "intrinsics": {
            "fx": intr.fx,
            "fy": intr.fy,
            "cx": intr.cx,
            "cy": intr.cy,
            "width": SIZE,
            "height": SIZE,
        },
        "gripper_T_camera": np.eye(4).tolist(),
        "camera": {"background": [0.0, 0.0, 0.0]},
        **extra,
    }


def toy_episode(
    env, start: np.ndarray, attrs: dict, *, steps: int = 5, depth: bool = False, recovery: int = 0
):
    """A `trajgen.episodes.Episode` approaching ``env``'s object from ``start`` (`approach_poses`), its
    images rendered by ``env``; with ``depth`` its depth too, with ``recovery`` > 0 that many recovery
    samples (the first poses again, labelled 0)."""
    from trajgen.episodes import Episode, RecoveryFrames
    from trajgen.trajectory import trajectory_actions

    poses = approach_poses(start, env.geometry.object_center, steps)
    rgb, mask, *d = env.render(poses, with_depth=depth)
    cls = np.zeros(steps, np.uint8)
    cls[-1] = 1
    rec = None
    if recovery:
        r_rgb, r_mask, *r_d = env.render(poses[:recovery], with_depth=depth)
        rec = RecoveryFrames(
            rgb=r_rgb,
            mask=r_mask,
            actions=np.zeros((recovery, 6)),
            cls=np.zeros(recovery, np.uint8),
            poses=poses[:recovery].numpy(),
            camera_poses=poses[:recovery].numpy(),
            clearance=np.ones((recovery, 2), np.float32),
            phase=np.full(recovery, 2, np.uint8),
            source=np.zeros(recovery, np.int16),
            depth=r_d[0] if depth else None,
        )
    return Episode(
        rgb=rgb,
        mask=mask,
        actions=trajectory_actions(poses).numpy(),
        cls=cls,
        poses=poses.numpy(),
        camera_poses=poses.numpy(),
        clearance=np.ones((steps, 2), np.float32),
        phase=np.full(steps, 2, np.uint8),
        grasp_pose=np.eye(4),
        pregrasp_pose=poses[-1].numpy(),
        attrs=attrs,
        recovery=rec,
        depth=d[0] if depth else None,
    )
