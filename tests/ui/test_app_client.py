"""The web app through its API (gradio_client), in process, on tiny settings: every step of the studio.

One app serves the module; the steps chain through module fixtures (capture → scene → grasps → demos →
policy), each asserted by its own test. Sizes: a 4-view synthetic capture at 160x120, 8 optimisation
steps, 2 episodes of 32x32 frames, 3 training steps of a width-8 network.
"""

from __future__ import annotations

import json
import socket
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("gradio")
from gradio_client import Client, handle_file  # noqa: E402

from ui.app import AppConfig, launch  # noqa: E402

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def path_of(x) -> Path:
    """The local path of a file output (a path, or gradio_client's dict for images and videos)."""
    if isinstance(x, dict):
        for key in ("path", "image", "video", "name"):
            if x.get(key):
                return path_of(x[key])
    assert isinstance(x, str), x
    return Path(x)


def value(update):
    """The value of a component update (gradio_client returns updates as dicts)."""
    return update["value"] if isinstance(update, dict) and "__type__" in update else update


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    studio = launch(AppConfig(runs_dir=runs, port=free_port(), max_upload_mb=1), prevent_thread_lock=True)
    yield studio
    studio.close()


@pytest.fixture(scope="module")
def client(studio, tmp_path_factory):
    return Client(studio.blocks.local_url, verbose=False, download_files=str(tmp_path_factory.mktemp("dl")))


@pytest.fixture(scope="module")
def captured(client):
    out = client.predict("", "foam_brick", "auto", 4, 0.25, 0, True, api_name="/generate_capture")
    return value(out[0]), out


@pytest.fixture(scope="module")
def scene(client, captured):
    run, _ = captured
    return run, client.predict(run, 8, 4, 1, 1, "whole scene", api_name="/reconstruct")


@pytest.fixture(scope="module")
def grasps(client, scene):
    run, _ = scene
    return run, client.predict(run, 0.1, 3, 300, 0, api_name="/compute_grasps")


@pytest.fixture(scope="module")
def demos(client, grasps):
    run, _ = grasps
    return run, client.predict(run, 2, 1, 32, 1, api_name="/render_demos")


@pytest.fixture(scope="module")
def trained(client, demos):
    run, _ = demos
    return run, client.predict(run, 1, 4, 3, 8, api_name="/train_policy")


def test_safe_defaults(studio):
    cfg = AppConfig()
    assert cfg.host == "127.0.0.1", "the app listens on this machine only unless told otherwise"
    assert studio.blocks.server_name == "127.0.0.1"
    assert studio.blocks.max_file_size == 1024**2


def test_bad_auth_is_refused():
    with pytest.raises(ValueError, match="user:password"):
        launch(AppConfig(auth="no-colon"), prevent_thread_lock=True)


def test_api_lists_every_step(client):
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    steps = {"/generate_capture", "/import_capture", "/reconstruct", "/compute_grasps", "/refilter_grasps",
             "/render_demos", "/train_policy", "/evaluate_policy", "/export_policy", "/open_run", "/new_run"}  # fmt: skip
    assert steps <= names, steps - names


def test_generate_capture(studio, captured):
    run, (dropdown, status, summary, gallery, info) = captured
    assert run and run.startswith("run-"), "generating without a run starts one"
    assert status.startswith("✓"), status
    assert info["ok"] and info["views"] == 4 and (info["width"], info["height"]) == (160, 120)
    assert info["object"] == "foam_brick" and info["has_masks"]
    assert "4 views" in summary
    assert len(gallery) == 12, "RGB, depth and masks per view"
    assert all(path_of(item).is_file() for item in gallery)
    assert [item["caption"] for item in gallery[:3]] == [
        "cam00 · RGB",
        "cam00 · depth",
        "cam00 · hand/object masks",
    ]
    assert (studio.runs_dir / run / "capture" / "capture.json").is_file()
    assert run in [c[1] for c in dropdown["choices"]]


def test_same_settings_are_reused(client, captured):
    run, _ = captured
    out = client.predict(run, "foam_brick", "auto", 4, 0.25, 0, True, api_name="/generate_capture")
    assert "up to date" in out[1], out[1]


