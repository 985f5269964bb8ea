"""`splatsim demos`: render demonstration episodes for one or many scenes; sharded, parallel, resumable.

Work is a fixed list of *slots*, one per (scene, target grasp, start index): for every scene in the
given order, for each of its first ``top_k`` grasp targets (best first, from ``grasps.json``), ``k``
start indices. Slot ``g`` (in that order) belongs to shard ``g % num_shards``, so any scheduler (a SLURM
array, a shell loop, Ray) can run the shards independently and their union is exactly the unsharded run.
Planning (`trajgen.planning`) is seeded by (seed, scene id, grasp rank) and is cheap, so each shard plans
the grasps it needs; a slot whose grasp yields fewer than ``k`` valid trajectories is recorded as
``no_trajectory``.

On disk (``out``)::

    config.json                              what the episodes depend on; a rerun must match it
    episodes/<scene_id>/g<rank>_s<start>.hdf5 one episode per file (`trajgen.dataset`)
    shards/shard-<i>-of-<N>.json              a finished shard's manifest: slots, planning counts, validation
    index.json, demos.hdf5                    written by the merge once every shard is finished
    pictures/<scene_id>_trajectories.png, <scene_id>_episode.mp4

Resume is exact because an episode file appears only complete (written to a temporary file, fsynced,
renamed): on restart every slot whose file exists and validates is skipped, leftover temporary files
and files that fail validation are deleted and redone, and a redone episode is identical to the lost
one (deterministic planning and rendering). The merge writes ``index.json`` (every episode, in slot
order, with its ids and length, plus the planning counts) and ``demos.hdf5``, a robomimic-style file
whose ``data/demo_N`` are HDF5 external links to the episode files.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
import torch

from splatsim.scene_folder import check_scene_folder
from trajgen.dataset import (
    DEMO_GROUP,
    FORMAT_NAME,
    FORMAT_VERSION,
    read_episode,
    validate_episode,
    write_episode,
)
from trajgen.episodes import HandEyeRenderer, build_episode
from trajgen.grasp_io import load_points, read_grasps, scene_fingerprint
from trajgen.handeye import HandEyeConfig, gripper_T_camera, policy_intrinsics
from trajgen.planning import (
    PLAN_COUNTERS,
    GraspPlan,
    PlanConfig,
    PointClearance,
    background_points,
    grasp_problem,
    plan_grasp,
    plan_seed,
)

__all__ = [
    "DemosConfig",
    "DemosResult",
    "SceneSource",
    "Slot",
    "all_slots",
    "merge_demos",
    "resolve_scenes",
    "run_demos",
    "shard_slots",
]

CONFIG_JSON = "config.json"
INDEX_JSON = "index.json"
MERGED_HDF5 = "demos.hdf5"
EPISODES_DIR = "episodes"
SHARDS_DIR = "shards"
PICTURES_DIR = "pictures"
_RESULT_FIELDS = ("plan", "camera", "seed", "top_k", "backfill", "mask_min_prob")
"""DemosConfig fields the episodes depend on (with the scenes' contents): a resume must match them."""


@dataclass
class DemosConfig:
    """Demonstrations: start poses, three-phase trajectories and hand-eye renders for every target grasp."""

    scenes: tuple[str, ...] = ()
    """Run folders (holding scene/scene.ply and grasps.json) or scene folders (scene.ply, with
    grasps.json beside it or in the parent folder)."""
    out: str | None = None
    """Output folder; default: <run folder>/demos when there is a single scene."""
    top_k: int | None = None
    """Grasp targets per scene, best first; None = every target listed in grasps.json."""
    backfill: bool = True
    """When a target's pre-grasp pose cannot be flown to (within d_min of the hand or object, within
    d_background of the background, below min_height), fly to the next kept grasp of grasps.json that can
    be, in its place, so each scene keeps its number of targets; the manifest records what replaced what."""
    plan: PlanConfig = field(default_factory=PlanConfig)
    """Start poses and trajectories (the paper's parameters)."""
    camera: HandEyeConfig = field(default_factory=HandEyeConfig)
    """The hand-eye camera: intrinsics, policy resolution, mount on the gripper."""
    mask_min_prob: float = 0.5
    """A pixel's mask label is the most probable composited label where its probability reaches this."""
    seed: int = 0
    """Seeds the start-pose sampling (per scene and grasp)."""
    num_shards: int = 1
    """Split the work into this many shards (slot g goes to shard g % num_shards)."""
    shard_index: int = 0
    """Which shard this process renders (0 <= shard_index < num_shards)."""
    workers: int = 0
    """Local worker processes rendering this shard; 0 = one per CPU core (one with a CUDA backend).
    1 renders in this process."""
    threads_per_worker: int = 1
    """Torch/numba threads per worker process. Parallelism comes from the workers: one thread per process
    is fastest on a busy machine (thread pools stall when a core is taken by someone else); 0 = CPU
    cores // workers."""
    ray: bool = False
    """Run every shard as a Ray task (an existing cluster, or a local one), then merge. The output folder
    and scenes must be on storage every Ray node sees."""
    ray_address: str | None = None
    """Ray cluster address ('auto', 'ray://host:10001'); None = RAY_ADDRESS if set, else a local Ray."""
    backend: Literal["auto", "cpu", "gsplat", "torch"] = "auto"
    """Render backend: auto = gsplat with CUDA, else the compiled CPU rasteriser."""
    batch_size: int = 8
    """Hand-eye views rendered per rasteriser call (consecutive steps of an episode; each call gets the
    Gaussians visible from any of its views, so small batches cull tighter)."""
    compression_level: int = 4
    """gzip level (0-9) of the images and masks in the HDF5 files (lossless either way)."""
    resume: bool = True
    """Keep finished episodes already in the output folder (False: re-render them all)."""
    merge: bool = True
    """Write index.json and demos.hdf5 when every shard is finished (whichever shard finishes last)."""
    merge_only: bool = False
    """Only (re)write index.json, demos.hdf5 and the pictures from finished shards; render nothing."""
    pictures: bool = True
    """With the merge, write a trajectory plot per scene and an mp4 of one episode under pictures/."""
    progress: bool = True
    """Show a progress bar with episodes/s, tuples/s and ETA."""

    def validate(self) -> DemosConfig:
        """Raises ValueError naming the field for impossible settings; returns self."""
        checks = [
            ("num_shards", self.num_shards >= 1, "an integer >= 1"),
            (
                "shard_index",
                0 <= self.shard_index < self.num_shards,
                f"in [0, num_shards = {self.num_shards})",
            ),
            ("workers", self.workers >= 0, "an integer >= 0 (0 = one per CPU core)"),
            ("threads_per_worker", self.threads_per_worker >= 0, "an integer >= 0 (0 = cores // workers)"),
            ("batch_size", self.batch_size >= 1, "an integer >= 1"),
            ("compression_level", 0 <= self.compression_level <= 9, "a gzip level 0-9"),
            ("top_k", self.top_k is None or self.top_k >= 1, "None or an integer >= 1"),
            ("mask_min_prob", 0 < self.mask_min_prob <= 1, "a probability in (0, 1]"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"DemosConfig.{name} = {getattr(self, name)!r}; expected {expected}")
        if not self.scenes and not (self.merge_only and self.out):
            raise ValueError("DemosConfig.scenes is empty; pass one or more run or scene folders")
        self.plan.validate()
        self.camera.validate()
        return self


@dataclass
class DemosResult:
    """What `run_demos` did (for one shard, or summed over the shards of a Ray run)."""

    out_dir: Path
    shards: list[int]
    """Shard indices this call rendered (of ``num_shards``)."""
    num_shards: int
    slots: int = 0
    """Slots (scene, grasp, start) in these shards."""
    episodes: int = 0
    """Valid episodes these shards now hold."""
    rendered: int = 0
    """Episodes rendered by this call."""
    resumed: int = 0
    """Episodes found finished and kept."""
    redone: int = 0
    """Episode files that failed validation (or were partial) and were rendered again."""
    no_trajectory: int = 0
    """Slots whose grasp had fewer valid trajectories than k (or no usable pre-grasp pose)."""
    tuples: int = 0
    """Tuples (steps) rendered by this call."""
    seconds: float = 0.0
    """Wall time of the call."""
    render_seconds: float = 0.0
    """Wall time of the rendering loop (worker start-up, rendering, writing)."""
    cpu_seconds: float = 0.0
    """CPU time the rendered episodes took (rendering and writing, summed over the processes); on a
    shared machine ``tuples / cpu_seconds`` is the throughput of one otherwise idle core."""
    planning: dict[str, int] = field(default_factory=dict)
    """Planning counts summed over the grasps these shards planned (`trajgen.planning.PLAN_COUNTERS`)."""
    manifests: list[Path] = field(default_factory=list)
    index: Path | None = None
    """index.json, when this call merged."""

    @property
    def tuples_per_s(self) -> float:
        return self.tuples / self.render_seconds if self.render_seconds > 0 else 0.0

    @property
    def tuples_per_cpu_s(self) -> float:
        return self.tuples / self.cpu_seconds if self.cpu_seconds > 0 else 0.0

    @property
    def episodes_per_s(self) -> float:
        return self.rendered / self.render_seconds if self.render_seconds > 0 else 0.0


# --------------------------------------------------------------------------------------------------
# Scenes, targets and slots
# --------------------------------------------------------------------------------------------------


@dataclass
class SceneSource:
    """A scene to render: its files and identity."""

    scene_id: str
    scene_dir: Path
    scene_ply: Path
    grasps_json: Path
    sha256: str
    """Hash of scene.ply and grasps.json (what the episodes depend on)."""


def _sha256_files(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def resolve_scenes(paths: tuple[str, ...] | list[str]) -> list[SceneSource]:
    """Finds scene.ply and grasps.json for each path; ids are the run folders' names (made unique).

    Raises:
        FileNotFoundError: Naming the path, when it holds no scene.ply or no grasps.json.
    """
    sources: list[SceneSource] = []
    seen: dict[str, int] = {}
    for raw in paths:
        p = Path(raw)
        if p.is_file() and p.suffix == ".ply":
            scene_dir = p.parent
            scene_ply = p
        elif (p / "scene.ply").is_file():
            scene_dir, scene_ply = p, p / "scene.ply"
        elif (p / "scene" / "scene.ply").is_file():
            scene_dir, scene_ply = p / "scene", p / "scene" / "scene.ply"
        else:
            raise FileNotFoundError(
                f"{p}: no scene.ply; expected a run folder with scene/scene.ply or a scene folder "
                "(run `splatsim recon` first)"
            )
        check_scene_folder(scene_dir, files=(scene_ply.name, "hand.ply", "object.ply"))
        grasps = next(
            (d / "grasps.json" for d in (scene_dir, scene_dir.parent) if (d / "grasps.json").is_file()), None
        )
        if grasps is None:
            raise FileNotFoundError(
                f"{scene_dir}: no grasps.json beside the scene or in {scene_dir.parent}; "
                "compute grasps first (`splatsim grasps`)"
            )
        name = grasps.parent.name if grasps.parent != scene_dir else scene_dir.name
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "scene"
        if name in seen:
            seen[name] += 1
            name = f"{name}-{seen[name]}"
        else:
            seen[name] = 1
        sources.append(SceneSource(name, scene_dir, scene_ply, grasps, _sha256_files(scene_ply, grasps)))
    return sources


@dataclass(frozen=True)
class Slot:
    """One unit of work: start ``start`` of grasp target ``rank`` of scene ``scene`` (global index ``index``)."""

    index: int
    scene: int
    rank: int
    start: int

    @property
    def key(self) -> str:
        return f"g{self.rank:03d}_s{self.start:03d}"


def all_slots(targets_per_scene: list[int], k: int) -> list[Slot]:
    """Every slot in order: scenes, then grasp ranks, then start indices."""
    slots, g = [], 0
    for s, n in enumerate(targets_per_scene):
        for r in range(n):
            for i in range(k):
                slots.append(Slot(g, s, r, i))
                g += 1
    return slots


def shard_slots(slots: list[Slot], num_shards: int, shard_index: int) -> list[Slot]:
    """The slots of one shard: global index ``g`` with ``g % num_shards == shard_index``."""
    return [s for s in slots if s.index % num_shards == shard_index]


class _ScenePlanner:
    """A scene's grasp targets, hand/object points and plans (cached per grasp rank)."""

    def __init__(self, source: SceneSource, cfg: DemosConfig) -> None:
        self.source, self.cfg = source, cfg
        from splatsim.ply import read_ply
        from splatsim.scene import LABEL_HAND, LABEL_OBJECT

        d = source.scene_dir
        scene = read_ply(source.scene_ply)
        if (d / "hand.ply").is_file() and (d / "object.ply").is_file():
            grasps = read_grasps(source.grasps_json, scene_dir=d)
            hand, obj = load_points(d / "hand.ply"), load_points(d / "object.ply")
        else:  # the same points as the hand.ply/object.ply an export writes, so the same fingerprint
            hand = scene.select_label(LABEL_HAND).means.double().numpy()
            obj = scene.select_label(LABEL_OBJECT).means.double().numpy()
            grasps = read_grasps(source.grasps_json, fingerprint=scene_fingerprint(obj, hand))
        background = background_points(scene) if cfg.plan.d_background > 0 else None
        self.hand_points, self.object_points, self.background_points = hand, obj, background
        targets = grasps.targets if cfg.top_k is None else grasps.targets[: cfg.top_k]
        self.clearance = PointClearance(hand, obj, background)
        self.grasp_ids = [int(t) for t in targets]
        self.replaced: dict[int, dict[str, Any]] = {}  # rank -> the target it replaced and why
        if cfg.backfill:
            self._backfill(grasps)
        self.grasp_poses = [grasps.poses[t] for t in self.grasp_ids]
        self._plans: dict[int, GraspPlan] = {}

    def _problem(self, pose: np.ndarray) -> str | None:
        return grasp_problem(torch.from_numpy(np.asarray(pose, np.float64)), self.clearance, self.cfg.plan)

    def _backfill(self, grasps: Any) -> None:
        """Replaces each target whose pre-grasp pose is unusable by the next usable kept grasp (best first)."""
        pool = [int(g) for g in grasps.kept if int(g) not in self.grasp_ids]
        for rank, gid in enumerate(self.grasp_ids):
            reason = self._problem(grasps.poses[gid])
            if reason is None:
                continue
            while pool:
                cand = pool.pop(0)
                if self._problem(grasps.poses[cand]) is None:
                    self.grasp_ids[rank] = cand
                    self.replaced[rank] = {"grasp_id": gid, "reason": reason}
                    break

    def plan(self, rank: int) -> GraspPlan:
        if rank not in self._plans:
            rng = plan_seed(self.cfg.seed, self.source.scene_id, rank, self.grasp_ids[rank])
            self._plans[rank] = plan_grasp(
                torch.from_numpy(self.grasp_poses[rank]), self.clearance, self.cfg.plan, rng
            )
        return self._plans[rank]


# --------------------------------------------------------------------------------------------------
# Run configuration (what a resume must match)
# --------------------------------------------------------------------------------------------------


def _result_config(cfg: DemosConfig, sources: list[SceneSource]) -> dict[str, Any]:
    d = {k: asdict(cfg)[k] if k in ("plan", "camera") else getattr(cfg, k) for k in _RESULT_FIELDS}
    if not d["camera"].get("depth"):  # runs without depth keep the hashes they had before the field existed
        d["camera"].pop("depth", None)
    d["scenes"] = [{"scene_id": s.scene_id, "sha256": s.sha256} for s in sources]
    d = json.loads(json.dumps(d))
    d["config_hash"] = hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
    return d


def _scene_hash(run_cfg: dict[str, Any], source: SceneSource) -> str:
    d = {k: run_cfg[k] for k in _RESULT_FIELDS}
    d["scene"] = {"scene_id": source.scene_id, "sha256": source.sha256}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _check_or_write_config(out: Path, cfg: DemosConfig, sources: list[SceneSource]) -> dict[str, Any]:
    run_cfg = _result_config(cfg, sources)
    run_cfg["scene_paths"] = {s.scene_id: str(s.scene_dir.resolve()) for s in sources}
    path = out / CONFIG_JSON
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old.get("config_hash") != run_cfg["config_hash"]:
            diff = [k for k in (*_RESULT_FIELDS, "scenes") if old.get(k) != run_cfg.get(k)]
            raise ValueError(
                f"{path}: this output folder holds demonstrations made with a different configuration or "
                f"scenes (differs in {diff}); use a new DemosConfig.out, or delete the folder to start over"
            )
        return old
    _write_json(path, run_cfg)
    return run_cfg


def _env_args(cfg: DemosConfig, source: SceneSource, run_cfg: dict[str, Any]) -> dict[str, Any]:
    intr = policy_intrinsics(cfg.camera)
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "scene_id": source.scene_id,
        "scene_sha256": source.sha256,
        "config_hash": run_cfg["config_hash"],
        "intrinsics": {
            "fx": intr.fx,
            "fy": intr.fy,
            "cx": intr.cx,
            "cy": intr.cy,
            "width": intr.width,
            "height": intr.height,
            "K": intr.K().tolist(),
        },  # fmt: skip
        "gripper_T_camera": gripper_T_camera(cfg.camera).tolist(),
        "labels": {"0": "background", "1": "object", "2": "hand"},
        "action": "inv(T_cur) @ T_next of the gripper, as extrinsic xyz Euler angles (rad) + translation (m)",
        "plan": asdict(cfg.plan),
        "camera": asdict(cfg.camera),
        "seed": cfg.seed,
    }


# --------------------------------------------------------------------------------------------------
# Rendering tasks (run in this process or in worker processes)
# --------------------------------------------------------------------------------------------------


@dataclass
class _Task:
    slot: Slot
    path: Path
    scene_ply: Path
    plan: Any  # (trajectory, clearance, grasp pose, pregrasp pose)
    attrs: dict[str, Any]
    env_args: dict[str, Any]


class _RenderContext:
    """A process's renderers (one per scene, built on first use)."""

    def __init__(self, cfg: DemosConfig) -> None:
        self.cfg = cfg
        self._renderers: dict[Path, HandEyeRenderer] = {}

    def renderer(self, scene_ply: Path) -> HandEyeRenderer:
        if scene_ply not in self._renderers:
            from splatsim.ply import read_ply

            self._renderers.clear()  # one scene at a time: tasks come sorted by scene
            self._renderers[scene_ply] = HandEyeRenderer(
                read_ply(scene_ply),
                self.cfg.camera,
                backend=self.cfg.backend,
                batch_size=self.cfg.batch_size,
                mask_min_prob=self.cfg.mask_min_prob,
            )
        return self._renderers[scene_ply]

    def run(self, task: _Task) -> dict[str, Any]:
        t0, c0 = time.perf_counter(), time.process_time()
        traj, clearance, grasp_pose, pre = task.plan
        episode = build_episode(traj, clearance, grasp_pose, pre, self.renderer(task.scene_ply), task.attrs)
        write_episode(
            task.path, episode, env_args=task.env_args, compression_level=self.cfg.compression_level
        )
        return {
            "slot": task.slot,
            "num_samples": episode.num_samples,
            "seconds": time.perf_counter() - t0,
            "cpu_seconds": time.process_time() - c0,
        }


_WORKER: _RenderContext | None = None


def _get_threads() -> tuple[int, int | None]:
    try:
        import numba

        return torch.get_num_threads(), numba.get_num_threads()
    except ImportError:
        return torch.get_num_threads(), None


def _set_threads(n: int, n_numba: int | None = None) -> None:
    torch.set_num_threads(n)
    try:
        import numba

        numba.set_num_threads(min(n_numba or n, numba.config.NUMBA_NUM_THREADS))
    except (ImportError, ValueError):
        pass


def _init_worker(cfg: DemosConfig, threads: int) -> None:
    global _WORKER
    _set_threads(threads)
    _WORKER = _RenderContext(cfg)


def _run_task(task: _Task) -> dict[str, Any]:
    assert _WORKER is not None
    return _WORKER.run(task)


# --------------------------------------------------------------------------------------------------
# Progress
# --------------------------------------------------------------------------------------------------


class _Progress:
    """A rich progress bar with episodes/s, tuples/s and ETA (or nothing)."""

    def __init__(self, enabled: bool, total: int, description: str) -> None:
        self.tuples, self.t0 = 0, time.perf_counter()
        self._bar = None
        if enabled and total > 0:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(description, total=total, rate="")

    def advance(self, tuples: int) -> None:
        self.tuples += tuples
        if self._bar is not None:
            dt = max(time.perf_counter() - self.t0, 1e-9)
            done = self._bar.tasks[0].completed + 1
            rate = f"{done / dt:.2f} episodes/s, {self.tuples / dt:.1f} tuples/s"
            self._bar.update(self._task, advance=1, rate=rate)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


# --------------------------------------------------------------------------------------------------
# One shard
# --------------------------------------------------------------------------------------------------


def _output_dir(cfg: DemosConfig, sources: list[SceneSource] | None = None) -> Path:
    if cfg.out:
        return Path(cfg.out)
    if sources is not None and len(sources) == 1:
        return sources[0].grasps_json.parent / "demos"
    raise ValueError("DemosConfig.out is required with several scenes (or with merge_only)")


def _shard_name(index: int, num: int) -> str:
    return f"shard-{index:05d}-of-{num:05d}.json"


def _remove_temporaries(path: Path) -> int:
    n = 0
    for tmp in path.parent.glob(f"{path.name}.tmp-*"):
        tmp.unlink(missing_ok=True)
        n += 1
    return n


def _run_shard(
    cfg: DemosConfig,
    on_episode: Callable[[dict[str, Any]], None] | None,
    log: Callable[[str], None],
) -> DemosResult:
    t_start = time.perf_counter()
    sources = resolve_scenes(cfg.scenes)
    out = _output_dir(cfg, sources)
    # Read and check every scene and grasps file before writing anything: a bad input must not leave an
    # output folder whose config.json records it (a rerun with the fixed input would then be refused).
    planners = [_ScenePlanner(s, cfg) for s in sources]
    run_cfg = _check_or_write_config(out, cfg, sources)
    slots = all_slots([len(p.grasp_ids) for p in planners], cfg.plan.k)
    mine = shard_slots(slots, cfg.num_shards, cfg.shard_index)
    result = DemosResult(out, [cfg.shard_index], cfg.num_shards, slots=len(mine))
    planning = {}  # (scene, rank) -> counts
    records: dict[int, dict[str, Any]] = {}
    tasks: list[_Task] = []
    scene_hashes = [_scene_hash(run_cfg, s) for s in sources]
    env_args = [_env_args(cfg, s, run_cfg) for s in sources]
    for slot in mine:
        src, planner = sources[slot.scene], planners[slot.scene]
        plan = planner.plan(slot.rank)
        planning[(slot.scene, slot.rank)] = (plan.counts, plan.skipped)
        path = out / EPISODES_DIR / src.scene_id / f"{slot.key}.hdf5"
        rel = path.relative_to(out).as_posix()
        rec = {"index": slot.index, "scene_id": src.scene_id, "grasp_rank": slot.rank,
               "grasp_id": planner.grasp_ids[slot.rank], "start_id": slot.start}  # fmt: skip
        records[slot.index] = rec
        if slot.start >= len(plan.trajectories):
            rec["status"] = "no_trajectory"
            result.no_trajectory += 1
            continue
        rec.update(status="ok", file=rel)
        attrs = {
            "scene_id": src.scene_id,
            "object": src.scene_id,
            "grasp_id": planner.grasp_ids[slot.rank],
            "grasp_rank": slot.rank,
            "start_id": slot.start,
            "episode_key": f"{src.scene_id}/{slot.key}",
            "plan_hash": scene_hashes[slot.scene],
            "config_hash": run_cfg["config_hash"],
        }
        expected = {k: attrs[k] for k in ("scene_id", "grasp_rank", "start_id", "plan_hash")}
        leftovers = _remove_temporaries(path)
        if path.exists():
            errors = validate_episode(path, expected) if cfg.resume else ["resume disabled"]
            if not errors:
                rec["num_samples"] = _num_samples(path)
                result.resumed += 1
                continue
            path.unlink()
            result.redone += 1
            log(f"re-rendering {rel}: {errors[0]}")
        elif leftovers:
            result.redone += 1
        traj = plan.trajectories[slot.start]
        payload = (traj, plan.clearances[slot.start], plan.grasp_pose, plan.pregrasp_pose)
        tasks.append(_Task(slot, path, src.scene_ply, payload, attrs, env_args[slot.scene]))

    if result.resumed:
        log(
            f"shard {cfg.shard_index}/{cfg.num_shards}: {result.resumed} of {len(mine)} episodes already done"
        )
    t_loop = time.perf_counter()
    bar = _Progress(cfg.progress, len(tasks), f"demos shard {cfg.shard_index + 1}/{cfg.num_shards}")
    try:
        for res in _execute(cfg, tasks):
            rec = records[res["slot"].index]
            rec["num_samples"] = res["num_samples"]
            result.rendered += 1
            result.tuples += res["num_samples"]
            result.cpu_seconds += res["cpu_seconds"]
            bar.advance(res["num_samples"])
            if on_episode is not None:
                on_episode({**rec, "out_dir": out})
    finally:
        bar.close()
        result.render_seconds = time.perf_counter() - t_loop

    # Self-validation of the finished shard.
    errors = []
    for rec in records.values():
        if rec["status"] == "ok":
            errs = validate_episode(out / rec["file"], image_size=(cfg.camera.width, cfg.camera.height))
            errors += errs
            rec["valid"] = not errs
    result.episodes = sum(1 for r in records.values() if r.get("valid"))
    totals = dict.fromkeys(PLAN_COUNTERS, 0)
    grasps = []
    for (s, r), (counts, skipped) in sorted(planning.items()):
        for key, v in counts.items():
            totals[key] += v
        grasps.append({"scene_id": sources[s].scene_id, "grasp_rank": r, "grasp_id": planners[s].grasp_ids[r],
                       "counts": counts, "skipped": skipped,
                       "replaces": planners[s].replaced.get(r)})  # fmt: skip
    result.planning = totals
    manifest = {
        "format": FORMAT_NAME,
        "config_hash": run_cfg["config_hash"],
        "shard_index": cfg.shard_index,
        "num_shards": cfg.num_shards,
        "valid": not errors,
        "errors": errors,
        "slots": [records[s.index] for s in mine],
        "grasps": grasps,
        "counts": {
            "slots": len(mine),
            "episodes": result.episodes,
            "no_trajectory": result.no_trajectory,
            "tuples": int(sum(r.get("num_samples", 0) for r in records.values() if r.get("valid"))),
        },  # fmt: skip
    }
    manifest_path = out / SHARDS_DIR / _shard_name(cfg.shard_index, cfg.num_shards)
    _write_json(manifest_path, manifest)
    result.manifests = [manifest_path]
    if errors:
        raise ValueError(
            f"shard {cfg.shard_index} of {cfg.num_shards} failed validation ({len(errors)} problems, first: "
            f"{errors[0]}); rerun the same command to redo the bad episodes"
        )
    if cfg.merge and _complete_shards(out, run_cfg["config_hash"]) is not None:
        result.index = merge_demos(out, pictures=cfg.pictures, log=log)
    result.seconds = time.perf_counter() - t_start
    return result


def _num_samples(path: Path) -> int:
    with h5py.File(path, "r") as f:
        return int(f[DEMO_GROUP].attrs["num_samples"])


def _execute(cfg: DemosConfig, tasks: list[_Task]):
    """Yields each task's result, in this process (1 worker) or from a pool of spawned processes."""
    if not tasks:
        return
    workers = _num_workers(cfg)
    threads = cfg.threads_per_worker or max(1, (os.cpu_count() or 1) // workers)
    if workers == 1:
        before = _get_threads()
        _set_threads(threads)
        try:
            ctx = _RenderContext(cfg)
            for task in tasks:
                yield ctx.run(task)
        finally:
            _set_threads(*before)
        return
    mp = multiprocessing.get_context("spawn")  # no fork: torch and numba thread pools are not fork-safe
    with mp.Pool(min(workers, len(tasks)), initializer=_init_worker, initargs=(cfg, threads)) as pool:
        yield from pool.imap_unordered(_run_task, tasks, chunksize=1)


def _num_workers(cfg: DemosConfig) -> int:
    if cfg.workers > 0:
        return cfg.workers
    from splatsim.render import resolve_backend

    return 1 if resolve_backend(cfg.backend) == "gsplat" else max(1, os.cpu_count() or 1)


# --------------------------------------------------------------------------------------------------
# Merge
# --------------------------------------------------------------------------------------------------


def _complete_shards(out: Path, config_hash: str) -> list[dict[str, Any]] | None:
    """The manifests of a complete, valid set of shards for this configuration, else None."""
    by_n: dict[int, dict[int, dict[str, Any]]] = {}
    for p in sorted((out / SHARDS_DIR).glob("shard-*-of-*.json")):
        try:
            m = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if m.get("config_hash") == config_hash and m.get("valid"):
            by_n.setdefault(int(m["num_shards"]), {})[int(m["shard_index"])] = m
    complete = [n for n, ms in by_n.items() if set(ms) == set(range(n))]
    if not complete:
        return None
    n = min(complete)
    return [by_n[n][i] for i in range(n)]


def merge_demos(
    out: Path | str,
    *,
    pictures: bool = True,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Writes ``index.json`` and ``demos.hdf5`` (external links) from a complete set of shards; returns
    the index path. Also the pictures, when ``pictures``.

    Raises:
        ValueError: When the folder holds no configuration, or some shards are missing or invalid.
    """
    out = Path(out)
    log = log or (lambda _msg: None)
    cfg_path = out / CONFIG_JSON
    if not cfg_path.is_file():
        raise ValueError(f"{out}: no {CONFIG_JSON}; is this a demos output folder (`splatsim demos`)?")
    run_cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    manifests = _complete_shards(out, run_cfg["config_hash"])
    if manifests is None:
        found = sorted(p.name for p in (out / SHARDS_DIR).glob("shard-*.json"))
        raise ValueError(
            f"{out}: no complete set of valid shards for config {run_cfg['config_hash']} (found {found}); "
            "run the missing shards (same command with each --shard-index) before merging"
        )
    slots = sorted((s for m in manifests for s in m["slots"]), key=lambda s: s["index"])
    episodes, demo = [], 0
    for s in slots:
        if s["status"] != "ok":
            continue
        if not (out / s["file"]).is_file():
            raise ValueError(f"{out / s['file']}: listed by a shard manifest but missing; rerun that shard")
        episodes.append({"demo": f"demo_{demo}", **{k: s[k] for k in ("file", "scene_id", "grasp_rank", "grasp_id",
                        "start_id", "num_samples")}})  # fmt: skip
        demo += 1
    grasps = sorted(
        (g for m in manifests for g in m["grasps"]), key=lambda g: (g["scene_id"], g["grasp_rank"])
    )
    unique = {(g["scene_id"], g["grasp_rank"]): g for g in grasps}
    totals = dict.fromkeys(PLAN_COUNTERS, 0)
    for g in unique.values():
        for key, v in g["counts"].items():
            totals[key] = totals.get(key, 0) + v
    index = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config_hash": run_cfg["config_hash"],
        "num_episodes": len(episodes),
        "num_tuples": int(sum(e["num_samples"] for e in episodes)),
        "merged_file": MERGED_HDF5,
        "num_shards": len(manifests),
        "scenes": [
            {
                "scene_id": s["scene_id"],
                "sha256": s["sha256"],
                "path": run_cfg.get("scene_paths", {}).get(s["scene_id"]),
            }
            for s in run_cfg["scenes"]
        ],
        "planning": {"totals": totals, "grasps": list(unique.values())},
        "up": run_cfg["plan"]["up"],
        "no_trajectory_slots": sum(1 for s in slots if s["status"] == "no_trajectory"),
        "episodes": episodes,
    }
    _write_merged_hdf5(out, episodes, run_cfg)
    index_path = out / INDEX_JSON
    _write_json(index_path, index)
    log(f"merged {len(episodes)} episodes ({index['num_tuples']} tuples) -> {index_path}")
    if pictures and episodes:
        _write_pictures(out, index, log)
    return index_path


def _write_merged_hdf5(out: Path, episodes: list[dict[str, Any]], run_cfg: dict[str, Any]) -> Path:
    path = out / MERGED_HDF5
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with h5py.File(tmp, "w", track_order=True) as f:
        f.attrs["format"] = FORMAT_NAME
        f.attrs["format_version"] = FORMAT_VERSION
        data = f.create_group("data", track_order=True)
        data.attrs["total"] = int(sum(e["num_samples"] for e in episodes))
        data.attrs["num_demos"] = len(episodes)
        env: dict[str, Any] = {}
        if episodes:
            with h5py.File(out / episodes[0]["file"], "r") as first:
                env = json.loads(first["data"].attrs["env_args"])
        for key in ("scene_id", "scene_sha256"):
            env.pop(key, None)
        env.update({k: run_cfg[k] for k in ("config_hash", "scenes")})
        data.attrs["env_args"] = json.dumps(env, sort_keys=True)
        for e in episodes:
            data[e["demo"]] = h5py.ExternalLink(e["file"], "/" + DEMO_GROUP)
    os.replace(tmp, path)
    return path


def _write_pictures(out: Path, index: dict[str, Any], log: Callable[[str], None]) -> None:
    from trajgen.plots import plot_trajectories, write_episode_strip, write_episode_video

    pics = out / PICTURES_DIR
    by_scene: dict[str, list[dict[str, Any]]] = {}
    for e in index["episodes"]:
        by_scene.setdefault(e["scene_id"], []).append(e)
    paths = {s["scene_id"]: s.get("path") for s in index["scenes"]}
    for scene_id, eps in by_scene.items():
        rank = eps[0]["grasp_rank"]
        episodes = [read_episode(out / e["file"]) for e in eps if e["grasp_rank"] == rank]
        scene_dir = Path(paths[scene_id]) if paths.get(scene_id) else None
        hand = obj = np.zeros((0, 3))
        if scene_dir is not None and (scene_dir / "hand.ply").is_file():
            hand, obj = load_points(scene_dir / "hand.ply"), load_points(scene_dir / "object.ply")
        first = episodes[0]
        plot_trajectories(
            pics / f"{scene_id}_trajectories.png",
            hand,
            obj,
            first.grasp_pose,
            [e.poses for e in episodes],
            pregrasp_pose=first.pregrasp_pose,
            up=index.get("up", (0.0, 0.0, 1.0)),
            title=f"{scene_id}: {len(episodes)} trajectories to grasp rank {rank} "
            "(dark red = start, yellow = pre-grasp)",
        )
        write_episode_video(pics / f"{scene_id}_episode.mp4", first.rgb, first.mask)
        write_episode_strip(pics / f"{scene_id}_episode.png", first.rgb, first.mask)
    log(f"pictures -> {pics}")


# --------------------------------------------------------------------------------------------------
# Ray
# --------------------------------------------------------------------------------------------------


def _ray_shard(cfg: DemosConfig) -> DemosResult:
    return _run_shard(cfg, None, lambda _msg: None)


def _run_ray(cfg: DemosConfig, log: Callable[[str], None]) -> DemosResult:
    try:
        import ray
    except ImportError as exc:
        raise ValueError(
            "DemosConfig.ray: Ray is not installed; `pip install 'splatsim[ray]'` (ray>=2.9), or run the "
            "shards with --shard-index instead"
        ) from exc
    t0 = time.perf_counter()
    sources = resolve_scenes(cfg.scenes)
    out = _output_dir(cfg, sources)
    for s in sources:  # read and check every input before config.json is written (as `_run_shard` does)
        _ScenePlanner(s, cfg)
    _check_or_write_config(out, cfg, sources)
    started = False
    if not ray.is_initialized():
        ray.init(address=cfg.ray_address, include_dashboard=False, log_to_driver=False)
        started = True
    try:
        task = ray.remote(num_cpus=1)(_ray_shard)
        shard_cfgs = [
            replace(cfg, out=str(out), ray=False, shard_index=i, workers=1, progress=False, merge=False)
            for i in range(cfg.num_shards)
        ]
        pending = [task.remote(c) for c in shard_cfgs]
        bar = _Progress(cfg.progress, cfg.num_shards, "demos (Ray shards)")
        results: list[DemosResult] = []
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                res = ray.get(done[0])
                results.append(res)
                bar.advance(res.tuples)
        finally:
            bar.close()
    finally:
        if started:
            ray.shutdown()
    total = DemosResult(out, sorted(i for r in results for i in r.shards), cfg.num_shards)
    for r in results:
        for name in (
            "slots",
            "episodes",
            "rendered",
            "resumed",
            "redone",
            "no_trajectory",
            "tuples",
            "cpu_seconds",
        ):
            setattr(total, name, getattr(total, name) + getattr(r, name))
        total.render_seconds = max(total.render_seconds, r.render_seconds)
        total.manifests += r.manifests
        for k, v in r.planning.items():
            total.planning[k] = total.planning.get(k, 0) + v
    if cfg.merge:
        total.index = merge_demos(out, pictures=cfg.pictures, log=log)
    total.seconds = time.perf_counter() - t0
    total.render_seconds = total.seconds
    return total


# --------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------


def run_demos(
    cfg: DemosConfig,
    *,
    on_episode: Callable[[dict[str, Any]], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> DemosResult:
    """Renders this shard's episodes (or, with ``cfg.ray``, every shard as Ray tasks), then merges when
    every shard is finished.

    Args:
        cfg: The stage configuration.
        on_episode: Called in this process after each episode is committed, with its slot record;
            raising from it stops the run (finished episodes stay; a rerun resumes).
        log: Where messages go (default: a rich console on stderr when ``cfg.progress``).

    With ``cfg.workers != 1`` the workers are spawned processes, which re-import the calling script:
    call this from under ``if __name__ == "__main__":`` (the ``splatsim`` command does).

    Raises:
        FileNotFoundError: For a scene without scene.ply or grasps.json.
        ValueError: For bad settings, an output folder made with another configuration, or a shard that
            fails validation.
    """
    cfg.validate()
    if log is None:
        from rich.console import Console

        console = Console(stderr=True)
        log = console.print if cfg.progress else (lambda _msg: None)
    if cfg.merge_only:
        t0 = time.perf_counter()
        out = _output_dir(cfg, resolve_scenes(cfg.scenes) if cfg.scenes else None)
        index = merge_demos(out, pictures=cfg.pictures, log=log)
        data = json.loads(index.read_text(encoding="utf-8"))
        res = DemosResult(out, [], data["num_shards"], episodes=data["num_episodes"], index=index)
        res.seconds = time.perf_counter() - t0
        return res
    if cfg.ray:
        return _run_ray(cfg, log)
    return _run_shard(cfg, on_episode, log)
