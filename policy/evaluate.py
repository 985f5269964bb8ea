"""`splatsim eval`: closed-loop evaluation of the policy inside the splat, beside the IBVS-MASK baseline.

For every object (scene), ``starts_per_object`` start poses are sampled like the training starts (Eq.
3-6 and 14 around the scene's grasp targets, in turn) but with another seed, so they are held out. From
each, the policy runs through the robot-side path (`policy.robot.run_control_loop` on a
`policy.robot_splat.SplatRobot` and `SplatCamera`) until its score reaches tau_c (0.7) or 30 steps; by
default the policy is the *exported ONNX model* in onnxruntime, so the evaluation also proves the
export end to end. IBVS-MASK (`policy.ibvs`) runs the same starts through the same loop.

Writes into ``cfg.out``::

    eval_report.json    configuration, per-object and seen/unseen summaries per method, every episode
    episodes.jsonl      one line per episode (object, method, start, metrics, outcome, steps, time)
    table.md            Table-I-style table (mean +- std distance, safe, centred, success) split into
                        seen and unseen objects, the two methods side by side, plus the outcome rates
    videos/<object>_<method>_<start>.mp4   rollouts (RGB | policy input)

Metrics: `policy.metrics`.
"""

from __future__ import annotations

import json
import math
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from policy.env import SceneGeometry, SplatEnv, camera_from_meta, load_scene_dir
from policy.ibvs import IBVSConfig, IBVSMaskPolicy
from policy.metrics import OUTCOMES, MetricsConfig, aggregate, episode_metrics
from policy.robot import ControlConfig, PolicyFn, run_control_loop
from policy.robot_splat import SplatCamera, SplatRobot
from splatsim.scene import GaussianScene

__all__ = [
    "EvalConfig",
    "EvalObject",
    "EvalResult",
    "StartConfig",
    "evaluate_objects",
    "markdown_table",
    "run_eval",
    "sample_eval_starts",
]

METHOD_POLICY = "policy"
METHOD_IBVS = "ibvs_mask"
METHOD_NAMES = {METHOD_POLICY: "H2RH-SGS policy", METHOD_IBVS: "IBVS-MASK"}


@dataclass
class StartConfig:
    """Held-out start poses: the training starts' sampler (`trajgen.start_poses`), another seed."""

    radius: float = 0.7
    """r: start positions lie on this sphere around the grasp position (Eq. 3)."""
    alpha_min_deg: float = 60.0
    """alpha_min: smallest angle at the object between the hand and the start camera (Eq. 4)."""
    jitter_deg: float = 20.0
    """Start orientations look at the object, turned about their own x and y by up to this (Eq. 5)."""
    theta_max_deg: float = 100.0
    """theta_max: largest angle between the start and the grasp's approach axis (Eq. 6)."""
    start_d_min: float = 0.1
    """d_min (Eq. 14) for the starts: they keep more than this from hand and object points, metres."""
    start_d_background: float = 0.05
    """Starts keep more than this from the solid background (the person's body, walls, the table), metres;
    the demonstrations' `PlanConfig.d_background`. 0 turns it off."""
    line_of_sight: bool = True
    """Keep only starts whose straight line to the object centre keeps more than ``start_d_background``
    from the background (`trajgen.start_poses`; the demonstrations' `PlanConfig.line_of_sight`): not
    behind the person or under the table, where the camera sees neither hand nor object."""
    up: tuple[float, float, float] = (0.0, 0.0, 1.0)
    """World up (image up of the start cameras)."""
    min_height: float | None = None
    """Reject start positions lower than this along ``up`` (None: no such filter)."""
    max_candidates: int = 4000
    """Give up on a start after this many candidates."""
    from_policy: bool = True
    """Take every value above from the plan the policy's demonstrations were made with, when recorded."""

    def updated_from_plan(self, plan: dict[str, Any] | None) -> StartConfig:
        if not (self.from_policy and plan):
            return self
        keys = ("radius", "alpha_min_deg", "jitter_deg", "theta_max_deg", "up", "min_height", "line_of_sight")
        d = asdict(self)
        d.update({k: plan[k] for k in keys if k in plan})
        if "d_min" in plan:
            d["start_d_min"] = plan["d_min"]
        if "d_background" in plan:
            d["start_d_background"] = plan["d_background"]
        d["up"] = tuple(d["up"])
        return StartConfig(**d)


