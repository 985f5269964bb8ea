"""`splatsim demo`: the whole studio on the built-in default scene, reusing finished stages.

Stages (each skipped when its content hash says it is already done, so a second run is fast and an
interrupted one continues): capture (synthetic handover, 320×240) → scene (metric labelled 3DGS) →
grasps.json → demos → policy (training) → export (ONNX, onnxruntime parity) → eval (closed loop in the
splat through the exported model, against IBVS-MASK from the same held-out starts).

The default plan is sized for a 2-core CPU with no GPU (about ten minutes); every knob is a field of
`DemoPlan`, and docs/demo.md lists what a bigger run costs.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ui import stages


@dataclass
class DemoPlan:
    """The default run's configuration: sized for a 2-core CPU with no GPU."""

    resolution_scale: float = 0.5
    """Capture at 320×240 (the D435-like rig at half resolution)."""
    object: str = "mustard_bottle"
    seed: int = 0
    recon_iterations: int = 150
    """Reconstruction optimisation steps (`recon.optimize.OptimConfig.iterations`)."""
    top_k: int = 5
    """Grasp targets the demonstrations fly to."""
    starts_per_grasp: int = 45
    """Start poses per target (the paper's k is 15; more demonstrations help the small CPU policy more than
    more epochs do: on this scene k = 15 / 30 epochs gave 1 success in 10, k = 45 / 15 epochs 3 in 10)."""
    translation_step: float = 0.06
    """Metres per step of the demonstrations: the closed-loop evaluation allows 30 steps, so the planner's
    paths must fit in them (trajgen's finer 0.03 m default takes 21-49 steps)."""
    rotation_step_deg: float = 12.0
    """Degrees per step of the demonstrations (trajgen's default: 5)."""
    image_size: int = 64
    """Policy input resolution (the demonstrations are rendered at 128 and resized)."""
    width: int = 32
    """Channels of the network's first stage (ResNet-18 has 64)."""
    epochs: int = 15
    """Training epochs."""
    lr: float = 1e-3
    """Adam learning rate (cosine-decayed to 10%)."""
    cls_pos_weight: float = 5.0
    """Weight of the pre-grasp frames in the score loss (one frame per episode)."""
    eval_starts: int = 10
    """Held-out start poses for the closed-loop evaluation (the paper: 10 per object)."""


def _stage(
    console: Console,
    out: Path,
    name: str,
    config: Any,
    upstream: list[str],
    work: Callable[[], dict[str, Any]],
    outputs: tuple[str, ...] = (),
) -> tuple[str, dict[str, Any]]:
    """Run `work` unless the stage already finished with the same config and inputs.

    ``outputs`` (paths relative to ``out``) are what the stage writes. When the stage last ran with
    another hash (a changed knob or upstream stage) they are removed first; when it was interrupted with
    this same hash they are kept, so the stage resumes (reconstruction and demonstrations checkpoint).
    """
    # paths inside the run folder are hashed relative to it, so a moved or copied run is still reused
    portable = json.loads(json.dumps(stages.jsonable(config), default=str).replace(str(out), "<run>"))
    h = stages.stage_hash(name, portable, *upstream)
    done = stages.finished(out, name, h)
    if done is not None:
        console.print(f"[green]✓[/green] {name}: reused (unchanged config and inputs)")
        return h, done
    prev = stages.previous_hash(out, name)
    stages.clear(out, name)
    if prev is not None and prev != h:
        for rel in outputs:
            p = out / rel
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    stages.mark_started(out, name, h)
    t0 = time.perf_counter()
    summary = work()
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    stages.mark_finished(out, name, h, summary)
    console.print(f"[green]✓[/green] {name}: done in {summary['seconds']:.0f} s")
    return h, summary


def resolve_device(device: str) -> str:
    """The render backend for ``--device``: auto = gsplat where CUDA is available, else the CPU backend."""
    import torch

    if device == "auto":
        return "gsplat" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                "--device cuda: torch sees no CUDA device (torch.cuda.is_available() is False); install a "
                "CUDA build of torch and gsplat (README, 'Running on a GPU') or use --device cpu / auto"
            )
        return "gsplat"
    if device == "cpu":
        return "cpu"
    raise ValueError(f"--device {device!r}; expected 'auto', 'cpu' or 'cuda'")


def _target_note(reasons: list[str], what: str) -> str:
    """'; 2 targets replaced ...: <first reason>' for the demos row (empty when there are none)."""
    if not reasons:
        return ""
    n = len(reasons)
    return f"; {n} target{'s' if n > 1 else ''} {what} ({reasons[0].split(' (')[0]})"


def _fmt(x: Any, spec: str, scale: float = 1.0) -> str:
    return "n/a" if x is None else format(scale * float(x), spec)


