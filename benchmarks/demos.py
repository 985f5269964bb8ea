"""Demonstration rendering benchmark: tuples per second at the policy resolution, and an independent
re-check of every trajectory against the paper's constraints.

    python benchmarks/demos.py [--json] [--workers W] [--scene DIR] [--work DIR] [--quick]

The scene. With ``--scene DIR`` (a reconstruction's scene folder: scene.ply, hand.ply, object.ply), that
scene. Otherwise the default synthetic handover (`recon.synth.SynthConfig()`: the mustard bottle held in
the default way, seed 0) is turned into Gaussians *directly from its ground-truth meshes* - running the
reconstruction (`recon.pipeline.run_recon`) takes ~15 minutes on this CPU, too long for a benchmark.
Gaussians are sampled uniformly on every surface: object and hand (with forearm) every ~3 mm, the
background (table, floor, walls, the person's body) every ~17.5 mm within 2.5 m of the object; flat
discs (standard deviations 0.6 x spacing in the surface, 0.1 x spacing along the normal) at opacity
0.9, coloured by the surfaces' albedo with simple Lambertian shading. This gives ~205k Gaussians, the
count of a reconstruction of the same capture (~220k, almost all background).

The grasps are the grasp stage's (`trajgen.grasps.run_grasps`, default config: its top 5 targets).
The demonstrations use `trajgen.batch.run_demos` with the paper's parameters (k = 15, r = 0.7 m,
alpha_min = 60 deg, +-20 deg jitter, theta_max = 100 deg, d_min = 0.1 m, s = 0.3 m, d = 0.5 m, phi = 0)
at 128x128, plus ``min_height`` = 5 cm above the synthetic table top (z = 0), which keeps the cameras out
from under the table (it only removes start poses, so every check below still applies).

Measured:
- ``tuples_per_s``: tuples (rendered steps, each written to HDF5) per second of the rendering loop,
  which includes planning, the worker processes' start-up, rendering, compression and the atomic
  writes; ``wall_tuples_per_s`` also counts loading the scene and grasps, shard validation and the
  merge (pictures off).
- ``tuples_per_cpu_s``: tuples per CPU-second of the rendering processes (rendering and writing, summed
  over the workers); times the workers (one thread each, at most one per core) it estimates the rate of
  an otherwise idle machine (``idle_machine_tuples_per_s_estimate``), which the shared machine's wall
  clock cannot show.
- ``invalid_trajectories``: episodes that fail an independent re-check (numpy, brute force, sharing no
  code with the planner) of Eq. 3 (start on the sphere of radius r around the grasp), Eq. 4 (angle at
  the object between hand and start camera > alpha_min), Eq. 5 (start rotation = look-at rotation turned
  about its own x then y axis by at most the jitter), Eq. 6 (z_i . z_f >= cos theta_max), Eq. 14 (every
  waypoint farther than d_min from every hand and object point; and, beyond the paper, farther than
  ``d_background`` = 5 cm from every solid background point: label 0, opacity >= 0.5), Eq. 7 (the last pose is the pre-grasp
  pose, cls = 1 there only), and that the actions re-integrate to the recorded poses.
  ``missing_trajectories`` = k x targets - episodes (a grasp that yields fewer than k trajectories).

The machine is shared (2 cores): the 1-minute load average before and after is printed with the result.
With ``--json`` the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TUPLES_PER_S_GOAL = 30.0


# --------------------------------------------------------------------------------------------------
# The default synthetic scene as Gaussians sampled on its ground-truth meshes
# --------------------------------------------------------------------------------------------------


def _sample_surface(mesh, spacing: float, rng: np.random.Generator, center: np.ndarray, max_dist: float):
    v = mesh.vertices[mesh.triangles]
    cross = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    area = 0.5 * np.linalg.norm(cross, axis=1)
    n = int(area.sum() / spacing**2)
    tri = rng.choice(len(area), n, p=area / area.sum())
    a, b = rng.random(n), rng.random(n)
    flip = a + b > 1
    a[flip], b[flip] = 1 - a[flip], 1 - b[flip]
    p = v[tri, 0] + a[:, None] * (v[tri, 1] - v[tri, 0]) + b[:, None] * (v[tri, 2] - v[tri, 0])
    normal = cross[tri] / np.maximum(np.linalg.norm(cross[tri], axis=1, keepdims=True), 1e-20)
    keep = np.linalg.norm(p - center, axis=1) < max_dist
    return p[keep], normal[keep], tri[keep]


def synthetic_gaussian_scene(
    fg_spacing: float = 0.003, bg_spacing: float = 0.0175, radius: float = 2.5, seed: int = 0
):
    """The default synthetic handover as a labelled GaussianScene (module docstring)."""
    from scipy.spatial.transform import Rotation

    from recon.synth import SynthConfig, build_scene
    from splatsim.scene import GaussianScene

    synth = build_scene(SynthConfig())
    rng = np.random.default_rng(seed)
    P, N, C, L, S = [], [], [], [], []
    for surf in synth.surfaces:
        spacing = fg_spacing if surf.label else bg_spacing
        p, n, tri = _sample_surface(surf.mesh, spacing, rng, synth.object_center, radius)
        albedo = np.clip(np.asarray(surf.albedo(p, n, tri), dtype=np.float64), 0, 1)
        shade = 0.55 + 0.35 * np.abs(n @ synth.key_light) + 0.1 * np.abs(n @ synth.fill_light)
        P.append(p), N.append(n), C.append(np.clip(albedo * shade[:, None], 0, 1))
        L.append(np.full(len(p), surf.label)), S.append(np.full(len(p), spacing))
    P, N, C, L, S = (np.concatenate(x) for x in (P, N, C, L, S))
    z = np.array([0.0, 0.0, 1.0])
    axis = np.cross(np.broadcast_to(z, N.shape), N)
    sin = np.linalg.norm(axis, axis=1)
    axis = np.where(sin[:, None] > 1e-9, axis / np.maximum(sin, 1e-12)[:, None], [1.0, 0.0, 0.0])
    q = Rotation.from_rotvec(axis * np.arctan2(sin, N[:, 2])[:, None]).as_quat()  # xyzw, disc normal = z
    scene = GaussianScene.from_activated(
        torch.tensor(P, dtype=torch.float32),
        torch.tensor(np.concatenate([q[:, 3:], q[:, :3]], 1), dtype=torch.float32),
        torch.tensor(np.stack([0.6 * S, 0.6 * S, 0.1 * S], 1), dtype=torch.float32),
        torch.full((len(P),), 0.9),
        colors_rgb=torch.tensor(C, dtype=torch.float32),
        labels=torch.tensor(L),
    )
    return scene, synth


def prepare_scene(work: Path, scene_arg: str | None, log) -> tuple[Path, dict]:
    """A run folder (scene/ + grasps.json) in ``work``; returns it and a description."""
    from splatsim.ply import read_ply, write_ply
    from splatsim.scene import LABEL_HAND, LABEL_OBJECT
    from trajgen.grasps import GraspConfig, run_grasps

    run = work / "bench_run"
    scene_dir = run / "scene"
    scene_dir.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    if scene_arg:
        scene = read_ply(Path(scene_arg) / "scene.ply")
        desc = {"source": f"reconstruction {scene_arg}"}
        min_height = None
    else:
        scene, _synth = synthetic_gaussian_scene()
        desc = {"source": "recon.synth default scene, Gaussians sampled on the ground-truth meshes"}
        min_height = 0.05  # the synthetic table top is z = 0
    write_ply(scene, scene_dir / "scene.ply")
    write_ply(scene.select_label(LABEL_HAND), scene_dir / "hand.ply")
    write_ply(scene.select_label(LABEL_OBJECT), scene_dir / "object.ply")
    counts = [int((scene.labels == i).sum()) for i in range(3)]
    desc.update(num_gaussians=scene.num_gaussians, background=counts[0], object=counts[1], hand=counts[2])
    desc["build_s"] = round(time.perf_counter() - t, 2)
    log(f"scene: {desc}")
    t = time.perf_counter()
    grasps = run_grasps(GraspConfig(plot=False), scene_dir, run / "grasps.json")
    desc["grasps_s"] = round(time.perf_counter() - t, 2)
    desc["grasp_targets"] = int(len(grasps.targets))
    desc["min_height"] = min_height
    return run, desc


# --------------------------------------------------------------------------------------------------
# Independent re-check (numpy only; shares no code with trajgen's planner)
# --------------------------------------------------------------------------------------------------


def _rx(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _ry(b: float) -> np.ndarray:
    c, s = math.cos(b), math.sin(b)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _euler_xyz(e: np.ndarray) -> np.ndarray:
    a, b, c = e
    Rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return Rz @ _ry(b) @ _rx(a)


def min_distances(points: np.ndarray, cloud: np.ndarray) -> np.ndarray:
    """Brute-force nearest distance from each point to a cloud."""
    out = np.empty(len(points))
    for i in range(0, len(points), 16):
        d = np.linalg.norm(points[i : i + 16, None, :] - cloud[None], axis=-1)
        out[i : i + 16] = d.min(1)
    return out


def solid_background(scene_ply: Path) -> np.ndarray:
    """Centres of the label-0 Gaussians with opacity >= 0.5, read with plyfile alone."""
    from plyfile import PlyData

    v = PlyData.read(str(scene_ply))["vertex"].data
    keep = (np.asarray(v["label"]).round() == 0) & (
        1.0 / (1.0 + np.exp(-np.asarray(v["opacity"], np.float64))) >= 0.5
    )
    return np.stack([np.asarray(v[c], np.float64)[keep] for c in "xyz"], 1)


def recheck_episode(
    ep: dict, hand: np.ndarray, obj: np.ndarray, plan: dict, background: np.ndarray | None = None
) -> list[str]:
    """What an episode violates among Eq. 3-7 and 14 (module docstring); empty when valid."""
    errors = []
    poses, grasp, cls, actions = ep["poses"], ep["grasp_pose"], ep["cls"], ep["actions"]
    T_i, R_i = poses[0, :3, 3], poses[0, :3, :3]
    T_o, T_h = obj.mean(0), hand.mean(0)
    rad = math.radians
    if abs(np.linalg.norm(T_i - grasp[:3, 3]) - plan["radius"]) > 1e-6:
        errors.append("Eq. 3: start not on the sphere")
    a, b = T_h - T_o, T_i - T_o
    if (
        not math.degrees(math.acos(np.clip(a @ b / np.linalg.norm(a) / np.linalg.norm(b), -1, 1)))
        > plan["alpha_min_deg"]
    ):
        errors.append("Eq. 4: alpha <= alpha_min")
    up = np.asarray(plan["up"], dtype=np.float64)
    z0 = (T_o - T_i) / np.linalg.norm(T_o - T_i)
    x0 = np.cross(z0, up)
    x0 /= np.linalg.norm(x0)
    R_look = np.stack([x0, np.cross(z0, x0), z0], 1)
    zl = R_look.T @ R_i[:, 2]
    theta_y, theta_x = math.asin(np.clip(zl[0], -1, 1)), math.atan2(-zl[1], zl[2])
    jit = rad(plan["jitter_deg"]) + 1e-9
    if (
        abs(theta_x) > jit
        or abs(theta_y) > jit
        or np.abs(R_look @ _rx(theta_x) @ _ry(theta_y) - R_i).max() > 1e-6
    ):
        errors.append(
            f"Eq. 5: start orientation not a jittered look-at ({math.degrees(theta_x):.1f}, {math.degrees(theta_y):.1f} deg)"
        )
    if not R_i[:, 2] @ grasp[:3, 2] >= math.cos(rad(plan["theta_max_deg"])) - 1e-12:
        errors.append("Eq. 6: angle to the final viewing axis > theta_max")
    if min_distances(poses[:, :3, 3], np.concatenate([hand, obj])).min() <= plan["d_min"]:
        errors.append("Eq. 14: a waypoint within d_min of the hand or object")
    d_bg = plan.get("d_background", 0.0)
    if background is not None and len(background) and d_bg > 0:
        if min_distances(poses[:, :3, 3], background).min() <= d_bg:
            errors.append("a waypoint within d_background of the solid background")
    pre = grasp.copy()
    pre[:3, 3] = grasp[:3, 3] - plan["s"] * grasp[:3, 2]
    if np.abs(poses[-1] - pre).max() > 1e-9:
        errors.append("Eq. 7: the last pose is not the pre-grasp pose")
    if not (cls[-1] == 1 and (cls[:-1] == 0).all()):
        errors.append("cls is not 1 at the pre-grasp pose only")
    for t in range(len(poses) - 1):
        rel = np.eye(4)
        rel[:3, :3], rel[:3, 3] = _euler_xyz(actions[t, :3]), actions[t, 3:]
        if np.abs(poses[t] @ rel - poses[t + 1]).max() > 1e-6:
            errors.append(f"action {t} does not re-integrate to pose {t + 1}")
            break
    return errors


# --------------------------------------------------------------------------------------------------


def _load1() -> float:
    try:
        return float(os.getloadavg()[0])
    except OSError:
        return float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="end with one JSON line")
    ap.add_argument("--workers", type=int, default=2, help="local worker processes (default 2)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument(
        "--scene", default=None, help="a reconstruction's scene folder instead of the synthetic scene"
    )
    ap.add_argument("--work", default=None, help="working folder (default: a temporary folder)")
    ap.add_argument("--quick", action="store_true", help="k = 5 starts and 2 grasp targets")
    args = ap.parse_args()

    from rich.console import Console

    from trajgen.batch import DemosConfig, run_demos
    from trajgen.dataset import read_episode
    from trajgen.grasp_io import load_points
    from trajgen.planning import PlanConfig

    console = Console(stderr=True)
    log = console.print
    tmp = None
    if args.work:
        work = Path(args.work)
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="splatsim_bench_demos_")
        work = Path(tmp.name)
    load_before = _load1()
    run, scene_desc = prepare_scene(work, args.scene, log)
    k = 5 if args.quick else 15
    cfg = DemosConfig(
        scenes=(str(run),),
        out=str(work / "demos"),
        top_k=2 if args.quick else None,
        plan=PlanConfig(k=k, min_height=scene_desc["min_height"]),
        workers=args.workers,
        batch_size=args.batch_size,
        resume=False,
        pictures=False,
        progress=True,
    )
    t0 = time.perf_counter()
    res = run_demos(cfg, log=log)
    wall = time.perf_counter() - t0
    load_after = _load1()

    index = json.loads(Path(res.index).read_text())
    scene_dir = run / "scene"
    hand, obj = load_points(scene_dir / "hand.ply"), load_points(scene_dir / "object.ply")
    plan = index["planning"]
    background = solid_background(scene_dir / "scene.ply")
    invalid, problems = 0, []
    for e in index["episodes"]:
        ep = read_episode(Path(cfg.out) / e["file"])
        errs = recheck_episode(
            vars(ep), hand, obj, json.loads(Path(cfg.out, "config.json").read_text())["plan"], background
        )
        if errs:
            invalid += 1
            problems.append(f"{e['file']}: {errs}")
    targets = len({(g["scene_id"], g["grasp_rank"]) for g in plan["grasps"]})
    expected = k * targets
    for p in problems[:10]:
        log(f"[red]invalid[/red] {p}")
    result = {
        "tuples_per_s": round(res.tuples_per_s, 2),
        "wall_tuples_per_s": round(res.tuples / wall, 2),
        "tuples_per_cpu_s": round(res.tuples_per_cpu_s, 2),
        "idle_machine_tuples_per_s_estimate": round(
            res.tuples_per_cpu_s * min(args.workers, os.cpu_count() or 1), 2
        ),
        "invalid_trajectories": invalid,
        "missing_trajectories": expected - len(index["episodes"]),
        "trajectories": len(index["episodes"]),
        "expected_trajectories": expected,
        "tuples": res.tuples,
        "mean_steps_per_trajectory": round(res.tuples / max(1, res.rendered), 1),
        "render_loop_s": round(res.render_seconds, 2),
        "wall_s": round(wall, 2),
        "workers": args.workers,
        "resolution": [cfg.camera.width, cfg.camera.height],
        "grasp_targets": targets,
        "k": k,
        "planning": plan["totals"],
        "scene": scene_desc,
        "load_avg_1m": [round(load_before, 2), round(load_after, 2)],
        "cpu_count": os.cpu_count(),
        "goal": {"tuples_per_s": TUPLES_PER_S_GOAL, "invalid_trajectories": 0},
        "meets_goal": bool(
            res.tuples_per_s >= TUPLES_PER_S_GOAL and invalid == 0 and expected == len(index["episodes"])
        ),
    }
    log(
        f"{res.tuples} tuples in {res.render_seconds:.1f} s = [bold]{res.tuples_per_s:.1f} tuples/s[/bold] "
        f"({args.workers} workers, 128x128, load avg {load_before:.1f} -> {load_after:.1f}); "
        f"{len(index['episodes'])}/{expected} trajectories, {invalid} invalid under the re-check"
    )
    if args.json:
        print(json.dumps(result))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
