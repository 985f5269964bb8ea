"""Tests for policy.robot's control loop (timeout, workspace, speed limits, stop in finally), the splat
robot, the UR adapter against a recording fake, and the RealSense camera against a fake module."""

from __future__ import annotations

import math
import types

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from policy.camera_realsense import RealSenseCamera, crop_resize
from policy.robot import Camera, ControlConfig, Frame, Robot, limit_motion, run_control_loop
from policy.robot_splat import SplatCamera, SplatRobot
from policy.robot_ur import URRobot, matrix_to_ur_pose, ur_pose_to_matrix


class FakeRobot(Robot):
    def __init__(self) -> None:
        self.pose = np.eye(4)
        self.moves: list[np.ndarray] = []
        self.stops = 0

    def current_pose(self) -> np.ndarray:
        return self.pose.copy()

    def move_relative(self, rel, speed, acceleration) -> None:
        self.moves.append(rel)
        self.pose = self.pose @ rel

    def close_gripper(self) -> None:
        pass

    def stop(self) -> None:
        self.stops += 1


class FakeCamera(Camera):
    def __init__(self) -> None:
        from splatsim.conventions import PinholeIntrinsics

        self.intrinsics = PinholeIntrinsics.from_fov(1.0, 8, 8)

    def read(self) -> Frame:
        return Frame(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8))


def constant_policy(action, score=0.0):
    def fn(x):
        assert x.shape == (1, 5, 8, 8)
        return np.asarray(action, float), score

    return fn


def test_stops_at_tau_c() -> None:
    robot = FakeRobot()
    scores = iter([0.1, 0.5, 0.8])
    res = run_control_loop(
        lambda x: (np.zeros(6), next(scores)), robot, FakeCamera(), ControlConfig(tau_c=0.7)
    )
    assert res.reason == "pregrasp" and res.stopped and res.steps == 2
    assert robot.stops == 1 and len(res.poses) == 3


def test_max_steps_and_timeout() -> None:
    robot = FakeRobot()
    res = run_control_loop(
        constant_policy([0, 0, 0, 0, 0, 0.01]), robot, FakeCamera(), ControlConfig(max_steps=5)
    )
    assert res.reason == "max_steps" and res.steps == 5 and robot.stops == 1
    t = [0.0]

    def clock() -> float:
        t[0] += 10.0  # every look at the clock costs 10 s
        return t[0]

    robot = FakeRobot()
    res = run_control_loop(
        constant_policy([0, 0, 0, 0, 0, 0.01]),
        robot,
        FakeCamera(),
        ControlConfig(timeout_s=30.0),
        clock=clock,
    )
    assert res.reason == "timeout" and res.steps < 30 and robot.stops == 1


class ScriptedCamera(FakeCamera):
    """Frames whose object mask holds one object pixel (label 1) or none, in the order given."""

    def __init__(self, visible: list[bool]) -> None:
        super().__init__()
        self.visible = iter(visible)

    def read(self) -> Frame:
        mask = np.zeros((8, 8), np.uint8)
        mask[0, 0] = 2  # a hand pixel every frame: only the object counts
        if next(self.visible):
            mask[4, 4] = 1
        return Frame(np.zeros((8, 8, 3), np.uint8), mask)


def test_lost_object_stop_counts_frames_in_a_row_and_is_off_by_default() -> None:
    walk = constant_policy([0, 0, 0, 0, 0, 0.01])
    seen = [True, False, False, True, False, False, False, True, True, True]
    robot = FakeRobot()
    res = run_control_loop(
        walk, robot, ScriptedCamera(seen), ControlConfig(max_steps=10, lost_object_frames=3)
    )
    # frames 1-2 lost, then seen again (the count restarts); frames 4-6 lost: stop at the third, unmoved
    assert res.reason == "object_lost" and not res.stopped
    assert res.steps == 6 and len(res.scores) == 6 and robot.stops == 1
    res = run_control_loop(walk, FakeRobot(), ScriptedCamera(seen), ControlConfig(max_steps=10))
    assert res.reason == "max_steps" and res.steps == 10
    with pytest.raises(ValueError, match="lost_object_frames"):
        ControlConfig(lost_object_frames=-1).validate()


def test_stop_called_in_finally_on_exceptions() -> None:
    def bad_policy(x):
        raise RuntimeError("network exploded")

    robot = FakeRobot()
    with pytest.raises(RuntimeError, match="exploded"):
        run_control_loop(bad_policy, robot, FakeCamera(), ControlConfig())
    assert robot.stops == 1

    class BadCamera(FakeCamera):
        def read(self):
            raise KeyboardInterrupt

    robot = FakeRobot()
    with pytest.raises(KeyboardInterrupt):
        run_control_loop(constant_policy(np.zeros(6)), robot, BadCamera(), ControlConfig())
    assert robot.stops == 1

    robot = FakeRobot()
    with pytest.raises(ValueError, match="non-finite"):
        run_control_loop(constant_policy([np.nan, 0, 0, 0, 0, 0]), robot, FakeCamera(), ControlConfig())
    assert robot.stops == 1 and not robot.moves


