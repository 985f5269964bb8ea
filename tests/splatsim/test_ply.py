"""Tests for splatsim.ply: exact round trips, gsplat interop, and clear errors on bad files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from plyfile import PlyData, PlyElement

from splatsim.ply import ply_property_names, read_ply, write_ply
from splatsim.scene import GaussianScene, random_scene

FIELDS = ("means", "quats", "log_scales", "logit_opacities", "sh", "labels")


def assert_bit_identical(a: GaussianScene, b: GaussianScene, skip: tuple[str, ...] = ()) -> None:
    for name in FIELDS:
        if name in skip:
            continue
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        if x.dtype == torch.float32:
            x, y = x.view(torch.int32), y.view(torch.int32)  # compare the bits, -0.0 included
        assert torch.equal(x, y), name


def property_names(path: Path) -> list[str]:
    return [p.name for p in PlyData.read(str(path))["vertex"].properties]


def write_vertex(path: Path, columns: dict[str, np.ndarray], text: bool = False) -> Path:
    """Write a PLY with exactly these vertex columns (dtype taken from each array)."""
    n = len(next(iter(columns.values())))
    arr = np.empty(n, dtype=[(k, v.dtype) for k, v in columns.items()])
    for k, v in columns.items():
        arr[k] = v
    PlyData([PlyElement.describe(arr, "vertex")], text=text).write(str(path))
    return path


def valid_columns(n: int = 6, rest: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    names = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(rest)]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    return {k: rng.normal(size=n).astype(np.float32) for k in names}


# --------------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_round_trip_is_bit_identical(tmp_path: Path, degree: int) -> None:
    scene = random_scene(257, seed=degree, sh_degree=degree)
    scene.means[0, 0] = -0.0
    path = tmp_path / "scene.ply"
    write_ply(scene, path)
    back = read_ply(path)
    assert back.sh_degree == degree
    assert_bit_identical(scene, back)
    assert property_names(path) == ply_property_names(degree)


@pytest.mark.parametrize("degree", [0, 3])
def test_round_trip_without_labels_reads_background(tmp_path: Path, degree: int) -> None:
    scene = random_scene(50, seed=3, sh_degree=degree)
    path = tmp_path / "nolabel.ply"
    write_ply(scene, path, label=False)
    assert "label" not in property_names(path)
    back = read_ply(path)
    assert_bit_identical(scene, back, skip=("labels",))
    assert torch.equal(back.labels, torch.zeros(50, dtype=torch.int64))


def test_round_trip_with_normals_inria_layout(tmp_path: Path) -> None:
    scene = random_scene(40, seed=4, sh_degree=1)
    path = tmp_path / "normals.ply"
    write_ply(scene, path, normals=True)
    names = property_names(path)
    assert names[:9] == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    assert names == ply_property_names(1, normals=True)
    assert_bit_identical(scene, read_ply(path))


def test_empty_scene_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "empty.ply"
    write_ply(GaussianScene.empty(sh_degree=2), path)
    back = read_ply(path)
    assert back.num_gaussians == 0 and back.sh_degree == 2


def test_file_is_binary_little_endian_all_float32(tmp_path: Path) -> None:
    """Every property, label included, is float32: viewers such as gradio's Model3D refuse others."""
    path = tmp_path / "s.ply"
    write_ply(random_scene(5, seed=0, sh_degree=1), path)
    ply = PlyData.read(str(path))
    assert not ply.text and ply.byte_order == "<"
    vertex = ply["vertex"]
    kinds = {p.name: vertex.data.dtype[p.name] for p in vertex.properties}
    assert "label" in kinds
    assert all(dt == np.float32 for dt in kinds.values())


def test_f_rest_is_channel_major(tmp_path: Path) -> None:
    scene = random_scene(3, seed=0, sh_degree=2)  # K = 9
    k = scene.sh.shape[1]
    coeff = torch.arange(k, dtype=torch.float32)[:, None]
    channel = torch.arange(3, dtype=torch.float32)[None, :]
    scene.sh[:] = 100 * channel + coeff  # sh[:, k, c] = 100 c + k
    path = tmp_path / "layout.ply"
    write_ply(scene, path)
    vertex = PlyData.read(str(path))["vertex"]
    for c in range(3):
        assert vertex["f_dc_" + str(c)][0] == 100 * c
        for kk in range(1, k):
            assert vertex[f"f_rest_{c * (k - 1) + kk - 1}"][0] == 100 * c + kk


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "scene.ply"
    write_ply(random_scene(10, seed=0), path)
    before = path.read_bytes()
    bad = random_scene(10, seed=1)
    bad.means[2, 1] = float("nan")
    with pytest.raises(ValueError, match="scene.ply.*means"):
        write_ply(bad, path)
    assert path.read_bytes() == before
    write_ply(random_scene(12, seed=2), path)  # overwrite in place
    assert read_ply(path).num_gaussians == 12
    assert sorted(os.listdir(tmp_path)) == ["scene.ply"]


def test_extra_properties_ascii_and_double_are_accepted(tmp_path: Path) -> None:
    cols = valid_columns(rest=9)
    cols["x"] = cols["x"].astype(np.float64)
    cols["my_extra"] = np.arange(6, dtype=np.int32)
    path = write_vertex(tmp_path / "ascii.ply", cols, text=True)
    scene = read_ply(path)
    assert scene.sh_degree == 1
    assert torch.equal(scene.means[:, 0], torch.from_numpy(cols["x"].astype(np.float32)))