@dataclass
class EvalConfig:
    """Closed-loop evaluation in the splat (policy and IBVS-MASK baseline, same protocol)."""

    policy: Path = Path("runs/default/policy")
    """Policy folder (model.safetensors + config.json) written by `splatsim train`."""
    scenes: tuple[Path, ...] = (Path("runs/default"),)
    """Run folders (scene/scene.ply + grasps.json) or scene folders (scene.ply, grasps.json beside or above)."""
    out: Path = Path("runs/default/eval")
    """Folder for the report, the table and the videos."""
    runtime: Literal["onnx", "torch"] = "onnx"
    """Run the exported ONNX model in onnxruntime (export parity end to end) or the torch model."""
    onnx: Path | None = None
    """Exported policy.onnx; None exports the policy into out/export first (with the parity check)."""
    starts_per_object: int = 10
    """Held-out start poses per object (the paper: 10)."""
    seed: int = 1_000_003
    """Seeds the held-out starts (the demonstrations use another seed)."""
    starts: StartConfig = field(default_factory=StartConfig)
    """How start poses are sampled."""
    tau_c: float = 0.7
    """Stop when the score reaches this (Eq. 16; 0.7 in the splat)."""
    max_steps: int = 30
    """Most steps per episode (the paper: 30 in the splat)."""
    timeout_s: float = 30.0
    """Simulated-time limit per episode (the robot's 30 s)."""
    max_step_translation: float = 0.05
    """The control loop's largest translation per step, metres (`policy.robot.ControlConfig`)."""
    max_step_rotation_deg: float = 10.0
    """The control loop's largest rotation per step, degrees."""
    speed: float = 0.1
    """Linear speed of the splat robot, m/s (sets the simulated time)."""
    workspace_half_extent: float = 1.2
    """The workspace box: the object centre +- this, metres."""
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    """Success band, centring radius, d_s, d_min."""
    ibvs: bool = True
    """Also evaluate the IBVS-MASK baseline."""
    ibvs_config: IBVSConfig = field(default_factory=IBVSConfig)
    """The baseline's settings."""
    seen: tuple[str, ...] = ()
    """Objects seen in training; empty: the scenes the policy's training data came from."""
    unseen: tuple[str, ...] = ()
    """Objects to report as unseen (overrides seen)."""
    videos_per_object: int = 1
    """Rollout mp4s per object and method (0 = none)."""
    backend: Literal["cpu", "auto", "gsplat", "torch"] = "cpu"
    """Render backend."""
    num_threads: int = 0
    """torch / onnxruntime CPU threads (0 = default)."""
    progress: bool = True
    """Show progress."""


@dataclass
class EvalObject:
    """One object (scene) to evaluate."""

    name: str
    scene: GaussianScene
    grasp_poses: np.ndarray  # [G, 4, 4] target grasps, best first
    seen: bool = True
    geometry: SceneGeometry | None = None


@dataclass
class EvalResult:
    out_dir: Path
    report: dict[str, Any]
    table_md: str
    episodes: list[dict[str, Any]]
    videos: list[Path]
    wall_s: float


def sample_eval_starts(
    geometry: SceneGeometry,
    grasp_poses: np.ndarray,  # [G, 4, 4]
    num: int,
    seed: int,
    name: str,
    cfg: StartConfig,
) -> list[np.ndarray]:
    """``num`` start poses [4, 4] around the grasp targets in turn (start i uses target i mod G)."""
    from trajgen.start_poses import sample_start_candidates

    grasp_poses = np.asarray(grasp_poses, dtype=np.float64).reshape(-1, 4, 4)
    if len(grasp_poses) == 0:
        raise ValueError(f"{name}: no grasp targets to sample start poses around")
    rng = np.random.default_rng([int(seed), zlib.crc32(name.encode())])
    rad = math.radians
    starts: list[np.ndarray] = []
    for i in range(num):
        grasp = torch.from_numpy(grasp_poses[i % len(grasp_poses)])
        drawn = 0
        while True:
            poses, _ = sample_start_candidates(
                grasp,
                torch.from_numpy(geometry.object_center),
                torch.from_numpy(geometry.hand_center),
                geometry.min_clearance,
                rng,
                num=32,
                radius=cfg.radius,
                alpha_min=rad(cfg.alpha_min_deg),
                jitter=rad(cfg.jitter_deg),
                theta_max=rad(cfg.theta_max_deg),
                d_min=cfg.start_d_min,
                up=cfg.up,
                min_height=cfg.min_height,
                background_distance=lambda p: torch.from_numpy(geometry.background_distance(p.numpy())),
                sight_clearance=cfg.start_d_background if cfg.line_of_sight else 0.0,
            )
            drawn += 32
            if len(poses) and cfg.start_d_background > 0:
                clear = geometry.background_distance(poses[:, :3, 3].numpy())
                poses = poses[torch.from_numpy(clear > cfg.start_d_background)]
            if len(poses):
                starts.append(poses[0].numpy())
                break
            if drawn >= cfg.max_candidates:
                raise ValueError(
                    f"{name}: no start pose passed the filters in {drawn} candidates around grasp target "
                    f"{i % len(grasp_poses)}; relax StartConfig (alpha_min_deg, theta_max_deg, min_height, "
                    "start_d_background, line_of_sight)"
                )
    return starts