def run_demo(cmd) -> int:
    import imageio.v3 as iio

    from recon.pipeline import ReconConfig, run_recon
    from recon.synth import SynthConfig, contact_sheet, generate_capture
    from trajgen.grasps import GraspConfig, run_grasps

    console = Console()
    backend = resolve_device(getattr(cmd, "device", "auto"))
    out = Path(cmd.out)
    out.mkdir(parents=True, exist_ok=True)
    plan: DemoPlan = getattr(cmd, "plan", None) or DemoPlan()
    console.print(
        f"[bold]splatsim demo[/bold] → {out}  (render backend: {backend}; re-running reuses finished stages)"
    )
    t0 = time.perf_counter()
    rows: list[tuple[str, str, str]] = []

    synth_cfg = SynthConfig(object=plan.object, seed=plan.seed, resolution_scale=plan.resolution_scale)

    def capture() -> dict[str, Any]:
        with console.status(
            f"capture: rendering {synth_cfg.num_views} synthetic views of '{synth_cfg.object}'"
        ):
            cap = generate_capture(synth_cfg, out / "capture", overwrite=True)
            iio.imwrite(out / "capture" / "contact_sheet.png", contact_sheet(cap))
        return {"views": cap.num_views, "object": synth_cfg.object}

    cap_h, cap = _stage(console, out, "capture", synth_cfg, [], capture, ("capture",))
    rows.append(("capture", f"{cap['views']} synthetic RGB-D views of {cap['object']}", str(out / "capture")))

    from recon.optimize import OptimConfig

    recon_cfg = ReconConfig(backend=backend, optim=OptimConfig(iterations=plan.recon_iterations))

    def scene() -> dict[str, Any]:
        console.print("scene: reconstructing (resumes from the last checkpoint if interrupted)")
        rep = run_recon(recon_cfg, out / "capture", out / "scene").report
        summ = {**rep, **rep.get("summary", {})}
        keys = ("heldout_psnr_db", "depth_median_err_m", "mask_iou_object", "mask_iou_hand", "num_gaussians")
        return {k: summ.get(k) for k in keys}

    # the backend changes how, not what, a stage computes: it is left out of the content hashes
    scene_h, rec = _stage(
        console, out, "scene", replace(recon_cfg, backend="auto"), [cap_h], scene, ("scene",)
    )
    rows.append(
        (
            "scene",
            f"{rec.get('num_gaussians')} Gaussians; held-out PSNR {_fmt(rec.get('heldout_psnr_db'), '.1f')} dB; "
            f"median depth error {_fmt(rec.get('depth_median_err_m'), '.1f', 1000)} mm; mask IoU "
            f"object {_fmt(rec.get('mask_iou_object'), '.2f')} / hand {_fmt(rec.get('mask_iou_hand'), '.2f')}",
            str(out / "scene"),
        )
    )

    grasp_cfg = GraspConfig()

    def grasps() -> dict[str, Any]:
        res = run_grasps(grasp_cfg, out / "scene", out / "grasps.json")
        return {"kept": len(res.kept), "summary": res.summary}

    grasp_h, gr = _stage(console, out, "grasps", grasp_cfg, [scene_h], grasps, ("grasps.json", "grasps.png"))
    gsum = gr.get("summary", {})
    rejected = {k: v for k, v in gsum.get("rejected", {}).items() if v}
    why = ", ".join(f"{k} {v}" for k, v in sorted(rejected.items(), key=lambda kv: -kv[1]))
    rows.append(
        (
            "grasps",
            f"{gr['kept']} safe grasps kept of {gsum.get('candidates')} candidates; rejected: {why or 'none'}",
            f"{out / 'grasps.json'}, {out / 'grasps.png'}",
        )
    )

    from trajgen.batch import DemosConfig, run_demos
    from trajgen.planning import PlanConfig

    demos_cfg = DemosConfig(
        scenes=(str(out),),
        out=str(out / "demos"),
        top_k=plan.top_k,
        plan=PlanConfig(
            k=plan.starts_per_grasp,
            translation_step=plan.translation_step,
            rotation_step_deg=plan.rotation_step_deg,
        ),
        seed=plan.seed,
        backend=backend,
    )

    def demos() -> dict[str, Any]:
        res = run_demos(demos_cfg)
        replaced, skipped = [], []
        for m in res.manifests:
            for g in json.loads(Path(m).read_text())["grasps"]:
                if g.get("replaces"):
                    replaced.append(g["replaces"]["reason"])
                if g.get("skipped"):
                    skipped.append(g["skipped"])
        return {
            "episodes": res.episodes,
            "tuples": res.tuples,
            "tuples_per_s": round(res.tuples_per_s, 1),
            "targets_replaced": replaced,
            "targets_skipped": skipped,
        }

    demos_h, dm = _stage(
        console,
        out,
        "demos",
        replace(demos_cfg, backend="auto", progress=True),
        [scene_h, grasp_h],
        demos,
        ("demos",),
    )
    rows.append(
        (
            "demos",
            f"{dm['episodes']} episodes, {dm['tuples']} (image, mask, action, pre-grasp) tuples "
            f"at {dm['tuples_per_s']} tuples/s"
            + _target_note(dm.get("targets_replaced", []), "replaced by the next kept grasps")
            + _target_note(dm.get("targets_skipped", []), "skipped"),
            str(out / "demos"),
        )
    )

    from policy.evaluate import EvalConfig, run_eval
    from policy.export import ExportConfig, run_export
    from policy.model import ModelConfig
    from policy.train import TrainConfig, run_train

    train_cfg = TrainConfig(
        data=(out / "demos",),
        out=out / "policy",
        model=ModelConfig(image_size=plan.image_size, width=plan.width),
        epochs=plan.epochs,
        lr=plan.lr,
        lr_final_fraction=0.1,
        cls_pos_weight=plan.cls_pos_weight,
        seed=plan.seed,
        device="cuda" if backend == "gsplat" else "cpu",
    )

    def policy() -> dict[str, Any]:
        res = run_train(train_cfg)
        last = res.history[-1] if res.history else {}
        return {
            "episodes": res.num_train_episodes,
            "frames": res.num_train_frames,
            "val_episodes": res.num_val_episodes,
            "steps": res.steps,
            "epochs": res.epochs_done,
            "train_loss": last.get("train_loss"),
            "val_loss": last.get("val_loss"),
            "val_stop_recall": last.get("val_stop_recall"),
        }

    policy_h, po = _stage(
        console, out, "policy", replace(train_cfg, device="auto"), [demos_h], policy, ("policy",)
    )
    rows.append(
        (
            "policy",
            f"{po['epochs']} epochs over {po['frames']} frames of {po['episodes']} episodes; validation loss "
            f"{_fmt(po.get('val_loss'), '.3f')} ({po['val_episodes']} held-out episodes)",
            str(out / "policy"),
        )
    )

    export_cfg = ExportConfig(policy=out / "policy", out=out / "export")

    def export() -> dict[str, Any]:
        res = run_export(export_cfg)
        return {"onnx": str(res.onnx_path), "max_abs_diff": res.max_abs_diff}

    export_h, ex = _stage(console, out, "export", export_cfg, [policy_h], export, ("export",))
    rows.append(
        (
            "export",
            f"ONNX; onnxruntime vs torch max |diff| {ex['max_abs_diff']:.1e} (limit {export_cfg.tolerance:g})",
            ex["onnx"],
        )
    )

    ibvs = _calibrated_ibvs(out / "demos", plan.image_size)
    eval_cfg = EvalConfig(
        policy=out / "policy",
        scenes=(out,),
        out=out / "eval",
        onnx=out / "export" / "policy.onnx",
        starts_per_object=plan.eval_starts,
        ibvs_config=ibvs,
        backend=backend,
    )

    def evaluate() -> dict[str, Any]:
        res = run_eval(eval_cfg)
        summ = res.report["summary"]
        return {
            m: {k: summ[m]["all"].get(k) for k in ("episodes", "success", "safe", "centred", "success_rate")}
            for m in summ
        } | {"videos": [str(v) for v in res.videos]}

    _, ev = _stage(
        console,
        out,
        "eval",
        replace(eval_cfg, backend="cpu", progress=True),
        [export_h, demos_h],
        evaluate,
        ("eval",),
    )
    rows.append(("eval", _eval_line(ev), str(out / "eval" / "table.md")))

    table = Table(title=f"splatsim demo — {time.perf_counter() - t0:.0f} s")
    table.add_column("stage")
    table.add_column("result")
    table.add_column("where")
    for r in rows:
        table.add_row(*r)
    console.print(table)
    console.print(
        "Pictures: "
        + ", ".join(
            str(p)
            for p in (
                out / "capture" / "contact_sheet.png",
                out / "scene" / "heldout.png",
                out / "grasps.png",
                out / "demos" / "pictures",
                out / "policy" / "training_curve.png",
                out / "eval" / "videos",
            )
        )
    )
    return 0


