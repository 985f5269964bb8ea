"""What the web app shows of a run's files: previews, reports, statistics and curves.

Everything here reads a run folder and returns plain values (paths, markdown, plotly figures); nothing
starts work or imports gradio. Preview images the app makes go under ``<run>/.app/preview/``.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from ui.app_runs import APP_DIR

__all__ = [
    "capture_gallery",
    "capture_summary",
    "demos_stats",
    "episode_choices",
    "episode_video",
    "eval_rollouts",
    "loss_figure",
    "read_json",
    "recon_report_markdown",
]

PREVIEW_DIR = f"{APP_DIR}/preview"
_OBJECT_RGB = np.array([40, 120, 255], np.float32)
_HAND_RGB = np.array([255, 120, 40], np.float32)
_ROLLOUT_RE = re.compile(r"^(?P<object>.+)_(?P<method>policy|ibvs_mask)_(?P<start>\d+)\.mp4$")


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file's object, or None when it is missing or unreadable."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _fmt(x: Any, scale: float = 1.0, digits: int = 2, unit: str = "") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x * scale:.{digits}f}{unit}"


# --------------------------------------------------------------------------------------------------
# Capture
# --------------------------------------------------------------------------------------------------


def _depth_rgb(depth: np.ndarray, lo: float, hi: float) -> np.ndarray:
    from matplotlib import colormaps

    t = np.clip((depth - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    rgb = (colormaps["turbo"](t)[..., :3] * 255).astype(np.uint8)
    rgb[depth <= 0] = 0
    return rgb


def _mask_overlay(rgb: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    out = rgb.astype(np.float32) * 0.5
    if mask is not None:
        for label, color in ((1, _OBJECT_RGB), (2, _HAND_RGB)):
            m = mask == label
            out[m] = 0.45 * rgb[m] + 0.55 * color
    return np.clip(out, 0, 255).astype(np.uint8)


def capture_gallery(run_dir: Path) -> list[tuple[str, str]]:
    """Per view: its RGB, colourised depth (Turbo, one range for all views; black = missing) and the
    hand (orange) and object (blue) masks over the RGB, as (image path, caption) pairs.

    The depth and mask previews are written once per capture under ``.app/preview/capture/``.
    """
    import imageio.v3 as iio

    from recon.capture import load_capture

    cap_dir = Path(run_dir) / "capture"
    capture = load_capture(cap_dir, check_images=False)
    out_dir = Path(run_dir) / PREVIEW_DIR / "capture"
    stamp = str(capture.json_path.stat().st_mtime_ns)
    stamp_file = out_dir / "stamp.txt"
    fresh = stamp_file.is_file() and stamp_file.read_text() == stamp
    items: list[tuple[str, str]] = []
    views = [] if fresh else [capture.read_view(i) for i in range(capture.num_views)]
    if not fresh:
        out_dir.mkdir(parents=True, exist_ok=True)
        valid = np.concatenate([v.depth[v.depth > 0] for v in views]) if views else np.zeros(0)
        lo, hi = np.percentile(valid, [2, 98]) if valid.size else (0.0, 1.0)
        for v in views:
            iio.imwrite(out_dir / f"{v.name}_depth.png", _depth_rgb(v.depth, float(lo), float(hi)))
            iio.imwrite(out_dir / f"{v.name}_mask.png", _mask_overlay(v.rgb, v.mask))
        stamp_file.write_text(stamp)
    for v in capture.views:
        items.append((str(v.rgb_path), f"{v.name} · RGB"))
        items.append((str(out_dir / f"{v.name}_depth.png"), f"{v.name} · depth"))
        items.append((str(out_dir / f"{v.name}_mask.png"), f"{v.name} · hand/object masks"))
    return items


def capture_summary(run_dir: Path) -> tuple[str, dict[str, Any]]:
    """Markdown and a JSON-able summary of the run's capture."""
    from recon.capture import load_capture

    capture = load_capture(Path(run_dir) / "capture", check_images=False)
    v0 = capture.views[0]
    meta = capture.metadata or {}
    source = meta.get("source", "unknown")
    obj = meta.get("object") or meta.get("object_name") or capture.ground_truth.get("object_name")
    info = {
        "views": capture.num_views,
        "names": capture.names,
        "width": v0.width,
        "height": v0.height,
        "source": source,
        "object": obj,
        "has_masks": capture.has_masks,
        "has_ground_truth": bool(capture.ground_truth),
    }
    md = (
        f"**{capture.num_views} views** at {v0.width}×{v0.height} px · source: {source}"
        + (f" · object: {obj}" if obj else "")
        + ("" if capture.has_masks else " · ⚠ no hand/object masks")
        + (
            "  \nGround truth included (object and hand meshes, noise-free depth)."
            if capture.ground_truth
            else ""
        )
        + "  \nEach view: RGB, depth (near blue → far red, black = missing), masks (object blue, hand orange)."
    )
    return md, info


