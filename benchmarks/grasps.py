"""Grasp benchmark: the grasp stage on every object of the synthetic catalogue, held in its default way.

    python benchmarks/grasps.py [--json] [--objects a,b] [--gripper auto|robotiq_2f_85|robotiq_2f_140]
                                [--spacing 0.003] [--out DIR]

For each catalogue object (`recon.catalogue.object_names`), the synthetic handover scene
(`recon.synth.build_scene` with the default `SynthConfig`: seed 0, the object's default hand pose) gives
the ground-truth object and hand meshes (the hand mesh includes the forearm). ``--gripper auto`` (the
default) gives each object the gripper the catalogue names for it (`CatalogueObject.gripper`): the
Robotiq 2F-85 except for the master chef can and the wood block, which are wider than its 85 mm stroke
at every pair of opposing faces and get the 2F-140; those two are also run with the 2F-85 and reported
apart (``robotiq_2f_85_only`` in the JSON), so the cost of the choice stays visible. Their surfaces are sampled
uniformly at one point per ``spacing``² (3 mm: about the density of a reconstruction's Gaussians) and
written as ``object.ply`` and ``hand.ply`` into a scene folder; then `trajgen.grasps.run_grasps` runs with
the default `GraspConfig` and is timed end to end (reading the PLYs, sampling, filtering, writing
grasps.json and grasps.png).

Every kept grasp is then read back from grasps.json and re-checked here, independently of
`trajgen.grasp_safety`, on the full hand point cloud: Eq. 1 (no hand point within d_s of the grasp
frame's origin), the swept volume (no hand point in the gripper's body, fingers or the closing region
between them, swept back s = 0.3 m along the approach; boxes rebuilt from the gripper's fields) and the
80 % non-intrusion rule.

Per object the table shows the candidates, the rejections per filter, the safe grasps before and after
non-maximum suppression ("kept" = diverse safe grasps), the re-check violations and the seconds. With
``--json`` the last line printed is one JSON object with ``min_safe_grasps_per_object``,
``kept_grasps_violating_safety`` and ``max_s_per_object`` (plus the goal, the per-object rows, and the
objects that no grasp of this gripper can hold because they are wider than its stroke everywhere).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from plyfile import PlyData, PlyElement
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recon.catalogue import get_object, object_names  # noqa: E402
from recon.synth import SynthConfig, build_scene  # noqa: E402
from trajgen.grasp_io import FILTERS, load_points, read_grasps  # noqa: E402
from trajgen.grasps import GraspConfig, NoSafeGraspError, run_grasps  # noqa: E402
from trajgen.gripper import GRIPPERS, GripperModel  # noqa: E402

GOAL = {"min_safe_grasps_per_object": 5, "kept_grasps_violating_safety": 0, "max_s_per_object": 10.0}
SHORT = {
    "exceeds_stroke": "strk",
    "object_collision": "obj",
    "min_score": "scr",
    "eq1_distance": "Eq1",
    "non_intrusion": "intr",
    "swept_volume": "swpt",
    "authors_box": "box",
    "nms": "nms",
}


def sample_surface(
    vertices: np.ndarray, triangles: np.ndarray, spacing: float, rng: np.random.Generator
) -> np.ndarray:
    """Uniform points on a triangle mesh, one per ``spacing``² of area."""
    v = vertices[triangles]
    area = 0.5 * np.linalg.norm(np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]), axis=1)
    n = max(1, int(area.sum() / spacing**2))
    tri = rng.choice(len(area), n, p=area / area.sum())
    r1, r2 = np.sqrt(rng.random(n)), rng.random(n)
    return (
        v[tri, 0] * (1 - r1)[:, None] + v[tri, 1] * (r1 * (1 - r2))[:, None] + v[tri, 2] * (r1 * r2)[:, None]
    )


def write_points(path: Path, points: np.ndarray) -> None:
    vertex = np.empty(len(points), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4")])
    vertex["x"], vertex["y"], vertex["z"] = np.asarray(points).T
    PlyData([PlyElement.describe(vertex, "vertex")]).write(str(path))


def recheck(
    pose: np.ndarray, opening: float, center: np.ndarray, hand: np.ndarray, g: GripperModel, cfg: GraspConfig
) -> dict[str, bool]:
    """Eq. 1, the swept volume and non-intrusion for one grasp, from first principles."""
    inv = np.linalg.inv(pose)
    p = hand @ inv[:3, :3].T + inv[:3, 3]  # hand points in the grasp frame (Eq. 1: p' = G^-1 p)
    eq1 = bool(np.linalg.norm(p, axis=1).min() >= cfg.d_s) if len(p) else True
    s = cfg.pregrasp_distance
    palm = g.tip_depth - g.finger_length
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    body = (np.abs(x) <= g.body_width / 2) & (np.abs(y) <= g.body_thickness / 2) & (z >= -s) & (z <= palm)
    jaws = (np.abs(x) <= opening / 2 + g.finger_thickness) & (np.abs(y) <= g.finger_breadth / 2)
    jaws &= (z >= palm - s) & (z <= g.tip_depth)
    swept = not bool((body | jaws).any())
    beyond = float(((hand - center) @ pose[:3, 2] > 0).mean()) if len(hand) else 1.0
    return {"eq1": eq1, "swept": swept, "non_intrusion": beyond >= cfg.non_intrusion_fraction}


def run_object(name: str, cfg: GraspConfig, spacing: float, out_root: Path) -> dict:
    t = time.perf_counter()
    scene = build_scene(SynthConfig(object=name))
    rng = np.random.default_rng([0, sum(map(ord, name))])
    obj_mesh, hand_mesh = scene.surface("object").mesh, scene.surface("hand").mesh
    obj = sample_surface(obj_mesh.vertices, obj_mesh.triangles, spacing, rng)
    hand = sample_surface(hand_mesh.vertices, hand_mesh.triangles, spacing, rng)
    scene_dir = out_root / name / "scene"
    scene_dir.mkdir(parents=True, exist_ok=True)
    write_points(scene_dir / "object.ply", obj)
    write_points(scene_dir / "hand.ply", hand)
    build_s = time.perf_counter() - t
    row = {
        "object": name,
        "gripper": cfg.gripper.name,
        "hold": scene.hand_pose,
        "size_mm": [round(float(v) * 1000) for v in scene.object.size],
        "object_points": len(obj),
        "hand_points": len(hand),
        "scene_build_s": round(build_s, 2),
    }
    out = out_root / name / "grasps.json"
    t = time.perf_counter()
    try:
        result = run_grasps(cfg, scene_dir, out)
    except NoSafeGraspError as exc:
        row.update(summary=exc.summary, kept=0, safe=0, violations=0, error=str(exc))
        row["seconds"] = round(time.perf_counter() - t, 2)
        row["compute_s"] = row["seconds"]
        return row
    seconds = time.perf_counter() - t
    gf = read_grasps(out, scene_dir=scene_dir)
    hand_read = load_points(scene_dir / "hand.ply")
    checks = [
        recheck(gf.poses[i], gf.openings[i], gf.centers[i], hand_read, cfg.gripper, cfg) for i in gf.kept
    ]
    row.update(
        summary=result.summary,
        kept=int(gf.kept.size),
        safe=int(result.summary["safe_before_nms"]),
        violations=int(sum(not (c["eq1"] and c["swept"]) for c in checks)),
        non_intrusion_violations=int(sum(not c["non_intrusion"] for c in checks)),
        seconds=round(seconds, 2),
        compute_s=round(result.timings["total_s"], 2),
        timings={k: round(v, 3) for k, v in result.timings.items()},
    )
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="end with one JSON line of results")
    ap.add_argument("--objects", default="", help="comma-separated subset (default: the whole catalogue)")
    ap.add_argument(
        "--gripper",
        choices=["auto", *sorted(GRIPPERS)],
        default="auto",
        help="auto: the catalogue's gripper for each object (CatalogueObject.gripper)",
    )
    ap.add_argument("--spacing", type=float, default=0.003, help="surface sampling spacing (metres)")
    ap.add_argument("--out", default="", help="keep each object's scene, grasps.json and grasps.png here")
    args = ap.parse_args()

    names = [n for n in args.objects.split(",") if n] or object_names()

    def config_for(name: str) -> GraspConfig:
        gripper = get_object(name).gripper if args.gripper == "auto" else args.gripper
        return replace(GraspConfig(), gripper=GRIPPERS[gripper]())

    console = Console(width=220)
    tmp = None if args.out else tempfile.TemporaryDirectory(prefix="grasp_bench_")
    out_root = Path(args.out) if args.out else Path(tmp.name)
    rows, rows_2f85 = [], []
    try:
        for name in names:
            rows.append(run_object(name, config_for(name), args.spacing, out_root))
            r = rows[-1]
            console.print(f"{name}: {r['kept']} kept ({r['gripper']}), {r['seconds']:.2f} s", style="dim")
            if r["gripper"] != "robotiq_2f_85":  # what the default gripper would have left
                r85 = run_object(name, GraspConfig(), args.spacing, out_root / "robotiq_2f_85")
                rows_2f85.append(r85)
                console.print(f"{name}: {r85['kept']} kept (robotiq_2f_85)", style="dim")
            else:
                rows_2f85.append(r)
    finally:
        if tmp is not None:
            tmp.cleanup()

    grippers = "the catalogue's gripper per object" if args.gripper == "auto" else args.gripper
    table = Table(title=f"Grasps on the synthetic catalogue ({grippers}, default GraspConfig)")
    for col in ("object", "gripper", "hold", "size mm", "obj pts", "hand pts", "cand"):
        table.add_column(col, justify="right" if col not in ("object", "gripper", "hold") else "left")
    for f in FILTERS:
        table.add_column(SHORT[f], justify="right")
    for col in ("safe", "kept", "viol", "compute s", "total s"):
        table.add_column(col, justify="right")
    for r in rows:
        rej = r["summary"]["rejected"]
        table.add_row(
            r["object"],
            r["gripper"].removeprefix("robotiq_"),
            r["hold"],
            "x".join(map(str, r["size_mm"])),
            str(r["object_points"]),
            str(r["hand_points"]),
            str(r["summary"]["candidates"]),
            *[str(rej[f]) for f in FILTERS],
            str(r["safe"]),
            f"[{'green' if r['kept'] >= GOAL['min_safe_grasps_per_object'] else 'red'}]{r['kept']}[/]",
            str(r["violations"]),
            f"{r['compute_s']:.2f}",
            f"{r['seconds']:.2f}",
        )
    console.print(table)
    console.print(
        "strk exceeds stroke, obj object collision, scr min score, Eq1 Eq. 1 (d_s), intr non-intrusion, "
        "swpt swept volume, box authors' box (off), nms suppressed near-duplicates; safe = passed every "
        "filter, kept = the diverse safe grasps after NMS; viol = kept grasps failing Eq. 1 or the swept "
        "volume when re-checked independently on the full hand cloud; total s = run_grasps end to end "
        "(read PLYs, sample, filter, write grasps.json + grasps.png)."
    )
    for r in rows:
        if "error" in r:
            console.print(f"[yellow]{r['object']}[/]: {r['error']}")

    infeasible = [r["object"] for r in rows if r["summary"]["candidates"] == 0]
    feasible = [r for r in rows if r["object"] not in infeasible]
    wider_2f85 = [r["object"] for r in rows_2f85 if r["summary"]["candidates"] == 0]
    summary = {
        "min_safe_grasps_per_object": min(r["kept"] for r in rows),
        "kept_grasps_violating_safety": sum(r["violations"] for r in rows),
        "max_s_per_object": max(r["seconds"] for r in rows),
        "max_compute_s_per_object": max(r["compute_s"] for r in rows),
        "min_safe_grasps_per_graspable_object": min((r["kept"] for r in feasible), default=0),
        "objects_wider_than_the_stroke": infeasible,
        "objects_below_goal": [r["object"] for r in rows if r["kept"] < GOAL["min_safe_grasps_per_object"]],
        "kept_grasps_violating_non_intrusion": sum(r.get("non_intrusion_violations", 0) for r in rows),
        "objects": len(rows),
        "gripper": args.gripper,
        "gripper_per_object": {r["object"]: r["gripper"] for r in rows},
        "robotiq_2f_85_only": {
            "min_safe_grasps_per_object": min(r["kept"] for r in rows_2f85),
            "kept_per_object": {r["object"]: r["kept"] for r in rows_2f85},
            "objects_wider_than_the_stroke": wider_2f85,
            "objects_below_goal": [
                r["object"] for r in rows_2f85 if r["kept"] < GOAL["min_safe_grasps_per_object"]
            ],
        },
        "spacing_m": args.spacing,
        "goal": GOAL,
        "machine": {
            "cpus": os.cpu_count(),
            "load_average": [round(v, 2) for v in os.getloadavg()],
            "python": platform.python_version(),
        },
        "rows": [{k: v for k, v in r.items() if k != "error"} for r in rows],
    }
    summary["goal_met"] = (
        summary["min_safe_grasps_per_object"] >= GOAL["min_safe_grasps_per_object"]
        and summary["kept_grasps_violating_safety"] == 0
        and summary["max_s_per_object"] <= GOAL["max_s_per_object"]
    )
    console.print(
        f"min kept per object {summary['min_safe_grasps_per_object']} (goal >= 5; graspable objects: "
        f"{summary['min_safe_grasps_per_graspable_object']}), violations {summary['kept_grasps_violating_safety']} "
        f"(goal 0), max {summary['max_s_per_object']:.2f} s per object (goal <= 10), load average "
        f"{summary['machine']['load_average']}"
    )
    if args.gripper == "auto" and any(r["gripper"] != "robotiq_2f_85" for r in rows):
        only = summary["robotiq_2f_85_only"]
        console.print(
            f"with the Robotiq 2F-85 on every object: min kept {only['min_safe_grasps_per_object']}, "
            f"wider than its stroke: {', '.join(only['objects_wider_than_the_stroke']) or 'none'}"
        )
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
