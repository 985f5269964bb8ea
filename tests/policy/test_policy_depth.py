"""The optional depth channel (`ModelConfig.depth`): rendered and stored depth, the sixth input channel,
training, export, the splat evaluation and the robot side (control loop, RealSense) with it."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
import torch
from policy_test_helpers import SIZE, approach_poses, toy_env_args, toy_episode

from policy.augment import AugmentConfig, augment_batch
from policy.data import DEPTH_RANGE_M, load_demos, make_policy_input, resize_depth, stack_depth
from policy.robot import ControlConfig, Frame, run_control_loop
from policy.robot_splat import SplatCamera, SplatRobot
from splatsim.render import render


@pytest.fixture(scope="module")
def depth_demo_dir(tmp_path_factory, tiny_env):
    """Four episodes with depth (and recovery samples with depth on one), in trajgen's format."""
    from trajgen.dataset import write_episode

    out = tmp_path_factory.mktemp("depth_demos")
    target = tiny_env.geometry.object_center
    rng = np.random.default_rng(1)
    camera = {"background": [0.0, 0.0, 0.0], "depth": True}
    env_args = toy_env_args(tiny_env, scene_id="toy_a", camera=camera)
    for e in range(4):
        start = target + np.array([rng.uniform(-0.2, 0.2), rng.uniform(-0.2, 0.2), -0.7])
        attrs = {"scene_id": "toy_a", "episode_key": f"toy_a/d{e}", "grasp_rank": 0, "start_id": e}
        episode = toy_episode(tiny_env, start, attrs, depth=True, recovery=2 if e == 0 else 0)
        write_episode(out / "episodes" / f"d{e}.hdf5", episode, env_args=env_args)
    return out


@pytest.fixture(scope="module")
def depth_policy(tmp_path_factory, depth_demo_dir):
    from policy.model import ModelConfig
    from policy.train import TrainConfig, run_train

    out = tmp_path_factory.mktemp("depth_policy")
    cfg = TrainConfig(
        data=(depth_demo_dir,),
        out=out,
        model=ModelConfig(SIZE, 4, depth=True),
        epochs=1,
        batch_size=4,
        max_steps=3,
        progress=False,
    )
    run_train(cfg)
    return out


def test_depth_channel_values_and_units() -> None:
    rgb = np.full((2, 3, 3), 100, np.uint8)
    mask = np.array([[0, 1, 2], [1, 1, 0]], np.uint8)
    metres = np.array([[0.5, 0.4, 0.35], [3.0, np.nan, 0.8]], np.float32)
    x = make_policy_input(rgb, mask, metres)
    assert x.shape == (6, 2, 3)
    # background and NaN: 0; beyond the range: 1
    expected = np.array([[0.0, 0.4, 0.35], [DEPTH_RANGE_M, 0.0, 0.0]]) / DEPTH_RANGE_M
    np.testing.assert_allclose(x[5].numpy(), expected, atol=1e-7)
    mm = np.array([[500, 400, 350], [3000, 0, 800]], np.uint16)  # the shards' unit
    np.testing.assert_allclose(make_policy_input(rgb, mask, mm)[5].numpy(), expected, atol=1e-7)
    # the first five channels do not change with depth
    assert torch.equal(make_policy_input(rgb, mask, mm)[:5], make_policy_input(rgb, mask))
    with pytest.raises(ValueError, match="depth must be"):
        make_policy_input(rgb, mask, np.zeros((3, 3), np.float32))


def test_rendered_depth_matches_the_renderer(tiny_env, tiny_scene) -> None:
    """`HandEyeRenderer`'s stored depth is the renderer's expected depth in whole millimetres."""
    target = tiny_env.geometry.object_center
    poses = approach_poses(target + np.array([0.05, 0.0, -0.7]), target, 2)
    rgb, mask, depth = tiny_env.render(poses, with_depth=True)
    rgb2, mask2 = tiny_env.render(poses)
    assert np.array_equal(rgb, rgb2) and np.array_equal(mask, mask2)
    assert depth.dtype == np.uint16 and depth.shape == mask.shape
    intr = tiny_env.intrinsics
    K = intr.K(torch.float32).expand(2, 3, 3)
    ref = render(tiny_scene, poses.float(), K, SIZE, SIZE, backend="reference").depth.numpy()
    fg = mask > 0
    assert fg.any()
    np.testing.assert_allclose(depth[fg] * 1e-3, ref[fg], atol=2e-3)
    # the object sits about 0.43 m + its depth ahead of the last pose
    assert 0.3 < np.median(depth[1][mask[1] == 1]) * 1e-3 < 0.7


