"""The reconstruction stage: capture folder in, labelled metric splat and its quality report out.

`run_recon(cfg, capture_dir, out_dir)`:

1. load and validate the capture (`recon.capture.load_capture`);
2. choose training and held-out views (`recon.fuse.split_views`: held out are the views best covered
   by their nearest cameras, which train; held-out views are never fused nor optimised);
3. fuse the training views' depth into a labelled point cloud and initialise Gaussians (`recon.fuse`);
4. optimise colour, depth and labels (`recon.optimize`), checkpointing to ``out_dir/checkpoints`` and
   resuming from there when the configuration and capture are unchanged;
5. evaluate the held-out views and export (`recon.report`)::

       out_dir/scene.ply  hand.ply  object.ply  scene.json  recon_report.json  heldout.png
       out_dir/checkpoints/checkpoint.json + checkpoint_<step>.safetensors
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from recon.capture import Capture, load_capture
from recon.densify import DensifyConfig
from recon.fuse import FusionConfig, FusionError, fuse_views, init_gaussians, split_views
from recon.optimize import OptimConfig, optimize, render_view, revote_labels, to_train_view
from recon.report import (
    REPORT_JSON,
    SCENE_JSON,
    evaluate_view,
    export_scene,
    finite_or_none,
    side_by_side,
    write_json,
    write_png,
)
from splatsim.scene import LABEL_HAND, LABEL_NAMES, LABEL_OBJECT, MAX_SH_DEGREE, GaussianScene

__all__ = [
    "DensifyConfig",
    "FusionConfig",
    "FusionError",
    "OptimConfig",
    "ReconConfig",
    "ReconResult",
    "config_hash",
    "run_recon",
]

HELDOUT_PNG = "heldout.png"
CHECKPOINT_DIR = "checkpoints"
_RUN_ONLY_FIELDS = ("resume", "progress", "backend")
"""ReconConfig fields that do not change the result (left out of the config hash)."""


@dataclass
class ReconConfig:
    """Reconstruction: fuse sparse RGB-D views into a labelled metric 3DGS scene and evaluate it."""

    num_train_views: int = 4
    """Training views to use when train_views is empty: the cameras nearest the held-out camera(s);
    0 = every view that is not held out."""
    train_views: tuple[str, ...] = ()
    """Training views by name (overrides num_train_views)."""
    holdout: int = 1
    """Held-out views when holdout_views is empty: the views that their training cameras cover best
    (an interpolation test, not an extrapolation to the rig's edge); held-out views are never fused
    nor optimised, only evaluated."""
    holdout_views: tuple[str, ...] = ()
    """Held-out views by name (overrides holdout)."""
    sh_degree: int = 0
    """Spherical-harmonics degree of the Gaussians' colour (0-3). 0 (view-independent colour) by default:
    a few views barely constrain view-dependent terms, the synthetic scenes are Lambertian, and degree
    0 is the cheapest on the CPU; try 1 for shiny real objects and 6+ views."""
    fusion: FusionConfig = field(default_factory=FusionConfig)
    """Depth fusion and Gaussian initialisation."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimisation: steps, learning rates, loss weights, checkpoints."""
    densify: DensifyConfig = field(default_factory=DensifyConfig)
    """Adaptive density control (clone, split, prune)."""
    backend: Literal["auto", "cpu", "gsplat", "torch"] = "auto"
    """Render backend: auto = gsplat with CUDA, else the compiled CPU rasteriser."""
    seed: int = 0
    """Seeds the view order and the split samples."""
    resume: bool = True
    """Continue from out_dir/checkpoints when it holds a checkpoint of this configuration and capture."""
    progress: bool = True
    """Show a progress bar with the loss and ETA."""


@dataclass
class ReconResult:
    """What `run_recon` made."""

    scene: GaussianScene
    """The optimised, labelled scene (CPU, float32)."""
    report: dict[str, Any]
    """The content of recon_report.json."""
    out_dir: Path
    files: dict[str, Path]
    """scene, hand, object, scene_json, report, heldout_png (absent without held-out views)."""


def config_hash(cfg: ReconConfig, capture: Capture) -> str:
    """Identifies a run: the result-relevant config fields and the capture's ``capture.json``."""
    d = asdict(cfg)
    for k in _RUN_ONLY_FIELDS:
        d.pop(k, None)
    for k in ("checkpoint_every", "torch_threads"):
        d["optim"].pop(k, None)
    h = hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode())
    h.update(capture.json_path.read_bytes())
    return h.hexdigest()[:16]


