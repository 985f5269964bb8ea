"""Fixtures for the policy tests: a tiny scene, a few rendered episodes on disk, a tiny trained policy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from policy_test_helpers import SIZE, tiny_intrinsics, toy_env_args, toy_episode

from policy.env import SplatEnv
from splatsim.scene import object_like_scene


@pytest.fixture(scope="session")
def tiny_scene():
    return object_like_scene(1500, seed=0)


@pytest.fixture(scope="session")
def tiny_env(tiny_scene) -> SplatEnv:
    return SplatEnv(tiny_scene, tiny_intrinsics())


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory, tiny_env) -> Path:
    """Six episodes in trajgen's on-disk format (one HDF5 file each), two scene ids."""
    from trajgen.dataset import write_episode

    out = tmp_path_factory.mktemp("demos")
    target = tiny_env.geometry.object_center
    rng = np.random.default_rng(0)
    env_args = toy_env_args(tiny_env, plan={"radius": 0.7, "alpha_min_deg": 60.0, "min_height": None})
    for e in range(6):
        scene_id = "toy_a" if e < 3 else "toy_b"
        start = target + np.array([rng.uniform(-0.2, 0.2), rng.uniform(-0.2, 0.2), -0.7])
        attrs = {"scene_id": scene_id, "episode_key": f"{scene_id}/e{e}", "grasp_rank": 0, "start_id": e}
        write_episode(
            out / "episodes" / scene_id / f"e{e}.hdf5",
            toy_episode(tiny_env, start, attrs),
            env_args={**env_args, "scene_id": scene_id},
        )
    return out


@pytest.fixture(scope="session")
def trained_policy(tmp_path_factory, demo_dir) -> Path:
    """A tiny policy trained for 3 steps."""
    from policy.model import ModelConfig
    from policy.train import TrainConfig, run_train

    out = tmp_path_factory.mktemp("policy")
    cfg = TrainConfig(
        data=(demo_dir,),
        out=out,
        model=ModelConfig(SIZE, 4),
        epochs=1,
        batch_size=4,
        max_steps=3,
        progress=False,
    )
    run_train(cfg)
    return out


@pytest.fixture(scope="session")
def exported_policy(tmp_path_factory, trained_policy) -> Path:
    from policy.export import ExportConfig, run_export

    out = tmp_path_factory.mktemp("export")
    run_export(ExportConfig(policy=trained_policy, out=out, check_samples=4))
    return out
