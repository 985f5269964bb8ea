"""End-to-end tests for recon/pipeline.py on a tiny rendered capture: report, exports, kill-and-resume."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from recon.capture import CaptureError, ViewData, write_capture
from recon.fuse import FusionError
from recon.optimize import CHECKPOINT_JSON, load_checkpoint
from recon.pipeline import CHECKPOINT_DIR, ReconConfig, run_recon
from recon.report import REPORT_JSON, SCENE_JSON
from splatsim.conventions import look_at
from splatsim.ply import read_ply
from splatsim.render import render
from splatsim.scene import LABEL_HAND, LABEL_OBJECT, object_like_scene

W, H = 64, 48
FX = 52.0


def make_tiny_capture(root: Path, num_views: int = 3) -> Path:
    """Renders a small object-and-hand scene from ``num_views`` cameras on a short arc into a capture."""
    scene = object_like_scene(3000, seed=7)
    K = torch.tensor([[FX, 0, W / 2], [0, FX, H / 2], [0, 0, 1]], dtype=torch.float32)
    views = []
    for i in range(num_views):
        x = 0.12 * (i - (num_views - 1) / 2)
        c2w = look_at(
            torch.tensor([x, 0.01 * i, 0.0], dtype=torch.float64),
            torch.tensor([0.0, 0.0, 0.6], dtype=torch.float64),
            up=(0.0, -1.0, 0.0),
        )
        with torch.no_grad():
            out = render(scene, c2w.float(), K, W, H, backend="cpu")
        depth = torch.where(out.alpha[0] > 0.5, out.depth[0], torch.zeros_like(out.depth[0])).numpy()
        rgb = (out.rgb[0].clamp(0, 1).numpy() * 255).round().astype(np.uint8)
        mask = out.label_map()[0].numpy()
        views.append(ViewData(f"cam{i}", rgb, depth, mask, FX, FX, W / 2, H / 2, c2w.numpy()))
    gt_dir = root / "gt"
    gt_dir.mkdir(parents=True)
    np.savez(gt_dir / "depth.npz", **{v.name: v.depth for v in views})
    write_capture(root, views, ground_truth={"depth": "gt/depth.npz"})
    return root


def tiny_config(**optim) -> ReconConfig:
    cfg = ReconConfig(num_train_views=0, holdout=1, sh_degree=1, progress=False, backend="cpu")
    cfg.optim.iterations = 8
    cfg.optim.checkpoint_every = 2
    cfg.optim.revote_labels = True  # exercise the re-vote branch of the pipeline
    for k, v in optim.items():
        setattr(cfg.optim, k, v)
    cfg.densify.start_step = 4
    cfg.densify.every = 4
    return cfg


@pytest.fixture(scope="module")
def capture_dir(tmp_path_factory) -> Path:
    return make_tiny_capture(tmp_path_factory.mktemp("capture") / "cap")


def _finite_numbers(x, path="report"):
    if isinstance(x, dict):
        for k, v in x.items():
            yield from _finite_numbers(v, f"{path}.{k}")
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from _finite_numbers(v, f"{path}[{i}]")
    elif isinstance(x, float):
        yield path, x


def test_run_recon_writes_report_and_exports(capture_dir, tmp_path):
    out = tmp_path / "scene"
    res = run_recon(tiny_config(), capture_dir, out)
    report = json.loads((out / REPORT_JSON).read_text())
    assert report == res.report
    # The middle camera is held out; the two others train.
    assert report["heldout_views"] == ["cam1"] and report["train_views"] == ["cam0", "cam2"]
    summary = report["summary"]
    for key in (
        "heldout_psnr_db",
        "heldout_ssim",
        "depth_median_err_m",
        "depth_p90_err_m",
        "depth_median_err_vs_sensor_m",
        "mask_iou_object",
        "mask_iou_hand",
    ):
        assert isinstance(summary[key], float) and math.isfinite(summary[key]), key
    assert summary["depth_reference"] == "ground_truth"
    view = report["heldout"]["cam1"]
    for group in ("depth_vs_sensor", "depth_vs_gt"):
        for region in ("all", "hand_object"):
            stats = view[group][region]
            assert stats["pixels"] > 0 and 0 <= stats["median_m"] <= stats["p90_m"]
    assert set(view["mask_iou"]) == {"object", "hand"}
    for path, value in _finite_numbers(report):
        assert math.isfinite(value), path
    assert summary["heldout_psnr_db"] > 15 and summary["mask_iou_object"] > 0.5
    assert report["steps"] == 8 and report["resumed_from_step"] is None
    assert report["num_gaussians"] == res.scene.num_gaussians
    assert report["wall_time_s"] > 0 and report["config"]["optim"]["iterations"] == 8

    # Exports: the whole scene and the label subsets, readable by the PLY reader.
    scene = read_ply(out / "scene.ply")
    assert scene.num_gaussians == res.scene.num_gaussians and scene.sh_degree == 1
    assert torch.equal(scene.labels, res.scene.labels)
    hand, obj = read_ply(out / "hand.ply"), read_ply(out / "object.ply")
    assert hand.num_gaussians > 0 and (hand.labels == LABEL_HAND).all()
    assert obj.num_gaussians > 0 and (obj.labels == LABEL_OBJECT).all()
    meta = json.loads((out / SCENE_JSON).read_text())
    assert meta["units"] == "metres" and meta["num_gaussians"] == scene.num_gaussians
    assert meta["counts"]["hand"] == hand.num_gaussians and meta["counts"]["object"] == obj.num_gaussians
    assert meta["config_hash"] == report["config_hash"] and meta["source_capture"] == str(
        capture_dir.resolve()
    )
    png = (out / "heldout.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    for name in report["files"].values():
        assert (out / name).is_file(), name


class _Interrupt(Exception):
    pass


def test_kill_and_resume_continues_from_the_checkpoint(capture_dir, tmp_path):
    cfg = tiny_config()
    reference = run_recon(cfg, capture_dir, tmp_path / "ref")

    out = tmp_path / "run"
    seen: list[int] = []
    saved = tmp_path / "ckpt_at_step_4"

    def stop_after_5(step, info):
        seen.append(step)
        if step == 4:  # the periodic checkpoint of step 4 is on disk: keep a copy of it
            shutil.copytree(out / CHECKPOINT_DIR, saved)
        if step == 5:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        run_recon(cfg, capture_dir, out, callback=stop_after_5)
    assert seen == [1, 2, 3, 4, 5]
    info, _ = load_checkpoint(out / CHECKPOINT_DIR)
    assert info["step"] == 5  # the interrupted step's work was checkpointed before stopping
    assert not (out / REPORT_JSON).exists()

    # 1) Resume after the graceful interruption: continues at step 6, nothing redone.
    seen.clear()
    res = run_recon(cfg, capture_dir, out, callback=lambda step, info: seen.append(step))
    assert seen == [6, 7, 8]
    assert res.report["resumed_from_step"] == 5 and res.report["steps"] == 8
    assert res.scene.num_gaussians == reference.scene.num_gaussians
    torch.testing.assert_close(res.scene.means, reference.scene.means, atol=1e-5, rtol=0)
    torch.testing.assert_close(res.scene.sh, reference.scene.sh, atol=1e-4, rtol=0)

    # 2) A hard kill after step 5 (no handler ran): only the periodic checkpoint of step 4 survives.
    shutil.rmtree(out / CHECKPOINT_DIR)
    shutil.copytree(saved, out / CHECKPOINT_DIR)
    seen.clear()
    res = run_recon(cfg, capture_dir, out, callback=lambda step, info: seen.append(step))
    assert seen == [5, 6, 7, 8] and res.report["resumed_from_step"] == 4
    torch.testing.assert_close(res.scene.means, reference.scene.means, atol=1e-5, rtol=0)

    # 3) A finished run resumes at its last step: nothing to redo, the outputs are rewritten.
    seen.clear()
    res = run_recon(cfg, capture_dir, out, callback=lambda step, info: seen.append(step))
    assert seen == [] and res.report["resumed_from_step"] == 8 and res.report["steps"] == 8


def test_changed_config_or_no_resume_starts_over(capture_dir, tmp_path):
    out = tmp_path / "run"
    run_recon(tiny_config(iterations=4), capture_dir, out)
    assert json.loads((out / CHECKPOINT_DIR / CHECKPOINT_JSON).read_text())["step"] == 4
    res = run_recon(tiny_config(iterations=6), capture_dir, out)  # another config: another hash
    assert res.report["resumed_from_step"] is None and res.report["steps"] == 6
    cfg = tiny_config(iterations=6)
    cfg.resume = False
    assert run_recon(cfg, capture_dir, out).report["resumed_from_step"] is None


def test_bad_inputs_give_clear_errors(capture_dir, tmp_path):
    cfg = tiny_config()
    cfg.holdout = 3
    with pytest.raises(FusionError, match="holdout = 3 but the capture has only 3 views"):
        run_recon(cfg, capture_dir, tmp_path / "a")
    cfg = tiny_config()
    cfg.holdout_views = ("cam0", "cam1", "cam2")
    with pytest.raises(FusionError, match="all 3 views are held out"):
        run_recon(cfg, capture_dir, tmp_path / "b")
    cfg = tiny_config()
    cfg.sh_degree = 4
    with pytest.raises(ValueError, match="sh_degree = 4"):
        run_recon(cfg, capture_dir, tmp_path / "c")
    cfg = tiny_config()
    cfg.fusion.min_depth_m, cfg.fusion.max_depth_m = 5.0, 6.0  # no depth in range: nothing to fuse
    with pytest.raises(FusionError, match="empty"):
        run_recon(cfg, capture_dir, tmp_path / "d")
    with pytest.raises(CaptureError):
        run_recon(tiny_config(), tmp_path / "no_capture_here", tmp_path / "e")


def test_config_is_tyro_friendly():
    tyro = pytest.importorskip("tyro")
    cfg = tyro.cli(
        ReconConfig,
        args=["--optim.iterations", "5", "--holdout-views", "cam3", "--fusion.voxel-size-m", "0.005"],
    )
    assert cfg.optim.iterations == 5 and cfg.holdout_views == ("cam3",) and cfg.fusion.voxel_size_m == 0.005
