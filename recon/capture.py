"""Capture folder: the data model, its writer and reader, and its validation.

A capture is a handful of RGB-D views of a person holding an object, with pinhole intrinsics,
camera poses and hand/object masks. On disk it is one folder (full description:
``docs/capture_format.md``)::

    capture.json        format, version, units, depth scale, frame, one entry per view, metadata
    rgb/<view>.png      8-bit RGB (PNG or JPG)
    depth/<view>.png    16-bit PNG; metres = value * depth_scale (uint16 millimetres by default), 0 = missing
    masks/<view>.png    optional per view: 8-bit PNG, 0 background, 1 object, 2 hand

``capture.json``::

    {"format": "splatsim-capture", "version": 1, "units": "metres", "depth_scale": 0.001,
     "frame": "scene frame, camera-to-world poses, OpenCV camera axes (x right, y down, z forward)",
     "views": [{"name": "cam0", "rgb": "rgb/cam0.png", "depth": "depth/cam0.png",
                "mask": "masks/cam0.png", "width": 640, "height": 480,
                "fx": 615.0, "fy": 615.0, "cx": 320.0, "cy": 240.0,
                "c2w": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]}],
     "metadata": {"source": "dexycb", ...},
     "ground_truth": {"object_mesh": "ground_truth/object_mesh.obj", ...}}

Poses are 4x4 camera-to-world in the scene frame, OpenCV camera axes, metres (`splatsim.conventions`);
intrinsics follow the project's pixel convention (pixel ``i`` has its centre at ``i + 0.5``).
Paths in ``capture.json`` are relative to the folder. In memory (`ViewData`) depth is float32 metres
and 0 means missing (``write_capture`` also accepts NaN/inf as missing).

`write_capture` checks everything in memory first, then writes each image atomically (temporary file,
then ``os.replace``) and ``capture.json`` last: a folder without ``capture.json`` is an unfinished
capture and never loads. `load_capture` validates ``capture.json`` and, by default, every image
(`validate_capture`); every problem raises `CaptureError` naming the file, field, value and the fix.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import imageio.v3 as iio
import numpy as np

from splatsim.scene import LABEL_BACKGROUND, LABEL_HAND, LABEL_OBJECT

__all__ = [
    "CAPTURE_JSON",
    "DEFAULT_DEPTH_SCALE",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "FRAME_DESCRIPTION",
    "Capture",
    "CaptureError",
    "CaptureView",
    "ViewData",
    "check_mask",
    "depth_metres_to_uint16",
    "depth_uint16_to_metres",
    "load_capture",
    "read_image",
    "validate_capture",
    "write_capture",
]

FORMAT_NAME = "splatsim-capture"
FORMAT_VERSION = 1
CAPTURE_JSON = "capture.json"
DEFAULT_DEPTH_SCALE = 1e-3
"""Metres per depth-PNG unit: uint16 millimetres."""
FRAME_DESCRIPTION = "scene frame, camera-to-world poses, OpenCV camera axes (x right, y down, z forward)"

ROTATION_TOLERANCE = 1e-4
"""Largest accepted ``max |R^T R - I|`` and ``|det R - 1|`` of a pose's rotation block."""
MAX_MEDIAN_DEPTH_M = 20.0
"""A view whose median valid depth exceeds this (metres) is taken for millimetres labelled as metres."""
MIN_MEDIAN_DEPTH_M = 0.05
"""A view whose median valid depth is below this (metres) is taken for a wrong depth scale."""

_VALID_LABELS = (LABEL_BACKGROUND, LABEL_OBJECT, LABEL_HAND)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_UNITS = ("metres", "meters")
_VIEW_KEYS = ("name", "rgb", "depth", "width", "height", "fx", "fy", "cx", "cy", "c2w")


class CaptureError(ValueError):
    """A capture (folder, file or in-memory view) that breaks the capture format."""


# --------------------------------------------------------------------------------------------------
# Data model
# --------------------------------------------------------------------------------------------------