def _video_frame(rgb: np.ndarray, mask: np.ndarray, score: float | None, tau_c: float = 0.7) -> np.ndarray:
    from policy.data import make_policy_input

    x = make_policy_input(rgb, mask).numpy()
    view = (x[:3].transpose(1, 2, 0) * 255).astype(np.uint8).copy()
    view[x[3] > 0.5] = (0.6 * view[x[3] > 0.5] + [100, 0, 0]).clip(0, 255).astype(np.uint8)
    view[x[4] > 0.5] = (0.6 * view[x[4] > 0.5] + [0, 100, 0]).clip(0, 255).astype(np.uint8)
    frame = np.concatenate([rgb, view], axis=1)
    if score is not None:  # a score bar along the bottom: green once past tau_c
        w = int(round(frame.shape[1] * min(1.0, max(0.0, score))))
        frame[-4:, :w] = (40, 220, 40) if score >= tau_c else (220, 180, 40)
    return np.repeat(np.repeat(frame, 2, axis=0), 2, axis=1)


def _write_video(path: Path, frames: list[np.ndarray], fps: int = 4) -> Path | None:
    if not frames:
        return None
    import imageio.v3 as iio

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        iio.imwrite(path, np.stack(frames), fps=fps, codec="libx264", macro_block_size=1)
    except Exception:  # no ffmpeg: keep the evaluation, say so in the report
        return None
    return path


def evaluate_objects(
    objects: Sequence[EvalObject],
    policies: dict[str, PolicyFn],
    camera: dict[str, Any],
    cfg: EvalConfig,
    *,
    plan: dict[str, Any] | None = None,
    log: Callable[[str], None] = lambda _m: None,
    video_dir: Path | None = None,
    depth_policies: Sequence[str] = (),
) -> tuple[list[dict[str, Any]], list[Path]]:
    """Runs every policy from the same held-out starts of every object; returns episodes and videos.

    The policies named in ``depth_policies`` take a depth channel (`policy.model.ModelConfig.depth`): their
    camera renders depth too and their control loop passes it on."""
    intr, mount, background, mask_min_prob = camera_from_meta(camera)
    start_cfg = cfg.starts.updated_from_plan(plan)
    mcfg = cfg.metrics.validate()
    episodes: list[dict[str, Any]] = []
    videos: list[Path] = []
    for obj in objects:
        geometry = obj.geometry or SceneGeometry.from_scene(obj.scene)
        env = SplatEnv(
            obj.scene,
            intr,
            gripper_T_camera=mount,
            background=background,
            mask_min_prob=mask_min_prob,
            backend=cfg.backend,
            geometry=geometry,
        )
        starts = sample_eval_starts(
            geometry, obj.grasp_poses, cfg.starts_per_object, cfg.seed, obj.name, start_cfg
        )
        c = geometry.object_center
        ctrl = ControlConfig(
            tau_c=cfg.tau_c,
            max_steps=cfg.max_steps,
            timeout_s=cfg.timeout_s,
            max_step_translation=cfg.max_step_translation,
            max_step_rotation_deg=cfg.max_step_rotation_deg,
            speed=cfg.speed,
            workspace_min=tuple(float(v) for v in c - cfg.workspace_half_extent),
            workspace_max=tuple(float(v) for v in c + cfg.workspace_half_extent),
        )
        for method, fn in policies.items():
            with_depth = method in depth_policies
            method_ctrl = replace(ctrl, depth=with_depth)
            for i, start in enumerate(starts):
                robot = SplatRobot(start)
                cam = SplatCamera(env, robot, depth=with_depth)
                want_video = video_dir is not None and i < cfg.videos_per_object
                t0 = time.perf_counter()
                res = run_control_loop(fn, robot, cam, method_ctrl, clock=robot.clock, keep_frames=want_video)
                wall = time.perf_counter() - t0
                m = episode_metrics(res.poses, res.stopped, geometry, intr, mcfg, mount)
                ep = {
                    "object": obj.name,
                    "seen": bool(obj.seen),
                    "method": method,
                    "start": i,
                    **m,
                    "steps": res.steps,
                    "reason": res.reason,
                    "time_s": res.elapsed_s,
                    "wall_s": wall,
                    "final_score": res.scores[-1] if res.scores else None,
                    "scores": [float(x) for x in res.scores],
                    "start_pose": np.asarray(start).tolist(),
                    "final_pose": res.poses[-1].tolist(),
                    "path": [p[:3, 3].tolist() for p in res.poses],
                }
                episodes.append(ep)
                if want_video:
                    frames = [
                        _video_frame(f.rgb, f.mask, s, cfg.tau_c) for f, s in zip(res.frames, res.scores)
                    ]
                    if not res.stopped:  # show where it ended
                        rgb, mask = env.render(res.poses[-1])
                        frames.append(_video_frame(rgb[0], mask[0], None))
                    v = _write_video(video_dir / f"{obj.name}_{method}_{i:02d}.mp4", frames)
                    if v is not None:
                        videos.append(v)
            agg = aggregate([e for e in episodes if e["object"] == obj.name and e["method"] == method])
            log(
                f"{obj.name:>18} {'seen' if obj.seen else 'unseen':>6} {METHOD_NAMES.get(method, method):>16}: "
                f"success {agg['success']}/{agg['episodes']}, safe {agg['safe']}, centred {agg['centred']}, "
                f"distance {agg['distance_mean']:.2f} +- {agg['distance_std']:.2f} m"
            )
    return episodes, videos


