"""Shared inputs for the reliability suite: one small valid input per stage, built once per session.

The suite corrupts copies of these (tests/reliability/test_bad_inputs.py) and kills the real command
mid-run (test_kill_resume.py). The small inputs come from the stages' own test helpers, which live in
tests/recon and tests/trajgen: test folders are not packages, so those folders go on sys.path here (pytest
puts them there anyway when it collects them; module names are unique across the test folders).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
for _folder in ("recon", "trajgen"):
    if str(TESTS / _folder) not in sys.path:
        sys.path.insert(0, str(TESTS / _folder))

from test_recon_pipeline import make_tiny_capture  # noqa: E402  (3 rendered 64x48 views with masks)
from test_traj_fixtures import small_camera, small_plan, write_run  # noqa: E402  (scene + grasps.json)


@pytest.fixture(scope="session")
def capture_dir(tmp_path_factory) -> Path:
    """A valid capture: 3 views (cam0..cam2) of an object held by a hand, 64x48, with masks."""
    return make_tiny_capture(tmp_path_factory.mktemp("capture") / "cap")


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory) -> Path:
    """A valid run folder: scene/{scene,hand,object}.ply and grasps.json with two targets."""
    return write_run(tmp_path_factory.mktemp("runs"), "run_a", seed=0)


@pytest.fixture(scope="session")
def other_run_dir(tmp_path_factory) -> Path:
    """Another scene's run folder (a different point cloud, its own grasps.json)."""
    return write_run(tmp_path_factory.mktemp("runs_other"), "run_b", num=2500, seed=1)


@pytest.fixture(scope="session")
def demos_dir(tmp_path_factory, run_dir) -> Path:
    """A valid demonstration dataset of run_dir: 6 episodes of 32x32 frames, index.json, demos.hdf5."""
    from trajgen.batch import DemosConfig, run_demos

    out = tmp_path_factory.mktemp("demos") / "demos"
    cfg = DemosConfig(scenes=(str(run_dir),), out=str(out), plan=small_plan(), camera=small_camera(),
                      workers=1, pictures=False, progress=False)  # fmt: skip
    assert run_demos(cfg).episodes == 6
    return out


@pytest.fixture(scope="session")
def policy_dir(tmp_path_factory, demos_dir) -> Path:
    """A tiny trained policy folder: model.safetensors, config.json, train_state.pt."""
    from reliability_helpers import train_config

    from policy.train import run_train

    out = tmp_path_factory.mktemp("policy") / "policy"
    run_train(train_config(demos_dir, out))
    return out