@dataclass
class ViewData:
    """One view held in memory, as `write_capture` takes it and `Capture.read_view` returns it."""

    name: str
    """Unique view name; letters, digits, ``.``, ``_``, ``-`` (it names the files)."""
    rgb: np.ndarray  # [H, W, 3] uint8
    depth: np.ndarray  # [H, W] float32 metres along +z; 0 = missing (NaN/inf also accepted on write)
    mask: np.ndarray | None  # [H, W] uint8: 0 background, 1 object, 2 hand; None = no mask
    fx: float
    fy: float
    cx: float
    cy: float
    c2w: np.ndarray  # [4, 4] float64 camera-to-world, OpenCV axes, metres

    @property
    def height(self) -> int:
        return int(np.shape(self.rgb)[0])

    @property
    def width(self) -> int:
        return int(np.shape(self.rgb)[1])

    @property
    def K(self) -> np.ndarray:  # [3, 3] float64
        return _K(self.fx, self.fy, self.cx, self.cy)


@dataclass
class CaptureView:
    """One view of a capture on disk; the paths are absolute (the capture root joined with the
    relative paths of ``capture.json``)."""

    name: str
    rgb_path: Path
    depth_path: Path
    mask_path: Path | None
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    c2w: np.ndarray  # [4, 4] float64 camera-to-world, OpenCV axes, metres

    @property
    def K(self) -> np.ndarray:  # [3, 3] float64
        return _K(self.fx, self.fy, self.cx, self.cy)


@dataclass
class Capture:
    """A capture folder: its views (files not loaded) and what ``capture.json`` says about them."""

    root: Path
    views: list[CaptureView]
    depth_scale: float = DEFAULT_DEPTH_SCALE
    """Metres per depth-PNG unit."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Free-form: source, seed, object name, ..."""
    ground_truth: dict[str, Any] = field(default_factory=dict)
    """Optional; keys ending in ``_mesh`` are file paths relative to ``root``."""

    @property
    def json_path(self) -> Path:
        return self.root / CAPTURE_JSON

    @property
    def num_views(self) -> int:
        return len(self.views)

    @property
    def names(self) -> list[str]:
        return [v.name for v in self.views]

    @property
    def has_masks(self) -> bool:
        """Whether at least one view has a mask."""
        return any(v.mask_path is not None for v in self.views)

    def view_index(self, key: int | str) -> int:
        """Index of a view given by index (negative counts from the end) or by name."""
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            i = int(key)
            if not -self.num_views <= i < self.num_views:
                raise CaptureError(
                    f"{self.json_path}: view index {i} is out of range; the capture has "
                    f"{self.num_views} views (indices 0..{self.num_views - 1})"
                )
            return i % self.num_views
        if isinstance(key, str):
            for i, v in enumerate(self.views):
                if v.name == key:
                    return i
            raise CaptureError(f"{self.json_path}: no view named {key!r}; the views are {self.names}")
        raise CaptureError(f"{self.json_path}: a view is selected by index or name, got {key!r}")

    def read_view(self, key: int | str) -> ViewData:
        """Decodes one view's files (checked like `validate_capture` does) into memory.

        Depth comes back as float32 metres with 0 where the depth PNG is 0 (missing).
        """
        v = self.views[self.view_index(key)]
        rgb, raw, mask = _read_view_files(v, self.depth_scale)
        return ViewData(
            name=v.name,
            rgb=rgb,
            depth=depth_uint16_to_metres(raw, self.depth_scale),
            mask=mask,
            fx=v.fx,
            fy=v.fy,
            cx=v.cx,
            cy=v.cy,
            c2w=v.c2w.copy(),
        )

    def select(self, keys: Sequence[int | str]) -> Capture:
        """A capture (same root and files) with only the given views, in the given order."""
        indices = [self.view_index(k) for k in keys]
        if not indices:
            raise CaptureError(f"{self.json_path}: select() needs at least one view")
        if len(set(indices)) != len(indices):
            raise CaptureError(f"{self.json_path}: select() got a view twice: {list(keys)}")
        return Capture(
            root=self.root,
            views=[self.views[i] for i in indices],
            depth_scale=self.depth_scale,
            metadata=dict(self.metadata),
            ground_truth=dict(self.ground_truth),
        )

    def ground_truth_path(self, key: str) -> Path | None:
        """Absolute path of a ground-truth file (e.g. ``"object_mesh"``), or None if absent."""
        rel = self.ground_truth.get(key)
        return None if rel is None else self.root / rel

    def to_json_dict(self) -> dict[str, Any]:
        """The ``capture.json`` content (paths relative to ``root``)."""
        views = []
        for v in self.views:
            entry: dict[str, Any] = {
                "name": v.name,
                "rgb": self._rel(v.rgb_path, v.name, "rgb"),
                "depth": self._rel(v.depth_path, v.name, "depth"),
            }
            if v.mask_path is not None:
                entry["mask"] = self._rel(v.mask_path, v.name, "mask")
            entry.update(
                width=int(v.width),
                height=int(v.height),
                fx=float(v.fx),
                fy=float(v.fy),
                cx=float(v.cx),
                cy=float(v.cy),
                c2w=np.asarray(v.c2w, dtype=np.float64).tolist(),
            )
            views.append(entry)
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "units": "metres",
            "depth_scale": float(self.depth_scale),
            "frame": FRAME_DESCRIPTION,
            "views": views,
            "metadata": _to_jsonable(self.metadata),
            "ground_truth": _to_jsonable(self.ground_truth),
        }

    def _rel(self, path: Path, name: str, what: str) -> str:
        try:
            return Path(path).relative_to(self.root).as_posix()
        except ValueError:
            raise CaptureError(
                f"{self.json_path}: view {name!r} {what} file {path} lies outside the capture folder "
                f"{self.root}; capture files must live inside it"
            ) from None