# --------------------------------------------------------------------------------------------------
# Scene
# --------------------------------------------------------------------------------------------------


def recon_report_markdown(report: dict[str, Any]) -> str:
    """The quality report's headline numbers as a table."""
    s = report.get("summary") or {}
    by_label = report.get("num_gaussians_by_label") or {}
    ref = "ground truth" if s.get("depth_reference") == "ground_truth" else "sensor depth"
    rows = [
        ("held-out PSNR", _fmt(s.get("heldout_psnr_db"), digits=1, unit=" dB")),
        ("held-out SSIM", _fmt(s.get("heldout_ssim"), digits=3)),
        (f"median depth error (hand + object, vs {ref})", _fmt(s.get("depth_median_err_m"), 1000, 1, " mm")),
        (f"90th percentile depth error (vs {ref})", _fmt(s.get("depth_p90_err_m"), 1000, 1, " mm")),
        ("mask IoU object / hand", f"{_fmt(s.get('mask_iou_object'))} / {_fmt(s.get('mask_iou_hand'))}"),
        (
            "Gaussians (background / object / hand)",
            f"{report.get('num_gaussians', '–')} ({by_label.get('background', '–')} / "
            f"{by_label.get('object', '–')} / {by_label.get('hand', '–')})",
        ),
        (
            "training / held-out views",
            f"{', '.join(report.get('train_views', []))} / "
            f"{', '.join(report.get('heldout_views', [])) or 'none'}",
        ),  # fmt: skip
        ("optimisation steps", str(report.get("steps", "–"))),
        ("wall time", _fmt(report.get("wall_time_s"), digits=0, unit=" s")),
    ]
    lines = ["| quality report | |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows]
    if report.get("resumed_from_step"):
        lines.append(f"\nResumed from step {report['resumed_from_step']} (checkpoint).")
    return "\n".join(lines)


def loss_figure(points: list[tuple[int, float]] | list[list[float]], title: str, ylabel: str = "loss"):
    """A plotly line of (step, value) points (log scale when the values span a decade)."""
    import plotly.graph_objects as go

    pts = [(int(a), float(b)) for a, b in points if b is not None and math.isfinite(float(b))]
    fig = go.Figure()
    if pts:
        xs, ys = zip(*pts)
        mode = "lines" if len(pts) > 30 else "lines+markers"  # a short run still shows its points
        fig.add_trace(go.Scatter(x=list(xs), y=list(ys), mode=mode, name=ylabel))
        positive = [y for y in ys if y > 0]
        if positive and len(positive) == len(ys) and max(ys) > 10 * min(positive):
            fig.update_yaxes(type="log")
    fig.update_layout(
        title=title,
        xaxis_title="step",
        yaxis_title=ylabel,
        height=300,
        margin={"l": 40, "r": 10, "t": 40, "b": 40},
    )
    return fig


# --------------------------------------------------------------------------------------------------
# Demonstrations
# --------------------------------------------------------------------------------------------------


def episode_choices(demos_dir: Path) -> list[str]:
    """Episode files (relative to ``demos_dir``) listed by index.json, in slot order."""
    index = read_json(Path(demos_dir) / "index.json") or {}
    return [e["file"] for e in index.get("episodes", []) if isinstance(e, dict) and "file" in e]


def episode_video(demos_dir: Path, episode_file: str, run_dir: Path) -> Path:
    """An mp4 of one episode (RGB | RGB with the masks), made once under ``.app/preview/episodes/``.

    Raises:
        ValueError: When ``episode_file`` is not an episode index.json lists.
    """
    from trajgen.dataset import read_episode
    from trajgen.plots import write_episode_video

    demos_dir = Path(demos_dir)
    if episode_file not in episode_choices(demos_dir):
        raise ValueError(f"{episode_file!r} is not an episode of {demos_dir}/index.json")
    src = demos_dir / episode_file
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", episode_file.removesuffix(".hdf5")) + ".mp4"
    out = Path(run_dir) / PREVIEW_DIR / "episodes" / name
    if not out.is_file() or out.stat().st_mtime < src.stat().st_mtime:
        ep = read_episode(src)
        write_episode_video(out, ep.rgb, ep.mask)
    return out


def demos_stats(demos_dir: Path, max_episodes: int = 200) -> tuple[str, dict[str, Any]]:
    """Dataset statistics as markdown and a dict: episodes, tuples, lengths, phases, mask coverage,
    action sizes, planning counts, image size and disk use (arrays read from at most ``max_episodes``)."""
    import h5py

    from trajgen.dataset import DEMO_GROUP

    demos_dir = Path(demos_dir)
    index = read_json(demos_dir / "index.json")
    config = read_json(demos_dir / "config.json") or {}
    if index is None:
        return "No demonstrations yet.", {}
    eps = index.get("episodes", [])
    lengths = np.array([e.get("num_samples", 0) for e in eps], dtype=np.float64)
    phase_counts = np.zeros(4)
    obj_cov, hand_cov, trans_mm, rot_deg = [], [], [], []
    for e in eps[:max_episodes]:
        try:
            with h5py.File(demos_dir / e["file"], "r") as f:
                g = f[DEMO_GROUP]
                phase = g["phase"][()]
                mask = g["obs/mask"][()]
                actions = g["actions"][()]
        except (OSError, KeyError):
            continue
        phase_counts += np.bincount(phase.astype(np.int64), minlength=4)[:4]
        obj_cov.append(float((mask == 1).mean()))
        hand_cov.append(float((mask == 2).mean()))
        moving = actions[:-1] if len(actions) > 1 else actions
        trans_mm.append(float(np.linalg.norm(moving[:, 3:], axis=1).mean() * 1000))
        rot_deg.append(float(np.degrees(np.linalg.norm(moving[:, :3], axis=1)).mean()))
    camera = config.get("camera", {})
    plan = config.get("plan", {})
    disk = sum(p.stat().st_size for p in demos_dir.rglob("*.hdf5") if p.is_file())
    planning = (index.get("planning") or {}).get("totals", {})
    stats = {
        "episodes": int(index.get("num_episodes", len(eps))),
        "tuples": int(index.get("num_tuples", int(lengths.sum()))),
        "no_trajectory_slots": int(index.get("no_trajectory_slots", 0)),
        "length_mean": float(lengths.mean()) if lengths.size else None,
        "length_min": int(lengths.min()) if lengths.size else None,
        "length_max": int(lengths.max()) if lengths.size else None,
        "phase_fractions": (phase_counts[1:] / max(phase_counts.sum(), 1)).round(3).tolist(),
        "object_mask_coverage": float(np.mean(obj_cov)) if obj_cov else None,
        "hand_mask_coverage": float(np.mean(hand_cov)) if hand_cov else None,
        "translation_step_mm": float(np.mean(trans_mm)) if trans_mm else None,
        "rotation_step_deg": float(np.mean(rot_deg)) if rot_deg else None,
        "image_size": [camera.get("width"), camera.get("height")],
        "starts_per_grasp": plan.get("k"),
        "grasp_targets": config.get("top_k"),
        "planning": planning,
        "disk_mb": round(disk / 1e6, 2),
    }
    pf = stats["phase_fractions"]
    md = "\n".join(
        [
            "| dataset | |",
            "|---|---|",
            f"| episodes / tuples | {stats['episodes']} / {stats['tuples']} |",
            f"| episode length (mean, min–max) | {_fmt(stats['length_mean'], digits=1)} "
            f"({stats['length_min']}–{stats['length_max']}) |",
            f"| slots without a valid trajectory | {stats['no_trajectory_slots']} |",
            f"| frames per phase 1 / 2 / 3 | {' / '.join(f'{100 * x:.0f}%' for x in pf)} |",
            f"| mask coverage object / hand | {_fmt(stats['object_mask_coverage'], 100, 1, '%')} / "
            f"{_fmt(stats['hand_mask_coverage'], 100, 1, '%')} |",
            f"| mean step: translation / rotation | {_fmt(stats['translation_step_mm'], digits=1, unit=' mm')} / "
            f"{_fmt(stats['rotation_step_deg'], digits=2, unit='°')} |",
            f"| image size | {camera.get('width')}×{camera.get('height')} px |",
            f"| start poses per grasp (k) | {plan.get('k')} |",
            f"| start-pose candidates accepted / drawn | {planning.get('accepted', '–')} / "
            f"{planning.get('candidates', '–')} |",
            f"| on disk | {stats['disk_mb']:.1f} MB |",
        ]
    )
    return md, stats


# --------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------


def eval_rollouts(eval_dir: Path) -> dict[str, dict[str, Path]]:
    """Rollout videos by "<object> · start <n>", each {method: path} (policy and/or ibvs_mask)."""
    out: dict[str, dict[str, Path]] = {}
    for p in sorted((Path(eval_dir) / "videos").glob("*.mp4")):
        m = _ROLLOUT_RE.match(p.name)
        if m:
            key = f"{m['object']} · start {int(m['start'])}"
            out.setdefault(key, {})[m["method"]] = p
    return out
