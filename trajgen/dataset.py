"""The demonstration dataset on disk (HDF5, robomimic's layout) and a torch `Dataset` over it.

One HDF5 file per episode (see ``docs/dataset_format.md`` for every key)::

    /                      attrs: format = "splatsim-demos", format_version, committed
    /data                  attrs: total (tuples), env_args (JSON: camera, intrinsics, config)
    /data/demo_0           attrs: num_samples, scene_id, object, grasp_id, grasp_rank, start_id,
                                  episode_key, plan_hash, t1, t2
    /data/demo_0/obs/rgb        [T, H, W, 3] uint8, gzip, one chunk per frame
    /data/demo_0/obs/mask       [T, H, W] uint8 labels (0 background, 1 object, 2 hand), gzip
    /data/demo_0/obs/depth      [T, H, W] uint16 millimetres along the camera z axis (0: nothing hit),
                                gzip; only when the camera records depth (`HandEyeConfig.depth`)
    /data/demo_0/actions        [T, 6] float64 gripper motion to the next step (euler xyz, translation)
    /data/demo_0/cls            [T] uint8, 1 at the pre-grasp pose
    /data/demo_0/dones          [T] uint8 (= cls; robomimic's key)
    /data/demo_0/rewards        [T] float32 (= cls; robomimic's key)
    /data/demo_0/poses          [T, 4, 4] float64 gripper-to-world (scene frame)
    /data/demo_0/camera_poses   [T, 4, 4] float64 camera-to-world (OpenCV axes)
    /data/demo_0/clearance      [T, 2] float32 distance to the nearest (hand, object) point, metres
    /data/demo_0/phase          [T] uint8 trajectory phase 1, 2, 3
    /data/demo_0/grasp_pose     [4, 4] float64; pregrasp_pose [4, 4] float64
    /data/demo_0/recovery/      only with recovery samples (`trajgen.recovery`): attrs num_samples N,
                                stop_label; obs/rgb, obs/mask, (obs/depth), actions, cls, poses, camera_poses,
                                clearance, phase like above with N rows, source [N] int16 (the
                                waypoint perturbed, -1 around the pre-grasp pose)

Commit protocol: an episode is written completely to a temporary file in the same folder, ``committed``
is set last, the file is flushed and fsynced, then atomically renamed to its final name. A final name
therefore always holds a complete episode; a crash leaves at most a temporary file, which is deleted
and redone. `validate_episode` re-checks a file (counts, shapes, dtypes, finiteness, the trajectory
invariants, every compressed chunk decodes).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from trajgen.episodes import Episode, RecoveryFrames

__all__ = [
    "DEMO_GROUP",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "DemoDataset",
    "episode_files",
    "read_episode",
    "validate_episode",
    "write_episode",
]

FORMAT_NAME = "splatsim-demos"
FORMAT_VERSION = 1
DEMO_GROUP = "data/demo_0"
"""Each episode file holds one demo at this path."""

_ARRAYS = ("actions", "cls", "dones", "rewards", "poses", "camera_poses", "clearance", "phase")
RECOVERY_GROUP = "recovery"
"""Subgroup of the demo holding its recovery samples, when it has any."""
_RECOVERY_ARRAYS = ("actions", "cls", "poses", "camera_poses", "clearance", "phase", "source")
_ID_ATTRS = ("scene_id", "grasp_rank", "start_id", "episode_key", "plan_hash")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _to_attr(value: Any) -> Any:
    if isinstance(value, (dict, list, tuple)) or value is None:
        return json.dumps(value, sort_keys=True)
    return value


def write_episode(
    path: Path | str,
    episode: Episode,
    *,
    env_args: dict[str, Any] | None = None,
    compression_level: int = 4,
) -> Path:
    """Writes ``episode`` to ``path`` atomically (temporary file, fsync, rename); returns the path.

    ``env_args`` (JSON-serialisable: camera, intrinsics, configuration) goes to ``/data`` attrs.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    T = episode.num_samples
    gz = {"compression": "gzip", "compression_opts": int(compression_level), "shuffle": False}
    try:
        with h5py.File(tmp, "w", track_order=True) as f:
            f.attrs["format"] = FORMAT_NAME
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["committed"] = False
            data = f.create_group("data")
            data.attrs["total"] = T
            data.attrs["env_args"] = json.dumps(env_args or {}, sort_keys=True)
            demo = f.create_group(DEMO_GROUP)
            demo.attrs["num_samples"] = T
            for key, value in sorted(episode.attrs.items()):
                demo.attrs[key] = _to_attr(value)
            arrays = {
                "actions": episode.actions.astype(np.float64),
                "cls": episode.cls.astype(np.uint8),
                "dones": episode.cls.astype(np.uint8),
                "rewards": episode.cls.astype(np.float32),
                "poses": episode.poses.astype(np.float64),
                "camera_poses": episode.camera_poses.astype(np.float64),
                "clearance": episode.clearance.astype(np.float32),
                "phase": episode.phase.astype(np.uint8),
                "grasp_pose": episode.grasp_pose.astype(np.float64),
                "pregrasp_pose": episode.pregrasp_pose.astype(np.float64),
            }
            _write_frames(demo, episode.rgb, episode.mask, arrays, gz, episode.depth)
            if episode.recovery is not None:
                _write_recovery(demo.create_group(RECOVERY_GROUP), episode.recovery, gz)
            f.attrs["committed"] = True
            f.flush()
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _write_frames(
    group: h5py.Group,
    rgb: np.ndarray,
    mask: np.ndarray,
    arrays: dict[str, np.ndarray],
    gz: dict[str, Any],
    depth: np.ndarray | None = None,
) -> None:
    """``obs/rgb``, ``obs/mask`` and ``obs/depth`` when given (gzip, one chunk per frame) and the per-frame
    ``arrays`` into ``group``."""
    N, H, W = rgb.shape[:3]
    obs = group.create_group("obs")
    obs.create_dataset("rgb", data=rgb, chunks=(1, H, W, 3) if N else None, track_times=False, **gz)
    obs.create_dataset("mask", data=mask, chunks=(1, H, W) if N else None, track_times=False, **gz)
    if depth is not None:
        obs.create_dataset(
            "depth", data=depth.astype(np.uint16), chunks=(1, H, W) if N else None, track_times=False, **gz
        )
    for key, value in arrays.items():
        group.create_dataset(key, data=value, track_times=False)


