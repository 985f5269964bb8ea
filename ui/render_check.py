"""`splatsim render-check`: render a built-in Gaussian scene on the CPU and save RGB | depth | labels."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch


def colorize_depth(depth: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Depth [H, W] metres → uint8 RGB (near = bright), invalid pixels black."""
    if valid is None:
        valid = depth > 0
    out = np.zeros(depth.shape + (3,), dtype=np.uint8)
    if valid.any():
        lo, hi = np.percentile(depth[valid], [2, 98])
        t = np.clip((depth - lo) / max(hi - lo, 1e-6), 0, 1)
        # a simple perceptual ramp: dark blue (far) → yellow (near)
        ramp = np.stack([1 - t, 0.85 * (1 - t) + 0.1, 0.2 + 0.6 * t], -1)
        out[valid] = (255 * ramp[valid]).astype(np.uint8)
    return out


LABEL_COLORS = np.array([[0, 0, 0], [40, 120, 255], [255, 120, 40]], dtype=np.float32)


def overlay_labels(rgb: np.ndarray, label_probs: np.ndarray, strength: float = 0.6) -> np.ndarray:
    """Blend object (blue) and hand (orange) probabilities over an RGB uint8 image."""
    base = rgb.astype(np.float32)
    for lab in (1, 2):
        w = strength * label_probs[..., lab : lab + 1]
        base = base * (1 - w) + LABEL_COLORS[lab] * w
    return np.clip(base, 0, 255).astype(np.uint8)


def render_check(cfg) -> int:
    import imageio.v3 as iio
    from rich.console import Console

    from splatsim.render import render
    from splatsim.scene import object_like_scene, random_scene

    console = Console()
    W, H = cfg.width, cfg.height
    if cfg.scene == "object":
        scene = object_like_scene(cfg.num_gaussians, seed=cfg.seed)
    else:
        scene = random_scene(cfg.num_gaussians, seed=cfg.seed, focal_px=0.9 * W)
    K = torch.tensor([[0.9 * W, 0, W / 2], [0, 0.9 * W, H / 2], [0, 0, 1]])
    c2w = torch.eye(4)
    render(scene, c2w, K, W, H, backend="cpu")  # compile / load the cached kernels
    t0 = time.perf_counter()
    out = render(scene, c2w, K, W, H, backend="cpu", background=torch.ones(3))
    ms = 1e3 * (time.perf_counter() - t0)
    rgb = (out.rgb[0].clamp(0, 1).numpy() * 255).astype(np.uint8)
    depth = colorize_depth(out.depth[0].numpy(), out.alpha[0].numpy() > 0.5)
    labels = overlay_labels(rgb, out.labels[0].numpy())
    panel = np.concatenate([rgb, depth, labels], axis=1)
    path = Path(cfg.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    iio.imwrite(tmp, panel)
    tmp.replace(path)
    console.print(
        f"rendered {scene.num_gaussians} Gaussians at {W}x{H} in {ms:.1f} ms (cpu backend) → {path} "
        "[dim](RGB | depth | object (blue) and hand (orange) labels)[/dim]"
    )
    return 0