def _K(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=np.float64)


# --------------------------------------------------------------------------------------------------
# Depth conversion and image reading
# --------------------------------------------------------------------------------------------------


def depth_metres_to_uint16(
    depth: np.ndarray,  # [H, W] float metres; 0, NaN, inf = missing
    depth_scale: float = DEFAULT_DEPTH_SCALE,  # metres per unit
) -> np.ndarray:  # [H, W] uint16, 0 = missing
    """Quantises metric depth for a 16-bit PNG: rounded to the nearest unit, clipped to 65535."""
    d = np.asarray(depth, dtype=np.float64)
    valid = np.isfinite(d) & (d > 0)
    raw = np.zeros(d.shape, dtype=np.uint16)
    raw[valid] = np.clip(np.rint(d[valid] / depth_scale), 0, 65535).astype(np.uint16)
    return raw


def depth_uint16_to_metres(
    raw: np.ndarray,  # [H, W] uint16, 0 = missing
    depth_scale: float = DEFAULT_DEPTH_SCALE,  # metres per unit
) -> np.ndarray:  # [H, W] float32 metres, 0 = missing
    """Metric depth from a 16-bit depth image."""
    return (raw.astype(np.float64) * depth_scale).astype(np.float32)


def read_image(path: Path | str, what: str = "image") -> np.ndarray:
    """Decodes an image file; palette images keep their indices (label masks are often palettes).

    Raises:
        CaptureError: If the file is missing, truncated or not an image.
    """
    path = Path(path)
    if not path.is_file():
        raise CaptureError(f"{path}: {what} file not found; write it or fix the path that names it")
    try:
        mode = iio.immeta(path, plugin="pillow").get("mode")
        extra = {"mode": "P"} if mode == "P" else {}
        return np.asarray(iio.imread(path, plugin="pillow", **extra))
    except Exception as e:  # decoders raise OSError, SyntaxError, ValueError, ...
        raise CaptureError(
            f"{path}: cannot decode {what} file ({type(e).__name__}: {e}); the file is truncated or "
            "not an image: write it again"
        ) from e


# --------------------------------------------------------------------------------------------------
# Checks shared by the writer, the loader and the readers
# --------------------------------------------------------------------------------------------------


def _check_name(where: str, name: Any) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise CaptureError(
            f"{where}: view name {name!r} is not a plain file name; use letters, digits, '.', '_' "
            "and '-' (it names the view's files)"
        )
    return name