def _write_recovery(group: h5py.Group, rec: RecoveryFrames, gz: dict[str, Any]) -> None:
    group.attrs["num_samples"] = rec.num_samples
    arrays = {
        "actions": rec.actions.astype(np.float64),
        "cls": rec.cls.astype(np.uint8),
        "poses": rec.poses.astype(np.float64),
        "camera_poses": rec.camera_poses.astype(np.float64),
        "clearance": rec.clearance.astype(np.float32),
        "phase": rec.phase.astype(np.uint8),
        "source": rec.source.astype(np.int16),
    }
    _write_frames(group, rec.rgb, rec.mask, arrays, gz, rec.depth)


def _read_recovery(group: h5py.Group) -> RecoveryFrames:
    return RecoveryFrames(
        rgb=group["obs/rgb"][()],
        mask=group["obs/mask"][()],
        **{k: group[k][()] for k in _RECOVERY_ARRAYS},
        depth=group["obs/depth"][()] if "obs/depth" in group else None,
    )


def _decode_attr(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, str) and (value[:1] in ("{", "[") or value == "null"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def read_episode(path: Path | str) -> Episode:
    """Reads a whole episode file back into memory."""
    with h5py.File(path, "r") as f:
        demo = f[DEMO_GROUP]
        attrs = {k: _decode_attr(v) for k, v in demo.attrs.items() if k != "num_samples"}
        return Episode(
            rgb=demo["obs/rgb"][()],
            mask=demo["obs/mask"][()],
            actions=demo["actions"][()],
            cls=demo["cls"][()],
            poses=demo["poses"][()],
            camera_poses=demo["camera_poses"][()],
            clearance=demo["clearance"][()],
            phase=demo["phase"][()],
            grasp_pose=demo["grasp_pose"][()],
            pregrasp_pose=demo["pregrasp_pose"][()],
            attrs=attrs,
            recovery=_read_recovery(demo[RECOVERY_GROUP]) if RECOVERY_GROUP in demo else None,
            depth=demo["obs/depth"][()] if "obs/depth" in demo else None,
        )


def validate_episode(
    path: Path | str,
    expected: dict[str, Any] | None = None,
    *,
    image_size: tuple[int, int] | None = None,
) -> list[str]:
    """Checks one episode file; returns what is wrong (an empty list for a valid episode).

    Args:
        path: The episode file.
        expected: Attributes the demo must carry with these values (e.g. scene_id, plan_hash).
        image_size: (width, height) the images must have.
    """
    path = Path(path)
    errors: list[str] = []
    try:
        with h5py.File(path, "r") as f:
            if _decode_attr(f.attrs.get("format")) != FORMAT_NAME:
                return [f"{path}: not a {FORMAT_NAME} file (attr 'format' = {f.attrs.get('format')!r})"]
            if int(f.attrs.get("format_version", -1)) != FORMAT_VERSION:
                errors.append(
                    f"{path}: format_version {f.attrs.get('format_version')}; expected {FORMAT_VERSION}"
                )
            if not bool(f.attrs.get("committed", False)):
                errors.append(f"{path}: not committed (a partially written episode)")
            if DEMO_GROUP not in f:
                return errors + [f"{path}: missing group /{DEMO_GROUP}"]
            demo = f[DEMO_GROUP]
            missing = [
                k for k in ("obs/rgb", "obs/mask", *_ARRAYS, "grasp_pose", "pregrasp_pose") if k not in demo
            ]
            if missing:
                return errors + [f"{path}: missing datasets {missing}"]
            arrays = {k: demo[k][()] for k in _ARRAYS}
            rgb, mask = demo["obs/rgb"][()], demo["obs/mask"][()]  # decodes every chunk
            T = int(demo.attrs.get("num_samples", -1))
            tolerance = _decode_attr(demo.attrs.get("stop_label")) == "tolerance"
            errors += _check_arrays(path, T, rgb, mask, arrays, image_size, tolerance)
            has_depth = "obs/depth" in demo
            if has_depth:
                errors += _check_depth(f"{path}: obs/depth", demo["obs/depth"][()], mask.shape)
            if RECOVERY_GROUP in demo:
                rec = demo[RECOVERY_GROUP]
                errors += _check_recovery(path, rec, mask.shape[1:], tolerance)
                if has_depth != ("obs/depth" in rec):
                    errors.append(
                        f"{path}: obs/depth is {'present' if has_depth else 'absent'} but {RECOVERY_GROUP}/obs/depth "
                        f"is {'present' if not has_depth else 'absent'}; expected both or neither"
                    )
                elif has_depth and "obs/mask" in rec:
                    errors += _check_depth(
                        f"{path}: {RECOVERY_GROUP}/obs/depth", rec["obs/depth"][()], rec["obs/mask"].shape
                    )
            for key, value in (expected or {}).items():
                got = _decode_attr(demo.attrs.get(key))
                if got != value:
                    errors.append(f"{path}: attr {key} = {got!r}; expected {value!r}")
            if int(f["data"].attrs.get("total", -1)) != T:
                errors.append(f"{path}: /data attr total = {f['data'].attrs.get('total')}; expected {T}")
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        errors.append(f"{path}: unreadable ({type(exc).__name__}: {exc})")
    return errors


def _check_arrays(
    path: Path,
    T: int,
    rgb: np.ndarray,
    mask: np.ndarray,
    arrays: dict[str, np.ndarray],
    image_size: tuple[int, int] | None,
    tolerance: bool = False,
) -> list[str]:
    errors = []
    if T < 1:
        return [f"{path}: num_samples = {T}; expected >= 1"]
    shapes = {
        "actions": (T, 6),
        "cls": (T,),
        "dones": (T,),
        "rewards": (T,),
        "poses": (T, 4, 4),
        "camera_poses": (T, 4, 4),
        "clearance": (T, 2),
        "phase": (T,),
    }
    for key, shape in shapes.items():
        if arrays[key].shape != shape:
            errors.append(f"{path}: {key} has shape {arrays[key].shape}; expected {shape}")
    if rgb.dtype != np.uint8 or rgb.ndim != 4 or rgb.shape[0] != T or rgb.shape[3] != 3:
        errors.append(f"{path}: obs/rgb is {rgb.dtype} {rgb.shape}; expected uint8 [{T}, H, W, 3]")
    if mask.dtype != np.uint8 or mask.shape != rgb.shape[:3]:
        errors.append(f"{path}: obs/mask is {mask.dtype} {mask.shape}; expected uint8 {rgb.shape[:3]}")
    elif mask.size and int(mask.max()) > 2:
        errors.append(f"{path}: obs/mask holds label {int(mask.max())}; expected 0, 1 or 2")
    if image_size is not None and rgb.ndim == 4 and (rgb.shape[2], rgb.shape[1]) != tuple(image_size):
        errors.append(
            f"{path}: images are {rgb.shape[2]}x{rgb.shape[1]}; expected {image_size[0]}x{image_size[1]}"
        )
    if errors:
        return errors
    for key in ("actions", "poses", "camera_poses", "clearance", "rewards"):
        if not np.isfinite(arrays[key]).all():
            errors.append(f"{path}: {key} contains NaN or inf")
    cls = arrays["cls"]
    if tolerance:  # stop_label "tolerance" (trajgen.recovery): 1 at the last step, 0 or 1 elsewhere
        if not (cls[-1] == 1 and np.isin(cls, (0, 1)).all()):
            errors.append(f"{path}: cls must be 0 or 1 and 1 at the last step; got {cls.tolist()}")
    elif not (cls[-1] == 1 and (cls[:-1] == 0).all()):
        errors.append(
            f"{path}: cls must be 1 at the last step only; got ones at {np.flatnonzero(cls).tolist()}"
        )
    if np.abs(arrays["actions"][-1]).max() != 0:
        errors.append(f"{path}: the last action must be zero (the pre-grasp pose is the end)")
    phase = arrays["phase"]
    if not (np.isin(phase, (1, 2, 3)).all() and (np.diff(phase.astype(int)) >= 0).all()):
        errors.append(f"{path}: phase must be 1, 2, 3 in non-decreasing order")
    bottom = np.array([0.0, 0.0, 0.0, 1.0])
    if np.abs(arrays["poses"][:, 3] - bottom).max() > 0:
        errors.append(f"{path}: poses are not rigid transforms (last row != 0 0 0 1)")
    if (arrays["clearance"] < 0).any():
        errors.append(f"{path}: negative clearance")
    return errors


def _check_depth(where: str, depth: np.ndarray, shape: tuple[int, ...]) -> list[str]:
    """``obs/depth`` must be uint16 millimetres of the masks' shape."""
    if depth.dtype != np.uint16 or depth.shape != tuple(shape):
        return [f"{where} is {depth.dtype} {depth.shape}; expected uint16 millimetres {tuple(shape)}"]
    return []


def _check_recovery(
    path: Path, group: h5py.Group, image_shape: tuple[int, ...], tolerance: bool
) -> list[str]:
    where = f"{path}: {RECOVERY_GROUP}/"
    missing = [k for k in ("obs/rgb", "obs/mask", *_RECOVERY_ARRAYS) if k not in group]
    if missing:
        return [f"{where} missing datasets {missing}"]
    N = int(group.attrs.get("num_samples", -1))
    a = {k: group[k][()] for k in _RECOVERY_ARRAYS}
    rgb, mask = group["obs/rgb"][()], group["obs/mask"][()]
    shapes = {
        "actions": (N, 6),
        "cls": (N,),
        "poses": (N, 4, 4),
        "camera_poses": (N, 4, 4),
        "clearance": (N, 2),
        "phase": (N,),
        "source": (N,),
    }
    errors = [
        f"{where}{k} has shape {a[k].shape}; expected {shape}"
        for k, shape in shapes.items()
        if a[k].shape != shape
    ]
    if rgb.dtype != np.uint8 or rgb.shape != (N, *image_shape, 3):
        errors.append(f"{where}obs/rgb is {rgb.dtype} {rgb.shape}; expected uint8 {(N, *image_shape, 3)}")
    if mask.dtype != np.uint8 or mask.shape != (N, *image_shape):
        errors.append(f"{where}obs/mask is {mask.dtype} {mask.shape}; expected uint8 {(N, *image_shape)}")
    if errors or N == 0:
        return errors
    if int(mask.max()) > 2:
        errors.append(f"{where}obs/mask holds label {int(mask.max())}; expected 0, 1 or 2")
    for key in ("actions", "poses", "camera_poses", "clearance"):
        if not np.isfinite(a[key]).all():
            errors.append(f"{where}{key} contains NaN or inf")
    if not np.isin(a["cls"], (0, 1) if tolerance else (0,)).all():
        errors.append(f"{where}cls must be {'0 or 1' if tolerance else '0 (stop_label pregrasp)'}")
    if not np.isin(a["phase"], (1, 2, 3)).all():
        errors.append(f"{where}phase must be 1, 2 or 3")
    if np.abs(a["poses"][:, 3] - np.array([0.0, 0.0, 0.0, 1.0])).max() > 0:
        errors.append(f"{where}poses are not rigid transforms (last row != 0 0 0 1)")
    return errors


def episode_files(source: Path | str | Sequence[Path | str]) -> list[Path]:
    """Episode files named by a demos folder (its ``index.json``), an ``index.json``, or file paths."""
    if isinstance(source, (str, Path)):
        p = Path(source)
        if p.is_dir():
            p = p / "index.json"
        if p.suffix == ".json":
            index = json.loads(p.read_text())
            return [p.parent / e["file"] for e in index["episodes"]]
        return [p]
    return [Path(s) for s in source]


class DemoDataset(Dataset):
    """(image, masks, action, cls) tuples of a demonstration dataset, one item per step.

    Each item is a dict:

    - ``rgb`` [3, H, W] float32 in [0, 1]; multiplied by ``mask > 0`` (hand or object) when
      ``remove_background`` (what the paper's policy sees);
    - ``masks`` [2, H, W] float32: hand, object (the paper's policy's extra input channels);
    - ``label`` [H, W] int64: 0 background, 1 object, 2 hand;
    - ``depth`` [H, W] float32 metres, only where the episodes record depth (background removed like the RGB);
    - ``action`` [6] float32 (euler xyz, translation), ``cls`` [] float32, ``pose`` [4, 4] float64;
    - ``episode`` and ``step`` (int indices), ``recovery`` (bool): ``step`` counts the episode's
      trajectory steps first, then its recovery samples (``step - num_samples`` is the sample's index).

    Files are opened lazily once per process (safe with DataLoader workers).

    Args:
        source: A demos folder or its ``index.json`` (all episodes), or episode file paths.
        remove_background: Zero the RGB where the mask is background.
        include_recovery: Also serve the episodes' recovery samples (`trajgen.recovery`), after each
            episode's steps.
    """

    def __init__(
        self,
        source: Path | str | Sequence[Path | str],
        *,
        remove_background: bool = True,
        include_recovery: bool = True,
    ) -> None:
        self.files = episode_files(source)
        self.remove_background = remove_background
        lengths, steps = [], []
        for path in self.files:
            with h5py.File(path, "r") as f:
                demo = f[DEMO_GROUP]
                n = int(demo.attrs["num_samples"])
                steps.append(n)
                if include_recovery and RECOVERY_GROUP in demo:
                    n += int(demo[RECOVERY_GROUP].attrs["num_samples"])
                lengths.append(n)
        self.steps = np.asarray(steps, dtype=np.int64)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)])
        self._handles: dict[int, h5py.File] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _demo(self, episode: int) -> h5py.Group:
        if os.getpid() != self._pid:  # a forked DataLoader worker: never share HDF5 handles
            self._handles, self._pid = {}, os.getpid()
        f = self._handles.get(episode)
        if f is None:
            f = self._handles[episode] = h5py.File(self.files[episode], "r")
        return f[DEMO_GROUP]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"DemoDataset index {index} out of range for {len(self)} tuples")
        index %= len(self)
        episode = int(np.searchsorted(self.offsets, index, side="right") - 1)
        step = int(index - self.offsets[episode])
        demo = self._demo(episode)
        recovery = step >= int(self.steps[episode])
        g, i = (demo[RECOVERY_GROUP], step - int(self.steps[episode])) if recovery else (demo, step)
        rgb = torch.from_numpy(g["obs/rgb"][i]).permute(2, 0, 1).float() / 255.0
        label = torch.from_numpy(g["obs/mask"][i].astype(np.int64))
        if self.remove_background:
            rgb = rgb * (label > 0)
        masks = torch.stack([label == 2, label == 1]).float()
        item: dict[str, Any] = {}
        # depth in metres; 0 where nothing was hit (and off hand and object with remove_background)
        if "obs/depth" in g:
            depth = torch.from_numpy(g["obs/depth"][i].astype(np.float32)) * 1e-3
            item["depth"] = depth * (label > 0) if self.remove_background else depth
        return item | {
            "rgb": rgb,
            "masks": masks,
            "label": label,
            "action": torch.from_numpy(g["actions"][i].astype(np.float32)),
            "cls": torch.tensor(float(g["cls"][i])),
            "pose": torch.from_numpy(g["poses"][i]),
            "episode": episode,
            "step": step,
            "recovery": recovery,
        }

    def close(self) -> None:
        for f in self._handles.values():
            f.close()
        self._handles = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handles"] = {}
        return state