def test_depth_episodes_round_trip(depth_demo_dir) -> None:
    from trajgen.dataset import DemoDataset, read_episode, validate_episode

    files = sorted((depth_demo_dir / "episodes").glob("*.hdf5"))
    assert all(validate_episode(f) == [] for f in files)
    ep = read_episode(files[0])
    assert ep.depth is not None and ep.depth.dtype == np.uint16 and ep.depth.shape == ep.mask.shape
    assert ep.recovery is not None and ep.recovery.depth.shape == ep.recovery.mask.shape
    demos = load_demos([depth_demo_dir])
    first = next(e for e in demos.episodes if e.key == "toy_a/d0")
    assert first.depth.shape == (first.num_frames, SIZE, SIZE) and first.num_frames == 5 + 2
    assert np.array_equal(first.depth[:5], ep.depth) and np.array_equal(first.depth[5:], ep.recovery.depth)
    assert stack_depth(demos.episodes).shape[0] == demos.num_frames
    item = DemoDataset(depth_demo_dir / "episodes" / "d1.hdf5")[2]
    assert item["depth"].shape == (SIZE, SIZE)
    assert float(item["depth"][item["label"] == 0].abs().max()) == 0.0  # background removed
    # resized like the masks (nearest neighbour): every value is one of the originals
    small = resize_depth(ep.depth, 16)
    assert small.shape == (5, 16, 16) and set(np.unique(small)) <= set(np.unique(ep.depth))


def test_validation_names_bad_depth(tmp_path, depth_demo_dir) -> None:
    import shutil

    import h5py

    from trajgen.dataset import validate_episode

    path = tmp_path / "bad.hdf5"
    shutil.copy(depth_demo_dir / "episodes" / "d1.hdf5", path)
    with h5py.File(path, "r+") as f:
        obs = f["data/demo_0/obs"]
        d = obs["depth"][()]
        del obs["depth"]
        obs.create_dataset("depth", data=d.astype(np.float32) * 1e-3)  # metres as float: the wrong unit
    errors = validate_episode(path)
    assert any("obs/depth is float32" in e and "uint16 millimetres" in e for e in errors)
    with pytest.raises(ValueError, match="obs/depth is float32"):
        load_demos([path])


def test_training_batches_equal_make_policy_input(depth_demo_dir) -> None:
    """The training loop's batched input (fast path) is `make_policy_input` (reference) frame by frame."""
    from policy.data import stack_frames
    from policy.train import _batch

    demos = load_demos([depth_demo_dir])
    rgb, mask, *_ = stack_frames(demos.episodes)
    depth = stack_depth(demos.episodes)
    idx = torch.tensor([0, 3, 6, 9])
    x = _batch(rgb, mask, idx, None, None, depth)
    ref = torch.stack([make_policy_input(rgb[i].numpy(), mask[i].numpy(), depth[i].numpy()) for i in idx])
    assert x.shape == (4, 6, SIZE, SIZE)
    torch.testing.assert_close(x, ref, rtol=0, atol=1e-6)


def test_augment_moves_depth_with_the_masks() -> None:
    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(6, 3, 16, 16, generator=g)
    masks = (torch.rand(6, 2, 16, 16, generator=g) > 0.5).float()
    depth = torch.rand(6, 1, 16, 16, generator=g)
    cfg = AugmentConfig(crop_prob=1.0, mask_morph_prob=0.0, depth_noise_1m=0.0, depth_hole_prob=0.0)
    r0, m0 = augment_batch(rgb, masks, cfg, torch.Generator().manual_seed(3))
    r1, m1, d1 = augment_batch(rgb, masks, cfg, torch.Generator().manual_seed(3), depth=depth)
    assert torch.equal(r0, r1) and torch.equal(m0, m1)  # the same draws with and without depth
    # depth is sampled exactly like the masks: cropping a mask equal to the depth gives the cropped depth
    _, md = augment_batch(rgb, depth.expand(6, 2, 16, 16).contiguous(), cfg, torch.Generator().manual_seed(3))
    torch.testing.assert_close(d1[:, 0], md[:, 0])
    assert not torch.equal(d1, depth)
    # the depth noise comes after every other draw: the RGB and masks stay the same with it on
    noisy = AugmentConfig(crop_prob=1.0, mask_morph_prob=0.0)
    r2, m2, d2 = augment_batch(rgb, masks, noisy, torch.Generator().manual_seed(3), depth=depth)
    assert torch.equal(r2, r1) and torch.equal(m2, m1) and not torch.equal(d2, d1)


