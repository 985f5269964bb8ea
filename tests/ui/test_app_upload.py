"""ui.app_upload: safe zip extraction (traversal, links, bombs, lies) and importing a zipped capture."""

from __future__ import annotations

import io
import json
import stat
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ui.app_upload import (
    ExtractLimits,
    UnsafeArchiveError,
    UploadError,
    find_capture_source,
    import_capture,
    safe_extract_zip,
)


def _zip(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _zip_with_info(path: Path, infos: list[tuple[zipfile.ZipInfo, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for info, data in infos:
            zf.writestr(info, data)
    return path


def _nothing_outside(tmp_path: Path, dest: Path) -> None:
    """Only the archives and (possibly) the destination are in tmp_path: nothing escaped."""
    for p in tmp_path.rglob("*"):
        assert p.suffix == ".zip" or p == dest or dest in p.parents, f"unexpected {p}"


def test_extracts_nested_files_and_skips_junk(tmp_path):
    archive = _zip(
        tmp_path / "ok.zip",
        {
            "cap/capture.json": b"{}",
            "cap/rgb/a.png": b"x" * 100,
            "cap/./depth/a.png": b"y",
            "__MACOSX/cap/._a.png": b"junk",
            "cap/.DS_Store": b"junk",
        },
    )
    dest = tmp_path / "out"
    files = safe_extract_zip(archive, dest)
    rel = sorted(p.relative_to(dest).as_posix() for p in files)
    assert rel == ["cap/capture.json", "cap/depth/a.png", "cap/rgb/a.png"]
    assert (dest / "cap/rgb/a.png").read_bytes() == b"x" * 100
    assert not (dest / "__MACOSX").exists()
    mode = (dest / "cap/capture.json").stat().st_mode
    assert not mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH), "extracted files are never executable"


@pytest.mark.parametrize(
    "name",
    [
        "../evil.txt",
        "a/../../evil.txt",
        "a/b/../../../evil.txt",
        "..\\evil.txt",
        "a\\..\\..\\evil.txt",
        "/etc/evil.txt",
        "\\evil.txt",
        "C:/evil.txt",
        "c:\\evil.txt",
    ],
)
def test_rejects_traversal_and_absolute_paths(tmp_path, name):
    archive = _zip(tmp_path / "bad.zip", {"fine.txt": b"ok", name: b"evil"})
    dest = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError, match=r"absolute|'\.\.'"):
        safe_extract_zip(archive, dest)
    assert not dest.exists(), "a refused archive leaves nothing behind"
    _nothing_outside(tmp_path, dest)


def test_nul_in_name_is_cut_there(tmp_path):
    archive = _zip(tmp_path / "nul.zip", {"a.txt": b"x"})
    archive.write_bytes(archive.read_bytes().replace(b"a.txt", b"a\x00txt"))
    files = safe_extract_zip(archive, tmp_path / "out")  # zipfile ends names at NUL, as the spec's readers do
    assert [p.name for p in files] == ["a"]
    _nothing_outside(tmp_path, tmp_path / "out")


def test_rejects_symlinks(tmp_path):
    link = zipfile.ZipInfo("cap/link")
    link.create_system = 3  # unix
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive = _zip_with_info(
        tmp_path / "link.zip", [(zipfile.ZipInfo("cap/a.txt"), b"a"), (link, b"/etc/passwd")]
    )
    dest = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError, match="symbolic link"):
        safe_extract_zip(archive, dest)
    assert not dest.exists()


@pytest.mark.parametrize("kind", [stat.S_IFIFO, stat.S_IFCHR, stat.S_IFBLK, stat.S_IFSOCK])
def test_rejects_special_files(tmp_path, kind):
    info = zipfile.ZipInfo("dev")
    info.create_system = 3
    info.external_attr = (kind | 0o644) << 16
    archive = _zip_with_info(tmp_path / "special.zip", [(info, b"")])
    with pytest.raises(UnsafeArchiveError, match="not a regular file"):
        safe_extract_zip(archive, tmp_path / "out")


def test_rejects_duplicate_members_case_insensitively(tmp_path):
    with pytest.warns(UserWarning):  # zipfile warns about the duplicate too
        archive = _zip(tmp_path / "dup.zip", {"a.txt": b"1"})
        with zipfile.ZipFile(archive, "a") as zf:
            zf.writestr("a.txt", b"2")
    with pytest.raises(UnsafeArchiveError, match="twice"):
        safe_extract_zip(archive, tmp_path / "out")
    archive2 = _zip(tmp_path / "dup2.zip", {"A.txt": b"1", "a.txt": b"2"})
    with pytest.raises(UnsafeArchiveError, match="twice"):
        safe_extract_zip(archive2, tmp_path / "out2")


def test_rejects_encrypted_members(tmp_path):
    archive = _zip(tmp_path / "enc.zip", {"a.txt": b"secret"}, zipfile.ZIP_STORED)
    raw = bytearray(archive.read_bytes())
    # Set the "encrypted" flag bit in the local header and the central directory entry.
    for sig, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        i = raw.index(sig)
        (flags,) = struct.unpack_from("<H", raw, i + offset)
        struct.pack_into("<H", raw, i + offset, flags | 0x1)
    archive.write_bytes(bytes(raw))
    with pytest.raises(UnsafeArchiveError, match="encrypted"):
        safe_extract_zip(archive, tmp_path / "out")


def test_rejects_too_many_members(tmp_path):
    archive = _zip(tmp_path / "many.zip", {f"f{i}.txt": b"x" for i in range(11)})
    with pytest.raises(UnsafeArchiveError, match="at most 10"):
        safe_extract_zip(archive, tmp_path / "out", ExtractLimits(max_files=10))
    assert len(safe_extract_zip(archive, tmp_path / "ok", ExtractLimits(max_files=11))) == 11


def test_rejects_too_many_bytes_in_total_and_per_file(tmp_path):
    data = np.random.default_rng(0).bytes(3000)  # incompressible
    archive = _zip(tmp_path / "big.zip", {"a.bin": data, "b.bin": data})
    with pytest.raises(UnsafeArchiveError, match="more than 5000 bytes"):
        safe_extract_zip(archive, tmp_path / "out", ExtractLimits(max_total_bytes=5000))
    assert not (tmp_path / "out").exists()
    with pytest.raises(UnsafeArchiveError, match="the limit is 2000"):
        safe_extract_zip(archive, tmp_path / "out", ExtractLimits(max_file_bytes=2000))


def test_rejects_decompression_bomb_by_ratio(tmp_path):
    archive = _zip(tmp_path / "bomb.zip", {"zeros.bin": bytes(4 * 1024**2)})
    info = zipfile.ZipFile(archive).getinfo("zeros.bin")
    assert info.file_size / info.compress_size > 200
    with pytest.raises(UnsafeArchiveError, match="decompression bomb"):
        safe_extract_zip(archive, tmp_path / "out")
    # Small files compress freely: the ratio counts only above ratio_min_bytes.
    small = _zip(tmp_path / "small.zip", {"zeros.bin": bytes(100_000)})
    assert len(safe_extract_zip(small, tmp_path / "ok")) == 1


def test_rejects_member_whose_header_understates_its_size(tmp_path):
    payload = np.random.default_rng(1).bytes(50_000)
    archive = _zip(tmp_path / "lie.zip", {"a.bin": payload}, zipfile.ZIP_DEFLATED)
    raw = bytearray(archive.read_bytes())
    # Declare 1000 bytes instead of 50000 in the local header (offset 22) and central directory (24).
    for sig, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        i = raw.index(sig)
        struct.pack_into("<I", raw, i + offset, 1000)
    archive.write_bytes(bytes(raw))
    dest = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError):
        safe_extract_zip(archive, dest)
    assert not dest.exists()


