"""nerfstudio reader: a ``transforms.json`` with metric depth and hand/object masks, as a capture.

What is read (each camera field global or per frame, the frame's value winning)::

    fl_x, fl_y, cx, cy, w, h        pinhole intrinsics (cx, cy default to w/2, h/2; fl_x may come
                                    from camera_angle_x, Blender-style, with fl_y = fl_x)
    k1 k2 k3 k4 p1 p2               distortion: must be absent or 0 (splatsim renders a pinhole camera)
    camera_model                    must be a pinhole model (OPENCV, PINHOLE, SIMPLE_PINHOLE)
    frames[].file_path              RGB image (8-bit; an alpha channel is dropped)
    frames[].transform_matrix       camera-to-world, OpenGL camera axes (x right, y up, z back)
    frames[].depth_file_path        required: uint16 PNG (or .npy), metres = value * depth_unit_scale_factor
    frames[].mask_path              optional: 8-bit labels 0 background, 1 object, 2 hand

Conversions made here, at the boundary: ``transform_matrix`` becomes OpenCV axes
(``c2w @ diag(1, -1, -1, 1)``, `splatsim.conventions.c2w_opengl_to_opencv`), depth becomes metres.
Nothing is re-centred or re-scaled: the poses must already be in metres (and the depth is metric,
so they must agree). nerfstudio's intrinsics already put pixel centres at ``i + 0.5``, as the
project does. Paths are relative to the folder of ``transforms.json``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recon.capture import (
    DEFAULT_DEPTH_SCALE,
    Capture,
    CaptureError,
    ViewData,
    check_mask,
    read_image,
    write_capture,
)
from splatsim.conventions import c2w_opengl_to_opencv

__all__ = ["read_nerfstudio"]

_DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")
_PINHOLE_MODELS = ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE")
_CAMERA_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h", "camera_angle_x", "camera_model", *_DISTORTION_KEYS)


def read_nerfstudio(
    transforms_json: Path | str,
    out: Path | str,
    depth_unit_scale_factor: float = 1e-3,
    *,
    overwrite: bool = False,
) -> Capture:
    """Converts a nerfstudio dataset (``transforms.json`` and its files) into a capture folder.

    Args:
        transforms_json: The ``transforms.json`` file.
        out: The capture folder to write.
        depth_unit_scale_factor: Metres per depth-file unit (nerfstudio's default 1e-3: millimetres).
        overwrite: Replace a capture already in ``out``.

    Returns:
        The written capture; views are named after their image files.

    Raises:
        CaptureError: Naming the file and field, for anything the capture format cannot hold
            (distortion, non-pinhole cameras, missing depth, binary masks, ...).
    """
    path = Path(transforms_json)
    if not path.is_file():
        raise CaptureError(f"{path}: transforms.json not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CaptureError(f"{path}: cannot read it as JSON ({e})") from e
    if not isinstance(data, dict) or not isinstance(data.get("frames"), list) or not data["frames"]:
        raise CaptureError(f"{path}: expected a JSON object with a non-empty 'frames' list")
    if not (
        isinstance(depth_unit_scale_factor, (int, float))
        and math.isfinite(depth_unit_scale_factor)
        and depth_unit_scale_factor > 0
    ):
        raise CaptureError(
            f"{path}: depth_unit_scale_factor = {depth_unit_scale_factor!r}; expected metres per unit > 0"
        )
    base = path.parent

    views: list[ViewData] = []
    sources: dict[str, dict[str, str]] = {}
    used_names: set[str] = set()
    camera_models: set[str] = set()
    for i, fr in enumerate(data["frames"]):
        where = f"{path}: frames[{i}]"
        if not isinstance(fr, dict):
            raise CaptureError(f"{where} = {fr!r}; expected a JSON object")
        cam = {k: fr.get(k, data.get(k)) for k in _CAMERA_KEYS}
        model = cam["camera_model"]
        if model is not None and model not in _PINHOLE_MODELS:
            raise CaptureError(
                f"{where}: camera_model = {model!r}; splatsim needs a pinhole camera ({_PINHOLE_MODELS}): "
                "undistort or reproject the images first"
            )
        camera_models.add(model or "PINHOLE")
        for k in _DISTORTION_KEYS:
            if cam[k] not in (None, 0, 0.0):
                raise CaptureError(
                    f"{where}: {k} = {cam[k]!r}; lens distortion is not supported (splatsim renders a "
                    "pinhole camera): undistort the images first (e.g. ns-process-data, COLMAP "
                    "image_undistorter) and set k1..k4, p1, p2 to 0"
                )

        rgb_path = _resolve(base, fr, "file_path", where, required=True)
        rgb = read_image(rgb_path, "rgb")
        if rgb.ndim == 3 and rgb.shape[2] == 4 and rgb.dtype == np.uint8:
            rgb = np.ascontiguousarray(rgb[..., :3])
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise CaptureError(
                f"{rgb_path}: dtype {rgb.dtype} shape {rgb.shape}; expected an 8-bit RGB(A) image"
            )
        height, width = rgb.shape[:2]
        for key, size in (("w", width), ("h", height)):
            if cam[key] is not None and cam[key] != size:
                raise CaptureError(
                    f"{where}: {key} = {cam[key]!r} but {rgb_path} is {width}x{height}; fix w/h (and the "
                    "intrinsics) or the image"
                )
        fx, fy = cam["fl_x"], cam["fl_y"]
        if fx is None and cam["camera_angle_x"] is not None:
            fx = 0.5 * width / math.tan(0.5 * float(cam["camera_angle_x"]))
            fy = fx if fy is None else fy
        if fx is None or fy is None:
            raise CaptureError(f"{where}: no focal length; give fl_x and fl_y (globally or per frame)")
        cx = cam["cx"] if cam["cx"] is not None else 0.5 * width
        cy = cam["cy"] if cam["cy"] is not None else 0.5 * height

        c2w = _transform_matrix(fr.get("transform_matrix"), where)

        depth_path = _resolve(base, fr, "depth_file_path", where, required=True)
        depth = _read_depth(depth_path, depth_unit_scale_factor, width, height)

        mask = None
        mask_path = _resolve(base, fr, "mask_path", where, required=False)
        if mask_path is not None:
            mask = read_image(mask_path, "mask")
            if mask.ndim == 3 and mask.dtype == np.uint8 and (mask == mask[..., :1]).all():
                mask = np.ascontiguousarray(mask[..., 0])  # grey stored as RGB(A)
            check_mask(str(mask_path), mask, width, height)

        name = _unique_name(rgb_path.stem, i, used_names)
        views.append(ViewData(name, rgb, depth, mask, float(fx), float(fy), float(cx), float(cy), c2w))
        sources[name] = {
            k: str(fr[k]) for k in ("file_path", "depth_file_path", "mask_path") if fr.get(k) is not None
        }

    metadata = {
        "source": "nerfstudio",
        "transforms_json": str(path.resolve()),
        "depth_unit_scale_factor": float(depth_unit_scale_factor),
        "camera_models": sorted(camera_models),
        "source_files": sources,
    }
    return write_capture(out, views, depth_scale=DEFAULT_DEPTH_SCALE, metadata=metadata, overwrite=overwrite)


def _resolve(base: Path, frame: dict, key: str, where: str, required: bool) -> Path | None:
    value = frame.get(key)
    if value is None:
        if required:
            need = "metric depth (fused into the initial point cloud)" if key == "depth_file_path" else "it"
            raise CaptureError(f"{where}: no {key}; splatsim needs {need} for every frame")
        return None
    if not isinstance(value, str) or not value:
        raise CaptureError(f"{where}: {key} = {value!r}; expected a file path")
    p = base / value
    if not p.exists() and not p.suffix and p.with_suffix(".png").is_file():
        p = p.with_suffix(".png")  # Blender-style file_path without extension
    if not p.is_file():
        raise CaptureError(f"{p}: file not found ({where}.{key} = {value!r}, relative to {base})")
    return p


def _transform_matrix(value: Any, where: str) -> np.ndarray:
    try:
        M = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        M = np.zeros(0)
    if M.shape == (3, 4):
        M = np.vstack([M, [0.0, 0.0, 0.0, 1.0]])
    if M.shape != (4, 4):
        raise CaptureError(
            f"{where}: transform_matrix = {value!r}; expected a 4x4 (or 3x4) camera-to-world matrix"
        )
    if not np.isfinite(M).all():
        raise CaptureError(
            f"{where}: transform_matrix = {M.tolist()} has non-finite entries (NaN or inf); expected a "
            "finite camera-to-world pose in metres: fix or drop this frame"
        )
    return c2w_opengl_to_opencv(torch.from_numpy(M)).numpy()


def _read_depth(path: Path, scale: float, width: int, height: int) -> np.ndarray:
    if path.suffix.lower() == ".npy":
        try:
            raw = np.load(path, allow_pickle=False)
        except Exception as e:
            raise CaptureError(f"{path}: cannot read it as a plain .npy array ({e})") from e
        if raw.ndim == 3 and raw.shape[2] == 1:
            raw = raw[..., 0]
        if not (np.issubdtype(raw.dtype, np.floating) or np.issubdtype(raw.dtype, np.integer)):
            raise CaptureError(f"{path}: depth dtype {raw.dtype}; expected numbers")
    else:
        raw = read_image(path, "depth")
        if raw.dtype != np.uint16:
            raise CaptureError(
                f"{path}: depth has dtype {raw.dtype}; expected a 16-bit PNG (uint16, "
                f"{scale} m per unit; set depth_unit_scale_factor for other units)"
            )
    if raw.shape != (height, width):
        raise CaptureError(
            f"{path}: depth is {raw.shape[-1]}x{raw.shape[0]} but the image is {width}x{height}; "
            "the depth must be aligned to the RGB image at the same size"
        )
    return (raw.astype(np.float64) * scale).astype(np.float32)


def _unique_name(stem: str, i: int, used: set[str]) -> str:
    name = "".join(c if (c.isascii() and c.isalnum()) or c in "._-" else "_" for c in stem)
    name = name.lstrip("._-") or f"frame_{i:05d}"
    if name in used:
        name = f"{name}_{i:05d}"
    used.add(name)
    return name
