"""Quality of a reconstruction on held-out views: metrics, the side-by-side image, and the exports.

Metrics per held-out view (`evaluate_view`):

- ``psnr_db``, ``ssim``: rendered vs captured colour over the whole image (data range 1).
- ``depth_vs_sensor`` / ``depth_vs_gt``: absolute error of the rendered expected depth (metres) against
  the sensor depth / the capture's noise-free ground-truth depth (when it has one), as ``median_m``,
  ``p90_m`` and ``pixels``, over ``all`` pixels with reference depth and over ``hand_object`` pixels
  (mask label 1 or 2). Pixels the scene leaves empty count with their full error.
- ``mask_iou``: intersection over union of the rendered label map (argmax of the composited label
  probabilities where it is at least 0.5) with the held-out mask, for ``object`` and ``hand``.

`side_by_side` draws captured | rendered | depth error (0 to ``max_err_m``, black to white through
red and yellow; grey where there is no reference depth) | rendered labels over the rendered image
(object yellow-green, hand magenta) with the mask outline in white.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import torch

from recon.losses import psnr, ssim
from splatsim.ply import write_ply
from splatsim.scene import LABEL_HAND, LABEL_NAMES, LABEL_OBJECT, GaussianScene

__all__ = [
    "REPORT_JSON",
    "SCENE_JSON",
    "depth_error_stats",
    "evaluate_view",
    "export_scene",
    "mask_iou",
    "side_by_side",
    "write_json",
]

REPORT_JSON = "recon_report.json"
SCENE_JSON = "scene.json"
LABEL_COLORS = np.array([[0, 0, 0], [170, 240, 40], [240, 40, 200]], dtype=np.float32)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Writes JSON atomically (temporary file, then rename); NaN/inf are refused."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def depth_error_stats(
    rendered: np.ndarray,  # [H, W] metres
    reference: np.ndarray,  # [H, W] metres, 0 = none
    region: np.ndarray | None = None,  # [H, W] bool
) -> dict[str, float | int | None]:
    """Median and 90th percentile of |rendered - reference| over valid reference pixels in ``region``."""
    valid = reference > 0
    if region is not None:
        valid &= region
    n = int(valid.sum())
    if n == 0:
        return {"median_m": None, "p90_m": None, "pixels": 0}
    err = np.abs(rendered[valid].astype(np.float64) - reference[valid])
    return {"median_m": float(np.median(err)), "p90_m": float(np.percentile(err, 90)), "pixels": n}


def mask_iou(pred: np.ndarray, target: np.ndarray, label: int) -> float | None:
    """IoU of ``pred == label`` and ``target == label`` (None if both are empty)."""
    a, b = pred == label, target == label
    union = int((a | b).sum())
    return None if union == 0 else float((a & b).sum()) / union


def evaluate_view(
    rgb: torch.Tensor,  # [H, W, 3] rendered, [0, 1]
    depth: torch.Tensor,  # [H, W] rendered expected depth
    label_map: np.ndarray,  # [H, W] rendered hard labels
    target_rgb: torch.Tensor,  # [H, W, 3] captured, [0, 1]
    sensor_depth: np.ndarray,  # [H, W] metres, 0 = missing
    mask: np.ndarray | None,  # [H, W] labels
    gt_depth: np.ndarray | None = None,  # [H, W] metres, 0 = no surface
) -> dict[str, Any]:
    """The metrics of one held-out view (see the module docstring)."""
    r = rgb.detach().clamp(0, 1).float()
    t = target_rgb.detach().float()
    d = depth.detach().cpu().numpy().astype(np.float64)
    fg = None if mask is None else (mask == LABEL_OBJECT) | (mask == LABEL_HAND)
    out: dict[str, Any] = {
        "psnr_db": psnr(r, t),
        "ssim": float(ssim(r[None], t[None])),
        "depth_vs_sensor": {
            "all": depth_error_stats(d, sensor_depth),
            "hand_object": depth_error_stats(d, sensor_depth, fg) if fg is not None else None,
        },
        "depth_vs_gt": None,
        "mask_iou": None,
    }
    if gt_depth is not None:
        out["depth_vs_gt"] = {
            "all": depth_error_stats(d, gt_depth),
            "hand_object": depth_error_stats(d, gt_depth, fg) if fg is not None else None,
        }
    if mask is not None:
        out["mask_iou"] = {
            LABEL_NAMES[LABEL_OBJECT]: mask_iou(label_map, mask, LABEL_OBJECT),
            LABEL_NAMES[LABEL_HAND]: mask_iou(label_map, mask, LABEL_HAND),
        }
    return out


def _error_colors(err: np.ndarray, valid: np.ndarray, max_err: float) -> np.ndarray:
    t = np.clip(err / max_err, 0.0, 1.0)
    rgb = np.stack([np.clip(3 * t, 0, 1), np.clip(3 * t - 1, 0, 1), np.clip(3 * t - 2, 0, 1)], -1)
    rgb = (rgb * 255).astype(np.float32)
    rgb[~valid] = 128
    return rgb


def _outline(mask: np.ndarray) -> np.ndarray:
    m = np.pad(mask, 1, mode="edge")
    inner = m[1:-1, 1:-1]
    return (inner != m[:-2, 1:-1]) | (inner != m[2:, 1:-1]) | (inner != m[1:-1, :-2]) | (inner != m[1:-1, 2:])


def side_by_side(
    target_rgb: np.ndarray,  # [H, W, 3] uint8
    rendered_rgb: np.ndarray,  # [H, W, 3] float in [0, 1]
    rendered_depth: np.ndarray,  # [H, W]
    reference_depth: np.ndarray,  # [H, W], 0 = none
    label_map: np.ndarray,  # [H, W] rendered labels
    mask: np.ndarray | None,  # [H, W] labels
    max_err_m: float = 0.02,
) -> np.ndarray:  # [H, 4W + 6, 3] uint8
    """captured | rendered | depth error | label overlay, separated by 2-pixel white bars."""
    rend = np.clip(rendered_rgb, 0, 1) * 255.0
    valid = reference_depth > 0
    err = _error_colors(np.abs(rendered_depth - reference_depth), valid, max_err_m)
    overlay = rend.copy()
    fg = label_map > 0
    overlay[fg] = 0.45 * overlay[fg] + 0.55 * LABEL_COLORS[label_map[fg]]
    if mask is not None:
        overlay[_outline(mask)] = 255.0
    h = target_rgb.shape[0]
    bar = np.full((h, 2, 3), 255.0, dtype=np.float32)
    tiles = [target_rgb.astype(np.float32), bar, rend, bar, err, bar, overlay]
    return np.clip(np.concatenate(tiles, axis=1), 0, 255).astype(np.uint8)


def write_png(path: Path, image: np.ndarray) -> None:
    """Writes a PNG atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.png")
    iio.imwrite(tmp, image)
    os.replace(tmp, path)