def test_rejects_corrupt_and_non_zip_files(tmp_path):
    (tmp_path / "not.zip").write_bytes(b"this is not a zip file at all")
    with pytest.raises(UnsafeArchiveError, match="not a readable zip"):
        safe_extract_zip(tmp_path / "not.zip", tmp_path / "out")
    archive = _zip(tmp_path / "crc.zip", {"a.txt": b"hello world" * 10}, zipfile.ZIP_STORED)
    raw = archive.read_bytes()
    archive.write_bytes(raw.replace(b"hello world", b"HELLO WORLD", 1))
    with pytest.raises(UnsafeArchiveError, match="cannot be extracted"):
        safe_extract_zip(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_destination_must_be_new_or_empty(tmp_path):
    archive = _zip(tmp_path / "a.zip", {"a.txt": b"1"})
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "existing").write_text("keep me")
    with pytest.raises(UnsafeArchiveError, match="new or empty"):
        safe_extract_zip(archive, dest)
    assert (dest / "existing").read_text() == "keep me"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert len(safe_extract_zip(archive, empty)) == 1


def test_file_over_folder_collision_is_refused(tmp_path):
    archive = _zip(tmp_path / "clash.zip", {"a": b"file", "a/b.txt": b"x"})
    with pytest.raises(UnsafeArchiveError):
        safe_extract_zip(archive, tmp_path / "out")