def test_speed_limits() -> None:
    cfg = ControlConfig(max_step_translation=0.05, max_step_rotation_deg=10.0)
    rel, info = limit_motion(np.eye(4), np.array([0.0, 0.0, 0.5, 0.3, 0.0, 0.4]), cfg)
    assert info["translation"] and info["rotation"] and not info["workspace"]
    assert np.linalg.norm(rel[:3, 3]) == pytest.approx(0.05)
    np.testing.assert_allclose(rel[:3, 3] / 0.05, [0.6, 0.0, 0.8], atol=1e-9)  # direction kept
    angle = np.linalg.norm(Rotation.from_matrix(rel[:3, :3]).as_rotvec())
    assert angle == pytest.approx(math.radians(10.0))
    small, info = limit_motion(np.eye(4), np.array([0.01, 0, 0, 0.01, 0, 0]), cfg)
    assert not any(info.values())


def test_workspace_clip() -> None:
    cfg = ControlConfig(workspace_min=(-0.1, -0.1, -0.1), workspace_max=(0.1, 0.1, 0.1))
    robot = FakeRobot()
    res = run_control_loop(
        constant_policy([0, 0, 0, 0.04, 0, 0]), robot, FakeCamera(), dataclass_replace(cfg, max_steps=10)
    )
    assert robot.pose[0, 3] == pytest.approx(0.1)
    assert all(abs(p[0, 3]) <= 0.1 + 1e-12 for p in res.poses)
    assert any(c["workspace"] for c in res.clipped)
    with pytest.raises(ValueError, match="workspace"):
        ControlConfig(workspace_min=(0, 0, 0), workspace_max=(0, 1, 1)).validate()
    with pytest.raises(ValueError, match="speed"):
        ControlConfig(speed=3.0).validate()


def dataclass_replace(cfg, **kw):
    from dataclasses import replace

    return replace(cfg, **kw)


def test_splat_robot_moves_and_renders(tiny_env) -> None:
    from policy_test_helpers import approach_poses

    start = approach_poses(
        tiny_env.geometry.object_center + np.array([0.0, 0.0, -0.7]), tiny_env.geometry.object_center, 2
    )[0].numpy()
    robot = SplatRobot(start, step_overhead_s=0.0)
    cam = SplatCamera(tiny_env, robot)
    frame = cam.read()
    assert frame.rgb.shape == (32, 32, 3) and (frame.mask == 1).any()
    res = run_control_loop(
        constant_policy_any([0, 0, 0, 0, 0, 0.05]),
        robot,
        cam,
        ControlConfig(max_steps=3, speed=0.1),
        clock=robot.clock,
    )
    assert res.steps == 3 and robot.stopped
    np.testing.assert_allclose(robot.pose[:3, 3], start[:3, 3] + 0.15 * start[:3, 2], atol=1e-9)
    assert robot.clock() == pytest.approx(3 * 0.05 / 0.1)


def constant_policy_any(action, score=0.0):
    return lambda x: (np.asarray(action, float), score)


class RecordingControl:
    """Records ur_rtde RTDEControlInterface calls."""

    def __init__(self, receive) -> None:
        self.calls: list[tuple] = []
        self.receive = receive
        self.fail_stop = False

    def moveL(self, pose, speed=0.25, acceleration=1.2, asynchronous=False):
        self.calls.append(("moveL", list(pose), speed, acceleration))
        self.receive.pose = list(pose)
        return True

    def stopL(self, a=10.0, asynchronous=False):
        self.calls.append(("stopL", a))
        if self.fail_stop:
            raise ConnectionError("gone")


class FakeReceive:
    def __init__(self, pose) -> None:
        self.pose = list(pose)

    def getActualTCPPose(self):
        return list(self.pose)


