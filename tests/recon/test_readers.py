"""Tests for recon/readers: DexYCB and nerfstudio datasets converted into capture folders."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from recon.capture import CaptureError, load_capture
from recon.readers import read_dexycb, read_nerfstudio
from recon.readers.dexycb import YCB_CLASSES
from splatsim.conventions import depth_to_world_points

H, W = 48, 64
SERIALS = ["836212060125", "839512060362", "840412060917"]
SEQUENCE = "20200709-subject-01/20200709_141754"
YCB_IDS = [2, 5, 14]
GRASP_IND = 1  # grasped object: YCB id 5
FRAME = 1


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _rigid(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    T = np.eye(4)
    T[:3, :3] = _rotation(rng)
    T[:3, 3] = rng.uniform(-1, 1, 3)
    return T


def _floats(values) -> str:
    return ", ".join(repr(float(x)) for x in values)


META_YML = f"""\
# DexYCB sequence meta
extrinsics: '20200702'
mano_calib:
- mano_20200514_142106_subject-01_right
mano_sides:
- right
num_frames: 3
serials:
{chr(10).join(f"- '{s}'" for s in SERIALS)}
ycb_grasp_ind: {GRASP_IND}
ycb_ids:
- 2
- 5
- 14
"""


def _extrinsics_yml(poses: dict[str, np.ndarray]) -> str:
    lines = ["extrinsics:"]
    for k, (serial, T) in enumerate(poses.items()):
        values = T[:3].reshape(-1)
        if k == 0:  # block sequence, items at the key's indent (PyYAML's default)
            lines.append(f"  '{serial}':")
            lines += [f"  - {float(x)!r}" for x in values]
        else:  # flow sequence spanning two lines
            lines.append(f"  '{serial}': [{_floats(values[:6])},")
            lines.append(f"    {_floats(values[6:])}]")
    lines.append(f"  apriltag: [{_floats(np.eye(4)[:3].reshape(-1))}]")
    lines.append(f"master: '{SERIALS[0]}'  # the master camera")
    return "\n".join(lines) + "\n"


def _seg(seed: int) -> np.ndarray:
    seg = np.zeros((H, W), np.uint8)
    seg[5:15, 5:25] = 5  # grasped object
    seg[30:40, 40:60] = 2  # another YCB object
    seg[20:30, 10 + seed : 30 + seed] = 255  # hand
    return seg


def make_dexycb(root: Path) -> dict:
    poses = {s: _rigid(i) for i, s in enumerate(SERIALS)}
    (root / "calibration" / "intrinsics").mkdir(parents=True)
    for i, s in enumerate(SERIALS):
        (root / "calibration" / "intrinsics" / f"{s}_{W}x{H}.yml").write_text(
            f"color:\n  fx: {50.0 + i}\n  fy: 51.5\n  ppx: 31.25\n  ppy: 23.75\n"
            f"depth:\n  fx: 40.0\n  fy: 40.0\n  ppx: 32.0\n  ppy: 24.0\n"
        )
    (root / "calibration" / "extrinsics_20200702").mkdir(parents=True)
    (root / "calibration" / "extrinsics_20200702" / "extrinsics.yml").write_text(_extrinsics_yml(poses))
    seq = root / SEQUENCE
    seq.mkdir(parents=True)
    (seq / "meta.yml").write_text(META_YML)
    raws, segs, pose_y = {}, {}, {}
    for i, s in enumerate(SERIALS):
        rng = np.random.default_rng(10 + i)
        cam = seq / s
        cam.mkdir()
        iio.imwrite(cam / f"color_{FRAME:06d}.jpg", rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
        raw = rng.integers(400, 1500, (H, W)).astype(np.uint16)
        raw[:3] = 0
        iio.imwrite(cam / f"aligned_depth_to_color_{FRAME:06d}.png", raw)
        seg = _seg(i)
        py = np.stack([_rigid(100 + 3 * i + k)[:3] for k in range(3)]).astype(np.float32)
        joints = rng.uniform(-0.2, 0.2, (1, 21, 3)).astype(np.float32)
        np.savez(cam / f"labels_{FRAME:06d}.npz", seg=seg, pose_y=py, joint_3d=joints)
        raws[s], segs[s], pose_y[s] = raw, seg, (py, joints)
    mesh_dir = root / "models" / YCB_CLASSES[5]
    mesh_dir.mkdir(parents=True)
    (mesh_dir / "textured_simple.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    return {"poses": poses, "raws": raws, "segs": segs, "labels": pose_y}


@pytest.fixture
def dexycb(tmp_path: Path) -> tuple[Path, dict]:
    root = tmp_path / "dexycb"
    return root, make_dexycb(root)


# --------------------------------------------------------------------------------------------------
# DexYCB
# --------------------------------------------------------------------------------------------------


def test_dexycb_masks_poses_depth_intrinsics(dexycb, tmp_path: Path):
    root, truth = dexycb
    serials = [SERIALS[2], SERIALS[0]]
    cap = read_dexycb(root, SEQUENCE, FRAME, serials, tmp_path / "cap")
    cap = load_capture(cap.root)  # what was written passes validation
    assert cap.names == serials
    for s in serials:
        v = cap.read_view(s)
        seg = truth["segs"][s]
        assert np.array_equal(v.mask == 2, seg == 255)  # hand
        assert np.array_equal(v.mask == 1, seg == 5)  # grasped object
        assert (v.mask[seg == 2] == 0).all() and (v.mask[seg == 0] == 0).all()  # other object, bg
        np.testing.assert_allclose(v.c2w, truth["poses"][s], rtol=0, atol=1e-12)
        assert np.array_equal(np.rint(v.depth * 1000).astype(np.uint16), truth["raws"][s])  # exact mm
        assert (v.fx, v.fy) == (50.0 + SERIALS.index(s), 51.5)
        assert (v.cx, v.cy) == (31.25 + 0.5, 23.75 + 0.5)  # integer-centred -> centre at +0.5
    md = cap.metadata
    assert md["source"] == "dexycb" and md["sequence"] == SEQUENCE and md["frame"] == FRAME
    assert md["grasped_ycb_id"] == 5 and md["object_name"] == "006_mustard_bottle"
    assert md["master_serial"] == SERIALS[0] and md["ycb_ids"] == YCB_IDS


def test_dexycb_ground_truth(dexycb, tmp_path: Path):
    root, truth = dexycb
    cap = read_dexycb(root, SEQUENCE, FRAME, None, tmp_path / "cap")
    assert cap.names == SERIALS
    c2w = truth["poses"][SERIALS[0]]
    py, joints = truth["labels"][SERIALS[0]]
    obj = np.eye(4)
    obj[:3] = py[GRASP_IND]
    np.testing.assert_allclose(np.array(cap.ground_truth["object_pose"]), c2w @ obj, atol=1e-6)
    expected_joints = joints[0].astype(np.float64) @ c2w[:3, :3].T + c2w[:3, 3]
    np.testing.assert_allclose(np.array(cap.ground_truth["hand_joints"]), expected_joints, atol=1e-6)
    assert cap.ground_truth_path("object_mesh").read_text().startswith("v 0 0 0")


@pytest.mark.parametrize(
    ("kwargs", "what"),
    [
        ({"frame": 3}, "out of range"),
        ({"frame": -1}, "out of range"),
        ({"serials": ["123"]}, "unknown camera serial"),
        ({"serials": [SERIALS[0], SERIALS[0]]}, "twice"),
        ({"sequence": "nope/nope"}, "meta.yml"),
    ],
)
def test_dexycb_bad_arguments(dexycb, tmp_path: Path, kwargs, what):
    root, _ = dexycb
    args = {"root": root, "sequence": SEQUENCE, "frame": FRAME, "serials": None, "out": tmp_path / "c"}
    args.update(kwargs)
    with pytest.raises(CaptureError, match=what):
        read_dexycb(**args)
    assert not (tmp_path / "c" / "capture.json").exists()


def _rm(rel):
    return lambda root: (root / rel).unlink()


@pytest.mark.parametrize(
    ("mutate", "file_name"),
    [
        (_rm(f"{SEQUENCE}/{SERIALS[1]}/labels_{FRAME:06d}.npz"), f"labels_{FRAME:06d}.npz"),
        (_rm(f"{SEQUENCE}/{SERIALS[1]}/color_{FRAME:06d}.jpg"), f"color_{FRAME:06d}.jpg"),
        (_rm(f"{SEQUENCE}/{SERIALS[1]}/aligned_depth_to_color_{FRAME:06d}.png"), "aligned_depth_to_color"),
        (_rm(f"calibration/intrinsics/{SERIALS[1]}_{W}x{H}.yml"), f"{SERIALS[1]}_{W}x{H}.yml"),
        (_rm("calibration/extrinsics_20200702/extrinsics.yml"), "extrinsics.yml"),
    ],
)
def test_dexycb_missing_files(dexycb, tmp_path: Path, mutate, file_name):
    root, _ = dexycb
    mutate(root)
    with pytest.raises(CaptureError, match="not found") as err:
        read_dexycb(root, SEQUENCE, FRAME, None, tmp_path / "c")
    assert file_name in str(err.value)
    assert not (tmp_path / "c" / "capture.json").exists()


def test_dexycb_never_unpickles(dexycb, tmp_path: Path):
    root, _ = dexycb
    path = root / SEQUENCE / SERIALS[0] / f"labels_{FRAME:06d}.npz"
    np.savez(path, seg=np.array([{"evil": 1}], dtype=object))
    with pytest.raises(CaptureError, match="pickled"):
        read_dexycb(root, SEQUENCE, FRAME, None, tmp_path / "c")


def test_dexycb_labels_missing_grasped_object_everywhere(dexycb, tmp_path: Path):
    root, truth = dexycb
    for s in SERIALS:
        path = root / SEQUENCE / s / f"labels_{FRAME:06d}.npz"
        seg = truth["segs"][s].copy()
        seg[seg == 5] = 0
        np.savez(path, seg=seg)
    with pytest.raises(CaptureError, match="object"):
        read_dexycb(root, SEQUENCE, FRAME, None, tmp_path / "c")


# --------------------------------------------------------------------------------------------------
# nerfstudio
# --------------------------------------------------------------------------------------------------

NH, NW = 49, 65  # odd: the image centre (w/2, h/2) is a pixel centre
DEPTH_MM = 1234


def make_nerfstudio(root: Path, **frame0_extra) -> tuple[Path, list[np.ndarray]]:
    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir()
    (root / "depth").mkdir()
    (root / "masks").mkdir()
    frames, gl_poses = [], []
    for i in range(2):
        rng = np.random.default_rng(i)
        M = _rigid(50 + i)
        M[:3, 3] = [2.0 + i, -1.0, 0.5]  # metres, away from the origin: must not be re-centred
        gl_poses.append(M)
        rgba = rng.integers(0, 256, (NH, NW, 4), dtype=np.uint8)
        iio.imwrite(root / "images" / f"frame_{i:05d}.png", rgba)
        depth = np.full((NH, NW), DEPTH_MM, np.uint16)
        depth[0, :4] = 0
        iio.imwrite(root / "depth" / f"frame_{i:05d}.png", depth)
        mask = np.zeros((NH, NW), np.uint8)
        mask[10:20, 10:20] = 1
        mask[30:40, 30:40] = 2
        iio.imwrite(root / "masks" / f"frame_{i:05d}.png", mask)
        frames.append(
            {
                "file_path": f"images/frame_{i:05d}.png",
                "depth_file_path": f"depth/frame_{i:05d}.png",
                "mask_path": f"masks/frame_{i:05d}.png",
                "transform_matrix": M.tolist(),
            }
        )
    frames[1]["fl_x"] = 70.0  # per-frame intrinsics override the global ones
    frames[0].update(frame0_extra)
    transforms = {
        "camera_model": "OPENCV",
        "fl_x": 60.0,
        "fl_y": 62.0,
        "cx": NW / 2,
        "cy": NH / 2,
        "w": NW,
        "h": NH,
        "k1": 0.0,
        "k2": 0.0,
        "p1": 0.0,
        "p2": 0.0,
        "frames": frames,
    }
    path = root / "transforms.json"
    path.write_text(json.dumps(transforms))
    return path, gl_poses


def test_nerfstudio_opengl_to_opencv_metres_and_backprojection(tmp_path: Path):
    path, gl_poses = make_nerfstudio(tmp_path / "ns")
    cap = load_capture(read_nerfstudio(path, tmp_path / "cap").root)
    assert cap.names == ["frame_00000", "frame_00001"]
    assert (cap.views[0].fx, cap.views[1].fx, cap.views[1].fy) == (60.0, 70.0, 62.0)
    for view, M in zip(cap.views, gl_poses):
        assert np.array_equal(view.c2w, M @ np.diag([1.0, -1.0, -1.0, 1.0]))
        assert np.array_equal(view.c2w[:3, 3], M[:3, 3])  # no re-centring, no re-scaling
        v = cap.read_view(view.name)
        assert v.rgb.shape == (NH, NW, 3)  # alpha dropped
        assert v.depth[NH // 2, NW // 2] == pytest.approx(DEPTH_MM / 1000)  # metres stay metres
        assert v.mask[15, 15] == 1 and v.mask[35, 35] == 2
        # The pixel at the image centre, at depth d, is the point d in front of the camera, which
        # nerfstudio's OpenGL camera looks at along its -z axis.
        world = depth_to_world_points(
            torch.from_numpy(v.depth.astype(np.float64)),
            torch.from_numpy(v.K),
            torch.from_numpy(v.c2w),
        )[NH // 2, NW // 2].numpy()
        expected = M[:3, 3] - DEPTH_MM / 1000 * M[:3, 2]
        np.testing.assert_allclose(world, expected, atol=1e-6)


def test_nerfstudio_depth_scale_factor(tmp_path: Path):
    path, _ = make_nerfstudio(tmp_path / "ns")
    cap = read_nerfstudio(path, tmp_path / "cap", depth_unit_scale_factor=1e-4)
    assert cap.read_view(0).depth[NH // 2, NW // 2] == pytest.approx(DEPTH_MM / 10000, abs=5e-4)


def _binary_mask(root: Path):
    mask = np.zeros((NH, NW), np.uint8)
    mask[10:20, 10:20] = 255
    iio.imwrite(root / "masks" / "frame_00000.png", mask)


@pytest.mark.parametrize(
    ("extra", "mutate", "what", "file_name"),
    [
        ({"k1": 0.12}, None, "distortion", "transforms.json"),
        ({"camera_model": "OPENCV_FISHEYE"}, None, "pinhole", "transforms.json"),
        ({"depth_file_path": None}, None, "depth", "transforms.json"),
        ({"w": 64}, None, "w = 64", "transforms.json"),
        ({"transform_matrix": [[1, 0, 0], [0, 1, 0]]}, None, "transform_matrix", "transforms.json"),
        ({}, _binary_mask, "binary 0/255", "frame_00000.png"),
        ({}, lambda root: (root / "depth" / "frame_00001.png").unlink(), "not found", "frame_00001.png"),
    ],
)
def test_nerfstudio_rejects(tmp_path: Path, extra, mutate, what, file_name):
    path, _ = make_nerfstudio(tmp_path / "ns", **extra)
    if mutate is not None:
        mutate(tmp_path / "ns")
    with pytest.raises(CaptureError, match=what) as err:
        read_nerfstudio(path, tmp_path / "cap")
    assert file_name in str(err.value)
    assert not (tmp_path / "cap" / "capture.json").exists()