# --------------------------------------------------------------------------------------------------
# Importing captures
# --------------------------------------------------------------------------------------------------


def _png(array: np.ndarray) -> bytes:
    import imageio.v3 as iio

    buf = io.BytesIO()
    iio.imwrite(buf, array, extension=".png")
    return buf.getvalue()


def _tiny_capture_members(prefix: str = "cap/", broken_depth: bool = False) -> dict[str, bytes]:
    h, w = 12, 16
    rgb = np.full((h, w, 3), 120, np.uint8)
    depth = np.full((h, w), 800, np.uint16)
    mask = np.zeros((h, w), np.uint8)
    mask[3:6, 3:6] = 1
    mask[7:10, 8:12] = 2
    views = []
    members = {}
    for k in range(2):
        name = f"cam{k}"
        c2w = np.eye(4)
        c2w[0, 3] = 0.1 * k
        views.append(
            {"name": name, "rgb": f"rgb/{name}.png", "depth": f"depth/{name}.png", "mask": f"masks/{name}.png",
             "width": w, "height": h, "fx": 20.0, "fy": 20.0, "cx": w / 2, "cy": h / 2, "c2w": c2w.tolist()}
        )  # fmt: skip
        members[f"{prefix}rgb/{name}.png"] = _png(rgb)
        members[f"{prefix}depth/{name}.png"] = _png(depth.astype(np.uint8) if broken_depth else depth)
        members[f"{prefix}masks/{name}.png"] = _png(mask)
    doc = {
        "format": "splatsim-capture",
        "version": 1,
        "units": "metres",
        "depth_scale": 0.001,
        "frame": "scene frame, camera-to-world poses, OpenCV camera axes (x right, y down, z forward)",
        "views": views,
        "metadata": {"source": "test"},
    }
    members[f"{prefix}capture.json"] = json.dumps(doc).encode()
    return members


def test_import_our_capture_zip(tmp_path):
    archive = _zip(tmp_path / "mycap.zip", _tiny_capture_members())
    cap = import_capture(archive, tmp_path / "run" / "capture")
    assert cap.num_views == 2 and cap.names == ["cam0", "cam1"]
    assert (tmp_path / "run/capture/capture.json").is_file()
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["capture"], "the staging folder is removed"


def test_import_error_names_the_file_inside_the_zip(tmp_path):
    archive = _zip(tmp_path / "mycap.zip", _tiny_capture_members(broken_depth=True))
    with pytest.raises(UploadError) as err:
        import_capture(archive, tmp_path / "run" / "capture")
    msg = str(err.value)
    assert msg.startswith("mycap.zip/cap/depth/cam0.png"), msg
    assert str(tmp_path / "run") not in msg, "messages name the upload, not the temporary folder"
    assert not (tmp_path / "run" / "capture").exists()
    assert list((tmp_path / "run").iterdir()) == []


def test_import_refuses_unsafe_archive_with_its_name(tmp_path):
    members = _tiny_capture_members()
    members["../../escape.txt"] = b"x"
    archive = _zip(tmp_path / "evil.zip", members)
    with pytest.raises(UnsafeArchiveError, match=r"^evil\.zip: \.\./\.\./escape\.txt"):
        import_capture(archive, tmp_path / "run" / "capture")
    assert not (tmp_path / "escape.txt").exists()


def test_import_nothing_recognisable(tmp_path):
    archive = _zip(tmp_path / "random.zip", {"notes/readme.txt": b"hello"})
    with pytest.raises(UploadError, match="random.zip: holds no capture.json"):
        import_capture(archive, tmp_path / "run" / "capture")


def test_import_refuses_huge_images_from_their_header(tmp_path):
    members = _tiny_capture_members()
    members["cap/rgb/cam0.png"] = _png(np.zeros((300, 400, 3), np.uint8))
    archive = _zip(tmp_path / "huge.zip", members)
    with pytest.raises(UploadError, match=r"huge\.zip/cap/rgb/cam0\.png: 400x300 pixels"):
        import_capture(archive, tmp_path / "run" / "capture", limits=ExtractLimits(max_image_pixels=100_000))


