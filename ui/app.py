"""`splatsim app`: the studio in a browser, from a capture to a checked policy (gradio).

Tabs follow the pipeline: Capture (generate a synthetic handover or upload a zipped capture; gallery of
RGB, depth and masks) → Scene (reconstruct with progress, loss curve and ETA; the splat in a 3D viewer,
the held-out comparison, the quality report) → Grasps (interactive plotly view of hand, object, kept and
rejected grasps with the reason; d_s and top-K sliders that re-filter instantly) → Demonstrations
(render with progress; trajectory plot; episode videos with the masks; dataset statistics) → Policy
(train with a live loss curve; evaluate beside IBVS-MASK with a Table-I-style table and rollout videos;
export and download the ONNX bundle).

Each run is a folder under ``AppConfig.runs_dir`` (`ui.app_runs`); the page lists the runs and reopens
them, so nothing is lost when the app restarts. Heavy steps run one at a time on the app's own worker
thread (`ui.app_jobs`), in a queue; they keep running when the browser tab closes, and a reopened page
shows their progress and then their results. Every step is also an API endpoint (``api_name`` below), so
`gradio_client` drives the studio the same way the page does.

Safe by default: the app listens on 127.0.0.1 only, caps the upload size (``max_file_size``), extracts
zips without path traversal, absolute paths, links or decompression bombs and never unpickles or runs an
uploaded file (`ui.app_upload`), and sends no usage analytics.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no phoning home

import json
import logging
import threading
import zipfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import gradio as gr

from splatsim.scene_folder import file_sha256
from ui import app_upload
from ui.app_config import AppConfig
from ui.app_jobs import DONE, FAILED, Job, JobContext, JobRunner
from ui.app_runs import (
    APP_DIR,
    DOWNSTREAM,
    OUTPUTS,
    finish_stage,
    list_runs,
    new_run,
    prepare_stage,
    read_record,
    resolve_run,
    stage_done,
    supersede,
    write_record,
)

__all__ = ["AppConfig", "Studio", "build_app", "launch"]

log = logging.getLogger("splatsim.app")

HEAVY = "heavy"
"""gradio concurrency id shared by every heavy step: one at a time per app, the rest wait in the queue."""
PROGRESS = gr.Progress()
"""Progress tracker default of the heavy steps (gradio finds the event's bar from its own context)."""
POLL_S = 1.0
"""How often the page asks for the state of the jobs (seconds)."""
HAND_POSES = ["auto", "wrap", "under", "pinch"]
RESOLUTIONS = [("160×120 (0.25)", 0.25), ("320×240 (0.5)", 0.5), ("640×480 (1.0)", 1.0)]
UPLOAD_KINDS = [
    ("auto-detect", "auto"),
    ("splatsim capture folder", "capture"),
    ("nerfstudio (transforms.json + depth)", "nerfstudio"),
    ("DexYCB sequence", "dexycb"),
]
SCENE_VIEWS = ["hand + object", "whole scene", "object", "hand"]
"""What the splat viewer shows; hand + object first: small, it loads at once, and it is what the labels are for."""
STAGE_TITLES = {
    "capture": "capture",
    "scene": "reconstruction",
    "grasps": "grasps",
    "demos": "demonstrations",
    "policy": "training",
    "eval": "evaluation",
    "export": "export",
}


def _policy_available() -> dict[str, str | None]:
    """Which policy steps import (None) or why not (the message shown instead of the step)."""
    out: dict[str, str | None] = {}
    for step, module in (("train", "policy.train"), ("eval", "policy.evaluate"), ("export", "policy.export")):
        try:
            __import__(module)
            out[step] = None
        except Exception as exc:  # an unfinished stage must not take the app down
            out[step] = f"Not available yet ({module} does not import: {type(exc).__name__}: {exc})."
    return out


def _error_md(message: str) -> str:
    """A validation error with the file it names (the text before the first ': ') in bold."""
    head, sep, rest = message.partition(": ")
    if sep and ("/" in head or "." in head) and " " not in head.strip():
        return f"❌ **{head}**: {rest}"
    return f"❌ {message}"


def _is_skip(value: Any) -> bool:
    """Whether an output value is gr.skip() (leave the component as it is)."""
    return isinstance(value, dict) and value.get("__type__") == "update" and len(value) == 1


def _status_md(job: Job | None) -> str:
    """The status line of a step: ⏳ running (with ETA), ✓ done (or up to date), ❌ the error."""
    if job is None:
        return ""
    if job.status == FAILED:
        return _error_md(f"{job.error}") if job.error else "❌ failed"
    if job.status == DONE:
        if job.result == "reused":
            return f"✓ {STAGE_TITLES.get(job.stage, job.stage)}: up to date (same settings as before; nothing to redo)"
        return f"✓ {job.describe()}"
    return f"⏳ {job.describe()}"


class Studio:
    """The app: its configuration, its job runner and its gradio Blocks."""

    def __init__(self, config: AppConfig | None = None) -> None:
        self.config = config or AppConfig()
        self.runs_dir = Path(self.config.runs_dir).expanduser().resolve()
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.limits = self.config.limits()
        self.jobs = JobRunner()
        self.policy_missing = _policy_available()
        self._write_lock = threading.Lock()
        self._cache: dict[tuple[str, int], Any] = {}
        self.blocks = self._build()

    # ----------------------------------------------------------------------------------------------
    # Runs
    # ----------------------------------------------------------------------------------------------

    def run_choices(self) -> list[tuple[str, str]]:
        return [(r.name, r.name) for r in list_runs(self.runs_dir)]

    def _run(self, run: str | None) -> Path:
        if not run:
            raise ValueError("no run selected: choose a run at the top, or start a new one")
        return resolve_run(self.runs_dir, run)

    def _run_for_capture(self, run: str | None) -> tuple[str, Path]:
        """The selected run, or a new one when none is selected."""
        if run:
            path = self._run(run)
            return path.name, path
        path = new_run(self.runs_dir)
        return path.name, path

    def _dropdown(self, value: str | None):
        return gr.Dropdown(choices=self.run_choices(), value=value)

    # ----------------------------------------------------------------------------------------------
    # Jobs
    # ----------------------------------------------------------------------------------------------

    def _stage_body(
        self,
        run_dir: Path,
        stage: str,
        settings: dict[str, Any],
        body: Callable[[JobContext, str], Any],
        ctx: JobContext,
    ) -> Any:
        action = prepare_stage(run_dir, stage, settings)
        if action == "reuse":
            ctx.log(f"{stage}: finished before with the same settings; reused")
            return "reused"
        try:
            result = body(ctx, action)
        except Exception as exc:
            finish_stage(run_dir, stage, False, error=str(exc))
            raise
        finish_stage(run_dir, stage, True)
        return result

    def _submit(
        self,
        run_name: str,
        run_dir: Path,
        stage: str,
        settings: dict[str, Any],
        body: Callable[[JobContext, str], Any],
        title: str | None = None,
    ) -> Job:
        return self.jobs.submit(
            run_name,
            stage,
            title or STAGE_TITLES[stage],
            lambda ctx: self._stage_body(run_dir, stage, settings, body, ctx),
        )

    @staticmethod
    def _wait(job: Job, progress: gr.Progress | None, request: gr.Request | None = None) -> Job:
        """Waits for the job, mirroring its state into the gradio progress bar.

        The page session that waits gets the results from this call, so its poll does not reload them.
        """
        if request is not None and getattr(request, "session_hash", None):
            job.waiters.add(request.session_hash)
        while not job.wait(0.4):
            if progress is not None:
                frac = job.fraction
                progress(frac if frac is not None else 0.0, desc=job.describe())
        return job

    # ----------------------------------------------------------------------------------------------
    # What each tab shows (read from the run folder)
    # ----------------------------------------------------------------------------------------------

    def capture_view(self, run_dir: Path | None) -> list[Any]:
        """[summary, gallery, info]"""
        from ui.app_views import capture_gallery, capture_summary

        if run_dir is None or not stage_done(run_dir, "capture"):
            return ["No capture in this run yet: generate one or upload a zip.", [], {"ok": False}]
        try:
            md, info = capture_summary(run_dir)
            gallery = capture_gallery(run_dir)
        except ValueError as exc:
            return [_error_md(str(exc)), [], {"ok": False, "error": str(exc)}]
        return [md, gallery, {"ok": True, **info}]

    def _scene_file(self, run_dir: Path, view: str) -> str:
        """A viewer copy of the splat (all, hand + object, object or hand), without the ``label`` property:
        gradio's splat viewer stops at a ``uchar`` property. Made once per scene under .app/preview/."""
        from splatsim.ply import read_ply, write_ply
        from splatsim.scene import LABEL_BACKGROUND, LABEL_HAND, LABEL_OBJECT

        if view not in SCENE_VIEWS:
            view = SCENE_VIEWS[0]
        src = run_dir / "scene" / "scene.ply"
        slug = {"whole scene": "scene", "hand + object": "hand_object", "object": "object", "hand": "hand"}[
            view
        ]
        out = run_dir / APP_DIR / "preview" / f"view_{slug}.ply"
        if not out.is_file() or out.stat().st_mtime < src.stat().st_mtime:
            scene = read_ply(src)
            keep = {
                "scene": scene.labels >= 0,
                "hand_object": scene.labels != LABEL_BACKGROUND,
                "object": scene.labels == LABEL_OBJECT,
                "hand": scene.labels == LABEL_HAND,
            }[slug]
            if not bool(keep.any()):
                keep = scene.labels >= 0  # nothing with that label: show the whole scene
            out.parent.mkdir(parents=True, exist_ok=True)
            write_ply(scene.subset(keep), out, label=False)
        return str(out)

    def scene_view(self, run_dir: Path | None, view: str = SCENE_VIEWS[0]) -> list[Any]:
        """[loss plot, model3d, heldout image, report md, info]"""
        from ui.app_views import loss_figure, read_json, recon_report_markdown

        if run_dir is None or not stage_done(run_dir, "scene"):
            return [None, None, None, "No scene yet: reconstruct the capture.", {"ok": False}]
        report = read_json(run_dir / "scene" / "recon_report.json") or {}
        steps = int(report.get("steps") or 0)
        curve = [(min(10 * (i + 1), steps), v) for i, v in enumerate(report.get("loss_every_10_steps") or [])]
        job = self.jobs.latest(run_dir.name, "scene")
        if job is not None and job.status == DONE and len(job.curve) > len(curve):
            curve = list(job.curve)  # every step of this app's run
        heldout = run_dir / "scene" / "heldout.png"
        info = {
            "ok": True,
            "num_gaussians": report.get("num_gaussians"),
            "num_gaussians_by_label": report.get("num_gaussians_by_label"),
            "steps": report.get("steps"),
            "summary": report.get("summary"),
        }
        return [
            loss_figure(curve, "reconstruction loss") if curve else None,
            self._scene_file(run_dir, view),
            str(heldout) if heldout.is_file() else None,
            recon_report_markdown(report),
            info,
        ]

    def _points(self, run_dir: Path, name: str):
        from trajgen.grasp_io import load_points

        path = run_dir / "scene" / f"{name}.ply"
        key = (str(path), path.stat().st_mtime_ns)
        if key not in self._cache:
            if len(self._cache) > 16:
                self._cache.clear()
            self._cache[key] = load_points(path)
        return self._cache[key]

    def _base_doc(self, run_dir: Path) -> dict[str, Any] | None:
        from ui.app_views import read_json

        return read_json(run_dir / APP_DIR / "grasps_base.json")

    def grasps_view(
        self, run_dir: Path | None, d_s: float | None = None, top_k: int | None = None
    ) -> list[Any]:
        """[d_s, top_k, plot, counts md, info]; the sliders' saved values when d_s/top_k are None."""
        from ui.app_grasps import counts_markdown, grasp_figure, refilter_document

        if run_dir is None or not stage_done(run_dir, "scene"):
            return [gr.skip(), gr.skip(), None, "No scene yet: reconstruct first.", {"ok": False}]
        base = self._base_doc(run_dir)
        if base is None:
            return [gr.skip(), gr.skip(), None, "No grasps yet: press **Compute grasps**.", {"ok": False}]
        record = read_record(run_dir, "grasps") or {}
        saved = record.get("filter") or {}
        d_s = float(saved.get("d_s", 0.1) if d_s is None else d_s)
        top_k = int(saved.get("top_k", 5) if top_k is None else top_k)
        doc = refilter_document(base, max(d_s, float(base["config"]["d_s"])), top_k)
        fig = grasp_figure(doc, self._points(run_dir, "object"), self._points(run_dir, "hand"))
        md = counts_markdown(doc)
        s = doc["summary"]
        if s["kept"] == 0:
            md += (
                f"\n\n⚠ **No safe grasp at d_s = {100 * d_s:.1f} cm**: every candidate passes near the hand. "
                "grasps.json keeps the last filter with a safe grasp. Hold the object so part of it is free, or "
                "lower d_s (which trades away the person's safety)."
            )
        info = {
            "ok": s["kept"] > 0,
            "d_s": d_s,
            "top_k": top_k,
            "candidates": s["candidates"],
            "kept": s["kept"],
            "targets": s["targets"],
            "rejected": s["rejected"],
            "saved": saved,
        }
        return [d_s, top_k, fig, md, info]

    def demos_view(self, run_dir: Path | None, episode: str | None = None) -> list[Any]:
        """[trajectory png, episode dropdown, episode video, stats md, info]"""
        from ui.app_views import demos_stats, episode_choices, episode_video

        if run_dir is None or not stage_done(run_dir, "demos"):
            return [None, gr.Dropdown(choices=[], value=None), None, "No demonstrations yet.", {"ok": False}]
        demos = run_dir / "demos"
        pictures = sorted((demos / "pictures").glob("*_trajectories.png"))
        choices = episode_choices(demos)
        if episode not in choices:
            episode = choices[0] if choices else None
        video = str(episode_video(demos, episode, run_dir)) if episode else None
        md, stats = demos_stats(demos)
        return [
            str(pictures[0]) if pictures else None,
            gr.Dropdown(choices=choices, value=episode),
            video,
            md,
            {"ok": True, **stats},
        ]

    def policy_view(self, run_dir: Path | None, rollout: str | None = None) -> list[Any]:
        """[train curve, eval table, rollout dropdown, policy video, ibvs video, export file, export md, info]"""
        from ui.app_views import eval_rollouts, loss_figure, read_json

        info: dict[str, Any] = {"trained": False, "evaluated": False, "exported": False}
        curve = table = video_p = video_b = bundle = None
        export_md = ""
        rollouts: dict[str, dict[str, Path]] = {}
        if run_dir is not None and stage_done(run_dir, "policy"):
            logd = read_json(run_dir / "policy" / "train_log.json") or {}
            pts = [tuple(p) for p in logd.get("step_log", [])]
            job = self.jobs.latest(run_dir.name, "policy")
            if job is not None and job.status == DONE and len(job.curve) > len(pts):
                pts = list(job.curve)  # every step of this app's run
            curve = loss_figure(pts, "training loss (Eq. 17)") if pts else None
            hist = logd.get("history", [])
            info.update(trained=True, steps=pts[-1][0] if pts else 0, epochs=len(hist))
            if hist:
                info["last_epoch"] = hist[-1]
        if run_dir is not None and stage_done(run_dir, "eval"):
            table_path = run_dir / "eval" / "table.md"
            table = table_path.read_text(encoding="utf-8") if table_path.is_file() else None
            rollouts = eval_rollouts(run_dir / "eval")
            report = read_json(run_dir / "eval" / "eval_report.json") or {}
            info.update(evaluated=True, eval_summary=report.get("summary"), rollouts=sorted(rollouts))
        if rollouts:
            if rollout not in rollouts:
                rollout = sorted(rollouts)[0]
            video_p = str(rollouts[rollout]["policy"]) if "policy" in rollouts[rollout] else None
            video_b = str(rollouts[rollout]["ibvs_mask"]) if "ibvs_mask" in rollouts[rollout] else None
        else:
            rollout = None
        if run_dir is not None and stage_done(run_dir, "export"):
            meta = read_json(run_dir / "export" / "metadata.json") or {}
            bundle = str(self._bundle(run_dir))
            parity = meta.get("parity", {})
            export_md = (
                f"✓ policy.onnx exported ({meta.get('exporter', '?')} exporter, opset {meta.get('opset', '?')}); "
                f"onnxruntime vs torch: max |diff| {parity.get('max_abs_diff', float('nan')):.2e} "
                f"(tolerance {parity.get('tolerance', '?')}). The bundle holds policy.onnx and metadata.json."
            )
            info.update(exported=True, parity=parity)
        return [
            curve,
            table or "No evaluation yet.",
            gr.Dropdown(choices=sorted(rollouts), value=rollout),
            video_p,
            video_b,
            bundle,
            export_md or "No export yet.",
            info,
        ]

    def _bundle(self, run_dir: Path) -> Path:
        """``<run>-policy-onnx.zip``: policy.onnx + metadata.json (made once per export)."""
        src = run_dir / "export"
        out = run_dir / APP_DIR / "preview" / f"{run_dir.name}-policy-onnx.zip"
        onnx = src / "policy.onnx"
        if not out.is_file() or out.stat().st_mtime < onnx.stat().st_mtime:
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_suffix(".tmp")
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
                for name in ("policy.onnx", "metadata.json"):
                    if (src / name).is_file():
                        zf.write(src / name, name)
            os.replace(tmp, out)
        return out

    def status_texts(self, run: str | None) -> list[str]:
        """The latest job's status line of each stage for this run ('' when none)."""
        out = []
        for stage in ("capture", "scene", "grasps", "demos", "policy", "eval", "export"):
            job = self.jobs.latest(run, stage) if run else None
            out.append(_status_md(job))
        return out

    def open_run(self, run: str | None, scene_view: str = SCENE_VIEWS[0]) -> list[Any]:
        """Everything every tab shows for a run."""
        try:
            run_dir = self._run(run) if run else None
        except ValueError as exc:
            run_dir = None
            log.warning("%s", exc)
        return [
            *self.capture_view(run_dir),
            *self.scene_view(run_dir, scene_view),
            *self.grasps_view(run_dir),
            *self.demos_view(run_dir),
            *self.policy_view(run_dir),
            *self.status_texts(run if run_dir else None),
            self._run_md(run_dir),
        ]

    def _run_md(self, run_dir: Path | None) -> str:
        if run_dir is None:
            return "No run selected. **New run** starts one (generating or uploading a capture does too)."
        from ui.app_runs import STAGES

        done = [s for s in STAGES if stage_done(run_dir, s)]
        return f"Run folder: `{run_dir}` · finished: {', '.join(done) if done else 'nothing yet'}"

    # ----------------------------------------------------------------------------------------------
    # Steps (each is an API endpoint)
    # ----------------------------------------------------------------------------------------------

    def generate_capture(
        self, run, obj, hand_pose, views, scale, seed, noise, progress=PROGRESS, request: gr.Request = None
    ):
        from recon.synth import SynthConfig

        try:
            cfg = SynthConfig(
                object=str(obj),
                hand_pose=str(hand_pose),
                num_views=int(views),
                resolution_scale=float(scale),
                seed=int(seed),
                noise=bool(noise),
            )
            cfg.validate()
            run_name, run_dir = self._run_for_capture(run)
        except ValueError as exc:
            return [gr.skip(), _error_md(str(exc)), gr.skip(), gr.skip(), {"ok": False, "error": str(exc)}]

        def body(ctx: JobContext, action: str) -> None:
            from recon.synth import generate_capture
            from ui.app_views import capture_gallery

            w, h = cfg.image_size()
            ctx.progress(None, message=f"rendering {cfg.num_views} views of {cfg.object} at {w}×{h}")
            generate_capture(cfg, run_dir / "capture", overwrite=True)
            ctx.progress(None, message="previews")
            capture_gallery(run_dir)

        settings = {"source": "synthetic", **asdict(cfg)}
        job = self._wait(
            self._submit(run_name, run_dir, "capture", settings, body, "generate capture"), progress, request
        )
        return [self._dropdown(run_name), _status_md(job), *self._capture_result(run_dir, job)]

    def _capture_result(self, run_dir: Path, job: Job) -> list[Any]:
        md, gallery, info = self.capture_view(run_dir)
        if job.status == FAILED:
            info = {**info, "ok": False, "error": job.error}
        return [md, gallery, info]

    def import_capture(
        self,
        run,
        upload,
        kind,
        dexycb_sequence,
        dexycb_frame,
        dexycb_serials,
        depth_scale,
        progress=PROGRESS,
        request: gr.Request = None,
    ):
        if not upload:
            msg = "Choose a .zip file first."
            return [gr.skip(), msg, *self.capture_view(None)[:2], {"ok": False, "error": msg}, msg]
        path = Path(upload if isinstance(upload, str) else getattr(upload, "name", upload))
        label = path.name
        if path.suffix.lower() != ".zip":
            msg = (
                f"{label}: not a .zip file; zip the capture folder (or the DexYCB / nerfstudio folder) first"
            )
            return [
                gr.skip(),
                _error_md(msg),
                *self.capture_view(None)[:2],
                {"ok": False, "error": msg},
                _error_md(msg),
            ]
        run_name, run_dir = self._run_for_capture(run)
        serials = [s for s in str(dexycb_serials or "").replace(",", " ").split() if s]
        settings = {
            "source": "upload",
            "sha256": file_sha256(path),
            "kind": kind,
            "dexycb_sequence": dexycb_sequence or "",
            "dexycb_frame": int(dexycb_frame or 0),
            "dexycb_serials": serials,
            "depth_unit_scale_factor": float(depth_scale),
        }

        def work(ctx: JobContext) -> Any:
            import shutil

            from ui.app_views import capture_gallery

            record = read_record(run_dir, "capture") or {}
            if (
                record.get("settings") == settings
                and record.get("status") == "done"
                and stage_done(run_dir, "capture")
            ):
                return "reused"
            ctx.progress(None, message=f"extracting and checking {label}")
            incoming = run_dir / APP_DIR / "incoming" / "capture"
            shutil.rmtree(incoming.parent, ignore_errors=True)
            try:
                # Validated in full before the run's current capture (if any) is moved aside.
                app_upload.import_capture(
                    path,
                    incoming,
                    kind=kind,
                    label=label,
                    dexycb_sequence=dexycb_sequence or "",
                    dexycb_frame=int(dexycb_frame or 0),
                    dexycb_serials=serials or None,
                    depth_unit_scale_factor=float(depth_scale),
                    limits=self.limits,
                    staging_parent=run_dir / APP_DIR,
                )

                def body(ctx: JobContext, action: str) -> None:
                    shutil.move(str(incoming), str(run_dir / "capture"))
                    capture_gallery(run_dir)

                return self._stage_body(run_dir, "capture", settings, body, ctx)
            finally:
                shutil.rmtree(incoming.parent, ignore_errors=True)

        job = self._wait(self.jobs.submit(run_name, "capture", f"import {label}", work), progress, request)
        upload_error = _error_md(job.error) if job.status == FAILED and job.error else ""
        return [self._dropdown(run_name), _status_md(job), *self._capture_result(run_dir, job), upload_error]

    def reconstruct(
        self,
        run,
        steps,
        train_views,
        holdout,
        sh_degree,
        scene_view,
        progress=PROGRESS,
        request: gr.Request = None,
    ):
        from recon.pipeline import OptimConfig, ReconConfig

        try:
            run_dir = self._run(run)
            if not stage_done(run_dir, "capture"):
                raise ValueError("this run has no capture yet: generate or upload one in the Capture tab")
            cfg = ReconConfig(
                num_train_views=int(train_views),
                holdout=int(holdout),
                sh_degree=int(sh_degree),
                optim=OptimConfig(iterations=int(steps)),
                progress=False,
            )
            if cfg.optim.iterations < 1:
                raise ValueError(f"optimisation steps = {cfg.optim.iterations}; expected at least 1")
        except ValueError as exc:
            return [_error_md(str(exc)), *self.scene_view(None)[:-1], {"ok": False, "error": str(exc)}]

        def body(ctx: JobContext, action: str) -> None:
            from recon.pipeline import run_recon

            total = cfg.optim.iterations
            every = max(1, total // 300)

            def on_step(step: int, info: dict[str, Any]) -> None:
                ctx.progress(
                    step, total, f"loss {info['loss']:.4f} · {info['num_gaussians']} Gaussians", "steps"
                )
                if step % every == 0 or step == total:
                    ctx.point(step, info["loss"])

            def on_log(msg: str) -> None:
                ctx.log(msg)
                ctx.message(str(msg)[:120])

            if action == "resume":
                on_log("resuming from the last checkpoint")
            run_recon(cfg, run_dir / "capture", run_dir / "scene", callback=on_step, log=on_log)

        settings = {k: v for k, v in asdict(cfg).items() if k not in ("progress", "resume")}
        job = self._wait(self._submit(run, run_dir, "scene", settings, body), progress, request)
        view = self.scene_view(run_dir, scene_view)
        if job.status == FAILED:
            view[-1] = {**view[-1], "ok": False, "error": job.error}
        return [_status_md(job), *view]

    def show_scene(self, run, scene_view):
        try:
            run_dir = self._run(run)
        except ValueError:
            return None
        if not stage_done(run_dir, "scene"):
            return None
        return self._scene_file(run_dir, scene_view)

    def compute_grasps(
        self, run, d_s, top_k, num_contacts, seed, progress=PROGRESS, request: gr.Request = None
    ):
        from trajgen.grasps import GraspConfig
        from ui.app_grasps import BASE_D_S

        try:
            run_dir = self._run(run)
            if not stage_done(run_dir, "scene"):
                raise ValueError("this run has no scene yet: reconstruct it in the Scene tab")
            cfg = GraspConfig(
                d_s=BASE_D_S, top_k=int(top_k), num_contacts=int(num_contacts), seed=int(seed), plot=False
            )
            cfg.validate()
            d_s, top_k = float(d_s), int(top_k)
            if not BASE_D_S <= d_s:
                raise ValueError(f"d_s = {d_s} m; expected a positive distance")
        except ValueError as exc:
            return [_error_md(str(exc)), gr.skip(), gr.skip(), None, "", {"ok": False, "error": str(exc)}]

        def body(ctx: JobContext, action: str) -> None:
            from trajgen.grasp_io import load_points, write_grasps_json
            from trajgen.grasps import compute_grasps, grasps_document
            from ui.app_views import read_json

            scene = run_dir / "scene"
            ctx.progress(None, message="sampling antipodal grasps and measuring them against the hand")
            obj, hand = load_points(scene / "object.ply"), load_points(scene / "hand.ply")
            result = compute_grasps(obj, hand, cfg, scene_info=read_json(scene / "scene.json"))
            write_grasps_json(run_dir / APP_DIR / "grasps_base.json", grasps_document(result, cfg))

        settings = {"num_contacts": cfg.num_contacts, "seed": cfg.seed, "sampler": cfg.sampler}

        def work(ctx: JobContext) -> str:
            self._stage_body(run_dir, "grasps", settings, body, ctx)
            # Compute means "use this filter": save it, moving demonstrations made from other grasps aside.
            return self._save_filter(run_dir, d_s, top_k, force=True)

        job = self._wait(self.jobs.submit(run, "grasps", "grasps", work), progress, request)
        if job.status == FAILED:
            return [
                _status_md(job),
                *self.grasps_view(run_dir, d_s, top_k)[:-1],
                {"ok": False, "error": job.error},
            ]
        view = self.grasps_view(run_dir, d_s, top_k)
        view[3] += f"\n\n{job.result}"
        return [_status_md(job), *view]

    def _save_filter(self, run_dir: Path, d_s: float, top_k: int, force: bool) -> str:
        """Writes grasps.json for this filter; with ``force`` moves stale downstream outputs aside first,
        else only when nothing downstream exists (returns what happened, for the page)."""
        from trajgen.grasp_io import write_grasps_json
        from ui.app_grasps import refilter_document

        base = self._base_doc(run_dir)
        if base is None:
            return ""
        doc = refilter_document(base, d_s, top_k)
        if doc["summary"]["kept"] == 0:
            return "grasps.json unchanged (no safe grasp with this filter)."
        with self._write_lock:
            current = (
                (run_dir / "grasps.json").read_text(encoding="utf-8")
                if (run_dir / "grasps.json").is_file()
                else None
            )
            old = json.loads(current) if current else None
            same = (
                old is not None
                and old.get("targets") == doc["targets"]
                and [c["status"] for c in old.get("candidates", [])]
                == [c["status"] for c in doc["candidates"]]
            )
            downstream = [s for s in DOWNSTREAM["grasps"] if any((run_dir / p).exists() for p in OUTPUTS[s])]
            busy = self.jobs.find(run_dir.name, active_only=True)
            if not same and (downstream or busy) and not force:
                saved = (
                    f" (d_s = {100 * old['config']['d_s']:.1f} cm, top-K {old['config']['top_k']})"
                    if old
                    else ""
                )
                why = (
                    f"{', '.join(downstream)} were made from the saved grasps.json{saved}"
                    if downstream
                    else "a job is running on this run"
                )
                return (
                    f"Preview only: {why}. Press **Compute grasps** to use this filter (earlier results move "
                    "to .superseded/, nothing is deleted)."
                )
            if not same and downstream:
                supersede(run_dir, list(DOWNSTREAM["grasps"]), "grasps")
            if (
                not same
                or old is None
                or old["config"].get("d_s") != doc["config"]["d_s"]
                or old["config"].get("top_k") != top_k
            ):
                write_grasps_json(run_dir / "grasps.json", doc)
            record = read_record(run_dir, "grasps") or {}
            record["filter"] = {"d_s": d_s, "top_k": top_k}
            write_record(run_dir, "grasps", record)
        return f"Saved to grasps.json (d_s = {100 * d_s:.1f} cm, top-K {top_k})."

    def refilter_grasps(self, run, d_s, top_k):
        try:
            run_dir = self._run(run)
            if self._base_doc(run_dir) is None:
                raise ValueError("no grasps computed for this run yet: press Compute grasps")
            d_s, top_k = float(d_s), int(top_k)
            note = self._save_filter(run_dir, d_s, top_k, force=False)
            view = self.grasps_view(run_dir, d_s, top_k)
        except ValueError as exc:
            return [None, _error_md(str(exc)), {"ok": False, "error": str(exc)}]
        view[3] += f"\n\n{note}"
        return view[2:]

    def render_demos(self, run, k, top_k, image_size, workers, progress=PROGRESS, request: gr.Request = None):
        from trajgen.batch import DemosConfig
        from trajgen.handeye import HandEyeConfig
        from trajgen.planning import PlanConfig

        try:
            run_dir = self._run(run)
            if not stage_done(run_dir, "grasps"):
                raise ValueError("this run has no grasps.json yet: compute grasps in the Grasps tab")
            size = int(image_size)
            cfg = DemosConfig(
                scenes=(str(run_dir),),
                out=str(run_dir / "demos"),
                top_k=int(top_k) if int(top_k) > 0 else None,
                plan=PlanConfig(k=int(k)),
                camera=HandEyeConfig(width=size, height=size),
                workers=int(workers or 0),
                progress=False,
            ).validate()
        except ValueError as exc:
            return [_error_md(str(exc)), *self.demos_view(None)[:-1], {"ok": False, "error": str(exc)}]

        def body(ctx: JobContext, action: str) -> None:
            from trajgen.batch import run_demos
            from trajgen.grasp_io import read_grasps

            targets = len(read_grasps(run_dir / "grasps.json").targets)
            total = (targets if cfg.top_k is None else min(cfg.top_k, targets)) * cfg.plan.k
            done = [0]
            ctx.progress(0, total, "planning trajectories", "episodes")

            def on_episode(rec: dict[str, Any]) -> None:
                done[0] += 1
                ctx.progress(
                    done[0],
                    total,
                    f"{rec.get('num_samples', '?')} frames in {rec.get('file', '')}",
                    "episodes",
                )

            res = run_demos(cfg, on_episode=on_episode, log=ctx.log)
            if res.index is None:
                raise RuntimeError(
                    f"{run_dir / 'demos'}: the demonstrations were not merged; render them again"
                )

        settings = {"k": cfg.plan.k, "top_k": cfg.top_k, "image_size": size}
        job = self._wait(self._submit(run, run_dir, "demos", settings, body), progress, request)
        view = self.demos_view(run_dir)
        if job.status == FAILED:
            view[-1] = {**view[-1], "ok": False, "error": job.error}
        return [_status_md(job), *view]

    def show_episode(self, run, episode):
        from ui.app_views import episode_video

        try:
            run_dir = self._run(run)
            return str(episode_video(run_dir / "demos", episode, run_dir)) if episode else None
        except ValueError as exc:
            raise gr.Error(str(exc)) from exc

    def train_policy(
        self, run, epochs, batch_size, max_steps, width, progress=PROGRESS, request: gr.Request = None
    ):
        try:
            if self.policy_missing["train"]:
                raise ValueError(self.policy_missing["train"])
            from policy.model import ModelConfig
            from policy.train import TrainConfig
            from ui.app_views import read_json

            run_dir = self._run(run)
            if not stage_done(run_dir, "demos"):
                raise ValueError("this run has no demonstrations yet: render them in the Demonstrations tab")
            camera = (read_json(run_dir / "demos" / "config.json") or {}).get("camera", {})
            size = int(camera.get("width", 128))
            cfg = TrainConfig(
                data=(run_dir / "demos",),
                out=run_dir / "policy",
                model=ModelConfig(image_size=size, width=int(width)),
                epochs=int(epochs),
                batch_size=int(batch_size),
                max_steps=int(max_steps) if int(max_steps or 0) > 0 else None,
                progress=False,
            ).validate()
        except ValueError as exc:
            return [_error_md(str(exc)), *self.policy_view(None)[:-1], {"ok": False, "error": str(exc)}]

        def body(ctx: JobContext, action: str) -> None:
            import re

            from policy.train import run_train

            total: list[float | None] = [cfg.max_steps]

            def on_log(msg: str) -> None:
                ctx.log(msg)
                m = re.search(r"(\d+) steps per epoch", str(msg))
                if m:
                    steps = int(m.group(1)) * cfg.epochs
                    total[0] = min(steps, cfg.max_steps) if cfg.max_steps else steps
                    ctx.progress(0, total[0], str(msg)[:120], "steps")
                else:
                    ctx.message(str(msg)[:120])

            def on_step(step: int, info: dict[str, float]) -> None:
                ctx.progress(step, total[0], f"loss {info['loss']:.4f}", "steps")
                ctx.point(step, info["loss"])

            run_train(cfg, callback=on_step, log=on_log)

        settings = json.loads(
            json.dumps({k: v for k, v in asdict(cfg).items() if k != "progress"}, default=str)
        )
        job = self._wait(self._submit(run, run_dir, "policy", settings, body), progress, request)
        view = self.policy_view(run_dir)
        if job.status == FAILED:
            view[-1] = {**view[-1], "ok": False, "error": job.error}
        return [_status_md(job), *view]

    @staticmethod
    def _export_settings(run_dir: Path) -> dict[str, Any]:
        """The export depends on the policy only: it is redone when the policy was retrained."""
        return {"policy_trained_at": (read_record(run_dir, "policy") or {}).get("finished_at")}

    def _export_body(self, run_dir: Path) -> Callable[[JobContext, str], None]:
        def body(ctx: JobContext, action: str) -> None:
            from policy.export import ExportConfig, run_export

            ctx.progress(None, message="exporting policy.onnx and checking it in onnxruntime")
            res = run_export(ExportConfig(policy=run_dir / "policy", out=run_dir / "export"))
            ctx.log(f"exported {res.onnx_path} (max |diff| {res.max_abs_diff:.2e})")
            self._bundle(run_dir)

        return body

    def evaluate_policy(
        self, run, starts, max_steps, ibvs, videos, progress=PROGRESS, request: gr.Request = None
    ):
        try:
            for step in ("eval", "export"):
                if self.policy_missing[step]:
                    raise ValueError(self.policy_missing[step])
            from policy.evaluate import EvalConfig

            run_dir = self._run(run)
            if not stage_done(run_dir, "policy"):
                raise ValueError("this run has no trained policy yet: train it first")
            cfg = EvalConfig(
                policy=run_dir / "policy",
                scenes=(run_dir,),
                out=run_dir / "eval",
                onnx=run_dir / "export" / "policy.onnx",
                starts_per_object=int(starts),
                max_steps=int(max_steps),
                ibvs=bool(ibvs),
                videos_per_object=int(videos),
                progress=False,
            )
            if cfg.starts_per_object < 1 or cfg.max_steps < 1:
                raise ValueError("start poses and steps per episode must be at least 1")
        except ValueError as exc:
            return [_error_md(str(exc)), *self.policy_view(None)[:-1], {"ok": False, "error": str(exc)}]

        def work(ctx: JobContext) -> Any:
            self._stage_body(
                run_dir, "export", self._export_settings(run_dir), self._export_body(run_dir), ctx
            )

            def body(ctx: JobContext, action: str) -> None:
                from policy.evaluate import run_eval

                def on_log(msg: str) -> None:
                    ctx.log(msg)
                    text = str(msg).strip()
                    ctx.message(text.splitlines()[0][:140] if text else "")

                ctx.progress(None, message="rolling out the policy and IBVS-MASK inside the splat")
                run_eval(cfg, log=on_log)

            settings = json.loads(
                json.dumps({k: v for k, v in asdict(cfg).items() if k != "progress"}, default=str)
            )
            return self._stage_body(run_dir, "eval", settings, body, ctx)

        job = self._wait(self.jobs.submit(run, "eval", "evaluation", work), progress, request)
        view = self.policy_view(run_dir)
        if job.status == FAILED:
            view[-1] = {**view[-1], "ok": False, "error": job.error}
        return [_status_md(job), *view]

    def export_policy(self, run, progress=PROGRESS, request: gr.Request = None):
        try:
            if self.policy_missing["export"]:
                raise ValueError(self.policy_missing["export"])
            run_dir = self._run(run)
            if not stage_done(run_dir, "policy"):
                raise ValueError("this run has no trained policy yet: train it first")
        except ValueError as exc:
            return [_error_md(str(exc)), *self.policy_view(None)[:-1], {"ok": False, "error": str(exc)}]
        settings = self._export_settings(run_dir)
        job = self._wait(
            self._submit(run, run_dir, "export", settings, self._export_body(run_dir)), progress, request
        )
        view = self.policy_view(run_dir)
        if job.status == FAILED:
            view[-1] = {**view[-1], "ok": False, "error": job.error}
        return [_status_md(job), *view]

    def show_rollout(self, run, rollout):
        try:
            run_dir = self._run(run)
        except ValueError:
            return None, None
        view = self.policy_view(run_dir, rollout)
        return view[3], view[4]

    def create_run(self, name):
        try:
            path = new_run(self.runs_dir, (name or "").strip() or None)
        except ValueError as exc:
            return gr.skip(), _error_md(str(exc)), gr.skip()
        return self._dropdown(path.name), "", ""

    def refresh_runs(self, run):
        names = [n for _, n in self.run_choices()]
        return gr.Dropdown(
            choices=self.run_choices(), value=run if run in names else (names[0] if names else None)
        )

    def on_load(self, request: gr.Request = None):
        choices = self.run_choices()
        value = choices[0][1] if choices else None
        if request is not None:
            wanted = dict(request.query_params).get("run")
            if wanted in [n for _, n in choices]:
                value = wanted
        return gr.Dropdown(choices=choices, value=value)

    def poll(self, run, seen, request: gr.Request = None):
        """The job lines (all runs), each stage's live status for this run, live curves, reload token."""
        seen = dict(seen or {})
        active = self.jobs.find(active_only=True)
        if active:
            lines = []
            for k, j in enumerate(active):
                snap = self.jobs.snapshot(j)
                lines.append(("▶ " if snap["status"] == "running" else f"{k}. waiting: ") + snap["describe"])
            job_md = "**Jobs** (one at a time, in order):  \n" + "  \n".join(lines)
        else:
            job_md = "Idle: no job running."
        job_out: Any = gr.skip() if seen.get("_jobs") == job_md else job_md
        seen["_jobs"] = job_md
        statuses: list[Any] = []
        scene_curve: Any = gr.skip()
        train_curve: Any = gr.skip()
        token: Any = gr.skip()
        for stage in ("capture", "scene", "grasps", "demos", "policy", "eval", "export"):
            job = self.jobs.latest(run, stage) if run else None
            if job is None:
                statuses.append(gr.skip())
                continue
            snap = self.jobs.snapshot(job)
            key = f"{job.id}"
            prev = seen.get(key)
            if prev == snap["version"]:
                statuses.append(gr.skip())
                continue
            seen[key] = snap["version"]
            statuses.append(_status_md(job))
            if stage in ("scene", "policy") and snap["curve"]:
                from ui.app_views import loss_figure

                fig = loss_figure(
                    snap["curve"], "reconstruction loss" if stage == "scene" else "training loss (Eq. 17)"
                )
                if stage == "scene":
                    scene_curve = fig
                else:
                    train_curve = fig
            session = getattr(request, "session_hash", None)
            if snap["status"] in (DONE, FAILED) and session not in job.waiters:
                # e.g. a reopened tab: reload the results. Also on this page's first sight of a finished
                # job (prev is None): it may have finished between the page reading the run and this
                # poll, and then the page shows the new status beside the old results.
                token = f"{stage}:{job.id}:{snap['status']}"
        run_md: Any = gr.skip()
        if any(not _is_skip(x) for x in statuses):
            try:
                run_md = self._run_md(self._run(run))
            except ValueError:
                pass
        return [job_out, *statuses, scene_curve, train_curve, token, run_md, seen]

    def reload_after_job(self, run, token, scene_view):
        """Reloads what a finished job changed (all tabs: downstream ones may have moved aside)."""
        return self.open_run(run, scene_view)

    # ----------------------------------------------------------------------------------------------
    # Layout
    # ----------------------------------------------------------------------------------------------

    def _build(self) -> gr.Blocks:
        from recon.catalogue import object_names

        heavy = {"concurrency_limit": 1, "concurrency_id": HEAVY}
        with gr.Blocks(
            title="splatsim studio", analytics_enabled=False, delete_cache=(3600, 7 * 86400)
        ) as demo:
            gr.Markdown(
                "## splatsim studio · human-to-robot handovers\n"
                "Capture → metric labelled 3D Gaussian splat → safe grasps → demonstrations → policy. "
                "Each run is a folder under "
                f"`{self.runs_dir}`; heavy steps run one at a time and keep going if you close this tab."
            )
            with gr.Row(equal_height=True):
                run_select = gr.Dropdown(
                    label="Run",
                    choices=[],
                    value=None,
                    allow_custom_value=True,
                    scale=3,
                    elem_id="run-select",
                )
                refresh_btn = gr.Button("↻ Refresh", scale=0, elem_id="run-refresh-btn")
                new_name = gr.Textbox(
                    label="New run name (optional)",
                    placeholder="e.g. mug-pinch-seed3",
                    scale=2,
                    elem_id="new-run-name",
                )
                new_btn = gr.Button("New run", scale=0, elem_id="new-run-btn")
            run_md = gr.Markdown(self._run_md(None), elem_id="run-info")
            new_run_error = gr.Markdown(elem_id="new-run-error")
            job_md = gr.Markdown("Idle: no job running.", elem_id="job-status")
            seen = gr.State({})
            token = gr.State("")

            with gr.Tabs(elem_id="tabs"):
                with gr.Tab("1 · Capture", id="capture", elem_id="tab-capture"):
                    with gr.Row():
                        with gr.Column():
                            gr.Markdown("**Generate** a synthetic handover (seeded, with ground truth)")
                            cap_object = gr.Dropdown(
                                object_names(),
                                value="mustard_bottle",
                                label="Object",
                                elem_id="capture-object",
                            )
                            cap_pose = gr.Radio(
                                HAND_POSES, value="auto", label="Hand pose", elem_id="capture-hand-pose"
                            )
                            cap_views = gr.Slider(
                                1, 12, value=8, step=1, label="Views", elem_id="capture-views"
                            )
                            cap_scale = gr.Dropdown(
                                RESOLUTIONS, value=0.5, label="Resolution", elem_id="capture-resolution"
                            )
                            cap_seed = gr.Number(0, precision=0, label="Seed", elem_id="capture-seed")
                            cap_noise = gr.Checkbox(
                                True, label="Depth sensor noise (D435-like)", elem_id="capture-noise"
                            )
                            gen_btn = gr.Button(
                                "Generate capture", variant="primary", elem_id="capture-generate-btn"
                            )
                        with gr.Column():
                            gr.Markdown(
                                "**Upload** a zip: a splatsim capture folder, a nerfstudio folder with depth and "
                                "masks, or a DexYCB sequence (with calibration/). "
                                f"Up to {self.config.max_upload_mb} MB."
                            )
                            upload = gr.File(
                                label="Capture zip",
                                file_types=[".zip"],
                                type="filepath",
                                elem_id="capture-upload",
                            )
                            upload_error = gr.Markdown(elem_id="capture-upload-error")
                            up_kind = gr.Dropdown(
                                UPLOAD_KINDS, value="auto", label="Format", elem_id="capture-upload-kind"
                            )
                            with gr.Accordion("DexYCB / nerfstudio options", open=False):
                                dex_seq = gr.Textbox(
                                    label="DexYCB sequence (relative to the DexYCB root; empty: the only one)",
                                    elem_id="capture-dexycb-sequence",
                                )
                                dex_frame = gr.Number(
                                    0, precision=0, label="DexYCB frame", elem_id="capture-dexycb-frame"
                                )
                                dex_serials = gr.Textbox(
                                    label="DexYCB camera serials (empty: all)",
                                    elem_id="capture-dexycb-serials",
                                )
                                ns_scale = gr.Number(
                                    1e-3,
                                    label="nerfstudio metres per depth unit",
                                    elem_id="capture-ns-depth-scale",
                                )
                            imp_btn = gr.Button(
                                "Import upload", variant="primary", elem_id="capture-import-btn"
                            )
                    cap_status = gr.Markdown(elem_id="capture-status")
                    cap_summary = gr.Markdown(elem_id="capture-summary")
                    cap_gallery = gr.Gallery(
                        label="Views: RGB · depth · masks",
                        columns=6,
                        height=420,
                        interactive=False,
                        elem_id="capture-gallery",
                    )
                    cap_info = gr.JSON(label="capture (API summary)", visible=False, elem_id="capture-info")

                with gr.Tab("2 · Scene", id="scene", elem_id="tab-scene"):
                    with gr.Row():
                        sc_steps = gr.Number(
                            400, precision=0, label="Optimisation steps", elem_id="scene-steps"
                        )
                        sc_train = gr.Slider(
                            0,
                            12,
                            value=4,
                            step=1,
                            label="Training views (0 = all)",
                            elem_id="scene-train-views",
                        )
                        sc_hold = gr.Slider(
                            0, 3, value=1, step=1, label="Held-out views", elem_id="scene-holdout"
                        )
                        sc_sh = gr.Slider(0, 3, value=1, step=1, label="SH degree", elem_id="scene-sh-degree")
                    sc_btn = gr.Button("Reconstruct", variant="primary", elem_id="scene-run-btn")
                    sc_status = gr.Markdown(elem_id="scene-status")
                    with gr.Row():
                        with gr.Column(scale=3):
                            sc_view = gr.Radio(
                                SCENE_VIEWS, value=SCENE_VIEWS[0], label="Show", elem_id="scene-view"
                            )
                            sc_model = gr.Model3D(
                                label="Splat (drag to orbit)",
                                height=460,
                                interactive=False,
                                elem_id="scene-model3d",
                            )
                        with gr.Column(scale=2):
                            sc_loss = gr.Plot(label="Loss", elem_id="scene-loss")
                            sc_report = gr.Markdown(elem_id="scene-report")
                    sc_heldout = gr.Image(
                        label="Held-out view (never trained on): captured | rendered | depth error "
                        "(0 to 2 cm) | rendered labels over the capture",
                        type="filepath",
                        interactive=False,
                        elem_id="scene-heldout",
                    )
                    sc_info = gr.JSON(visible=False, elem_id="scene-info")

                with gr.Tab("3 · Grasps", id="grasps", elem_id="tab-grasps"):
                    with gr.Row():
                        gr_ds = gr.Slider(
                            0.005,
                            0.3,
                            value=0.1,
                            step=0.005,
                            label="d_s: hand safety distance (m, Eq. 1)",
                            elem_id="grasps-ds",
                        )
                        gr_topk = gr.Slider(
                            1, 20, value=5, step=1, label="top-K targets", elem_id="grasps-topk"
                        )
                    with gr.Accordion("Sampling", open=False):
                        gr_contacts = gr.Number(
                            300, precision=0, label="Contacts sampled", elem_id="grasps-contacts"
                        )
                        gr_seed = gr.Number(0, precision=0, label="Seed", elem_id="grasps-seed")
                    gr_btn = gr.Button("Compute grasps", variant="primary", elem_id="grasps-run-btn")
                    gr_status = gr.Markdown(elem_id="grasps-status")
                    gr_plot = gr.Plot(
                        label="Hand, object and grasps (hover a grasp for why)", elem_id="grasps-plot"
                    )
                    gr_counts = gr.Markdown(elem_id="grasps-counts")
                    gr_info = gr.JSON(visible=False, elem_id="grasps-info")

                with gr.Tab("4 · Demonstrations", id="demos", elem_id="tab-demos"):
                    with gr.Row():
                        de_k = gr.Slider(
                            1, 30, value=15, step=1, label="Start poses per grasp (k)", elem_id="demos-k"
                        )
                        de_topk = gr.Slider(
                            0, 20, value=0, step=1, label="Grasp targets (0 = all)", elem_id="demos-topk"
                        )
                        de_size = gr.Dropdown(
                            [32, 64, 128, 224], value=128, label="Image size (px)", elem_id="demos-size"
                        )
                        de_workers = gr.Number(
                            0,
                            precision=0,
                            label="Worker processes (0 = one per CPU core)",
                            elem_id="demos-workers",
                        )
                    de_btn = gr.Button("Render demonstrations", variant="primary", elem_id="demos-run-btn")
                    de_status = gr.Markdown(elem_id="demos-status")
                    with gr.Row():
                        de_traj = gr.Image(
                            label="Trajectories (dark red = start, yellow = pre-grasp)",
                            type="filepath",
                            interactive=False,
                            elem_id="demos-trajectories",
                        )
                        with gr.Column():
                            de_episode = gr.Dropdown(
                                [], label="Episode", allow_custom_value=True, elem_id="demos-episode"
                            )
                            de_video = gr.Video(
                                label="Episode: RGB | masks (object blue, hand orange)",
                                interactive=False,
                                elem_id="demos-video",
                            )
                    de_stats = gr.Markdown(elem_id="demos-stats")
                    de_info = gr.JSON(visible=False, elem_id="demos-info")

                with gr.Tab("5 · Policy", id="policy", elem_id="tab-policy"):
                    gr.Markdown("**Train** the CNN policy (Eq. 17) on this run's demonstrations")
                    if self.policy_missing["train"]:
                        gr.Markdown(self.policy_missing["train"], elem_id="policy-train-unavailable")
                    with gr.Row():
                        po_epochs = gr.Number(50, precision=0, label="Epochs", elem_id="policy-epochs")
                        po_batch = gr.Number(32, precision=0, label="Batch size", elem_id="policy-batch")
                        po_max = gr.Number(
                            0, precision=0, label="Max steps (0 = all)", elem_id="policy-max-steps"
                        )
                        po_width = gr.Dropdown(
                            [8, 16, 32, 64], value=64, label="Network width", elem_id="policy-width"
                        )
                    po_train_btn = gr.Button("Train", variant="primary", elem_id="policy-train-btn")
                    po_train_status = gr.Markdown(elem_id="policy-train-status")
                    po_curve = gr.Plot(label="Training loss", elem_id="policy-train-curve")
                    gr.Markdown("**Evaluate** in closed loop inside the splat, beside IBVS-MASK")
                    if self.policy_missing["eval"]:
                        gr.Markdown(self.policy_missing["eval"], elem_id="policy-eval-unavailable")
                    with gr.Row():
                        ev_starts = gr.Number(
                            10, precision=0, label="Start poses per object", elem_id="policy-eval-starts"
                        )
                        ev_steps = gr.Number(
                            30, precision=0, label="Steps per episode", elem_id="policy-eval-steps"
                        )
                        ev_videos = gr.Number(
                            1, precision=0, label="Rollout videos per object", elem_id="policy-eval-videos"
                        )
                        ev_ibvs = gr.Checkbox(True, label="IBVS-MASK baseline", elem_id="policy-eval-ibvs")
                    ev_btn = gr.Button("Evaluate", variant="primary", elem_id="policy-eval-btn")
                    ev_status = gr.Markdown(elem_id="policy-eval-status")
                    ev_table = gr.Markdown(elem_id="policy-eval-table")
                    ev_rollout = gr.Dropdown(
                        [], label="Rollout", allow_custom_value=True, elem_id="policy-eval-rollout"
                    )
                    with gr.Row():
                        ev_video_p = gr.Video(
                            label="Policy (RGB | policy input)",
                            interactive=False,
                            elem_id="policy-eval-video",
                        )
                        ev_video_b = gr.Video(
                            label="IBVS-MASK", interactive=False, elem_id="policy-eval-video-ibvs"
                        )
                    gr.Markdown("**Export** to ONNX (checked in onnxruntime against torch)")
                    if self.policy_missing["export"]:
                        gr.Markdown(self.policy_missing["export"], elem_id="policy-export-unavailable")
                    ex_btn = gr.Button("Export", variant="primary", elem_id="policy-export-btn")
                    ex_status = gr.Markdown(elem_id="policy-export-status")
                    ex_file = gr.File(label="ONNX bundle", interactive=False, elem_id="policy-export-file")
                    ex_md = gr.Markdown(elem_id="policy-export-info")
                    po_info = gr.JSON(visible=False, elem_id="policy-info")

            cap_outs = [cap_summary, cap_gallery, cap_info]
            scene_outs = [sc_loss, sc_model, sc_heldout, sc_report, sc_info]
            grasp_outs = [gr_ds, gr_topk, gr_plot, gr_counts, gr_info]
            demo_outs = [de_traj, de_episode, de_video, de_stats, de_info]
            policy_outs = [po_curve, ev_table, ev_rollout, ev_video_p, ev_video_b, ex_file, ex_md, po_info]
            status_outs = [cap_status, sc_status, gr_status, de_status, po_train_status, ev_status, ex_status]
            all_outs = [*cap_outs, *scene_outs, *grasp_outs, *demo_outs, *policy_outs, *status_outs, run_md]

            demo.load(self.on_load, None, run_select, api_visibility="private")
            run_select.change(self.open_run, [run_select, sc_view], all_outs, api_name="open_run")
            refresh_btn.click(self.refresh_runs, run_select, run_select, api_name="list_runs")
            new_btn.click(
                self.create_run, new_name, [run_select, new_run_error, new_name], api_name="new_run"
            )

            gen_btn.click(
                self.generate_capture,
                [run_select, cap_object, cap_pose, cap_views, cap_scale, cap_seed, cap_noise],
                [run_select, cap_status, *cap_outs],
                api_name="generate_capture",
                **heavy,
            )
            upload.change(lambda _f: "", upload, upload_error, api_visibility="private")
            imp_btn.click(
                self.import_capture,
                [run_select, upload, up_kind, dex_seq, dex_frame, dex_serials, ns_scale],
                [run_select, cap_status, *cap_outs, upload_error],
                api_name="import_capture",
                **heavy,
            )
            sc_btn.click(
                self.reconstruct,
                [run_select, sc_steps, sc_train, sc_hold, sc_sh, sc_view],
                [sc_status, *scene_outs],
                api_name="reconstruct",
                **heavy,
            )
            sc_view.change(self.show_scene, [run_select, sc_view], sc_model, api_name="show_scene")
            gr_btn.click(
                self.compute_grasps,
                [run_select, gr_ds, gr_topk, gr_contacts, gr_seed],
                [gr_status, *grasp_outs],
                api_name="compute_grasps",
                **heavy,
            )
            for slider in (gr_ds, gr_topk):
                slider.release(
                    self.refilter_grasps,
                    [run_select, gr_ds, gr_topk],
                    [gr_plot, gr_counts, gr_info],
                    api_name="refilter_grasps" if slider is gr_ds else None,
                    api_visibility="public" if slider is gr_ds else "private",
                    show_progress="hidden",
                    trigger_mode="always_last",
                )
            de_btn.click(
                self.render_demos,
                [run_select, de_k, de_topk, de_size, de_workers],
                [de_status, *demo_outs],
                api_name="render_demos",
                **heavy,
            )
            de_episode.input(self.show_episode, [run_select, de_episode], de_video, api_name="show_episode")
            po_train_btn.click(
                self.train_policy,
                [run_select, po_epochs, po_batch, po_max, po_width],
                [po_train_status, *policy_outs],
                api_name="train_policy",
                **heavy,
            )
            ev_btn.click(
                self.evaluate_policy,
                [run_select, ev_starts, ev_steps, ev_ibvs, ev_videos],
                [ev_status, *policy_outs],
                api_name="evaluate_policy",
                **heavy,
            )
            ev_rollout.input(
                self.show_rollout,
                [run_select, ev_rollout],
                [ev_video_p, ev_video_b],
                api_visibility="private",
            )
            ex_btn.click(
                self.export_policy, [run_select], [ex_status, *policy_outs], api_name="export_policy", **heavy
            )

            timer = gr.Timer(POLL_S)
            timer.tick(
                self.poll,
                [run_select, seen],
                [job_md, *status_outs, sc_loss, po_curve, token, run_md, seen],
                show_progress="hidden",
                api_visibility="private",
                concurrency_limit=None,
            )
            token.change(
                self.reload_after_job,
                [run_select, token, sc_view],
                all_outs,
                show_progress="hidden",
                api_visibility="private",
            )
        return demo

    def close(self) -> None:
        """Stops the server and the job worker."""
        try:
            self.blocks.close()
        finally:
            self.jobs.close(timeout=1.0)


def build_app(config: AppConfig | None = None) -> Studio:
    """The studio (its gradio Blocks in ``.blocks``) without starting a server."""
    return Studio(config)


def launch(config: AppConfig | None = None, *, prevent_thread_lock: bool = False) -> Studio:
    """Builds the studio and serves it (blocks until interrupted unless ``prevent_thread_lock``).

    Args:
        config: Runs folder, address, port and upload limits (`AppConfig`); defaults listen on
            127.0.0.1:7860 with ``runs/``.
        prevent_thread_lock: Return once the server listens (tests; then call ``studio.close()``).

    Returns:
        The running `Studio`; its ``blocks.local_url`` is the address.
    """
    config = config or AppConfig()
    auth = None
    if config.auth:
        user, sep, password = config.auth.partition(":")
        if not sep or not user or not password:
            raise ValueError(f"AppConfig.auth = {config.auth!r}; expected 'user:password'")
        auth = (user, password)
    studio = Studio(config)
    studio.blocks.queue(default_concurrency_limit=1)
    studio.blocks.launch(
        server_name=config.host,
        server_port=config.port or None,
        max_file_size=f"{config.max_upload_mb}mb",
        allowed_paths=[str(studio.runs_dir)],
        auth=auth,
        inbrowser=config.open_browser,
        prevent_thread_lock=prevent_thread_lock,
        share=False,
        show_error=True,
        theme=gr.themes.Default(  # system fonts: the page loads nothing from outside this machine
            font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
        ),
        quiet=True,
        ssr_mode=False,
        mcp_server=False,
        enable_monitoring=False,
    )
    return studio
