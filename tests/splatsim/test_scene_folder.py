"""A scene folder is written as one unit; half-written or mixed folders are refused by every reader."""

from __future__ import annotations

import json
import shutil

import pytest

import recon.report as report
from policy.env import load_scene_dir
from splatsim.scene import object_like_scene
from splatsim.scene_folder import EXPORT_MARKER, SceneFolderError, check_scene_folder, file_sha256
from trajgen.grasps import GraspConfig, run_grasps


def export(tmp_path, name: str, seed: int):
    out = tmp_path / name
    report.export_scene(object_like_scene(800, seed=seed), out, {"config_hash": f"h{seed}"})
    return out


def test_export_records_the_hash_of_every_ply_and_leaves_no_marker(tmp_path):
    out = export(tmp_path, "a", 0)
    meta = check_scene_folder(out)
    assert not (out / EXPORT_MARKER).exists()
    assert set(meta["file_sha256"]) == {"scene.ply", "hand.ply", "object.ply"}
    for name, digest in meta["file_sha256"].items():
        assert file_sha256(out / name) == digest


def test_a_kill_during_the_export_leaves_a_folder_every_reader_refuses(tmp_path, monkeypatch):
    out = export(tmp_path, "a", 0)  # a finished earlier run
    calls = []

    def dying_write_ply(scene, path, **kw):  # the process dies after the first new file
        if calls:
            raise KeyboardInterrupt
        calls.append(path)
        return real(scene, path, **kw)

    real = report.write_ply
    monkeypatch.setattr(report, "write_ply", dying_write_ply)
    with pytest.raises(KeyboardInterrupt):
        report.export_scene(object_like_scene(900, seed=1), out, {"config_hash": "h1"})
    monkeypatch.undo()
    assert (out / EXPORT_MARKER).exists() and not (out / "scene.json").exists()
    with pytest.raises(SceneFolderError, match="stopped while writing"):
        check_scene_folder(out)
    with pytest.raises(SceneFolderError, match="resumes from its checkpoint"):
        load_scene_dir(out)
    with pytest.raises(SceneFolderError, match=EXPORT_MARKER):
        run_grasps(GraspConfig(), out, tmp_path / "grasps.json")
    assert not (tmp_path / "grasps.json").exists()
    # exporting again (what a resumed `splatsim recon` does) makes it whole
    report.export_scene(object_like_scene(900, seed=1), out, {"config_hash": "h1"})
    assert check_scene_folder(out)["config_hash"] == "h1"


def test_files_from_two_reconstructions_are_refused_naming_the_file(tmp_path):
    a, b = export(tmp_path, "a", 0), export(tmp_path, "b", 1)
    shutil.copyfile(b / "hand.ply", a / "hand.ply")
    with pytest.raises(SceneFolderError, match=r"hand\.ply: does not match .*scene\.json"):
        check_scene_folder(a)
    check_scene_folder(a, files=("scene.ply",))  # a reader of scene.ply only is unaffected
    load_scene_dir(a)


def test_folders_without_hashes_or_scene_json_are_accepted(tmp_path):
    a = export(tmp_path, "a", 0)
    meta = json.loads((a / "scene.json").read_text())
    del meta["file_sha256"]  # written by an earlier version
    (a / "scene.json").write_text(json.dumps(meta))
    assert check_scene_folder(a)["config_hash"] == "h0"
    (a / "scene.json").unlink()  # a splat from another tool
    assert check_scene_folder(a) is None
    (a / "scene.json").write_text("{not json")
    with pytest.raises(SceneFolderError, match="scene.json: not valid JSON"):
        check_scene_folder(a)