def test_depth_noise_follows_the_stereo_model() -> None:
    from policy.augment import depth_noise

    n = 200_000
    z = torch.tensor([0.4, 1.0, 0.0]).repeat_interleave(n).reshape(3 * n, 1, 1, 1)
    out = depth_noise(z / DEPTH_RANGE_M, 0.0025, 0.05, torch.Generator().manual_seed(0)) * DEPTH_RANGE_M
    near, far, empty = out[:n].flatten(), out[n : 2 * n].flatten(), out[2 * n :].flatten()
    assert float(empty.abs().max()) == 0.0  # no depth stays no depth
    for values, depth in ((near, 0.4), (far, 1.0)):
        holes = values == 0
        assert abs(float(holes.float().mean()) - 0.05) < 0.003
        kept = values[~holes]
        assert abs(float(kept.mean()) - depth) < 1e-4
        assert float(kept.std()) == pytest.approx(0.0025 * depth**2, rel=0.02)
    with pytest.raises(ValueError, match="depth_hole_prob"):
        AugmentConfig(depth_hole_prob=1.0).validate()


def test_depth_policy_trains_exports_and_evaluates(tmp_path, depth_policy, tiny_env, tiny_scene) -> None:
    from policy.checkpoint import load_policy
    from policy.evaluate import EvalConfig, EvalObject, StartConfig, run_eval
    from policy.export import ExportConfig, run_export
    from policy.runtime import OnnxPolicy, TorchPolicy
    from splatsim.conventions import look_at

    net, meta = load_policy(depth_policy)
    assert net.cfg.depth and net.conv1.in_channels == 6
    assert meta["input"]["shape"][1] == 6 and meta["input"]["channels"][-1] == "depth"
    res = run_export(ExportConfig(policy=depth_policy, out=tmp_path / "export", check_samples=4))
    assert res.max_abs_diff <= 1e-4
    assert res.metadata["inputs"][0]["channel_order"][-1] == "depth"
    assert res.metadata["inputs"][0]["shape"][1] == 6
    # the closed loop through the splat camera's depth: ONNX and torch take the same path
    start = approach_poses(
        tiny_env.geometry.object_center + np.array([0.1, 0.0, -0.7]), tiny_env.geometry.object_center, 2
    )[0].numpy()
    runs = []
    for fn in (TorchPolicy(net), OnnxPolicy(res.onnx_path)):
        robot = SplatRobot(start)
        cam = SplatCamera(tiny_env, robot, depth=True)
        runs.append(
            run_control_loop(fn, robot, cam, ControlConfig(max_steps=3, depth=True), clock=robot.clock)
        )
    assert runs[0].steps == runs[1].steps
    for p, q in zip(runs[0].poses, runs[1].poses):
        np.testing.assert_allclose(p, q, atol=1e-4)
    onnx_fn = OnnxPolicy(res.onnx_path)
    assert onnx_fn.takes_depth and TorchPolicy(net).takes_depth and onnx_fn.input_channels == 6
    with pytest.raises(ValueError, match="5 channels; the model expects 6.*ControlConfig.depth"):
        onnx_fn(np.zeros((1, 5, SIZE, SIZE), np.float32))
    # the evaluation renders depth for the policy, not for IBVS-MASK (which takes five channels)
    geo = tiny_env.geometry
    grasp = look_at(
        torch.from_numpy(geo.object_center - np.array([0, 0, 0.13])),
        torch.from_numpy(geo.object_center),
        up=(0.0, -1.0, 0.0),
    ).numpy()
    cfg = EvalConfig(
        policy=depth_policy,
        out=tmp_path / "eval",
        onnx=res.onnx_path,
        starts_per_object=1,
        max_steps=2,
        starts=StartConfig(up=(0.0, -1.0, 0.0), from_policy=False),
        videos_per_object=0,
        progress=False,
    )
    ev = run_eval(cfg, objects=[EvalObject("toy_a", tiny_scene, grasp[None])])
    assert {e["method"] for e in ev.episodes} == {"policy", "ibvs_mask"}
    assert (
        json.loads((tmp_path / "eval" / "eval_report.json").read_text())["policy"]["model"]["depth"] is True
    )