def test_import_nerfstudio_zip(tmp_path):
    h, w = 12, 16
    mask = np.zeros((h, w), np.uint8)
    mask[3:6, 3:6] = 1
    mask[7:10, 8:12] = 2
    members, frames = {}, []
    for k in range(2):
        c2w = np.eye(4)
        c2w[0, 3] = 0.1 * k
        members[f"scan/images/f{k}.png"] = _png(np.full((h, w, 3), 90, np.uint8))
        members[f"scan/depth/f{k}.png"] = _png(np.full((h, w), 700, np.uint16))
        members[f"scan/masks/f{k}.png"] = _png(mask)
        frames.append({"file_path": f"images/f{k}.png", "depth_file_path": f"depth/f{k}.png",
                       "mask_path": f"masks/f{k}.png", "transform_matrix": c2w.tolist()})  # fmt: skip
    transforms = {"fl_x": 20.0, "fl_y": 20.0, "cx": 8.0, "cy": 6.0, "w": w, "h": h, "frames": frames}
    members["scan/transforms.json"] = json.dumps(transforms).encode()
    archive = _zip(tmp_path / "ns.zip", members)
    cap = import_capture(archive, tmp_path / "run" / "capture")
    assert cap.num_views == 2 and cap.metadata["source"] == "nerfstudio" and cap.has_masks
    view = cap.read_view(0)
    assert np.allclose(view.depth, 0.7) and view.c2w[1, 1] == -1.0, "OpenGL axes became OpenCV axes"


def test_nerfstudio_paths_must_stay_inside_the_upload(tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(_png(np.zeros((4, 4, 3), np.uint8)))
    for bad in ("../../secret.png", str(secret), "..\\secret.png"):
        transforms = {"fl_x": 10, "fl_y": 10, "w": 4, "h": 4,
                      "frames": [{"file_path": bad, "depth_file_path": "d.png", "transform_matrix": np.eye(4).tolist()}]}  # fmt: skip
        archive = _zip(tmp_path / "ns.zip", {"scan/transforms.json": json.dumps(transforms).encode()})
        with pytest.raises(UploadError, match=r"ns\.zip/scan/transforms\.json: frames\[0\]\.file_path"):
            import_capture(archive, tmp_path / "run" / "capture")


def test_dexycb_serials_must_be_plain_names(tmp_path):
    meta = "serials: ['836212060125', '../../../etc']\nnum_frames: 1\nextrinsics: '20200702'\nycb_ids: [1]\nycb_grasp_ind: 0\n"
    archive = _zip(
        tmp_path / "dex.zip",
        {"dex/calibration/intrinsics/x.yml": b"color: {}", "dex/subj/seq/meta.yml": meta.encode()},
    )
    with pytest.raises(
        UploadError, match=r"dex\.zip/dex/subj/seq/meta\.yml: serials entry '\.\./\.\./\.\./etc'"
    ):
        import_capture(archive, tmp_path / "run" / "capture")


def test_find_capture_source_kinds(tmp_path):
    root = tmp_path / "x"
    (root / "a/b").mkdir(parents=True)
    (root / "a/b/transforms.json").write_text("{}")
    src = find_capture_source(root)
    assert src.kind == "nerfstudio" and src.path == root / "a/b/transforms.json"
    (root / "dex/calibration").mkdir(parents=True)
    for seq in ("s1/seq1", "s1/seq2"):
        (root / "dex" / seq).mkdir(parents=True)
        (root / "dex" / seq / "meta.yml").write_text("serials: []")
    src = find_capture_source(root, "dexycb", sequence="s1/seq2")
    assert src.kind == "dexycb" and src.path == root / "dex" and src.sequence == "s1/seq2"
    with pytest.raises(UploadError, match="several DexYCB sequences"):
        find_capture_source(root, "dexycb")
    with pytest.raises(UploadError, match="no DexYCB sequence"):
        find_capture_source(root, "dexycb", sequence="s1/nope")
    with pytest.raises(UploadError, match="stay inside"):
        find_capture_source(root, "dexycb", sequence="../s1/seq1")
    with pytest.raises(UploadError, match="holds no capture.json"):
        find_capture_source(root, "capture")
