"""The `splatsim` command line: subcommands parse, small stages run, errors are plain."""

from __future__ import annotations

import json

import pytest

from ui import stages
from ui.cli import main


def test_help_lists_every_stage(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for name in (
        "demo",
        "capture",
        "recon",
        "grasps",
        "demos",
        "train",
        "eval",
        "export",
        "app",
        "render-check",
    ):
        assert name in text


def test_render_check_writes_png(tmp_path):
    import imageio.v3 as iio

    out = tmp_path / "rc.png"
    assert (
        main(
            ["render-check", "--out", str(out), "--num-gaussians", "2000", "--width", "64", "--height", "48"]
        )
        == 0
    )
    img = iio.imread(out)
    assert img.shape == (48, 3 * 64, 3)
    assert img.std() > 5  # not a blank image


def test_capture_synth_and_bad_input_message(tmp_path, capsys):
    out = tmp_path / "cap"
    args = ["capture", "synth", "--out", str(out), "--resolution-scale", "0.25", "--num-views", "3"]
    assert main(args) == 0
    assert json.loads((out / "capture.json").read_text())["views"]
    assert (out / "contact_sheet.png").is_file()
    # a second run refuses to overwrite, with a plain message and exit code 2 (no traceback)
    assert main(args) == 2
    assert "splatsim: error:" in capsys.readouterr().err
    # a missing scene folder for grasps: the message names the file and the fix
    assert main(["grasps", "--scene", str(tmp_path / "nope"), "--out", str(tmp_path / "g.json")]) == 2
    err = capsys.readouterr().err
    assert "object.ply" in err and "splatsim recon" in err


def test_stage_markers_reuse_and_invalidate(tmp_path):
    h1 = stages.stage_hash("scene", {"steps": 10}, "cap-abc")
    assert stages.finished(tmp_path, "scene", h1) is None
    stages.mark_finished(tmp_path, "scene", h1, {"psnr": 30.0})
    assert stages.finished(tmp_path, "scene", h1) == {"psnr": 30.0}
    # a changed config or a changed upstream stage gives another hash: the stage re-runs
    assert stages.stage_hash("scene", {"steps": 11}, "cap-abc") != h1
    assert stages.stage_hash("scene", {"steps": 10}, "cap-xyz") != h1
    assert stages.finished(tmp_path, "scene", stages.stage_hash("scene", {"steps": 11}, "cap-abc")) is None
    stages.clear(tmp_path, "scene")
    assert stages.finished(tmp_path, "scene", h1) is None
