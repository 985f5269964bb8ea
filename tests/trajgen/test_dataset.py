"""The episode HDF5 format: round trip, plain-h5py access, validation catching corruption, the torch
Dataset (with background removal), and the renderer's culling matching an unculled render."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
import torch
from test_traj_fixtures import UP, grasp_poses

from splatsim.render import render
from splatsim.scene import LABEL_HAND, LABEL_OBJECT, object_like_scene
from trajgen.dataset import DemoDataset, read_episode, validate_episode, write_episode
from trajgen.episodes import HandEyeRenderer, build_episode
from trajgen.handeye import HandEyeConfig, policy_intrinsics
from trajgen.planning import PlanConfig, PointClearance, plan_grasp, plan_seed


@pytest.fixture(scope="module")
def scene():
    return object_like_scene(4000, seed=1)


@pytest.fixture(scope="module")
def episodes(scene):
    clearance = PointClearance(
        scene.select_label(LABEL_HAND).means.numpy(), scene.select_label(LABEL_OBJECT).means.numpy()
    )
    cfg = PlanConfig(k=2, up=UP, translation_step=0.06, rotation_step_deg=10.0)
    plan = plan_grasp(torch.from_numpy(grasp_poses()[0]), clearance, cfg, plan_seed(3))
    renderer = HandEyeRenderer(scene, HandEyeConfig(width=48, height=40), backend="cpu", batch_size=5)
    out = []
    for i, (traj, clear) in enumerate(zip(plan.trajectories, plan.clearances)):
        attrs = {"scene_id": "s", "grasp_rank": 0, "grasp_id": 7, "start_id": i, "plan_hash": "abc"}
        out.append(build_episode(traj, clear, plan.grasp_pose, plan.pregrasp_pose, renderer, attrs))
    return out


def test_round_trip_and_plain_h5py_layout(tmp_path, episodes):
    ep = episodes[0]
    path = write_episode(tmp_path / "e.hdf5", ep, env_args={"intrinsics": {"fx": 1.0}})
    assert not list(tmp_path.glob("*.tmp*"))
    back = read_episode(path)
    for key in ("rgb", "mask", "actions", "cls", "poses", "camera_poses", "clearance", "phase", "grasp_pose"):
        np.testing.assert_array_equal(getattr(back, key), getattr(ep, key))
    assert back.attrs["start_id"] == 0 and back.attrs["plan_hash"] == "abc"
    assert validate_episode(path, {"start_id": 0, "plan_hash": "abc"}, image_size=(48, 40)) == []
    # What docs/dataset_format.md promises, with plain h5py.
    with h5py.File(path, "r") as f:
        demo = f["data/demo_0"]
        T = demo.attrs["num_samples"]
        assert demo["obs/rgb"].shape == (T, 40, 48, 3) and demo["obs/rgb"].dtype == np.uint8
        assert demo["obs/rgb"].compression == "gzip" and demo["obs/mask"].dtype == np.uint8
        assert demo["actions"].shape == (T, 6) and demo["poses"].shape == (T, 4, 4)
        assert demo["clearance"].shape == (T, 2) and list(demo["cls"][()]).index(1) == T - 1
        assert json.loads(f["data"].attrs["env_args"])["intrinsics"]["fx"] == 1.0
        assert set(np.unique(demo["obs/mask"][()])) <= {0, 1, 2}
    # the episode sees the object and the hand-eye intrinsics are the policy's
    assert (ep.mask == LABEL_OBJECT).any()
    assert policy_intrinsics(HandEyeConfig(width=48, height=40)).width == ep.rgb.shape[2]


def _corrupt(path, how):
    if how == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        data = bytearray(path.read_bytes())
        data[-4000:-2000] = b"\x17" * 2000  # inside the compressed image chunks
        path.write_bytes(bytes(data))
    else:
        with h5py.File(path, "r+") as f:
            demo = f["data/demo_0"]
            if how == "nan":
                demo["actions"][1, 2] = np.nan
            elif how == "uncommitted":
                f.attrs["committed"] = False
            elif how == "cls":
                demo["cls"][0] = 1
            elif how == "shape":
                del demo["clearance"]
                demo["clearance"] = np.zeros((3, 2), np.float32)
            elif how == "label":
                demo["obs/mask"][0, 0, 0] = 9


@pytest.mark.parametrize("how", ["truncate", "garbage", "nan", "uncommitted", "cls", "shape", "label"])
def test_validation_catches_corruption(tmp_path, episodes, how):
    path = write_episode(tmp_path / "e.hdf5", episodes[0])
    assert validate_episode(path) == []
    _corrupt(path, how)
    errors = validate_episode(path)
    assert errors, how
    assert str(path) in errors[0]


def test_validation_checks_expected_ids(tmp_path, episodes):
    path = write_episode(tmp_path / "e.hdf5", episodes[0])
    assert validate_episode(path, {"start_id": 1})[0].endswith("attr start_id = 0; expected 1")


def test_failed_write_leaves_nothing(tmp_path, episodes):
    bad = episodes[0]
    bad = type(bad)(**{**vars(bad), "attrs": {"bad": object()}})  # not storable as an HDF5 attribute
    with pytest.raises(TypeError):
        write_episode(tmp_path / "e.hdf5", bad)
    assert list(tmp_path.iterdir()) == []


def test_torch_dataset_with_background_removal(tmp_path, episodes):
    files = [write_episode(tmp_path / f"e{i}.hdf5", ep) for i, ep in enumerate(episodes)]
    plain = DemoDataset(files, remove_background=False)
    masked = DemoDataset(files)
    assert len(masked) == sum(ep.num_samples for ep in episodes)
    last = episodes[0].num_samples - 1
    item = masked[last]
    assert item["episode"] == 0 and item["step"] == last and item["cls"] == 1.0
    assert item["rgb"].shape == (3, 40, 48) and item["masks"].shape == (2, 40, 48)
    label = torch.from_numpy(episodes[0].mask[last].astype(np.int64))
    assert torch.equal(item["label"], label)
    assert torch.equal(item["masks"][0], (label == 2).float()) and torch.equal(
        item["masks"][1], (label == 1).float()
    )
    raw = plain[last]["rgb"]
    assert torch.equal(item["rgb"], raw * (label > 0)) and bool((raw[:, label == 0] > 0).any())
    np.testing.assert_allclose(item["action"].numpy(), episodes[0].actions[last].astype(np.float32))
    nxt = masked[last + 1]
    assert nxt["episode"] == 1 and nxt["step"] == 0
    loader = torch.utils.data.DataLoader(masked, batch_size=4, shuffle=True, num_workers=0)
    batch = next(iter(loader))
    assert batch["rgb"].shape == (4, 3, 40, 48) and batch["action"].shape == (4, 6)
    masked.close()


def test_dataset_reads_a_demos_folder_index(tmp_path, episodes):
    out = tmp_path / "demos"
    (out / "episodes").mkdir(parents=True)
    entries = []
    for i, ep in enumerate(episodes):
        write_episode(out / "episodes" / f"e{i}.hdf5", ep)
        entries.append({"file": f"episodes/e{i}.hdf5"})
    (out / "index.json").write_text(json.dumps({"episodes": entries}))
    moved = tmp_path / "moved"
    shutil.copytree(out, moved)  # relative paths: the folder can move
    assert len(DemoDataset(moved)) == sum(ep.num_samples for ep in episodes)


def test_culled_batches_render_like_the_full_scene(scene, episodes):
    cams = torch.from_numpy(episodes[0].camera_poses)
    cfg = HandEyeConfig(width=48, height=40)
    culled = HandEyeRenderer(scene, cfg, backend="cpu", batch_size=3)
    rgb, mask = culled.render_cameras(cams)
    K = policy_intrinsics(cfg).K(torch.float32)
    with torch.no_grad():
        full = render(scene, cams.float(), K, 48, 40, backend="cpu", background=torch.zeros(3))
    ref_rgb = (full.rgb.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    assert np.abs(rgb.astype(int) - ref_rgb.astype(int)).max() <= 1
    assert (mask == full.label_map().numpy()).mean() > 0.999
    assert (
        culled._grid is not None
        and len(
            culled._grid.visible(
                np.linalg.inv(episodes[0].camera_poses[:1]), K.double().numpy(), 48, 40, 0.01
            )
        )
        < scene.num_gaussians
    )