def test_depth_policy_needs_demonstrations_with_depth(tmp_path, demo_dir) -> None:
    from policy.model import ModelConfig
    from policy.train import TrainConfig, run_train

    cfg = TrainConfig(
        data=(demo_dir,),
        out=tmp_path,
        model=ModelConfig(SIZE, 4, depth=True),
        epochs=1,
        max_steps=1,
        progress=False,
    )
    with pytest.raises(ValueError, match=r"no depth \(obs/depth\).*HandEyeConfig.depth"):
        run_train(cfg)


def test_loop_refuses_frames_without_depth() -> None:
    class Cam:
        def read(self):
            return Frame(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8))

    robot = SplatRobot(np.eye(4))
    with pytest.raises(ValueError, match="without depth"):
        run_control_loop(lambda x: (np.zeros(6), 0.0), robot, Cam(), ControlConfig(depth=True))
    assert robot.stopped  # stop() ran in finally

    seen = []

    class DepthCam(Cam):
        def read(self):
            return Frame(
                np.zeros((8, 8, 3), np.uint8),
                np.ones((8, 8), np.uint8),
                0.0,
                np.full((8, 8), 0.5, np.float32),
            )

    def fn(x):
        seen.append(x.shape)
        assert x[0, 5].max() == pytest.approx(0.5 / DEPTH_RANGE_M)
        return np.zeros(6), 0.9

    res = run_control_loop(fn, SplatRobot(np.eye(4)), DepthCam(), ControlConfig(depth=True))
    assert res.stopped and seen == [(1, 6, 8, 8)]


