"""`splatsim demo`: the whole studio on the built-in default scene, reusing finished stages.

Stages (each in its own folder under `out`, each skipped when its content hash says it is done):
capture (synthetic handover, 320×240) → scene (metric labelled 3DGS) → grasps → demos → policy.
Stages that are not built yet are named as such in the summary.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ui import stages


@dataclass
class DemoPlan:
    """The default run's configuration: small enough for a 2-core CPU."""

    resolution_scale: float = 0.5
    """Capture at 320×240 (the D435-like rig at half resolution)."""
    object: str = "mustard_bottle"
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _capture_stage(out: Path, plan: DemoPlan, console: Console) -> tuple[str, dict[str, Any]]:
    from recon.capture import load_capture
    from recon.synth import SynthConfig, contact_sheet, generate_capture

    cfg = SynthConfig(object=plan.object, seed=plan.seed, resolution_scale=plan.resolution_scale)
    h = stages.stage_hash("capture", cfg)
    d = out / "capture"
    done = stages.finished(d, h)
    if done is not None:
        load_capture(d)  # still valid on disk?
        console.print(f"[green]✓[/green] capture: reused {d}")
        return h, done
    stages.clear(d)
    t0 = time.perf_counter()
    with console.status(f"capture: rendering {cfg.num_views} synthetic views of '{cfg.object}'"):
        cap = generate_capture(cfg, d, overwrite=True)
        import imageio.v3 as iio

        iio.imwrite(d / "contact_sheet.png", contact_sheet(cap))
    summary = {"views": cap.num_views, "object": cfg.object, "seconds": round(time.perf_counter() - t0, 1)}
    stages.mark_finished(d, h, summary)
    console.print(f"[green]✓[/green] capture: {cap.num_views} views → {d}")
    return h, summary


def _recon_stage(out: Path, capture_hash: str, console: Console) -> tuple[str, dict[str, Any]]:
    from recon.pipeline import ReconConfig, run_recon

    cfg = ReconConfig()
    h = stages.stage_hash("scene", cfg, capture_hash)
    d = out / "scene"
    done = stages.finished(d, h)
    if done is not None:
        console.print(f"[green]✓[/green] scene: reused {d}")
        return h, done
    stages.clear(d)
    console.print("scene: reconstructing (resumes from the last checkpoint if interrupted)")
    res = run_recon(cfg, out / "capture", d)
    rep = res.report
    summary = {
        k: rep.get(k)
        for k in (
            "heldout_psnr_db",
            "depth_median_err_m",
            "mask_iou_object",
            "mask_iou_hand",
            "num_gaussians",
            "wall_s",
        )
    }
    stages.mark_finished(d, h, summary)
    console.print(f"[green]✓[/green] scene: {rep.get('num_gaussians')} Gaussians → {d}")
    return h, summary


def run_demo(cmd) -> int:
    console = Console()
    out = Path(cmd.out)
    out.mkdir(parents=True, exist_ok=True)
    plan = DemoPlan()
    t0 = time.perf_counter()
    rows: list[tuple[str, str, str]] = []

    cap_h, cap = _capture_stage(out, plan, console)
    rows.append(("capture", f"{cap['views']} synthetic RGB-D views of {cap['object']}", str(out / "capture")))
    _, rec = _recon_stage(out, cap_h, console)
    rows.append(
        (
            "scene",
            f"held-out PSNR {rec.get('heldout_psnr_db', float('nan')):.1f} dB, median depth error "
            f"{1000 * (rec.get('depth_median_err_m') or float('nan')):.1f} mm, mask IoU object "
            f"{rec.get('mask_iou_object', float('nan')):.2f} / hand {rec.get('mask_iou_hand', float('nan')):.2f}",
            str(out / "scene"),
        )
    )
    for name in ("grasps", "demos", "policy", "eval", "export"):
        rows.append((name, "[yellow]not built yet[/yellow]", "—"))

    table = Table(title=f"splatsim demo ({time.perf_counter() - t0:.0f} s)")
    table.add_column("stage")
    table.add_column("result")
    table.add_column("where")
    for r in rows:
        table.add_row(*r)
    console.print(table)
    return 0
