"""Demonstrations for the policy: episodes in memory, the seeded episode-level split, the input tensor.

Episodes are read from trajgen's robomimic-style HDF5 shards (``data/demo_N/obs/{rgb,mask}``,
``actions`` [T, 6], ``cls`` [T], attributes; see `trajgen.dataset`) into uint8 arrays kept in memory:
a CPU training run touches every frame every epoch, and 20k frames at 128x128 take ~330 MB. An
episode's recovery samples (``data/demo_N/recovery``, `trajgen.recovery`) are appended to its frames,
so the episode-level split keeps them on their episode's side; ``attrs["recovery_frames"]`` counts them.

`make_policy_input` is the one place that turns an image and a label mask into the 5-channel network
input (`policy.model.INPUT_CHANNELS`); training, the splat evaluation, the ONNX parity check and the
robot loop all call it, so they cannot drift apart.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from splatsim.scene import LABEL_HAND, LABEL_OBJECT

__all__ = [
    "DemoSet",
    "EpisodeData",
    "GEOMETRY_TARGETS",
    "assemble_input",
    "column_stats",
    "depth_channel",
    "depth_metres",
    "find_shards",
    "geometry_targets",
    "load_demos",
    "make_policy_input",
    "resize_depth",
    "resize_frames",
    "split_episodes",
    "stack_depth",
    "stack_frames",
    "stack_geometry",
]

SHARD_SUFFIXES = (".hdf5", ".h5")
GEOMETRY_TARGETS = (
    "object_distance",
    "pregrasp_rx",
    "pregrasp_ry",
    "pregrasp_rz",
    "pregrasp_tx",
    "pregrasp_ty",
    "pregrasp_tz",
)
"""Per-frame geometry the demonstrations know and the image only shows (`geometry_targets`): the distance
from the gripper to the nearest object point (metres; what the 0.35-0.45 m band of a success measures)
and the pre-grasp pose relative to the frame's pose, as an action (Euler xyz, translation: the step
that would reach it at once). An auxiliary training target (`TrainConfig.lambda_geometry`), never an input."""


@dataclass
class EpisodeData:
    """One demonstration in memory."""

    rgb: np.ndarray  # [T, H, W, 3] uint8, background included
    mask: np.ndarray  # [T, H, W] uint8 labels: 0 background, 1 object, 2 hand
    actions: np.ndarray  # [T, 6] float32 (euler xyz, translation)
    cls: np.ndarray  # [T] float32, 1 at the pre-grasp pose
    key: str
    """Unique id: ``<shard file>:<demo group>``."""
    scene_id: str = ""
    """The scene (object) the episode was rendered in."""
    attrs: dict[str, Any] = field(default_factory=dict)
    geometry: np.ndarray | None = None
    """[T, 7] float32 `GEOMETRY_TARGETS` per frame (NaN rows: unknown); None when the source records no
    poses."""
    depth: np.ndarray | None = None
    """[T, H, W] uint16 millimetres (0: no depth) where the episode records depth (``obs/depth``)."""

    @property
    def num_frames(self) -> int:
        return int(self.actions.shape[0])


@dataclass
class DemoSet:
    """Episodes plus the camera they were rendered with (from the shards' attributes)."""

    episodes: list[EpisodeData]
    camera: dict[str, Any]
    """``fx fy cx cy width height`` of the stored images, ``gripper_T_camera`` (4x4 list),
    ``background`` (RGB in [0, 1]) and ``mask_min_prob`` where the shards record them."""
    files: list[str] = field(default_factory=list)
    plan: dict[str, Any] | None = None
    """The start-pose and trajectory settings (`trajgen.planning.PlanConfig`) the shards were planned with."""

    @property
    def num_frames(self) -> int:
        return sum(e.num_frames for e in self.episodes)

    @property
    def scene_ids(self) -> list[str]:
        return sorted({e.scene_id for e in self.episodes})


def make_policy_input(
    rgb: Tensor | np.ndarray,  # [..., H, W, 3] uint8 (or float in [0, 1])
    mask: Tensor | np.ndarray,  # [..., H, W] uint8 labels (0 background, 1 object, 2 hand)
    depth: Tensor | np.ndarray | None = None,  # [..., H, W] uint16 millimetres or float metres
) -> Tensor:  # [..., 5, H, W] (or [..., 6, H, W] with depth) float32 in [0, 1]
    """The network input: background-removed RGB, hand mask, object mask (`policy.model.INPUT_CHANNELS`),
    and with ``depth`` a sixth channel, the depth with the background removed (`depth_channel`).

    ``depth`` is aligned to ``rgb`` (a RealSense's depth aligned to colour, the splat's expected depth):
    uint16 arrays are millimetres (the capture format's and the shards' unit), float arrays metres; 0 or
    non-finite means no depth.
    """
    rgb = torch.as_tensor(rgb)
    mask = torch.as_tensor(mask)
    if rgb.shape[-1] != 3 or rgb.shape[:-1] != mask.shape:
        raise ValueError(
            f"make_policy_input: rgb must be [..., H, W, 3] and mask [..., H, W] of the same size, got "
            f"{list(rgb.shape)} and {list(mask.shape)}"
        )
    rgb = rgb.float() / 255.0 if rgb.dtype == torch.uint8 else rgb.float()
    hand = (mask == LABEL_HAND).float().unsqueeze(-3)
    obj = (mask == LABEL_OBJECT).float().unsqueeze(-3)
    d = None
    if depth is not None:
        d = depth_metres(depth)
        if d.shape != mask.shape:
            raise ValueError(
                f"make_policy_input: depth must be [..., H, W] like the mask {list(mask.shape)}, got {list(d.shape)}"
            )
        d = depth_channel(d).unsqueeze(-3)
    return assemble_input(rgb.movedim(-1, -3), torch.cat([hand, obj], dim=-3), d)


DEPTH_RANGE_M = 2.0
"""The depth channel is ``clamp(depth, 0, DEPTH_RANGE_M) / DEPTH_RANGE_M``: metres to [0, 1] (a hand-eye
camera sees the object 0.3-1 m away; a D435's depth is good to a few metres)."""


def depth_metres(depth: Tensor | np.ndarray) -> Tensor:
    """Depth as float32 metres: uint16 input is millimetres (the shards' and captures' unit), float input
    metres; non-finite and negative values become 0 (no depth)."""
    if isinstance(depth, np.ndarray) and depth.dtype == np.uint16:
        d = torch.from_numpy(depth.astype(np.float32)) * 1e-3
    else:
        d = torch.as_tensor(depth)
        d = d.float() * 1e-3 if d.dtype == torch.uint16 else d.float()
    return torch.where(torch.isfinite(d) & (d > 0), d, torch.zeros_like(d))


def depth_channel(depth_m: Tensor) -> Tensor:  # [..., H, W] metres -> [..., H, W] in [0, 1]
    """Metres to the network's depth channel (`DEPTH_RANGE_M`)."""
    return depth_m.clamp(0.0, DEPTH_RANGE_M) / DEPTH_RANGE_M


def assemble_input(
    rgb: Tensor,  # [..., 3, H, W] float in [0, 1]
    masks: Tensor,  # [..., 2, H, W] float {0, 1}: hand, object
    depth: Tensor | None = None,  # [..., 1, H, W] depth channel in [0, 1] (`depth_channel`)
) -> Tensor:  # [..., 5, H, W] (6 with depth)
    """Removes the background (RGB, and depth, kept only where hand or object) and stacks the masks."""
    keep = masks.amax(dim=-3, keepdim=True)
    parts = [rgb * keep, masks] if depth is None else [rgb * keep, masks, depth * keep]
    return torch.cat(parts, dim=-3).contiguous()


def resize_frames(
    rgb: np.ndarray,  # [T, H, W, 3] uint8
    mask: np.ndarray,  # [T, H, W] uint8
    size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Resizes to ``size x size`` (area-averaged RGB, nearest labels); a no-op at the same size.

    Non-square images are centre-cropped to a square first (what the hand-eye camera's ``aspect`` crop
    does), so the intrinsics scale by ``size / side`` about the crop.
    """
    T, H, W = mask.shape
    if H == W == size:
        return rgb, mask
    side = min(H, W)
    y0, x0 = (H - side) // 2, (W - side) // 2
    rgb = rgb[:, y0 : y0 + side, x0 : x0 + side]
    mask = mask[:, y0 : y0 + side, x0 : x0 + side]
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(0, 3, 1, 2).float()
    mode = "area" if size < side else "bilinear"
    x = F.interpolate(x, size=(size, size), mode=mode)
    m = F.interpolate(
        torch.from_numpy(np.ascontiguousarray(mask))[:, None].float(), size=(size, size), mode="nearest"
    )
    rgb_out = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return rgb_out, m[:, 0].to(torch.uint8).numpy()


def resize_depth(depth: np.ndarray, size: int) -> np.ndarray:  # [T, H, W] uint16 -> [T, size, size]
    """Depth resized like `resize_frames` resizes the masks (centred square crop, nearest neighbour: no
    depth is invented between the object and what lies behind it); a no-op at the same size."""
    T, H, W = depth.shape
    if H == W == size:
        return depth
    side = min(H, W)
    y0, x0 = (H - side) // 2, (W - side) // 2
    d = torch.from_numpy(np.ascontiguousarray(depth[:, y0 : y0 + side, x0 : x0 + side]).astype(np.float32))
    d = F.interpolate(d[:, None], size=(size, size), mode="nearest")[:, 0]
    return d.round().to(torch.int32).numpy().astype(np.uint16)


def resized_camera(camera: dict[str, Any], size: int) -> dict[str, Any]:
    """The camera dict after `resize_frames` to ``size`` (centred square crop, then scale)."""
    if not all(k in camera for k in ("fx", "fy", "cx", "cy", "width", "height")):
        return dict(camera)
    W, H = int(camera["width"]), int(camera["height"])
    side = min(W, H)
    x0, y0 = (W - side) // 2, (H - side) // 2
    s = size / side
    out = dict(camera)
    out.update(
        fx=camera["fx"] * s,
        fy=camera["fy"] * s,
        cx=(camera["cx"] - x0) * s,
        cy=(camera["cy"] - y0) * s,
        width=size,
        height=size,
    )
    return out


def find_shards(paths: Iterable[str | Path]) -> list[Path]:
    """HDF5 shards in ``paths`` (files, or folders searched recursively), sorted, without duplicates."""
    found: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_file() and p.suffix in SHARD_SUFFIXES:
            found.append(p)
        elif p.is_dir():
            found.extend(sorted(q for q in p.rglob("*") if q.suffix in SHARD_SUFFIXES and q.is_file()))
        else:
            raise FileNotFoundError(
                f"{p}: no such demonstration shard or folder; expected an .hdf5 file or a demos/ folder "
                "(run `splatsim demos` first)"
            )
    unique = sorted({q.resolve() for q in found})
    if not unique:
        raise ValueError(f"no .hdf5 demonstration shards under {[str(p) for p in paths]}")
    return unique


def _attr(value: Any) -> Any:
    """An HDF5 attribute as a plain Python value (JSON strings decoded)."""
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _camera_from_env_args(env: dict[str, Any]) -> dict[str, Any]:
    """Camera facts from a shard's ``/data`` ``env_args`` (`trajgen.batch`): intrinsics, mount, background."""
    cam: dict[str, Any] = {}
    intr = env.get("intrinsics") or {}
    cam.update({k: intr[k] for k in ("fx", "fy", "cx", "cy", "width", "height") if k in intr})
    if "gripper_T_camera" in env:
        cam["gripper_T_camera"] = env["gripper_T_camera"]
    handeye = env.get("camera") or {}
    if "background" in handeye:
        cam["background"] = list(handeye["background"])
    for k in ("mask_min_prob",):
        if k in env:
            cam[k] = env[k]
    return cam


def _shard_paths(paths: Sequence[str | Path]) -> list[Path]:
    """Episode files: a demos folder's ``index.json`` list, else its ``episodes/**.hdf5``; files as given."""
    from trajgen.dataset import episode_files

    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir() and (p / "index.json").is_file():
            out.extend(episode_files(p))
        elif p.is_dir():
            out.extend(q for q in find_shards([p]) if q.name != "demos.hdf5")
        else:
            out.extend(find_shards([p]))
    unique = sorted({q.resolve() for q in out})
    if not unique:
        raise ValueError(f"no demonstration episodes under {[str(p) for p in paths]} (run `splatsim demos`)")
    return unique


def load_demos(
    paths: Sequence[str | Path],
    image_size: int | None = None,
    *,
    max_episodes: int | None = None,
) -> DemoSet:
    """Reads every episode under ``paths`` into memory, resized to ``image_size``.

    ``paths`` are demos folders (their ``index.json``, else every ``.hdf5`` below them but the merged
    ``demos.hdf5``), episode files, or merged files (``data/demo_N`` links are followed).

    Raises:
        FileNotFoundError: For a path that does not exist.
        ValueError: Naming the file and group, for a shard without the expected datasets or with
            inconsistent lengths or image sizes, and naming the file for a truncated, damaged or
            uncommitted (partially written) one.
    """
    import h5py

    files = _shard_paths(paths)
    episodes: list[EpisodeData] = []
    camera: dict[str, Any] = {}
    plan: dict[str, Any] | None = None
    for path in files:
        try:
            with h5py.File(path, "r") as f:
                if "committed" in f.attrs and not bool(f.attrs["committed"]):
                    raise ValueError(
                        f"{path}: committed = False, a partially written episode (its writer was killed); "
                        "rerun `splatsim demos` with the same arguments: it redoes unfinished episodes"
                    )
                if "data" not in f:
                    raise ValueError(
                        f"{path}: no 'data' group; expected robomimic-style data/demo_N episodes"
                    )
                data = f["data"]
                env = _attr(data.attrs.get("env_args", "{}"))
                env = env if isinstance(env, dict) else {}
                shard_cam = _camera_from_env_args(env)
                if plan is None and isinstance(env.get("plan"), dict):
                    plan = env["plan"]
                names = sorted(data.keys(), key=lambda n: (len(n), n))
                for name in names:
                    g = data[name]
                    where = f"{path}:data/{name}"
                    for ds in ("obs/rgb", "obs/mask", "actions", "cls"):
                        if ds not in g:
                            raise ValueError(f"{where}: missing dataset '{ds}'")
                    rgb = np.asarray(g["obs/rgb"][()], dtype=np.uint8)
                    mask = np.asarray(g["obs/mask"][()], dtype=np.uint8)
                    actions = np.asarray(g["actions"][()], dtype=np.float32)
                    cls = np.asarray(g["cls"][()], dtype=np.float32).reshape(-1)
                    T = actions.shape[0]
                    if (
                        rgb.shape[:1] != (T,)
                        or mask.shape[:1] != (T,)
                        or cls.shape != (T,)
                        or actions.shape != (T, 6)
                    ):
                        raise ValueError(
                            f"{where}: inconsistent lengths: rgb {rgb.shape}, mask {mask.shape}, actions "
                            f"{actions.shape}, cls {cls.shape}; expected T frames and actions [T, 6]"
                        )
                    if rgb.ndim != 4 or rgb.shape[-1] != 3 or mask.shape != rgb.shape[:3]:
                        raise ValueError(
                            f"{where}: rgb {rgb.shape} / mask {mask.shape}; expected [T,H,W,3] / [T,H,W]"
                        )
                    if not np.isfinite(actions).all():
                        raise ValueError(f"{where}: non-finite actions")
                    depth = _read_depth(g, mask.shape, where)
                    attrs = {k: _attr(v) for k, v in g.attrs.items()}
                    pre = np.asarray(g["pregrasp_pose"][()], np.float64) if "pregrasp_pose" in g else None
                    geometry = _read_geometry(g, pre, T, where)
                    if "recovery" in g:
                        r = g["recovery"]
                        for ds in ("obs/rgb", "obs/mask", "actions", "cls"):
                            if ds not in r:
                                raise ValueError(f"{where}/recovery: missing dataset '{ds}'")
                        extra = [
                            np.asarray(r["obs/rgb"][()], np.uint8),
                            np.asarray(r["obs/mask"][()], np.uint8),
                            np.asarray(r["actions"][()], np.float32),
                            np.asarray(r["cls"][()], np.float32).reshape(-1),
                        ]
                        n = extra[2].shape[0]
                        if (
                            extra[0].shape != (n, *rgb.shape[1:])
                            or extra[1].shape != (n, *mask.shape[1:])
                            or extra[2].shape != (n, 6)
                            or extra[3].shape != (n,)
                            or not np.isfinite(extra[2]).all()
                        ):
                            raise ValueError(
                                f"{where}/recovery: rgb {extra[0].shape}, mask {extra[1].shape}, actions "
                                f"{extra[2].shape}, cls {extra[3].shape}; expected N frames like the episode's "
                                "and finite actions [N, 6]"
                            )
                        rgb, mask, actions, cls = _append_recovery((rgb, mask, actions, cls), extra, attrs)
                        rec_depth = _read_depth(r, extra[1].shape, f"{where}/recovery")
                        depth = _append_recovery_depth(depth, rec_depth, where)
                        rec_geometry = _read_geometry(r, pre, n, f"{where}/recovery")
                        geometry = (
                            None
                            if geometry is None or rec_geometry is None
                            else np.concatenate([geometry, rec_geometry])
                        )
                    cam = dict(shard_cam)
                    cam.setdefault("width", int(rgb.shape[2]))
                    cam.setdefault("height", int(rgb.shape[1]))
                    if image_size is not None:
                        rgb, mask = resize_frames(rgb, mask, image_size)
                        depth = None if depth is None else resize_depth(depth, image_size)
                        cam = resized_camera(cam, image_size)
                    if not camera:
                        camera = cam
                    elif (camera.get("width"), camera.get("height")) != (cam.get("width"), cam.get("height")):
                        raise ValueError(
                            f"{where}: images are {cam.get('width')}x{cam.get('height')}, earlier episodes "
                            f"{camera.get('width')}x{camera.get('height')}; pass image_size to resize them all"
                        )
                    scene_id = str(attrs.get("scene_id", env.get("scene_id", path.parent.name)))
                    key = str(attrs.get("episode_key", f"{path.name}:{name}"))
                    episodes.append(
                        EpisodeData(rgb, mask, actions, cls, key, scene_id, attrs, geometry, depth)
                    )
                    if max_episodes is not None and len(episodes) >= max_episodes:
                        return DemoSet(episodes, camera, [str(p) for p in files], plan)
        except FileNotFoundError:
            raise
        except OSError as exc:  # h5py: truncated or damaged files (its messages do not name the file)
            raise ValueError(
                f"{path}: cannot read this HDF5 episode ({exc}); the file is truncated or damaged (a copy or "
                "a writer killed mid-write): rerun `splatsim demos` with the same arguments to redo it"
            ) from exc
    return DemoSet(episodes, camera, [str(p) for p in files], plan)


def geometry_targets(
    poses: np.ndarray,  # [T, 4, 4] gripper-to-world
    pregrasp_pose: np.ndarray,  # [4, 4]
    clearance: np.ndarray,  # [T, 2] distance to the nearest (hand, object) point, metres
) -> np.ndarray:  # [T, 7] float32, `GEOMETRY_TARGETS`
    """Each frame's distance to the object and the pre-grasp pose relative to it (`GEOMETRY_TARGETS`)."""
    from splatsim.conventions import pose_to_action

    poses = np.asarray(poses, np.float64)
    clearance = np.asarray(clearance, np.float64)
    T = poses.shape[0]
    if poses.shape != (T, 4, 4) or np.shape(pregrasp_pose) != (4, 4) or clearance.shape != (T, 2):
        raise ValueError(
            f"geometry_targets: poses {poses.shape}, pregrasp_pose {np.shape(pregrasp_pose)}, clearance "
            f"{clearance.shape}; expected [T, 4, 4], [4, 4], [T, 2]"
        )
    pre = torch.from_numpy(np.asarray(pregrasp_pose, np.float64)).expand(T, 4, 4)
    rel = pose_to_action(torch.from_numpy(poses), pre).numpy()
    return np.concatenate([clearance[:, 1:2], rel], axis=1).astype(np.float32)


def _read_geometry(group: Any, pregrasp: np.ndarray | None, T: int, where: str) -> np.ndarray | None:
    """`geometry_targets` from an HDF5 episode (or recovery) group's ``poses`` and ``clearance``; None
    when it lacks them. Raises ValueError naming the group for wrong shapes or non-finite values."""
    if pregrasp is None or "poses" not in group or "clearance" not in group:
        return None
    poses = np.asarray(group["poses"][()], np.float64)
    clear = np.asarray(group["clearance"][()], np.float64)
    if poses.shape != (T, 4, 4) or clear.shape != (T, 2):
        raise ValueError(
            f"{where}: poses {poses.shape}, clearance {clear.shape}; expected [{T}, 4, 4] and [{T}, 2] (one per frame)"
        )
    if not (np.isfinite(poses).all() and np.isfinite(clear).all() and np.isfinite(pregrasp).all()):
        raise ValueError(f"{where}: non-finite poses, clearance or pregrasp_pose")
    return geometry_targets(poses, pregrasp, clear)


def _read_depth(group: Any, shape: tuple[int, ...], where: str) -> np.ndarray | None:
    """An episode (or recovery) group's ``obs/depth`` (uint16 millimetres, the masks' shape); None without one."""
    if "obs/depth" not in group:
        return None
    depth = group["obs/depth"][()]
    if depth.dtype != np.uint16 or depth.shape != tuple(shape):
        raise ValueError(
            f"{where}: obs/depth is {depth.dtype} {depth.shape}; expected uint16 millimetres {tuple(shape)} "
            "(the masks' shape)"
        )
    return depth


def _append_recovery_depth(
    depth: np.ndarray | None, recovery_depth: np.ndarray | None, where: str
) -> np.ndarray | None:
    """An episode's depth with its recovery samples' appended; ValueError naming ``where`` when only one
    of the two records depth."""
    if (depth is None) != (recovery_depth is None):
        raise ValueError(
            f"{where}: obs/depth in only one of the episode and its recovery samples; expected both or neither"
        )
    return None if depth is None else np.concatenate([depth, recovery_depth])


def _append_recovery(
    frames: tuple[np.ndarray, ...], recovery: tuple[np.ndarray, ...], attrs: dict[str, Any]
) -> tuple[np.ndarray, ...]:
    """(rgb, mask, actions, cls) with an episode's recovery samples appended; counts them in ``attrs``."""
    attrs["recovery_frames"] = int(recovery[2].shape[0])
    return tuple(np.concatenate([a, b]) for a, b in zip(frames, recovery))


def episode_from_trajgen(episode: Any, image_size: int | None = None) -> EpisodeData:
    """An in-memory `trajgen.episodes.Episode` as `EpisodeData` (no file round trip), its recovery samples
    appended like `load_demos` does."""
    rgb, mask = np.asarray(episode.rgb, np.uint8), np.asarray(episode.mask, np.uint8)
    actions, cls = np.asarray(episode.actions, np.float32), np.asarray(episode.cls, np.float32)
    attrs = dict(episode.attrs)
    known = all(getattr(episode, k, None) is not None for k in ("poses", "pregrasp_pose", "clearance"))
    geometry = geometry_targets(episode.poses, episode.pregrasp_pose, episode.clearance) if known else None
    depth = getattr(episode, "depth", None)
    depth = None if depth is None else np.asarray(depth, np.uint16)
    rec = getattr(episode, "recovery", None)
    if rec is not None:
        rec_depth = getattr(rec, "depth", None)
        rec_depth = None if rec_depth is None else np.asarray(rec_depth, np.uint16)
        depth = _append_recovery_depth(depth, rec_depth, "episode_from_trajgen")
        extra = (
            np.asarray(rec.rgb, np.uint8),
            np.asarray(rec.mask, np.uint8),
            np.asarray(rec.actions, np.float32),
            np.asarray(rec.cls, np.float32),
        )
        rgb, mask, actions, cls = _append_recovery((rgb, mask, actions, cls), extra, attrs)
        if geometry is not None:
            rec_geometry = geometry_targets(rec.poses, episode.pregrasp_pose, rec.clearance)
            geometry = np.concatenate([geometry, rec_geometry])
    if image_size is not None:
        rgb, mask = resize_frames(rgb, mask, image_size)
        depth = None if depth is None else resize_depth(depth, image_size)
    scene_id = str(attrs.get("scene_id", ""))
    key = str(
        attrs.get("episode_key", f"{scene_id}/g{attrs.get('grasp_rank', 0)}_s{attrs.get('start_id', 0)}")
    )
    return EpisodeData(rgb, mask, actions, cls, key, scene_id, attrs, geometry, depth)


def split_episodes(
    groups: Sequence[str],
    val_fraction: float,
    seed: int,
) -> tuple[list[int], list[int]]:
    """Seeded split of episodes into train and validation by group: no group on both sides.

    ``groups[i]`` is the episode's group (its own key for an episode-level split, its scene id for a
    scene-level one). The validation side gets ``round(val_fraction * #groups)`` groups, at least one
    when ``val_fraction > 0`` and there are two or more groups. Returns sorted episode indices.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction = {val_fraction}; expected a fraction in [0, 1)")
    unique = sorted(set(groups))
    n_val = round(val_fraction * len(unique))
    if val_fraction > 0 and len(unique) >= 2:
        n_val = max(1, min(n_val, len(unique) - 1))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(unique))
    val_groups = {unique[i] for i in order[:n_val]}
    train = [i for i, gname in enumerate(groups) if gname not in val_groups]
    val = [i for i, gname in enumerate(groups) if gname in val_groups]
    return train, val


def stack_frames(episodes: Sequence[EpisodeData]) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Concatenates episodes: rgb [N,H,W,3] uint8, mask [N,H,W] uint8, actions [N,6], cls [N], episode id [N]."""
    if not episodes:
        raise ValueError("no episodes to stack")
    rgb = torch.from_numpy(np.concatenate([e.rgb for e in episodes]))
    mask = torch.from_numpy(np.concatenate([e.mask for e in episodes]))
    actions = torch.from_numpy(np.concatenate([e.actions for e in episodes]))
    cls = torch.from_numpy(np.concatenate([e.cls for e in episodes]))
    ep = torch.cat([torch.full((e.num_frames,), i, dtype=torch.int64) for i, e in enumerate(episodes)])
    return rgb, mask, actions, cls, ep


def stack_depth(episodes: Sequence[EpisodeData]) -> Tensor:  # [N, H, W] uint16 millimetres
    """The episodes' depth, frame by frame like `stack_frames`; raises ValueError naming the first
    episode without depth (a policy with a depth channel needs demonstrations recorded with depth)."""
    for e in episodes:
        if e.depth is None:
            raise ValueError(
                f"episode {e.key}: no depth (obs/depth); a policy with a depth channel needs demonstrations "
                "rendered with depth (`splatsim demos --depth`: HandEyeConfig.depth = True)"
            )
        if e.depth.shape != e.mask.shape:
            raise ValueError(f"episode {e.key}: depth {e.depth.shape}; expected the masks' {e.mask.shape}")
    return torch.from_numpy(np.concatenate([e.depth for e in episodes]))


def stack_geometry(episodes: Sequence[EpisodeData]) -> Tensor:  # [N, 7] float32
    """The episodes' `GEOMETRY_TARGETS`, frame by frame like `stack_frames` (NaN where unknown)."""
    rows = []
    for e in episodes:
        g = e.geometry
        if g is None:
            g = np.full((e.num_frames, len(GEOMETRY_TARGETS)), np.nan, np.float32)
        elif g.shape != (e.num_frames, len(GEOMETRY_TARGETS)):
            raise ValueError(
                f"episode {e.key}: geometry {g.shape}; expected [{e.num_frames}, {len(GEOMETRY_TARGETS)}]"
            )
        rows.append(np.asarray(g, np.float32))
    return torch.from_numpy(np.concatenate(rows))


def action_stats(actions: Tensor) -> tuple[Tensor, Tensor]:  # [N, 6] -> mean [6], std [6]
    """Per-dimension mean and standard deviation (population) of the actions (`column_stats`)."""
    return column_stats(actions)


def column_stats(x: Tensor) -> tuple[Tensor, Tensor]:  # [N, D] -> mean [D], std [D]
    """Per-column mean and population standard deviation over the known (non-NaN) entries, in float64,
    returned as float32. A std below 1e-8 (a constant column, one entry) becomes 1; a column never known
    gets mean 0, std 1. The normalisation of the actions and of the geometry targets."""
    x = x.double()
    known = ~torch.isnan(x)
    n = known.sum(0).clamp_min(1)
    mean = torch.where(known, x, 0.0).sum(0) / n
    std = (torch.where(known, (x - mean) ** 2, 0.0).sum(0) / n).sqrt()
    std = torch.where(std > 1e-8, std, torch.ones_like(std))
    return mean.float(), std.float()


def camera_intrinsics_or_default(camera: dict[str, Any], size: int) -> dict[str, Any]:
    """Fills intrinsics the shards did not record with the hand-eye default (D435 at 640x480 cropped)."""
    if all(k in camera for k in ("fx", "fy", "cx", "cy")):
        return camera
    f = 615.0 * size / 480.0
    out = dict(camera)
    out.update(fx=f, fy=f, cx=size / 2, cy=size / 2, width=size, height=size, assumed=True)
    return out