def test_bad_settings_are_reported(client, captured):
    run, _ = captured
    out = client.predict(run, 0, 4, 1, 1, "whole scene", api_name="/reconstruct")
    assert not out[-1]["ok"] and "optimisation steps = 0" in out[-1]["error"]
    with pytest.raises(Exception, match="greater than maximum"):  # gradio checks slider ranges itself
        client.predict(run, 8, 4, 1, 9, "whole scene", api_name="/reconstruct")
    out = client.predict("does-not-exist", 8, 4, 1, 1, "whole scene", api_name="/reconstruct")
    assert "does not exist" in out[-1]["error"]
    out = client.predict("../escape", 8, 4, 1, 1, "whole scene", api_name="/reconstruct")
    assert "run name" in out[-1]["error"]


def test_new_run_and_listing(client, studio):
    dropdown, error, _ = client.predict("named-run", api_name="/new_run")
    assert value(dropdown) == "named-run" and not error
    assert (studio.runs_dir / "named-run").is_dir()
    _, error, _ = client.predict("../evil", api_name="/new_run")
    assert "run name" in error
    _, error, _ = client.predict("named-run", api_name="/new_run")
    assert "already exists" in error
    listed = client.predict("named-run", api_name="/list_runs")
    assert "named-run" in [c[1] for c in listed["choices"]]
    out = client.predict("named-run", 8, 4, 1, 1, "whole scene", api_name="/reconstruct")
    assert "no capture yet" in out[-1]["error"]


def test_reconstruct(studio, scene):
    run, (status, loss, model, heldout, report, info) = scene
    assert status.startswith("✓"), status
    assert info["ok"] and info["steps"] == 8 and info["num_gaussians"] > 0
    assert info["num_gaussians_by_label"]["object"] > 0 and info["num_gaussians_by_label"]["hand"] > 0
    assert Path(model).name == "view_scene.ply" and Path(model).stat().st_size > 0
    from splatsim.ply import read_ply

    assert read_ply(model).num_gaussians == info["num_gaussians"], "the viewer copy holds the whole splat"
    assert Path(heldout).is_file()
    assert "held-out PSNR" in report and "mask IoU" in report
    assert (studio.runs_dir / run / "scene" / "recon_report.json").is_file()


def test_scene_views(client, scene):
    run, _ = scene
    path = client.predict(run, "hand + object", api_name="/show_scene")
    assert Path(path).name == "view_hand_object.ply" and Path(path).stat().st_size > 0
    assert Path(client.predict(run, "object", api_name="/show_scene")).name == "view_object.ply"
    header = Path(path).read_bytes()[:2000]
    assert b"property uchar label" not in header, "gradio's splat viewer does not read uchar properties"


def test_grasps_and_instant_refilter(studio, client, grasps):
    run, (status, d_s, top_k, plot, counts, info) = grasps
    assert status.startswith("✓"), status
    assert info["ok"] and info["kept"] >= 1 and info["targets"] == min(3, info["kept"])
    assert (d_s, top_k) == (0.1, 3)
    assert plot is not None and "safe grasps kept" in counts
    saved = json.loads((studio.runs_dir / run / "grasps.json").read_text())
    assert saved["config"]["d_s"] == 0.1 and saved["config"]["top_k"] == 3
    strict_plot, strict_counts, strict = client.predict(run, 0.16, 1, api_name="/refilter_grasps")
    assert strict["rejected"]["eq1_distance"] >= info["rejected"]["eq1_distance"]
    assert strict["kept"] <= info["kept"]
    if strict["kept"]:
        assert "Saved to grasps.json" in strict_counts
        assert json.loads((studio.runs_dir / run / "grasps.json").read_text())["config"]["d_s"] == 0.16
    # Back to the setting the demonstrations use.
    _, _, back = client.predict(run, 0.1, 3, api_name="/refilter_grasps")
    assert back["kept"] == info["kept"] and back["rejected"] == info["rejected"]


def test_demos(studio, demos):
    run, (status, traj, episode, video, stats, info) = demos
    assert status.startswith("✓"), status
    assert info["ok"] and info["episodes"] == 2 and info["tuples"] > 2
    assert info["image_size"] == [32, 32]
    assert Path(traj).is_file() and path_of(video).suffix == ".mp4"
    assert len(episode["choices"]) == 2
    assert "episodes / tuples" in stats
    assert (studio.runs_dir / run / "demos" / "index.json").is_file()