def summarize(episodes: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per method: per object, seen, unseen and all aggregates."""
    out: dict[str, Any] = {}
    for method in sorted({e["method"] for e in episodes}):
        eps = [e for e in episodes if e["method"] == method]
        objects = list(dict.fromkeys(e["object"] for e in eps))
        out[method] = {
            "objects": {o: aggregate([e for e in eps if e["object"] == o]) for o in objects},
            "seen": aggregate([e for e in eps if e["seen"]]),
            "unseen": aggregate([e for e in eps if not e["seen"]]),
            "all": aggregate(eps),
        }
    return out


def _cell(a: dict[str, Any]) -> list[str]:
    if not a.get("episodes"):
        return ["-"] * 4
    n = a["episodes"]
    return [
        f"{a['distance_mean']:.2f} ± {a['distance_std']:.2f}",
        f"{a['safe']}/{n}",
        f"{a['centred']}/{n}",
        f"{a['success']}/{n}",
    ]


def markdown_table(summary: dict[str, Any], episodes: Sequence[dict[str, Any]]) -> str:
    """Table I (per object, seen then unseen, the methods side by side) and an outcome table."""
    methods = [m for m in (METHOD_POLICY, METHOD_IBVS) if m in summary] + [
        m for m in summary if m not in (METHOD_POLICY, METHOD_IBVS)
    ]
    head = ["", "Object"]
    for m in methods:
        name = METHOD_NAMES.get(m, m)
        head += [f"{name}: distance (m)", "safe", "centred", "success"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    seen_flags = {e["object"]: e["seen"] for e in episodes}
    for split, flag in (("Seen", True), ("Unseen", False)):
        objs = [o for o, s in seen_flags.items() if s == flag]
        for k, o in enumerate(objs):
            row = [split if k == 0 else "", o]
            for m in methods:
                row += _cell(summary[m]["objects"].get(o, {}))
            lines.append("| " + " | ".join(row) + " |")
        if objs:
            row = ["", f"**all {split.lower()}**"]
            for m in methods:
                row += [f"**{c}**" for c in _cell(summary[m][split.lower()])]
            lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "| Method | Split | success | human contact | timeout | other failure | steps | time to pre-grasp (s) | wall per episode (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in methods:
        for split in ("seen", "unseen"):
            a = summary[m][split]
            if not a.get("episodes"):
                continue
            rates = [f"{a[f'{o}_rate']:.2f}" for o in OUTCOMES]
            t = a.get("time_to_pregrasp_s")
            lines.append(
                f"| {METHOD_NAMES.get(m, m)} | {split} | "
                + " | ".join(rates)
                + f" | {a.get('steps_mean', float('nan')):.1f} | {'-' if t is None else f'{t:.1f}'} | {a.get('wall_s_mean', float('nan')):.2f} |"
            )
    return "\n".join(lines) + "\n"


def _scene_sources(paths: Sequence[Path]) -> list[tuple[str, Path, Path]]:
    """(name, scene.ply, grasps.json) per path; names as `trajgen.batch.resolve_scenes` makes them."""
    from trajgen.batch import resolve_scenes

    return [(s.scene_id, s.scene_ply, s.grasps_json) for s in resolve_scenes([str(p) for p in paths])]


def run_eval(
    cfg: EvalConfig,
    *,
    objects: Sequence[EvalObject] | None = None,
    log: Callable[[str], None] | None = None,
) -> EvalResult:
    """Evaluates the policy (and IBVS-MASK) on ``cfg.scenes`` (or ``objects``, already in memory).

    Raises:
        FileNotFoundError / ValueError: For missing policies, scenes or grasps, and bad settings.
        RuntimeError: When the ONNX export fails its parity check.
    """
    t0 = time.perf_counter()
    if log is None:
        from rich.console import Console

        console = Console(stderr=True)
        log = console.print if cfg.progress else (lambda _m: None)
    if cfg.starts_per_object < 1:
        raise ValueError(f"EvalConfig.starts_per_object = {cfg.starts_per_object}; expected >= 1")
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    from policy.checkpoint import load_policy

    net, meta = load_policy(cfg.policy)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    export_info: dict[str, Any] | None = None
    if cfg.runtime == "onnx":
        from policy.runtime import OnnxPolicy

        onnx_path = cfg.onnx
        if onnx_path is None:
            from policy.export import ExportConfig, run_export

            res = run_export(ExportConfig(policy=cfg.policy, out=out / "export", tau_c=cfg.tau_c))
            onnx_path = res.onnx_path
            export_info = {"path": str(onnx_path), "max_abs_diff": res.max_abs_diff, "exporter": res.exporter}
            log(f"exported {onnx_path} (onnxruntime vs torch: max |diff| {res.max_abs_diff:.2e})")
        policy_fn: PolicyFn = OnnxPolicy(onnx_path, num_threads=cfg.num_threads)
    elif cfg.runtime == "torch":
        from policy.runtime import TorchPolicy

        policy_fn = TorchPolicy(net)
    else:
        raise ValueError(f"EvalConfig.runtime = {cfg.runtime!r}; expected 'onnx' or 'torch'")

    camera = meta.get("camera", {})
    training = meta.get("training", {})
    trained_on = set(training.get("scenes", []))
    if objects is None:
        from trajgen.grasp_io import read_grasps

        objects = []
        for name, ply, grasps_json in _scene_sources(cfg.scenes):
            g = read_grasps(grasps_json)
            objects.append(EvalObject(name, load_scene_dir(ply), g.target_poses()))
    objects = list(objects)
    for obj in objects:
        if cfg.unseen:
            obj.seen = obj.name not in cfg.unseen
        elif cfg.seen:
            obj.seen = obj.name in cfg.seen
        elif trained_on:
            obj.seen = obj.name in trained_on

    policies: dict[str, PolicyFn] = {METHOD_POLICY: policy_fn}
    if cfg.ibvs:
        intr = camera_from_meta(camera)[0]
        policies[METHOD_IBVS] = IBVSMaskPolicy(cfg.ibvs_config, intr)
    episodes, videos = evaluate_objects(
        objects,
        policies,
        camera,
        cfg,
        plan=training.get("plan"),
        log=log,
        video_dir=out / "videos" if cfg.videos_per_object > 0 else None,
        depth_policies=(METHOD_POLICY,) if net.cfg.depth else (),
    )
    summary = summarize(episodes)
    table = markdown_table(summary, episodes)
    wall = time.perf_counter() - t0
    report = {
        "summary": summary,
        "config": json.loads(json.dumps(asdict(cfg), default=str)),
        "starts": asdict(cfg.starts.updated_from_plan(training.get("plan"))),
        "policy": {
            "path": str(cfg.policy),
            "runtime": cfg.runtime,
            "export": export_info,
            "model": meta.get("model"),
        },
        "objects": [{"name": o.name, "seen": o.seen} for o in objects],
        "episodes": episodes,
        "videos": [str(v.relative_to(out)) for v in videos],
        "wall_s": wall,
    }
    (out / "eval_report.json").write_text(json.dumps(report, indent=1, default=_json_default))
    with open(out / "episodes.jsonl", "w") as f:
        for e in episodes:
            f.write(
                json.dumps(
                    {k: v for k, v in e.items() if k not in ("start_pose", "final_pose")},
                    default=_json_default,
                )
                + "\n"
            )
    (out / "table.md").write_text(table)
    log(table)
    return EvalResult(out, report, table, episodes, videos, wall)


def _json_default(x: Any) -> Any:
    if isinstance(x, (np.generic,)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return str(x)
