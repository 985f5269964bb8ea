"""Tests for recon/capture.py: the capture folder format, its writer, loader and validation."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from recon import capture as capture_mod
from recon.capture import (
    CAPTURE_JSON,
    FORMAT_NAME,
    Capture,
    CaptureError,
    ViewData,
    depth_metres_to_uint16,
    depth_uint16_to_metres,
    load_capture,
    validate_capture,
    write_capture,
)

H, W = 48, 64


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def make_view(name: str, seed: int, hand: bool = True, obj: bool = True) -> ViewData:
    rng = np.random.default_rng(seed)
    c2w = np.eye(4)
    c2w[:3, :3] = _rotation(rng)
    c2w[:3, 3] = rng.uniform(-1, 1, 3)
    depth = rng.uniform(0.4, 1.6, (H, W)).astype(np.float32)
    depth[0, :5] = 0.0
    depth[1, :5] = np.nan
    mask = np.zeros((H, W), np.uint8)
    if obj:
        mask[10:20, 10:30] = 1
    if hand:
        mask[25:35, 20:40] = 2
    return ViewData(
        name=name,
        rgb=rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
        depth=depth,
        mask=mask,
        fx=60.0 + seed,
        fy=61.0,
        cx=W / 2 + 0.25,
        cy=H / 2 - 0.5,
        c2w=c2w,
    )


@pytest.fixture
def views() -> list[ViewData]:
    return [make_view(f"cam{i}", seed=i) for i in range(3)]


@pytest.fixture
def written(tmp_path: Path, views: list[ViewData]) -> Capture:
    return write_capture(
        tmp_path / "cap", views, metadata={"source": "test", "seed": np.int64(3)}, ground_truth={"k": 1}
    )


# --------------------------------------------------------------------------------------------------
# Round trip
# --------------------------------------------------------------------------------------------------


def test_round_trip_exact_poses_depth_within_half_mm_masks_exact(written: Capture, views: list[ViewData]):
    cap = load_capture(written.root)
    assert cap.num_views == 3 and cap.names == ["cam0", "cam1", "cam2"]
    assert cap.depth_scale == 0.001
    assert cap.metadata == {"source": "test", "seed": 3}
    assert cap.ground_truth == {"k": 1}
    for v, cv in zip(views, cap.views):
        assert np.array_equal(cv.c2w, v.c2w)  # float64 survives JSON exactly
        assert (cv.fx, cv.fy, cv.cx, cv.cy, cv.width, cv.height) == (v.fx, v.fy, v.cx, v.cy, W, H)
        rv = cap.read_view(v.name)
        assert np.array_equal(rv.rgb, v.rgb)
        assert np.array_equal(rv.mask, v.mask)
        assert rv.depth.dtype == np.float32
        valid = np.isfinite(v.depth) & (v.depth > 0)
        assert np.abs(rv.depth[valid] - v.depth[valid]).max() <= 0.0005 + 1e-7
        assert (rv.depth[~valid] == 0).all()  # 0 and NaN both come back as 0 = missing
        assert np.array_equal(rv.K, v.K)


def test_capture_json_layout(written: Capture):
    data = json.loads((written.root / CAPTURE_JSON).read_text())
    assert data["format"] == FORMAT_NAME and data["version"] == 1 and data["units"] == "metres"
    assert data["depth_scale"] == 0.001 and "OpenCV" in data["frame"]
    v0 = data["views"][0]
    assert v0["rgb"] == "rgb/cam0.png" and v0["depth"] == "depth/cam0.png" and v0["mask"] == "masks/cam0.png"
    assert len(v0["c2w"]) == 4 and all(len(r) == 4 for r in v0["c2w"])
    depth = iio.imread(written.root / v0["depth"])
    assert depth.dtype == np.uint16
    assert not list(written.root.rglob("*.tmp"))


def test_select_and_view_index(written: Capture):
    sub = written.select(["cam2", 0])
    assert sub.names == ["cam2", "cam0"] and sub.root == written.root
    assert written.view_index(-1) == 2
    with pytest.raises(CaptureError, match="no view named 'nope'"):
        written.select(["nope"])
    with pytest.raises(CaptureError, match="out of range"):
        written.read_view(5)
    with pytest.raises(CaptureError, match="twice"):
        written.select([0, "cam0"])


def test_views_without_masks_and_load_from_json_path(tmp_path: Path, views: list[ViewData]):
    views[1].mask = None
    cap = write_capture(tmp_path / "c", views)
    assert cap.views[1].mask_path is None
    loaded = load_capture(tmp_path / "c" / CAPTURE_JSON)
    assert loaded.read_view(1).mask is None and loaded.has_masks


def test_overwrite(tmp_path: Path, views: list[ViewData]):
    write_capture(tmp_path / "c", views)
    with pytest.raises(CaptureError, match="overwrite=True"):
        write_capture(tmp_path / "c", views[:2])
    cap = write_capture(tmp_path / "c", views[:2], overwrite=True)
    assert load_capture(tmp_path / "c").names == ["cam0", "cam1"] == cap.names
    assert not (tmp_path / "c" / "rgb" / "cam2.png").exists()


def test_ground_truth_mesh_copied_and_checked(tmp_path: Path, views: list[ViewData]):
    mesh = tmp_path / "obj.ply"
    mesh.write_text("ply\n")
    cap = write_capture(tmp_path / "c", views, ground_truth={"object_mesh": mesh, "note": "x"})
    assert cap.ground_truth["object_mesh"] == "ground_truth/object_mesh.ply"
    assert load_capture(tmp_path / "c").ground_truth_path("object_mesh").read_text() == "ply\n"
    (tmp_path / "c" / "ground_truth" / "object_mesh.ply").unlink()
    with pytest.raises(CaptureError, match="object_mesh.ply"):
        load_capture(tmp_path / "c")


def test_interrupted_write_leaves_no_capture(tmp_path: Path, views: list[ViewData], monkeypatch):
    calls = {"n": 0}
    encode = capture_mod._encode_png

    def failing(image):
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError("disk full")
        return encode(image)

    monkeypatch.setattr(capture_mod, "_encode_png", failing)
    with pytest.raises(OSError, match="disk full"):
        write_capture(tmp_path / "c", views)
    assert not (tmp_path / "c" / CAPTURE_JSON).exists()
    assert not [p for p in (tmp_path / "c").rglob("*") if p.is_file()]  # written files removed
    with pytest.raises(CaptureError, match="capture.json"):
        load_capture(tmp_path / "c")


def test_depth_conversion_rounds_clips_and_marks_missing():
    d = np.array([[0.0, np.nan, np.inf, 0.0004], [0.0006, 1.2344, 100.0, -0.0]], np.float32)
    raw = depth_metres_to_uint16(d)
    assert raw.dtype == np.uint16
    assert raw.tolist() == [[0, 0, 0, 0], [1, 1234, 65535, 0]]
    assert depth_uint16_to_metres(np.array([[1500]], np.uint16))[0, 0] == np.float32(1.5)


# --------------------------------------------------------------------------------------------------
# Bad in-memory views: CaptureError naming the file, nothing written
# --------------------------------------------------------------------------------------------------


def _set(attr, value):
    def f(vs):
        setattr(vs[1], attr, value)

    return f


def _c2w(fn):
    def f(vs):
        vs[1].c2w = fn(vs[1].c2w.copy())

    return f


def _scale_rot(T):
    T[:3, :3] *= 1.01
    return T


def _reflect(T):
    T[:3, 0] *= -1
    return T


def _last_row(T):
    T[3, 0] = 0.1
    return T


def _nan(T):
    T[0, 3] = np.nan
    return T


def _depth(fn):
    def f(vs):
        vs[1].depth = fn(vs[1].depth.copy())

    return f


def _mask(fn):
    def f(vs):
        for v in vs:
            v.mask = fn(v.mask.copy())

    return f


WRITE_CASES = {
    "fx<=0": (_set("fx", 0.0), "fx", "cam1"),
    "fy<0": (_set("fy", -3.0), "fy", "cam1"),
    "cx outside": (_set("cx", W + 1.0), "cx", "cam1"),
    "cy outside": (_set("cy", -1.0), "cy", "cam1"),
    "c2w 3x4": (_c2w(lambda T: T[:3]), "4x4", "cam1"),
    "c2w non-finite": (_c2w(_nan), "non-finite", "cam1"),
    "c2w scaled": (_c2w(_scale_rot), "orthonormal", "cam1"),
    "c2w reflection": (_c2w(_reflect), "det", "cam1"),
    "c2w last row": (_c2w(_last_row), "last row", "cam1"),
    "no valid depth": (_depth(lambda d: d * 0), "no valid", "cam1.png"),
    "depth in mm": (_depth(lambda d: d * 1000), "millimetres", "cam1.png"),
    "depth tiny": (_depth(lambda d: d * 0.01), "wrong scale", "cam1.png"),
    "negative depth": (_depth(lambda d: -d), "negative", "cam1.png"),
    "depth wrong size": (_depth(lambda d: d[:10]), "capture.json says", "cam1.png"),
    "rgb float": (_set("rgb", np.zeros((H, W, 3), np.float32)), "8-bit RGB", "cam1.png"),
    "rgb gray": (_set("rgb", np.zeros((H, W), np.uint8)), "8-bit RGB", "cam1.png"),
    "mask 255": (_set("mask", np.full((H, W), 255, np.uint8)), "binary 0/255", "cam1.png"),
    "mask value 3": (_set("mask", np.full((H, W), 3, np.uint8)), "outside", "cam1.png"),
    "no hand anywhere": (_mask(lambda m: np.where(m == 2, 0, m).astype(np.uint8)), "hand", CAPTURE_JSON),
    "no object anywhere": (_mask(lambda m: np.where(m == 1, 0, m).astype(np.uint8)), "object", CAPTURE_JSON),
    "duplicate names": (_set("name", "cam0"), "unique", CAPTURE_JSON),
    "bad name": (_set("name", "a/b"), "file name", CAPTURE_JSON),
}


@pytest.mark.parametrize("case", list(WRITE_CASES))
def test_write_rejects_bad_views(tmp_path: Path, views: list[ViewData], case: str):
    mutate, what, file_name = WRITE_CASES[case]
    mutate(views)
    root = tmp_path / "c"
    with pytest.raises(CaptureError, match=what) as err:
        write_capture(root, views)
    assert file_name in str(err.value)
    assert not (root / CAPTURE_JSON).exists()
    assert not root.exists() or not [p for p in root.rglob("*") if p.is_file()]


def test_write_rejects_bad_depth_scale_and_empty(tmp_path: Path, views: list[ViewData]):
    with pytest.raises(CaptureError, match="depth_scale"):
        write_capture(tmp_path / "c", views, depth_scale=0.0)
    with pytest.raises(CaptureError, match="at least one view"):
        write_capture(tmp_path / "c", [])
    with pytest.raises(CaptureError, match="JSON"):
        write_capture(tmp_path / "c", views, metadata={"x": float("nan")})
    assert not (tmp_path / "c" / CAPTURE_JSON).exists()


def test_capture_without_any_mask_is_valid(tmp_path: Path, views: list[ViewData]):
    for v in views:
        v.mask = None
    cap = load_capture(write_capture(tmp_path / "c", views).root)
    assert not cap.has_masks


# --------------------------------------------------------------------------------------------------
# Bad files on disk: load_capture raises CaptureError naming the file
# --------------------------------------------------------------------------------------------------


def _edit_json(fn):
    def f(root: Path):
        p = root / CAPTURE_JSON
        data = json.loads(p.read_text())
        fn(data)
        p.write_text(json.dumps(data))

    return f


def _truncate(rel):
    def f(root: Path):
        p = root / rel
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])

    return f


def _replace_image(rel, image):
    def f(root: Path):
        iio.imwrite(root / rel, image)

    return f


def _view_field(key, value, i=1):
    def fn(data):
        data["views"][i][key] = value

    return _edit_json(fn)


def _c2w_json(fn):
    def g(data):
        T = np.array(data["views"][1]["c2w"])
        data["views"][1]["c2w"] = fn(T).tolist()

    return _edit_json(g)


def _masks_without_hand(root: Path):
    for p in (root / "masks").glob("*.png"):
        m = iio.imread(p)
        iio.imwrite(p, np.where(m == 2, 0, m).astype(np.uint8))


def _set_top(key, value):
    def fn(data):
        data[key] = value

    return _edit_json(fn)


BINARY_MASK = np.where(np.arange(W) < 9, 255, 0).astype(np.uint8)[None].repeat(H, 0)

LOAD_CASES = {
    "missing rgb": (lambda root: (root / "rgb" / "cam1.png").unlink(), "not found", "cam1.png"),
    "missing mask": (lambda root: (root / "masks" / "cam2.png").unlink(), "not found", "cam2.png"),
    "truncated rgb": (_truncate("rgb/cam1.png"), "truncated", "cam1.png"),
    "truncated depth": (_truncate("depth/cam0.png"), "truncated", "cam0.png"),
    "not a png": (lambda root: (root / "masks" / "cam1.png").write_text("hello"), "decode", "cam1.png"),
    "size mismatch": (_view_field("width", W + 2), "capture.json says", "cam1.png"),
    "depth 8-bit": (_replace_image("depth/cam1.png", np.full((H, W), 9, np.uint8)), "16-bit", "cam1.png"),
    "depth all zero": (_replace_image("depth/cam1.png", np.zeros((H, W), np.uint16)), "no valid", "cam1.png"),
    "mm labelled as m": (_set_top("depth_scale", 1.0), "set depth_scale to 0.001", "cam0.png"),
    "wrong scale": (_set_top("depth_scale", 1e-5), "metres stored as uint16", "cam0.png"),
    "mask 0/255": (
        _replace_image("masks/cam1.png", BINARY_MASK),
        "binary 0/255",
        "cam1.png",
    ),
    "mask rgb": (_replace_image("masks/cam1.png", np.zeros((H, W, 3), np.uint8)), "single-chan", "cam1.png"),
    "no hand in any mask": (_masks_without_hand, "hand", CAPTURE_JSON),
    "fx zero": (_view_field("fx", 0), "fx", CAPTURE_JSON),
    "cx outside": (_view_field("cx", -3.0), "cx", CAPTURE_JSON),
    "width not int": (_view_field("width", 64.5), "width", CAPTURE_JSON),
    "c2w 3x3": (_view_field("c2w", np.eye(3).tolist()), "4x4", CAPTURE_JSON),
    "c2w ragged": (_view_field("c2w", [[1, 0], [0, 1, 0, 0]]), "4x4", CAPTURE_JSON),
    "c2w scaled": (_c2w_json(_scale_rot), "orthonormal", CAPTURE_JSON),
    "c2w reflection": (_c2w_json(_reflect), "det", CAPTURE_JSON),
    "c2w last row": (_c2w_json(_last_row), "last row", CAPTURE_JSON),
    "duplicate names": (_view_field("name", "cam0", i=2), "unique", CAPTURE_JSON),
    "missing field": (_edit_json(lambda d: d["views"][0].pop("fy")), "fy", CAPTURE_JSON),
    "escaping path": (_view_field("rgb", "../outside.png"), "inside", CAPTURE_JSON),
    "wrong format": (_set_top("format", "nerfstudio"), "format", CAPTURE_JSON),
    "newer version": (_set_top("version", 2), "newer", CAPTURE_JSON),
    "units": (_set_top("units", "millimetres"), "units", CAPTURE_JSON),
    "no views": (_set_top("views", []), "views", CAPTURE_JSON),
    "broken json": (lambda root: (root / CAPTURE_JSON).write_text("{"), "JSON", CAPTURE_JSON),
    "no capture.json": (lambda root: (root / CAPTURE_JSON).unlink(), "not found", CAPTURE_JSON),
}


@pytest.mark.parametrize("case", list(LOAD_CASES))
def test_load_rejects_bad_capture(written: Capture, case: str):
    mutate, what, file_name = LOAD_CASES[case]
    mutate(written.root)
    with pytest.raises(CaptureError, match=what) as err:
        load_capture(written.root)
    assert file_name in str(err.value)


def test_check_images_false_skips_decoding(written: Capture):
    _truncate("rgb/cam1.png")(written.root)
    cap = load_capture(written.root, check_images=False)
    cap.read_view(0)
    with pytest.raises(CaptureError, match="cam1.png"):
        cap.read_view(1)
    with pytest.raises(CaptureError, match="cam1.png"):
        validate_capture(cap)


def test_capture_error_is_value_error():
    assert issubclass(CaptureError, ValueError)
