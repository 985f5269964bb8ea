"""The reliability catalogue: one bad input per row, fed to the real stage entry point.

Every row builds a small valid input (conftest.py), breaks it in one specific way, runs the stage, and
asserts (a) a clear error: the exception (or `splatsim: error:` on stderr, exit code 2) names the file,
the field or value, and what was expected, and (b) no partial output: the stage's output folder or file
was not created, or what was there is untouched, and no temporary file is left.

The formats' own tests check many more variants of each row in depth (referenced per section):
tests/recon/test_capture.py (WRITE_CASES, LOAD_CASES), tests/recon/test_readers.py,
tests/splatsim/test_ply.py, tests/trajgen/test_grasps.py, tests/trajgen/test_dataset.py,
tests/trajgen/test_batch.py, tests/policy/test_policy_train.py. docs/reliability.md lists the rows with
the messages a user sees.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import imageio.v3 as iio
import numpy as np
import pytest
from reliability_helpers import assert_names, copy, drop_ply_property, temporaries, train_config, truncate
from test_readers import make_nerfstudio
from test_recon_pipeline import tiny_config
from test_traj_fixtures import small_camera, small_plan

from policy.checkpoint import MODEL_FILE, load_policy
from policy.data import load_demos
from policy.model import ModelConfig, PolicyNet
from policy.train import TRAIN_STATE, run_train
from recon.capture import CAPTURE_JSON, CaptureError
from recon.pipeline import run_recon
from recon.readers.nerfstudio import read_nerfstudio
from trajgen.batch import DemosConfig, run_demos
from trajgen.grasp_io import GraspFileError
from trajgen.grasps import GraspConfig, run_grasps
from ui.cli import main

REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------------------------------
# Capture -> reconstruction (`run_recon`, `splatsim recon`). In depth: tests/recon/test_capture.py
# (30 load cases, 22 write cases), tests/recon/test_readers.py (DexYCB and nerfstudio).
# --------------------------------------------------------------------------------------------------


def _edit_capture_json(fn):
    def mutate(root: Path) -> None:
        path = root / CAPTURE_JSON
        data = json.loads(path.read_text())
        fn(data)
        path.write_text(json.dumps(data))  # json writes NaN as the bare token NaN, which it reads back

    return mutate


def _nan_pose(data) -> None:
    data["views"][1]["c2w"][0][3] = float("nan")


def _empty_masks(root: Path) -> None:
    for path in sorted((root / "masks").glob("*.png")):
        iio.imwrite(path, np.zeros_like(iio.imread(path)))


CAPTURE_CASES = {
    # row: (how the valid capture is broken, fragments the CaptureError must hold)
    "truncated PNG": (
        lambda root: truncate(root / "rgb" / "cam1.png"),
        ["rgb/cam1.png", "cannot decode rgb file", "truncated"],
    ),
    "wrong depth unit: millimetres labelled as metres": (
        _edit_capture_json(lambda d: d.update(depth_scale=1.0)),
        ["depth/cam0.png", "depth_scale = 1.0", "millimetres labelled as metres", "set depth_scale to 0.001"],
    ),
    "wrong depth unit: metres stored as uint16": (
        _edit_capture_json(lambda d: d.update(depth_scale=1e-5)),
        ["depth/cam0.png", "depth_scale = 1e-05", "metres stored as uint16"],
    ),
    "NaN pose": (
        _edit_capture_json(_nan_pose),
        [CAPTURE_JSON, "views[1] ('cam1')", "c2w = [[", "nan", "non-finite entries"],
    ),
    "empty masks": (
        _empty_masks,
        [CAPTURE_JSON, "no mask of any view has object pixels (label 1)", "0 background, 1 object, 2 hand"],
    ),
    "zero-size image file": (
        lambda root: (root / "rgb" / "cam1.png").write_bytes(b""),
        ["rgb/cam1.png", "cannot decode rgb file", "truncated or not an image"],
    ),
    "zero image size in capture.json": (
        _edit_capture_json(lambda d: d["views"][1].update(width=0)),
        [CAPTURE_JSON, "('cam1')", "width = 0", "expected a positive whole number of pixels"],
    ),
}


@pytest.mark.parametrize("case", list(CAPTURE_CASES))
def test_bad_capture_stops_reconstruction_before_any_output(capture_dir, tmp_path, case):
    mutate, fragments = CAPTURE_CASES[case]
    capture = copy(capture_dir, tmp_path / "capture")
    mutate(capture)
    out = tmp_path / "scene"
    with pytest.raises(CaptureError) as err:
        run_recon(tiny_config(), capture, out)
    assert_names(str(err.value), str(capture), *fragments)
    assert not out.exists()  # checked before the output folder is made: no checkpoint, no scene.ply


def test_bad_capture_on_the_command_line_exit_code_2_and_no_traceback(capture_dir, tmp_path):
    """The real command in its own process: the message on stderr, exit code 2, nothing written."""
    capture = copy(capture_dir, tmp_path / "capture")
    truncate(capture / "rgb" / "cam1.png")
    out = tmp_path / "scene"
    proc = subprocess.run(
        [sys.executable, "-m", "ui.cli", "recon", "--capture", str(capture), "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NUMBA_NUM_THREADS": "1"},
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("splatsim: error: "), proc.stderr
    assert_names(proc.stderr, str(capture / "rgb" / "cam1.png"), "truncated")
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_nan_pose_in_a_nerfstudio_transforms_json_names_the_source_frame(tmp_path):
    nan_pose = np.eye(4)
    nan_pose[0, 3] = np.nan
    transforms, _ = make_nerfstudio(tmp_path / "ns", transform_matrix=nan_pose.tolist())
    out = tmp_path / "capture"
    with pytest.raises(CaptureError) as err:
        read_nerfstudio(transforms, out)
    assert_names(str(err.value), str(transforms), "frames[0]", "transform_matrix = [[", "nan", "non-finite")
    assert not (out / CAPTURE_JSON).exists() and not [p for p in out.rglob("*") if p.is_file()]


# --------------------------------------------------------------------------------------------------
# Scene -> grasps (`run_grasps`, `splatsim grasps`). In depth: tests/splatsim/test_ply.py (read_ply),
# tests/trajgen/test_grasps.py (load_points, grasps.json reader).
# --------------------------------------------------------------------------------------------------


def test_ply_without_x_stops_the_grasp_stage(run_dir, tmp_path, capsys):
    scene = copy(run_dir / "scene", tmp_path / "scene")
    drop_ply_property(scene / "object.ply", "x")
    out = tmp_path / "grasps.json"
    with pytest.raises(ValueError) as err:
        run_grasps(GraspConfig(), scene, out)
    assert_names(str(err.value), str(scene / "object.ply"), "vertex lacks ['x']", "expected x y z")
    # The command: the same message, exit code 2.
    assert main(["grasps", "--scene", str(scene), "--out", str(out)]) == 2
    assert_names(capsys.readouterr().err, "splatsim: error: ", str(scene / "object.ply"), "['x']")
    assert not out.exists() and not (tmp_path / "grasps.png").exists() and not temporaries(tmp_path)


def test_empty_object_point_cloud_names_the_file_and_the_masks(run_dir, tmp_path):
    """What empty object masks lead to downstream: a reconstruction with no object Gaussian."""
    from splatsim.ply import read_ply, write_ply
    from splatsim.scene import LABEL_OBJECT

    scene = copy(run_dir / "scene", tmp_path / "scene")
    hand_only = read_ply(scene / "hand.ply")
    write_ply(hand_only.select_label(LABEL_OBJECT), scene / "object.ply")  # 0 Gaussians
    out = tmp_path / "grasps.json"
    with pytest.raises(ValueError) as err:
        run_grasps(GraspConfig(), scene, out)
    assert_names(
        str(err.value), str(scene / "object.ply"), "0 object points", "expected at least 10", "masks"
    )
    assert not out.exists() and not (tmp_path / "grasps.png").exists()


# --------------------------------------------------------------------------------------------------
# Scene + grasps -> demonstrations (`run_demos`, `splatsim demos`). In depth: tests/trajgen/test_grasps.py
# (test_grasps_from_another_scene_are_refused), tests/trajgen/test_batch.py (config checks).
# --------------------------------------------------------------------------------------------------


def _demos_config(run: Path, out: Path) -> DemosConfig:
    return DemosConfig(scenes=(str(run),), out=str(out), plan=small_plan(), camera=small_camera(), workers=1,
                       pictures=False, progress=False)  # fmt: skip


def test_scene_ply_without_opacity_stops_the_demos_before_any_output(run_dir, tmp_path):
    run = copy(run_dir, tmp_path / "run")
    drop_ply_property(run / "scene" / "scene.ply", "opacity")
    out = tmp_path / "demos"
    with pytest.raises(ValueError) as err:
        run_demos(_demos_config(run, out))
    assert_names(
        str(err.value), str(run / "scene" / "scene.ply"), "missing vertex properties ['opacity']", "expected"
    )
    assert not out.exists()


def test_grasps_file_from_another_scene_stops_the_demos_before_any_output(
    run_dir, other_run_dir, tmp_path, capsys
):
    run = copy(run_dir, tmp_path / "run")
    shutil.copy(other_run_dir / "grasps.json", run / "grasps.json")
    out = tmp_path / "demos"
    with pytest.raises(GraspFileError) as err:
        run_demos(_demos_config(run, out))
    assert_names(
        str(err.value),
        str(run / "grasps.json"),
        "computed for another scene",
        "object point cloud hash",
        "Recompute the grasps for this scene (`splatsim grasps`)",
    )
    # No output folder either: a config.json recording the wrong grasps would refuse the fixed rerun.
    assert not out.exists()
    args = ["demos", "--scenes", str(run), "--out", str(out), "--workers", "1", "--no-progress"]
    assert main(args) == 2
    assert_names(capsys.readouterr().err, "splatsim: error: ", "computed for another scene")
    assert not out.exists()


def test_truncated_grasps_file_stops_the_demos(run_dir, tmp_path):
    run = copy(run_dir, tmp_path / "run")
    truncate(run / "grasps.json")  # e.g. copied by a transfer that was killed
    out = tmp_path / "demos"
    with pytest.raises(GraspFileError) as err:
        run_demos(_demos_config(run, out))
    assert_names(str(err.value), str(run / "grasps.json"), "not valid JSON")
    assert not out.exists()


# --------------------------------------------------------------------------------------------------
# Demonstrations -> training (`run_train`, `splatsim train`). In depth: tests/trajgen/test_dataset.py
# (validate_episode), tests/trajgen/test_batch.py (a rerun of `splatsim demos` redoes damaged episodes).
# --------------------------------------------------------------------------------------------------


def _an_episode(demos: Path) -> Path:
    return sorted((demos / "episodes").rglob("*.hdf5"))[2]


def test_dataset_shard_killed_mid_write_truncated_episode(demos_dir, tmp_path, capsys):
    """An episode file cut short (a copy or a writer that did not use the atomic rename)."""
    demos = copy(demos_dir, tmp_path / "demos")
    episode = _an_episode(demos)
    truncate(episode, keep=0.1)
    out = tmp_path / "policy"
    with pytest.raises(ValueError) as err:
        run_train(train_config(demos, out))
    assert_names(str(err.value), str(episode), "cannot read this HDF5 episode", "truncated or damaged",
                 "rerun `splatsim demos`")  # fmt: skip
    assert not out.exists()
    args = ["train", "--data", str(demos), "--out", str(out), "--image-size", "32", "--width", "4",
            "--max-steps", "1", "--no-progress"]  # fmt: skip
    assert main(args) == 2
    assert_names(capsys.readouterr().err, "splatsim: error: ", str(episode), "truncated or damaged")
    assert not out.exists()


def test_dataset_shard_killed_mid_write_uncommitted_episode(demos_dir, tmp_path):
    """A whole-looking episode whose writer never set `committed` (renamed into place by hand)."""
    demos = copy(demos_dir, tmp_path / "demos")
    episode = _an_episode(demos)
    with h5py.File(episode, "a") as f:
        f.attrs["committed"] = False
    out = tmp_path / "policy"
    with pytest.raises(ValueError) as err:
        run_train(train_config(demos, out))
    assert_names(str(err.value), str(episode), "committed = False", "partially written")
    assert not out.exists()


def test_a_killed_writers_temporary_episode_is_never_read(demos_dir, tmp_path):
    """Not an error: `<episode>.hdf5.tmp-<pid>` is what a killed writer leaves; loaders skip it."""
    demos = copy(demos_dir, tmp_path / "demos")
    episode = _an_episode(demos)
    partial = episode.with_name(episode.name + ".tmp-12345")
    partial.write_bytes(episode.read_bytes()[:3000])
    (demos / "index.json").unlink()  # no index: the loader searches the folder for episode files
    assert len(load_demos([demos], 32).episodes) == 6


# --------------------------------------------------------------------------------------------------
# Checkpoints from another configuration, damaged checkpoints. In depth: tests/policy/test_policy_train.py
# (test_resume_refuses_other_config, test_init_from_keeps_the_statistics), tests/recon/test_optimize.py
# (test_checkpoint_round_trip: a damaged recon checkpoint), tests/recon/test_recon_pipeline.py
# (test_changed_config_or_no_resume_starts_over: a recon checkpoint of another config is not resumed).
# --------------------------------------------------------------------------------------------------


def test_policy_weights_from_a_different_config_are_refused(policy_dir, tmp_path, capsys):
    """model.safetensors of a width-8 network beside a config.json that says width 4."""
    from safetensors.torch import save_file

    policy = copy(policy_dir, tmp_path / "policy")
    other = PolicyNet(ModelConfig(32, 8)).state_dict()
    save_file({k: v.contiguous() for k, v in other.items()}, str(policy / MODEL_FILE))
    with pytest.raises(ValueError) as err:
        load_policy(policy)
    assert_names(str(err.value), str(policy / MODEL_FILE), "weights do not match", "config.json")
    out = tmp_path / "export"
    assert main(["export", "--policy", str(policy), "--out", str(out)]) == 2
    assert_names(capsys.readouterr().err, "splatsim: error: ", str(policy / MODEL_FILE), "do not match")
    assert not out.exists()


def test_init_from_a_policy_of_a_different_config_is_refused(demos_dir, policy_dir, tmp_path):
    out = tmp_path / "policy"
    with pytest.raises(ValueError) as err:
        run_train(train_config(demos_dir, out, model=ModelConfig(32, 8), init_from=policy_dir))
    assert_names(str(err.value), "TrainConfig.init_from", str(policy_dir), "'width': 4", "differs from",
                 "'width': 8")  # fmt: skip
    assert not out.exists()


def test_damaged_training_state_is_refused_and_the_policy_left_as_it_was(demos_dir, policy_dir, tmp_path):
    policy = copy(policy_dir, tmp_path / "policy")
    truncate(policy / TRAIN_STATE)  # e.g. a copy killed mid-transfer
    before = {p.name: p.read_bytes() for p in policy.iterdir()}
    with pytest.raises(ValueError) as err:
        run_train(train_config(demos_dir, policy, max_steps=2))
    assert_names(str(err.value), str(policy / TRAIN_STATE), "cannot be read as a training state",
                 "--no-resume")  # fmt: skip
    assert {p.name: p.read_bytes() for p in policy.iterdir()} == before
    assert not temporaries(policy)


def test_training_state_of_another_config_is_not_resumed_and_says_so(demos_dir, policy_dir, tmp_path):
    """Not an error, by design (like `splatsim recon`): a changed configuration trains afresh."""
    policy = copy(policy_dir, tmp_path / "policy")
    messages: list[str] = []
    res = run_train(train_config(demos_dir, policy, lr=3e-4), log=messages.append)
    assert res.resumed_from_step is None and res.steps == 1
    assert any(
        "train_state.pt belongs to another configuration or data; starting afresh" in m for m in messages
    )