def _check_config(cfg: ReconConfig) -> None:
    if not 0 <= cfg.sh_degree <= MAX_SH_DEGREE:
        raise ValueError(f"ReconConfig.sh_degree = {cfg.sh_degree}; expected 0..{MAX_SH_DEGREE}")
    if cfg.holdout < 0:
        raise ValueError(f"ReconConfig.holdout = {cfg.holdout}; expected a count >= 0")
    if cfg.num_train_views < 0:
        raise ValueError(f"ReconConfig.num_train_views = {cfg.num_train_views}; expected >= 0 (0 = all)")
    f = cfg.fusion
    if not (f.voxel_size_m > 0 and f.background_voxel_size_m >= 0):
        raise ValueError(
            f"ReconConfig.fusion voxel sizes ({f.voxel_size_m}, {f.background_voxel_size_m}) must be positive metres"
        )
    if not 0 <= f.min_depth_m < f.max_depth_m:
        raise ValueError(
            f"ReconConfig.fusion depth range [{f.min_depth_m}, {f.max_depth_m}] m is empty; expected min < max"
        )


def _remove_stale_temporaries(out_dir: Path) -> None:
    """Deletes the temporary files a killed run's atomic writers left beside the outputs
    (``.<file>.<pid>[.<id>].tmp[.png]``); the checkpoints clean up their own (`save_checkpoint`)."""
    for name in ("scene.ply", "hand.ply", "object.ply", SCENE_JSON, REPORT_JSON, "heldout"):
        for tmp in out_dir.glob(f".{name}*.tmp*"):
            tmp.unlink(missing_ok=True)


def _load_gt_depth(capture: Capture) -> dict[str, np.ndarray]:
    path = capture.ground_truth_path("depth")
    if path is None or not path.is_file():
        return {}
    with np.load(path) as data:
        return {k: np.asarray(data[k], dtype=np.float32) for k in data.files}