def test_ur_pose_conversion_round_trip() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        pose = [*rng.uniform(-0.5, 0.5, 3), *Rotation.random(random_state=rng.integers(1 << 30)).as_rotvec()]
        np.testing.assert_allclose(matrix_to_ur_pose(ur_pose_to_matrix(pose)), pose, atol=1e-9)
    T = ur_pose_to_matrix([0.1, 0.2, 0.3, 0.0, 0.0, math.pi / 2])
    np.testing.assert_allclose(T[:3, :3] @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    with pytest.raises(ValueError, match="6 finite"):
        ur_pose_to_matrix([0, 0, 0])


def test_ur_adapter_against_recording_fake() -> None:
    receive = FakeReceive([0.4, 0.0, 0.3, 0.0, math.pi, 0.0])  # tool pointing down
    control = RecordingControl(receive)
    robot = URRobot(control=control, receive=receive, workspace_min=(-1, -1, 0.05), workspace_max=(1, 1, 1))
    rel = np.eye(4)
    rel[2, 3] = 0.05  # 5 cm along the tool's approach axis (+z), i.e. down in the base frame
    robot.move_relative(rel, 0.1, 0.3)
    name, pose, speed, acc = control.calls[-1]
    assert name == "moveL" and speed == 0.1 and acc == 0.3
    np.testing.assert_allclose(pose[:3], [0.4, 0.0, 0.25], atol=1e-9)
    np.testing.assert_allclose(ur_pose_to_matrix(pose)[:3, :3], ur_pose_to_matrix(receive.pose)[:3, :3])
    with pytest.raises(ValueError, match="speed"):
        robot.move_relative(rel, 1.0, 0.3)
    far = np.eye(4)
    far[2, 3] = 0.5  # would go below the workspace floor
    n = len(control.calls)
    with pytest.raises(ValueError, match="workspace"):
        robot.move_relative(far, 0.1, 0.3)
    assert len(control.calls) == n  # refused before moveL
    control.fail_stop = True
    robot.stop()  # never raises
    assert control.calls[-1][0] == "stopL"


def test_ur_adapter_in_the_loop_stops_on_error() -> None:
    receive = FakeReceive([0.4, 0.0, 0.5, 0.0, math.pi, 0.0])
    control = RecordingControl(receive)
    robot = URRobot(control=control, receive=receive)
    calls = iter([(np.array([0, 0, 0, 0, 0, 0.02]), 0.1)] * 2)

    def policy(x):
        try:
            return next(calls)
        except StopIteration:
            raise RuntimeError("camera cable pulled") from None

    with pytest.raises(RuntimeError):
        run_control_loop(policy, robot, FakeCamera(), ControlConfig(speed=0.05))
    assert [c[0] for c in control.calls] == ["moveL", "moveL", "stopL"]
    assert all(c[2] == 0.05 for c in control.calls if c[0] == "moveL")


def test_ur_without_ur_rtde() -> None:
    import importlib.util

    if importlib.util.find_spec("rtde_control") is not None:
        pytest.skip("ur_rtde is installed")
    with pytest.raises(ImportError, match="ur_rtde"):
        URRobot("192.168.0.2")


def fake_realsense(width=640, height=480):
    class Intr:
        fx, fy, ppx, ppy = 615.0, 615.0, 319.5, 239.5

    Intr.width, Intr.height = width, height

    class ColorFrame:
        def __bool__(self):
            return True

        def get_data(self):
            img = np.zeros((height, width, 3), np.uint8)
            img[:, width // 2 :] = 255
            return img

    class Pipeline:
        started = stopped = False

        def start(self, config):
            self.started = True
            prof = types.SimpleNamespace(
                get_stream=lambda s: types.SimpleNamespace(
                    as_video_stream_profile=lambda: types.SimpleNamespace(get_intrinsics=lambda: Intr)
                )
            )
            return prof

        def wait_for_frames(self):
            return types.SimpleNamespace(get_color_frame=lambda: ColorFrame())

        def stop(self):
            self.stopped = True

    class Config:
        def __init__(self):
            self.streams = []

        def enable_stream(self, *a):
            self.streams.append(a)

        def enable_device(self, s):
            pass

    return types.SimpleNamespace(
        pipeline=Pipeline,
        config=Config,
        stream=types.SimpleNamespace(color="color"),
        format=types.SimpleNamespace(rgb8="rgb8"),
    )


def test_realsense_camera_with_fake_module() -> None:
    cam = RealSenseCamera(128, 128, rs=fake_realsense())
    # D435 640x480 -> centred 480x480 crop -> 128x128: the hand-eye camera's intrinsics
    assert cam.intrinsics.fx == pytest.approx(615.0 * 128 / 480)
    assert cam.intrinsics.cx == pytest.approx(64.0)
    frame = cam.read()
    assert frame.rgb.shape == (128, 128, 3) and frame.mask is None
    assert frame.rgb[:, :60].max() == 0 and frame.rgb[:, 68:].min() == 255
    cam.close()
    assert cam.pipeline.stopped
    assert crop_resize(np.zeros((480, 640, 3), np.uint8), (64, 32)).shape == (32, 64, 3)


def test_loop_needs_a_segmenter_for_maskless_frames() -> None:
    class RGBOnly(FakeCamera):
        def read(self):
            return Frame(np.zeros((8, 8, 3), np.uint8), None)

    robot = FakeRobot()
    with pytest.raises(ValueError, match="segmenter"):
        run_control_loop(constant_policy(np.zeros(6)), robot, RGBOnly(), ControlConfig())
    assert robot.stops == 1
    res = run_control_loop(
        constant_policy(np.zeros(6), 0.9),
        FakeRobot(),
        RGBOnly(),
        ControlConfig(),
        segmenter=lambda rgb: np.zeros(rgb.shape[:2], np.uint8),
    )
    assert res.stopped