def fake_realsense_depth(width=640, height=480, scale=0.001):
    """A pyrealsense2 stand-in with colour and aligned depth (left half 400 mm, right half 1200 mm)."""

    class Intr:
        fx, fy, ppx, ppy = 615.0, 615.0, 319.5, 239.5

    Intr.width, Intr.height = width, height

    class Img:
        def __init__(self, data):
            self.data = data

        def __bool__(self):
            return True

        def get_data(self):
            return self.data

    depth = np.full((height, width), 400, np.uint16)
    depth[:, width // 2 :] = 1200
    color = np.zeros((height, width, 3), np.uint8)
    frames = types.SimpleNamespace(get_color_frame=lambda: Img(color), get_depth_frame=lambda: Img(depth))
    # unaligned: the depth sensor's own (smaller) image, which only alignment maps onto the colour pixels
    raw = types.SimpleNamespace(
        get_color_frame=lambda: Img(color), get_depth_frame=lambda: Img(np.zeros((10, 10), np.uint16))
    )

    class Pipeline:
        def start(self, config):
            self.config = config
            stream = types.SimpleNamespace(
                as_video_stream_profile=lambda: types.SimpleNamespace(get_intrinsics=lambda: Intr)
            )
            sensor = types.SimpleNamespace(get_depth_scale=lambda: scale)
            device = types.SimpleNamespace(first_depth_sensor=lambda: sensor)
            return types.SimpleNamespace(get_stream=lambda s: stream, get_device=lambda: device)

        def wait_for_frames(self):
            return raw

        def stop(self):
            pass

    class Config:
        def __init__(self):
            self.streams = []

        def enable_stream(self, *a):
            self.streams.append(a)

    class Align:
        def __init__(self, to):
            self.to = to

        def process(self, f):
            assert f is raw and self.to == "color"
            return frames

    return types.SimpleNamespace(
        pipeline=Pipeline,
        config=Config,
        align=Align,
        stream=types.SimpleNamespace(color="color", depth="depth"),
        format=types.SimpleNamespace(rgb8="rgb8", z16="z16"),
    )


def test_realsense_depth_is_aligned_scaled_and_cropped() -> None:
    from policy.camera_realsense import RealSenseCamera

    cam = RealSenseCamera(128, 128, depth=True, rs=fake_realsense_depth())
    assert [s[0] for s in cam.pipeline.config.streams] == ["color", "depth"]
    frame = cam.read()
    assert frame.depth.shape == (128, 128) and frame.depth.dtype == np.float32
    # the centred 480x480 crop of 640x480 keeps the split at the middle column
    np.testing.assert_allclose(frame.depth[:, :60], 0.4)
    np.testing.assert_allclose(frame.depth[:, 68:], 1.2)
    assert RealSenseCamera(128, 128, rs=fake_realsense_depth()).read().depth is None


def _depth_statistics_reference(x: np.ndarray) -> np.ndarray:  # [B, 6, H, W] -> [B, 6], per-pixel loops
    out = np.zeros((x.shape[0], 6))
    for b in range(x.shape[0]):
        for k, ch in enumerate((3, 4)):
            wsum = dsum = 0.0
            nearest = None
            for i in range(x.shape[2]):
                for j in range(x.shape[3]):
                    m, d = float(x[b, ch, i, j]), float(x[b, 5, i, j]) * DEPTH_RANGE_M
                    if m >= 0.5 and d > 0:
                        wsum += m
                        dsum += m * d
                        nearest = d if nearest is None else min(nearest, d)
            if nearest is not None:
                out[b, 3 * k : 3 * k + 3] = (dsum / wsum, nearest, 1.0)
    return out


def test_depth_statistics_match_the_per_pixel_reference() -> None:
    from policy.model import depth_statistics

    rng = np.random.default_rng(3)
    x = np.zeros((3, 6, 12, 10), np.float32)
    x[:, 3] = rng.random((3, 12, 10)) * (rng.random((3, 12, 10)) < 0.4)  # soft hand mask, some below 0.5
    x[:, 4] = (rng.random((3, 12, 10)) < 0.3) * (1 - x[:, 3])
    x[:, 5] = rng.uniform(0.1, 0.5, (3, 12, 10)) * (rng.random((3, 12, 10)) > 0.2)  # holes: 0
    x[2, 4] = 0.0  # no object in the third image: (0, 0, 0)
    got = depth_statistics(torch.from_numpy(x)).numpy()
    ref = _depth_statistics_reference(x)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    assert got[2, 3:].tolist() == [0.0, 0.0, 0.0] and got[0, 5] == 1.0
    # an object 0.40 m away at every pixel, its nearest corner 0.35 m: metres out, whatever its size
    y = np.zeros((1, 6, 16, 16), np.float32)
    y[0, 4, 4:12, 4:12] = 1.0
    y[0, 5, 4:12, 4:12] = 0.40 / DEPTH_RANGE_M
    y[0, 5, 4, 4] = 0.35 / DEPTH_RANGE_M
    mean, nearest, present = depth_statistics(torch.from_numpy(y))[0, 3:].tolist()
    assert (mean, nearest, present) == (pytest.approx((0.40 * 63 + 0.35) / 64), pytest.approx(0.35), 1.0)


def test_depth_stats_head_reads_the_distance_and_exports(tmp_path) -> None:
    """With depth_stats the output moves with the object's depth alone; the ONNX export matches torch;
    the option needs the depth channel and old configs read as off."""
    from policy.export import check_parity, export_onnx
    from policy.model import DEPTH_STATS_DIM, ModelConfig, PolicyNet

    with pytest.raises(ValueError, match="depth_stats"):
        ModelConfig(64, 4, depth_stats=True).validate()
    cfg = ModelConfig(64, 4, depth=True, depth_stats=True)
    net = PolicyNet(cfg).eval()
    assert net.stats_mlp[0].in_features == DEPTH_STATS_DIM
    with torch.no_grad():  # a head that reads only the stats, so the test is about them
        net.fc.weight.zero_()
        net.fc.weight[:, 4 * 8 :].normal_()
    x = torch.zeros(1, 6, 64, 64)
    x[0, 4, 20:40, 20:40] = 1.0
    x[0, :3, 20:40, 20:40] = 0.5
    y = x.clone()
    x[0, 5, 20:40, 20:40] = 0.40 / DEPTH_RANGE_M
    y[0, 5, 20:40, 20:40] = 0.45 / DEPTH_RANGE_M
    assert (net(x) - net(y)).abs().max() > 1e-4
    both = ModelConfig(64, 4, depth=True, depth_stats=True, mask_stats=True)
    assert PolicyNet(both).stats_mlp[0].in_features == DEPTH_STATS_DIM + 10
    assert ModelConfig.from_dict(cfg.as_dict()) == cfg
    old = cfg.as_dict()
    old.pop("depth_stats")
    assert ModelConfig.from_dict(old).depth_stats is False
    pytest.importorskip("onnxruntime")
    path = tmp_path / "p.onnx"
    export_onnx(net, path)
    assert check_parity(net, path) <= 1e-4