def _check_intrinsics(where: str, width: Any, height: Any, fx: Any, fy: Any, cx: Any, cy: Any) -> None:
    for key, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise CaptureError(f"{where}: {key} = {value!r}; expected a positive whole number of pixels")
    for key, value in (("fx", fx), ("fy", fy), ("cx", cx), ("cy", cy)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise CaptureError(f"{where}: {key} = {value!r}; expected a number (pixels)")
        if not math.isfinite(value):
            raise CaptureError(f"{where}: {key} = {value!r}; expected a finite number (pixels)")
    for key, value in (("fx", fx), ("fy", fy)):
        if value <= 0:
            raise CaptureError(
                f"{where}: {key} = {value!r}; a focal length must be > 0 pixels: fix the intrinsics"
            )
    for key, value, size_key, size in (("cx", cx, "width", width), ("cy", cy, "height", height)):
        if not 0 <= value <= size:
            raise CaptureError(
                f"{where}: {key} = {value!r} lies outside the image [0, {size_key} = {size}]; the "
                "principal point must be inside the image: check the intrinsics belong to this image "
                "size (rescale them with the image)"
            )


def _check_c2w(where: str, c2w: Any) -> np.ndarray:
    try:
        T = np.array(c2w, dtype=np.float64)
    except (TypeError, ValueError):
        raise CaptureError(f"{where}: c2w = {c2w!r} is not a 4x4 matrix of numbers") from None
    if T.shape != (4, 4):
        raise CaptureError(
            f"{where}: c2w has shape {T.shape}; expected a 4x4 camera-to-world matrix (row-major "
            "nested list [[r00, r01, r02, tx], ..., [0, 0, 0, 1]])"
        )
    if not np.isfinite(T).all():
        raise CaptureError(f"{where}: c2w = {T.tolist()} has non-finite entries; fix the pose")
    if np.abs(T[3] - [0.0, 0.0, 0.0, 1.0]).max() > 1e-9:
        raise CaptureError(
            f"{where}: c2w last row = {T[3].tolist()}; expected [0, 0, 0, 1] (a rigid transform)"
        )
    R = T[:3, :3]
    ortho = float(np.abs(R.T @ R - np.eye(3)).max())
    if ortho > ROTATION_TOLERANCE:
        raise CaptureError(
            f"{where}: c2w rotation block is not orthonormal (max |R^T R - I| = {ortho:.3g} > "
            f"{ROTATION_TOLERANCE}); poses must be rigid camera-to-world transforms in metres, "
            "without scale: remove any scale or re-orthonormalise the rotation"
        )
    det = float(np.linalg.det(R))
    if abs(det - 1.0) > ROTATION_TOLERANCE:
        raise CaptureError(
            f"{where}: c2w rotation has det = {det:.6g}; expected +1 (a reflection means a partial "
            "axis flip: OpenGL->OpenCV flips both y and z, c2w @ diag(1, -1, -1, 1))"
        )
    return T


def _check_rgb(where: str, rgb: Any, width: int | None = None, height: int | None = None) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise CaptureError(
            f"{where}: rgb has dtype {rgb.dtype} and shape {rgb.shape}; expected 8-bit RGB, "
            "uint8 [H, W, 3] (convert grey, RGBA or 16-bit images to 8-bit RGB)"
        )
    _check_size(where, "rgb", rgb.shape[:2], width, height)
    return rgb


def _check_size(where: str, what: str, hw: tuple[int, ...], width: int | None, height: int | None) -> None:
    if width is None or height is None:
        return
    if tuple(hw) != (height, width):
        raise CaptureError(
            f"{where}: {what} image is {hw[1]}x{hw[0]} (width x height) but capture.json says "
            f"width = {width}, height = {height}; fix width/height (and the intrinsics) in "
            "capture.json or resize the image"
        )


def _check_depth_raw(
    where: str, raw: Any, depth_scale: float, width: int | None = None, height: int | None = None
) -> None:
    raw = np.asarray(raw)
    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise CaptureError(
            f"{where}: depth has dtype {raw.dtype} and shape {raw.shape}; expected a single-channel "
            f"16-bit PNG (uint16, {depth_scale} m per unit, 0 = missing)"
        )
    _check_size(where, "depth", raw.shape, width, height)
    valid = raw[raw > 0]
    if valid.size == 0:
        raise CaptureError(
            f"{where}: depth has no valid pixel (every value is 0 = missing); fix the depth file or "
            "leave this view out"
        )
    median = float(np.median(valid)) * depth_scale
    if median > MAX_MEDIAN_DEPTH_M:
        raise CaptureError(
            f"{where}: median valid depth = {median:.4g} m with depth_scale = {depth_scale}, which "
            "looks like millimetres labelled as metres: set depth_scale to 0.001 (metres per unit) "
            "in capture.json"
        )
    if median < MIN_MEDIAN_DEPTH_M:
        raise CaptureError(
            f"{where}: median valid depth = {median:.4g} m with depth_scale = {depth_scale}, which "
            "looks like metres stored as uint16 or a wrong scale: store uint16 millimetres with "
            "depth_scale 0.001 (or set depth_scale to the metres per unit of the file)"
        )


def check_mask(
    where: str, mask: Any, width: int | None = None, height: int | None = None
) -> tuple[bool, bool]:
    """Checks a label mask (uint8 [H, W] in {0 background, 1 object, 2 hand}).

    Returns:
        ``(has_object, has_hand)``.

    Raises:
        CaptureError: Prefixed by ``where``, for a wrong dtype, shape, size or label value.
    """
    mask = np.asarray(mask)
    if mask.dtype != np.uint8 or mask.ndim != 2:
        raise CaptureError(
            f"{where}: mask has dtype {mask.dtype} and shape {mask.shape}; expected a single-channel "
            "8-bit image (uint8 [H, W]) with 0 background, 1 object, 2 hand"
        )
    _check_size(where, "mask", mask.shape, width, height)
    labels = np.unique(mask)
    bad = [int(x) for x in labels if int(x) not in _VALID_LABELS]
    if bad:
        hint = ""
        if set(int(x) for x in labels) <= {0, 255}:
            hint = (
                " (a binary 0/255 mask cannot tell the hand from the object: label the object 1 "
                "and the hand 2)"
            )
        raise CaptureError(
            f"{where}: mask has values {bad[:8]} outside {{0 background, 1 object, 2 hand}}{hint}; "
            "relabel the mask"
        )
    return bool((labels == LABEL_OBJECT).any()), bool((labels == LABEL_HAND).any())


def _check_labels_present(where: str, has_object: bool, has_hand: bool) -> None:
    for present, label, what in ((has_object, LABEL_OBJECT, "object"), (has_hand, LABEL_HAND, "hand")):
        if not present:
            raise CaptureError(
                f"{where}: no mask of any view has {what} pixels (label {label}); the reconstruction "
                f"needs the {what} labelled in at least one view: fix the masks (0 background, "
                "1 object, 2 hand) or drop them all"
            )


def _check_depth_scale(where: str, depth_scale: Any) -> float:
    if (
        isinstance(depth_scale, bool)
        or not isinstance(depth_scale, (int, float, np.integer, np.floating))
        or not math.isfinite(depth_scale)
        or depth_scale <= 0
    ):
        raise CaptureError(
            f"{where}: depth_scale = {depth_scale!r}; expected metres per depth unit > 0 "
            "(0.001 for uint16 millimetres)"
        )
    return float(depth_scale)


def _view_where(json_path: Path, i: int, name: Any) -> str:
    return f"{json_path}: views[{i}] ({name!r})"


def _check_view_meta(json_path: Path, i: int, v: CaptureView) -> None:
    where = _view_where(json_path, i, v.name)
    _check_name(where, v.name)
    _check_intrinsics(where, v.width, v.height, v.fx, v.fy, v.cx, v.cy)
    v.c2w = _check_c2w(where, v.c2w)


def _check_unique_names(json_path: Path, names: Sequence[str]) -> None:
    first: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in first:
            raise CaptureError(
                f"{json_path}: views[{i}].name = {name!r} is already used by views[{first[name]}]; "
                "view names must be unique: rename one"
            )
        first[name] = i


def _read_view_files(v: CaptureView, depth_scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    rgb = _check_rgb(str(v.rgb_path), read_image(v.rgb_path, "rgb"), v.width, v.height)
    raw = read_image(v.depth_path, "depth")
    _check_depth_raw(str(v.depth_path), raw, depth_scale, v.width, v.height)
    mask = None
    if v.mask_path is not None:
        mask = read_image(v.mask_path, "mask")
        check_mask(str(v.mask_path), mask, v.width, v.height)
    return rgb, raw, mask


# --------------------------------------------------------------------------------------------------
# capture.json parsing, loading and validation
# --------------------------------------------------------------------------------------------------


def _rel_path(json_path: Path, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise CaptureError(f"{json_path}: {key} = {value!r}; expected a relative file path (string)")
    p = PurePosixPath(value.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or re.match(r"^[A-Za-z]:", value):
        raise CaptureError(
            f"{json_path}: {key} = {value!r}; paths must be relative to the capture folder and stay "
            "inside it (no absolute paths, no '..')"
        )
    return p.as_posix()


def _capture_from_json(data: Any, root: Path) -> Capture:
    json_path = root / CAPTURE_JSON
    if not isinstance(data, dict):
        raise CaptureError(f"{json_path}: expected a JSON object at the top level, got {type(data).__name__}")
    fmt = data.get("format")
    if fmt != FORMAT_NAME:
        raise CaptureError(
            f"{json_path}: format = {fmt!r}; expected {FORMAT_NAME!r} (this is not a splatsim capture: "
            "convert it with a reader in recon.readers)"
        )
    version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CaptureError(f"{json_path}: version = {version!r}; expected {FORMAT_VERSION}")
    if version > FORMAT_VERSION:
        raise CaptureError(
            f"{json_path}: version = {version} was written by a newer splatsim (this one reads "
            f"version {FORMAT_VERSION}); upgrade splatsim"
        )
    units = data.get("units")
    if units not in _UNITS:
        raise CaptureError(f"{json_path}: units = {units!r}; expected 'metres' (poses and depth in metres)")
    depth_scale = _check_depth_scale(f"{json_path}: field depth_scale", data.get("depth_scale"))
    frame = data.get("frame", FRAME_DESCRIPTION)
    if not isinstance(frame, str):
        raise CaptureError(f"{json_path}: frame = {frame!r}; expected a description string")
    metadata = data.get("metadata", {})
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise CaptureError(f"{json_path}: metadata = {metadata!r}; expected a JSON object")
    ground_truth = data.get("ground_truth", {})
    if ground_truth is None:
        ground_truth = {}
    if not isinstance(ground_truth, dict):
        raise CaptureError(f"{json_path}: ground_truth = {ground_truth!r}; expected a JSON object")
    for key, value in ground_truth.items():
        if key.endswith("_mesh"):
            ground_truth[key] = _rel_path(json_path, f"ground_truth.{key}", value)

    raw_views = data.get("views")
    if not isinstance(raw_views, list) or not raw_views:
        raise CaptureError(f"{json_path}: views = {raw_views!r}; expected a non-empty list of views")
    views = []
    for i, rv in enumerate(raw_views):
        if not isinstance(rv, dict):
            raise CaptureError(f"{json_path}: views[{i}] = {rv!r}; expected a JSON object")
        missing = [k for k in _VIEW_KEYS if k not in rv]
        if missing:
            raise CaptureError(
                f"{json_path}: views[{i}] ({rv.get('name')!r}) lacks field(s) {missing}; every view "
                f"needs {list(_VIEW_KEYS)} (and optionally 'mask')"
            )
        where = _view_where(json_path, i, rv["name"])
        _check_name(where, rv["name"])
        mask = rv.get("mask")
        view = CaptureView(
            name=rv["name"],
            rgb_path=root / _rel_path(json_path, f"views[{i}].rgb", rv["rgb"]),
            depth_path=root / _rel_path(json_path, f"views[{i}].depth", rv["depth"]),
            mask_path=None if mask is None else root / _rel_path(json_path, f"views[{i}].mask", mask),
            width=rv["width"],
            height=rv["height"],
            fx=rv["fx"],
            fy=rv["fy"],
            cx=rv["cx"],
            cy=rv["cy"],
            c2w=rv["c2w"],
        )
        _check_view_meta(json_path, i, view)
        view.fx, view.fy, view.cx, view.cy = (float(x) for x in (view.fx, view.fy, view.cx, view.cy))
        view.width, view.height = int(view.width), int(view.height)
        views.append(view)
    _check_unique_names(json_path, [v.name for v in views])
    return Capture(root, views, depth_scale, metadata, ground_truth)


def _check_files_exist(capture: Capture) -> None:
    for i, v in enumerate(capture.views):
        for key, path in (("rgb", v.rgb_path), ("depth", v.depth_path), ("mask", v.mask_path)):
            if path is not None and not Path(path).is_file():
                raise CaptureError(
                    f"{path}: {key} file not found; {capture.json_path} lists it as views[{i}].{key} "
                    f"of view {v.name!r}: restore the file or remove the view"
                )
    for key in capture.ground_truth:
        path = capture.ground_truth_path(key) if key.endswith("_mesh") else None
        if path is not None and not path.is_file():
            raise CaptureError(
                f"{path}: ground-truth file not found; {capture.json_path} lists it as "
                f"ground_truth.{key}: restore it or remove the entry"
            )


def validate_capture(capture: Capture, check_images: bool = True) -> None:
    """Checks a capture against the format; raises `CaptureError` at the first problem.

    Always: intrinsics, poses, unique names, depth scale, that every listed file exists.
    With ``check_images``: decodes every image and checks its type and size, that each view has
    valid depth in plausible metres, mask labels, and that the masks (if any) show the object and the
    hand in at least one view each.
    """
    json_path = capture.json_path
    _check_depth_scale(f"{json_path}: field depth_scale", capture.depth_scale)
    if not capture.views:
        raise CaptureError(f"{json_path}: the capture has no views")
    for i, v in enumerate(capture.views):
        _check_view_meta(json_path, i, v)
    _check_unique_names(json_path, capture.names)
    _check_files_exist(capture)
    if not check_images:
        return
    has_object = has_hand = False
    for v in capture.views:
        _, _, mask = _read_view_files(v, capture.depth_scale)
        if mask is not None:
            has_object = has_object or bool((mask == LABEL_OBJECT).any())
            has_hand = has_hand or bool((mask == LABEL_HAND).any())
    if capture.has_masks:
        _check_labels_present(f"{json_path} (capture {capture.root})", has_object, has_hand)


def load_capture(root: Path | str, check_images: bool = True) -> Capture:
    """Loads a capture folder (or its ``capture.json``), validating it (`validate_capture`).

    Args:
        root: The capture folder, or the path of its ``capture.json``.
        check_images: Decode and check every image too (slower; off trusts the files' content).
    """
    root = Path(root)
    if root.name == CAPTURE_JSON and root.is_file():
        root = root.parent
    json_path = root / CAPTURE_JSON
    if not json_path.is_file():
        raise CaptureError(
            f"{json_path}: not found; a capture folder holds capture.json (a folder without it is not "
            "a capture, or an unfinished write_capture: write it again)"
        )
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CaptureError(f"{json_path}: cannot read it as JSON ({e}); write the capture again") from e
    capture = _capture_from_json(data, root)
    validate_capture(capture, check_images=check_images)
    return capture


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------


def _to_jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_to_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _to_jsonable(x.tolist())
    if isinstance(x, (np.bool_,)):
        return bool(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    if isinstance(x, Path):
        return x.as_posix()
    return x


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Writes ``data`` to a temporary file beside ``path``, then renames it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _encode_png(image: np.ndarray) -> bytes:
    return iio.imwrite("<bytes>", image, extension=".png")


def _remove_old_capture(root: Path) -> None:
    """Deletes capture.json (first, so the folder stops being loadable) and the files it lists."""
    json_path = root / CAPTURE_JSON
    try:
        old = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        old = {}
    json_path.unlink()
    views = old.get("views") if isinstance(old, dict) else None
    for v in views if isinstance(views, list) else []:
        for key in ("rgb", "depth", "mask"):
            rel = v.get(key) if isinstance(v, dict) else None
            with contextlib.suppress(CaptureError, OSError):
                (root / _rel_path(json_path, key, rel)).unlink()


def write_capture(
    root: Path | str,
    views: Sequence[ViewData],
    depth_scale: float = DEFAULT_DEPTH_SCALE,
    metadata: Mapping[str, Any] | None = None,
    ground_truth: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Capture:
    """Writes in-memory views as a capture folder and returns it.

    Everything is checked before any file is written (the same checks as `validate_capture`); the
    images go to ``rgb/<name>.png``, ``depth/<name>.png`` (uint16, ``depth / depth_scale`` rounded,
    clipped to 65535; missing -> 0) and ``masks/<name>.png``, each atomically, and ``capture.json``
    last, so an interrupted write leaves no loadable capture.

    Args:
        root: The capture folder (created if needed).
        views: The views; depth in metres.
        depth_scale: Metres per depth-PNG unit (0.001: millimetres).
        metadata: Free-form, JSON-serialisable (numpy values are converted).
        ground_truth: Optional; keys ending in ``_mesh`` are files: a path relative to ``root`` must
            exist there, an absolute path is copied to ``root/ground_truth/<key><suffix>``.
        overwrite: Replace an existing capture in ``root`` (its capture.json is removed first).
    """
    root = Path(root)
    json_path = root / CAPTURE_JSON
    depth_scale = _check_depth_scale(f"{json_path}: depth_scale", depth_scale)
    if not views:
        raise CaptureError(f"{json_path}: write_capture needs at least one view")
    if json_path.exists() and not overwrite:
        raise CaptureError(
            f"{json_path}: a capture already exists there; pass overwrite=True or choose another folder"
        )

    # 1. Check and encode everything in memory.
    prepared = []
    has_object = has_hand = False
    for i, v in enumerate(views):
        if not isinstance(v, ViewData):
            raise CaptureError(f"{json_path}: views[{i}] is a {type(v).__name__}; expected ViewData")
        name = _check_name(_view_where(json_path, i, v.name), v.name)
        rgb_path = root / "rgb" / f"{name}.png"
        depth_path = root / "depth" / f"{name}.png"
        mask_path = root / "masks" / f"{name}.png"
        rgb = _check_rgb(f"{rgb_path} (view {name!r})", v.rgb)
        height, width = rgb.shape[:2]
        where = _view_where(json_path, i, name)
        _check_intrinsics(where, width, height, v.fx, v.fy, v.cx, v.cy)
        c2w = _check_c2w(where, v.c2w)
        depth = np.asarray(v.depth)
        dwhere = f"{depth_path} (view {name!r})"
        if depth.ndim != 2 or not np.issubdtype(depth.dtype, np.floating):
            raise CaptureError(
                f"{dwhere}: ViewData.depth has dtype {depth.dtype} and shape {depth.shape}; expected "
                "float metres [H, W] (0 or NaN = missing)"
            )
        _check_size(dwhere, "depth", depth.shape, width, height)
        finite = depth[np.isfinite(depth)]
        if (finite < 0).any():
            raise CaptureError(
                f"{dwhere}: ViewData.depth has negative values (min {finite.min():.4g}); expected "
                "metres >= 0 with 0 or NaN for missing"
            )
        if finite[finite > 0].size and float(np.median(finite[finite > 0])) > MAX_MEDIAN_DEPTH_M:
            raise CaptureError(
                f"{dwhere}: ViewData.depth median = {float(np.median(finite[finite > 0])):.4g}, which "
                "looks like millimetres; ViewData.depth must be metres: divide by 1000"
            )
        raw = depth_metres_to_uint16(depth, depth_scale)
        _check_depth_raw(dwhere, raw, depth_scale, width, height)
        mask = None
        if v.mask is not None:
            mask = np.asarray(v.mask)
            obj, hand = check_mask(f"{mask_path} (view {name!r})", mask, width, height)
            has_object, has_hand = has_object or obj, has_hand or hand
        view = CaptureView(
            name, rgb_path, depth_path, mask_path if mask is not None else None,
            int(width), int(height), float(v.fx), float(v.fy), float(v.cx), float(v.cy), c2w,
        )  # fmt: skip
        prepared.append((view, rgb, raw, mask))
    _check_unique_names(json_path, [p[0].name for p in prepared])
    if any(p[3] is not None for p in prepared):
        _check_labels_present(f"{json_path} (capture {root})", has_object, has_hand)

    gt: dict[str, Any] = dict(ground_truth or {})
    copies: list[tuple[Path, Path]] = []
    for key, value in gt.items():
        if not key.endswith("_mesh"):
            continue
        src = Path(value)
        if src.is_absolute():
            if not src.is_file():
                raise CaptureError(f"{src}: ground_truth.{key} file not found; pass an existing file")
            dst = root / "ground_truth" / f"{key}{src.suffix}"
            copies.append((src, dst))
            gt[key] = dst.relative_to(root).as_posix()
        else:
            gt[key] = _rel_path(json_path, f"ground_truth.{key}", str(value))
            if not (root / gt[key]).is_file():
                raise CaptureError(
                    f"{root / gt[key]}: ground_truth.{key} file not found in the capture folder; put "
                    "it there first or pass its absolute path to have it copied"
                )
    capture = Capture(root, [p[0] for p in prepared], depth_scale, dict(metadata or {}), gt)
    try:
        text = json.dumps(capture.to_json_dict(), indent=2, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise CaptureError(
            f"{json_path}: metadata/ground_truth cannot be stored as JSON ({e}); use strings, "
            "finite numbers, lists and dicts"
        ) from e

    # 2. Write the files, capture.json last.
    root.mkdir(parents=True, exist_ok=True)
    if json_path.exists():
        _remove_old_capture(root)
    written: list[Path] = []
    try:
        for view, rgb, raw, mask in prepared:
            for path, image in ((view.rgb_path, rgb), (view.depth_path, raw), (view.mask_path, mask)):
                if path is not None:
                    _atomic_write_bytes(path, _encode_png(image))
                    written.append(path)
        for src, dst in copies:
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(f".{dst.name}.tmp")
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
            written.append(dst)
        _atomic_write_bytes(json_path, (text + "\n").encode("utf-8"))
    except BaseException:
        for path in written:
            with contextlib.suppress(OSError):
                path.unlink()
        raise
    return capture