# --------------------------------------------------------------------------------------------------
# gsplat interop


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_reads_gsplat_export_exactly(tmp_path: Path, degree: int) -> None:
    from gsplat import export_splats

    scene = random_scene(123, seed=10 + degree, sh_degree=degree)
    scene.quats.mul_(2.5)  # not unit length: stored as is by both
    gs_path = tmp_path / "gsplat.ply"
    export_splats(
        means=scene.means,
        scales=scene.log_scales,  # gsplat stores its raw (log) parameters
        quats=scene.quats,
        opacities=scene.logit_opacities,  # raw logits
        sh0=scene.sh[:, :1],
        shN=scene.sh[:, 1:],
        format="ply",
        save_to=str(gs_path),
    )
    back = read_ply(gs_path)
    assert_bit_identical(scene, back, skip=("labels",))
    assert torch.equal(back.labels, torch.zeros(123, dtype=torch.int64))

    ours = tmp_path / "ours.ply"
    write_ply(scene, ours)
    assert property_names(ours) == property_names(gs_path) + ["label"]
    # Without the label, our file has gsplat's exact header properties and body bytes.
    ours_nolabel = tmp_path / "ours_nolabel.ply"
    write_ply(scene, ours_nolabel, label=False)
    assert property_names(ours_nolabel) == property_names(gs_path)
    body = PlyData.read(str(ours_nolabel))["vertex"].data.tobytes()
    assert body == PlyData.read(str(gs_path))["vertex"].data.tobytes()


# --------------------------------------------------------------------------------------------------
# Bad inputs: ValueError naming the file and the property


def test_missing_opacity(tmp_path: Path) -> None:
    cols = valid_columns()
    del cols["opacity"]
    path = write_vertex(tmp_path / "no_opacity.ply", cols)
    with pytest.raises(ValueError, match=r"no_opacity\.ply.*missing.*'opacity'.*expected"):
        read_ply(path)


def test_f_rest_count_10(tmp_path: Path) -> None:
    path = write_vertex(tmp_path / "rest10.ply", valid_columns(rest=10))
    with pytest.raises(ValueError, match=r"rest10\.ply.*10 f_rest_\* .*expected 0, 9, 24 or 45"):
        read_ply(path)


def test_f_rest_non_contiguous(tmp_path: Path) -> None:
    cols = valid_columns(rest=9)
    cols["f_rest_11"] = cols.pop("f_rest_4")
    path = write_vertex(tmp_path / "gap.ply", cols)
    with pytest.raises(ValueError, match=r"gap\.ply.*not contiguous.*f_rest_4"):
        read_ply(path)


def test_nan_in_x_row_3(tmp_path: Path) -> None:
    cols = valid_columns()
    cols["x"][3] = np.nan
    path = write_vertex(tmp_path / "nan.ply", cols)
    with pytest.raises(ValueError, match=r"nan\.ply.*'x'.*row 3"):
        read_ply(path)


def test_non_float_property(tmp_path: Path) -> None:
    cols = valid_columns()
    cols["scale_1"] = np.arange(6, dtype=np.int32)
    path = write_vertex(tmp_path / "intscale.ply", cols)
    with pytest.raises(ValueError, match=r"intscale\.ply.*'scale_1'.*expected a float"):
        read_ply(path)


def test_label_7(tmp_path: Path) -> None:
    cols = valid_columns()
    cols["label"] = np.array([0, 1, 2, 7, 0, 0], dtype=np.uint8)
    path = write_vertex(tmp_path / "label7.ply", cols)
    with pytest.raises(ValueError, match=r"label7\.ply.*'label'.*value 7 at row 3"):
        read_ply(path)


def test_uchar_label_is_read(tmp_path: Path) -> None:
    cols = valid_columns()
    cols["label"] = np.array([0, 1, 2, 2, 1, 0], dtype=np.uint8)
    path = write_vertex(tmp_path / "ulabel.ply", cols)
    assert read_ply(path).labels.tolist() == [0, 1, 2, 2, 1, 0]


def test_fractional_label(tmp_path: Path) -> None:
    cols = valid_columns()
    cols["label"] = np.array([0, 1, 1.5, 0, 0, 0], dtype=np.float32)
    path = write_vertex(tmp_path / "flabel.ply", cols)
    with pytest.raises(ValueError, match=r"flabel\.ply.*'label'.*value 1.5 at row 2"):
        read_ply(path)


def test_zero_quaternion(tmp_path: Path) -> None:
    cols = valid_columns()
    for name in ("rot_0", "rot_1", "rot_2", "rot_3"):
        cols[name][4] = 0.0
    path = write_vertex(tmp_path / "zeroq.ply", cols)
    with pytest.raises(ValueError, match=r"zeroq\.ply.*'quats'.*index 4"):
        read_ply(path)


def test_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "trunc.ply"
    write_ply(random_scene(20, seed=0, sh_degree=1), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 37])
    with pytest.raises(ValueError, match=r"trunc\.ply.*not a readable PLY"):
        read_ply(path)


@pytest.mark.parametrize(
    "content",
    [b"", b"hello, not a ply\n", b"\x80\x04\x95 pickle-ish bytes", b"ply\nformat binary_little_endian"],
)
def test_not_a_ply(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "junk.ply"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"junk\.ply.*not a readable PLY"):
        read_ply(path)


def test_no_vertex_element(tmp_path: Path) -> None:
    arr = np.zeros(2, dtype=[("a", "f4")])
    path = tmp_path / "face.ply"
    PlyData([PlyElement.describe(arr, "face")]).write(str(path))
    with pytest.raises(ValueError, match=r"face\.ply.*no 'vertex' element"):
        read_ply(path)


def test_missing_file_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_ply(tmp_path / "nope.ply")