def _calibrated_ibvs(demos_dir: Path, image_size: int):
    """IBVS-MASK with its stop area set from the demonstrations' pre-grasp frames (as the benchmark does)."""
    import numpy as np

    from policy.data import load_demos
    from policy.ibvs import IBVSConfig, calibrate_area_fraction

    demos = load_demos([demos_dir], image_size)
    # the pre-grasp frame ends each planned trajectory; recovery samples, where present, follow it
    nominal = [e.num_frames - int(e.attrs.get("recovery_frames", 0)) for e in demos.episodes]
    pre = [e.mask[n - 1] for e, n in zip(demos.episodes, nominal) if n > 0]
    if not pre:
        return IBVSConfig()
    return IBVSConfig(area_fraction=round(calibrate_area_fraction(np.stack(pre)), 4))


def _eval_line(ev: dict[str, Any]) -> str:
    from policy.evaluate import METHOD_IBVS, METHOD_NAMES, METHOD_POLICY

    parts = []
    for m in (METHOD_POLICY, METHOD_IBVS):
        a = ev.get(m)
        if a and a.get("episodes"):
            parts.append(
                f"{METHOD_NAMES.get(m, m)} success {a['success']}/{a['episodes']} (safe {a['safe']})"
            )
    return "closed loop from held-out starts: " + "; ".join(parts)