def _summary(per_view: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Means over the held-out views of the headline numbers (None where unavailable)."""

    def mean(values: list[Any]) -> float | None:
        vals = [v for v in values if v is not None]
        return float(np.mean(vals)) if vals else None

    def pick(m: dict[str, Any], *keys: str) -> Any:
        for k in keys:
            if m is None:
                return None
            m = m.get(k)
        return m

    ms = list(per_view.values())
    gt = [pick(m, "depth_vs_gt", "hand_object", "median_m") for m in ms]
    sensor = [pick(m, "depth_vs_sensor", "hand_object", "median_m") for m in ms]
    has_gt = any(v is not None for v in gt)
    return {
        "heldout_psnr_db": mean([m["psnr_db"] for m in ms]),
        "heldout_ssim": mean([m["ssim"] for m in ms]),
        "depth_median_err_m": mean(gt if has_gt else sensor),
        "depth_p90_err_m": mean(
            [pick(m, "depth_vs_gt" if has_gt else "depth_vs_sensor", "hand_object", "p90_m") for m in ms]
        ),
        "depth_reference": "ground_truth" if has_gt else "sensor",
        "depth_median_err_vs_sensor_m": mean(sensor),
        "mask_iou_object": mean([pick(m, "mask_iou", "object") for m in ms]),
        "mask_iou_hand": mean([pick(m, "mask_iou", "hand") for m in ms]),
    }


def run_recon(
    cfg: ReconConfig,
    capture_dir: Path | str,
    out_dir: Path | str,
    *,
    callback: Callable[[int, dict[str, Any]], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> ReconResult:
    """Reconstructs the capture in ``capture_dir`` into ``out_dir`` (see the module docstring).

    Args:
        cfg: The stage configuration.
        capture_dir: A capture folder (``capture.json`` + images).
        out_dir: Output folder (created); holds the checkpoints a later run resumes from.
        callback: Called after every optimisation step as ``callback(step, info)``; raising from it
            stops the run (the finished step is checkpointed first).
        log: Where progress messages go (default: a rich console).

    Raises:
        CaptureError: For an invalid capture. FusionError: for view choices that leave nothing to
            train or evaluate on, or training views without usable depth. ValueError: for bad settings.
    """
    t_start = time.perf_counter()
    if log is None:
        from rich.console import Console

        console = Console(stderr=True)
        log = console.print if cfg.progress else (lambda _msg: None)
    _check_config(cfg)
    out_dir = Path(out_dir)
    capture = load_capture(capture_dir)
    all_views = [capture.read_view(i) for i in range(capture.num_views)]
    split = split_views(
        capture, cfg.num_train_views, cfg.holdout, cfg.train_views, cfg.holdout_views, all_views, cfg.fusion
    )
    log(f"training views {split.train_names}, held out {split.heldout_names}")
    train_data = [all_views[i] for i in split.train]
    t_loaded = time.perf_counter()

    cloud = fuse_views(train_data, cfg.fusion)
    scene0 = init_gaussians(cloud, cfg.sh_degree, cfg.fusion)
    t_fused = time.perf_counter()
    log(f"fused {scene0.num_gaussians} Gaussians from {len(train_data)} views")
    warnings: list[str] = []
    for v in train_data:
        if cloud.stats.get(f"view_{v.name}", 0) == 0:
            warnings.append(f"training view {v.name!r} has no valid depth in range; it adds no points")
    for label in (LABEL_OBJECT, LABEL_HAND):
        if not bool((scene0.labels == label).any()):
            warnings.append(
                f"no fused point is labelled {LABEL_NAMES[label]}: the training views' masks "
                f"({split.train_names}) never show it; {LABEL_NAMES[label]}.ply will be empty"
            )
    for w in warnings:
        log(f"[yellow]warning:[/] {w}")

    train_views = [to_train_view(v) for v in train_data]
    h = config_hash(cfg, capture)
    out_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(out_dir)
    res = optimize(
        scene0,
        train_views,
        cfg.optim,
        cfg.densify,
        seed=cfg.seed,
        backend=cfg.backend,
        ckpt_dir=out_dir / CHECKPOINT_DIR,
        config_hash=h,
        resume=cfg.resume,
        progress=cfg.progress,
        callback=callback,
        log=log,
    )
    scene = res.scene.to(device="cpu")
    if cfg.optim.revote_labels:
        scene = revote_labels(scene, train_views, backend="cpu")
    t_optimized = time.perf_counter()

    gt_depth = _load_gt_depth(capture)
    per_view: dict[str, dict[str, Any]] = {}
    files: dict[str, Path] = {}
    for k, i in enumerate(split.heldout):
        data = all_views[i]
        view = to_train_view(data)
        out = render_view(scene, view, "cpu", res.background)
        label_map = out.label_map()[0].numpy()
        gt = gt_depth.get(data.name)
        per_view[data.name] = evaluate_view(
            out.rgb[0], out.depth[0], label_map, view.rgb[0], data.depth, data.mask, gt
        )
        image = side_by_side(
            data.rgb,
            out.rgb[0].detach().numpy(),
            out.depth[0].detach().numpy(),
            gt if gt is not None else data.depth,
            label_map,
            data.mask,
        )
        name = HELDOUT_PNG if k == 0 else f"heldout_{data.name}.png"
        write_png(out_dir / name, image)
        files["heldout_png" if k == 0 else f"heldout_png_{data.name}"] = out_dir / name
    t_evaluated = time.perf_counter()

    info = {
        "source_capture": str(capture.root.resolve()),
        "train_views": split.train_names,
        "background_rgb": list(res.background),
        "config_hash": h,
    }
    exported = export_scene(scene, out_dir, info)
    files.update({k: out_dir / v for k, v in exported.items()})
    files["scene_json"] = out_dir / "scene.json"
    counts = {name: int(v) for name, v in zip(LABEL_NAMES, torch.bincount(scene.labels, minlength=3))}
    wall = time.perf_counter() - t_start
    report = {
        "summary": _summary(per_view) if per_view else None,
        "heldout": per_view,
        "capture": str(capture.root.resolve()),
        "train_views": split.train_names,
        "heldout_views": split.heldout_names,
        "num_gaussians": scene.num_gaussians,
        "num_gaussians_by_label": counts,
        "num_gaussians_initial": scene0.num_gaussians,
        "steps": res.steps,
        "resumed_from_step": res.resumed_from,
        "loss_every_10_steps": res.losses,
        "densify_log": res.densify_log,
        "wall_time_s": wall,
        "optimize_time_total_s": res.train_time_s,
        "timings_s": {
            "load": t_loaded - t_start,
            "fuse_and_init": t_fused - t_loaded,
            "optimize_this_run": t_optimized - t_fused,
            "evaluate": t_evaluated - t_optimized,
        },
        "fusion": cloud.stats,
        "warnings": warnings,
        "backend": cfg.backend,
        "config": asdict(cfg),
        "config_hash": h,
        "files": {k: p.name for k, p in files.items()},
    }
    report = finite_or_none(report)
    files["report"] = out_dir / REPORT_JSON
    report["files"]["report"] = REPORT_JSON
    write_json(files["report"], report)
    return ReconResult(scene=scene, report=report, out_dir=out_dir, files=files)