def export_scene(scene: GaussianScene, out_dir: Path, info: dict[str, Any]) -> dict[str, str]:
    """Writes ``scene.ply``, ``hand.ply``, ``object.ply`` and ``scene.json``; returns the file names.

    As one unit (`splatsim.scene_folder`): a marker file while writing, ``scene.json`` last with the
    SHA-256 of each PLY.

    ``info`` is merged into ``scene.json`` (source capture, config hash, ...).
    """
    from splatsim.scene_folder import EXPORT_MARKER, file_sha256

    out_dir.mkdir(parents=True, exist_ok=True)
    marker = out_dir / EXPORT_MARKER  # a kill from here until it is removed leaves it as a warning
    marker.write_text("recon.report.export_scene is writing this folder\n")
    (out_dir / SCENE_JSON).unlink(missing_ok=True)
    files = {"scene": "scene.ply", "hand": "hand.ply", "object": "object.ply"}
    write_ply(scene, out_dir / files["scene"])
    write_ply(scene.select_label(LABEL_HAND), out_dir / files["hand"])
    write_ply(scene.select_label(LABEL_OBJECT), out_dir / files["object"])
    counts = {name: int((scene.labels == i).sum()) for i, name in enumerate(LABEL_NAMES)}
    lo, hi = scene.bounds()
    meta = {
        "what": "labelled metric 3D Gaussian splatting scene (standard 3DGS PLY + a uchar 'label')",
        "units": "metres",
        "frame": "the capture's scene frame; camera poses camera-to-world, OpenCV axes",
        "labels": {str(i): name for i, name in enumerate(LABEL_NAMES)},
        "ply_fields": "x y z, f_dc_*, f_rest_* (channel-major), opacity (logit), scale_* (log), rot_* (wxyz), label",
        "sh_degree": scene.sh_degree,
        "num_gaussians": scene.num_gaussians,
        "counts": counts,
        "bounds_m": {"min": [float(x) for x in lo], "max": [float(x) for x in hi]},
        "files": files,
        "file_sha256": {name: file_sha256(out_dir / name) for name in files.values()},
    }
    meta.update(info)
    write_json(out_dir / SCENE_JSON, meta)  # last: its presence (and no marker) says the folder is whole
    marker.unlink()
    return files


def finite_or_none(x: Any) -> Any:
    """Replaces non-finite floats (e.g. an infinite PSNR) by None, recursively, for strict JSON."""
    if isinstance(x, dict):
        return {k: finite_or_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite_or_none(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x