def test_refilter_after_demos_is_only_a_preview(studio, client, demos):
    run, _ = demos
    before = (studio.runs_dir / run / "grasps.json").read_text()
    _, counts, _ = client.predict(run, 0.2, 1, api_name="/refilter_grasps")
    assert "Preview only" in counts or "No safe grasp" in counts
    assert (studio.runs_dir / run / "grasps.json").read_text() == before, "demos were made from it"
    assert (studio.runs_dir / run / "demos" / "index.json").is_file()


def test_train_evaluate_export(studio, client, trained):
    run, out = trained
    status, info = out[0], out[-1]
    assert status.startswith("✓"), status
    assert info["trained"] and info["steps"] == 3
    out = client.predict(run, 1, 3, True, 1, api_name="/evaluate_policy")
    status, _curve, table, rollout, video_p, video_b, bundle, export_md, info = out
    assert status.startswith("✓"), status
    assert info["evaluated"] and info["exported"], "evaluation runs the exported ONNX model"
    assert "H2RH-SGS policy" in table and "IBVS-MASK" in table
    assert value(rollout) and path_of(video_p).is_file() and path_of(video_b).is_file()
    out = client.predict(run, api_name="/export_policy")
    status, bundle, info = out[0], out[6], out[-1]
    assert "up to date" in status, "the evaluation already exported this policy"
    with zipfile.ZipFile(bundle) as zf:
        assert sorted(zf.namelist()) == ["metadata.json", "policy.onnx"]
    assert info["parity"]["passed"]


def _zip_capture(src: Path, dest: Path, skip_ground_truth: bool = True) -> Path:
    doc = json.loads((src / "capture.json").read_text())
    if skip_ground_truth:
        doc.pop("ground_truth", None)
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("mycapture/capture.json", json.dumps(doc))
        for sub in ("rgb", "depth", "masks"):
            for p in sorted((src / sub).iterdir()):
                zf.write(p, f"mycapture/{sub}/{p.name}")
    return dest


def test_import_capture(studio, client, captured, tmp_path):
    run, _ = captured
    archive = _zip_capture(studio.runs_dir / run / "capture", tmp_path / "mycapture.zip")
    client.predict("imported", api_name="/new_run")
    out = client.predict(
        "imported", handle_file(str(archive)), "auto", "", 0, "", 0.001, api_name="/import_capture"
    )
    dropdown, status, summary, gallery, info, upload_error = out
    assert status.startswith("✓") and not upload_error, (status, upload_error)
    assert info["ok"] and info["views"] == 4 and len(gallery) == 12
    assert value(dropdown) == "imported"


def test_import_errors_name_the_file(studio, client, captured, tmp_path):
    run, _ = captured
    src = studio.runs_dir / run / "capture"
    archive = tmp_path / "broken.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        doc = json.loads((src / "capture.json").read_text())
        doc.pop("ground_truth", None)
        zf.writestr("capture.json", json.dumps(doc))
        for sub in ("rgb", "depth"):
            for p in sorted((src / sub).iterdir()):
                zf.write(p, f"{sub}/{p.name}")
        # masks/ missing: capture.json names them
    _, status, _, _, info, upload_error = client.predict(
        "", handle_file(str(archive)), "auto", "", 0, "", 0.001, api_name="/import_capture"
    )
    assert not info["ok"]
    assert "broken.zip/masks/cam00.png" in upload_error, upload_error
    assert "/tmp" not in upload_error.replace(str(tmp_path), ""), "no temporary paths in messages"
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../../outside.txt", "x")
    *_, info, upload_error = client.predict(
        "", handle_file(str(evil)), "auto", "", 0, "", 0.001, api_name="/import_capture"
    )
    assert "evil.zip" in upload_error and "'..'" in upload_error


def test_upload_size_limit(client, tmp_path):
    import numpy as np

    big = tmp_path / "big.zip"
    with zipfile.ZipFile(big, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("noise.bin", np.random.default_rng(0).bytes(2 * 1024**2))
    with pytest.raises(Exception):  # noqa: B017 - gradio refuses the upload (HTTP 413)
        client.predict("", handle_file(str(big)), "auto", "", 0, "", 0.001, api_name="/import_capture")
