"""DexYCB reader: one frame of a DexYCB sequence, seen by several cameras, as a splatsim capture.

DexYCB layout (the parts read here)::

    <root>/calibration/intrinsics/<serial>_<W>x<H>.yml     color: {fx, fy, ppx, ppy}
    <root>/calibration/extrinsics_<name>/extrinsics.yml  extrinsics: {<serial>: 12 floats}, master: <serial>
    <root>/<subject>/<sequence>/meta.yml                 serials, num_frames, extrinsics (<name>),
                                                         ycb_ids, ycb_grasp_ind, mano_sides
    <root>/<subject>/<sequence>/<serial>/color_<frame:06d>.jpg
                                        aligned_depth_to_color_<frame:06d>.png   uint16 millimetres
                                        labels_<frame:06d>.npz                  seg: 0 background,
                                                                                1-21 YCB ids, 255 hand
    <root>/models/<ycb name>/textured_simple.obj          (optional: ground-truth object mesh)

Conversions made here, at the boundary:

- Poses: each camera's 12 extrinsics floats are a row-major 3x4 ``[R | t]`` mapping camera points
  into the master camera's frame, already with OpenCV camera axes: it *is* the camera-to-world pose.
  The scene frame is therefore the master camera's frame (metres).
- Intrinsics: RealSense/OpenCV put pixel centres at integer coordinates; the project puts them at
  ``i + 0.5`` (`splatsim.conventions`), so ``cx = ppx + 0.5`` and ``cy = ppy + 0.5``.
- Depth: uint16 millimetres -> metres (the capture stores it back as uint16 mm, exactly).
- Masks: hand (255) -> 2, the grasped object (``ycb_ids[ycb_grasp_ind]``) -> 1, the other objects
  and the background -> 0.

The ``.yml`` files are read with ``yaml.safe_load`` (never an unsafe YAML loader); ``.npz`` files are
loaded without unpickling.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from recon.capture import (
    DEFAULT_DEPTH_SCALE,
    Capture,
    CaptureError,
    ViewData,
    read_image,
    write_capture,
)
from splatsim.scene import LABEL_HAND, LABEL_OBJECT

__all__ = ["YCB_CLASSES", "read_dexycb"]

YCB_CLASSES: dict[int, str] = {
    1: "002_master_chef_can",
    2: "003_cracker_box",
    3: "004_sugar_box",
    4: "005_tomato_soup_can",
    5: "006_mustard_bottle",
    6: "007_tuna_fish_can",
    7: "008_pudding_box",
    8: "009_gelatin_box",
    9: "010_potted_meat_can",
    10: "011_banana",
    11: "019_pitcher_base",
    12: "021_bleach_cleanser",
    13: "024_bowl",
    14: "025_mug",
    15: "035_power_drill",
    16: "036_wood_block",
    17: "037_scissors",
    18: "040_large_marker",
    19: "051_large_clamp",
    20: "052_extra_large_clamp",
    21: "061_foam_brick",
}
"""DexYCB's YCB object ids (the values in ``seg`` and ``ycb_ids``) and model folder names."""

SEG_HAND = 255
"""The hand's value in DexYCB's ``seg`` label images."""
DEXYCB_DEPTH_SCALE = 1e-3
"""DexYCB depth PNGs are uint16 millimetres."""
_ORTHONORMALISE_BELOW = 1e-2
"""Calibrated rotations off by less than this (max |R^T R - I|) are projected onto SO(3)."""


def read_dexycb(
    root: Path | str,
    sequence: str,
    frame: int,
    serials: Sequence[str] | None,
    out: Path | str,
    *,
    overwrite: bool = False,
) -> Capture:
    """Converts one frame of a DexYCB sequence into a capture folder.

    Args:
        root: The DexYCB root (holding ``calibration/`` and the subject folders).
        sequence: The sequence, relative to ``root``, e.g. ``"20200709-subject-01/20200709_141754"``.
        frame: Frame index, ``0 <= frame < num_frames``.
        serials: Camera serials to keep (in this order); None keeps all of ``meta.yml``'s serials.
        out: The capture folder to write.
        overwrite: Replace a capture already in ``out``.

    Returns:
        The written capture; views are named by camera serial. ``metadata`` records the source,
        sequence, frame, serials, master serial, YCB ids and the grasped object; ``ground_truth``
        holds the grasped object's pose (``object_pose``, mesh-to-scene 4x4) and, if the models are
        there, its mesh (``object_mesh``), and the hand's 21 joints (``hand_joints``, scene frame).

    Raises:
        CaptureError: For a missing or malformed file, an unknown serial, or a frame out of range.
    """
    root = Path(root)
    seq_dir = root / sequence
    meta_path = seq_dir / "meta.yml"
    meta = _load_yaml(meta_path)
    if not isinstance(meta, dict):
        raise CaptureError(f"{meta_path}: expected a mapping at the top level (is this a DexYCB sequence?)")
    all_serials = [str(s) for s in _field(meta, "serials", list, meta_path)]
    num_frames = _field(meta, "num_frames", int, meta_path)
    calib_name = str(_field(meta, "extrinsics", (str, int), meta_path))
    ycb_ids = [int(x) for x in _field(meta, "ycb_ids", list, meta_path)]
    grasp_ind = _field(meta, "ycb_grasp_ind", int, meta_path)
    if not 0 <= grasp_ind < len(ycb_ids):
        raise CaptureError(
            f"{meta_path}: ycb_grasp_ind = {grasp_ind} is out of range for ycb_ids = {ycb_ids}; fix meta.yml"
        )
    grasp_id = ycb_ids[grasp_ind]

    if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)):
        raise CaptureError(f"{meta_path}: frame = {frame!r}; expected a whole frame index")
    if not 0 <= frame < num_frames:
        raise CaptureError(
            f"{meta_path}: frame = {frame} is out of range; this sequence has num_frames = {num_frames} "
            f"(frames 0..{num_frames - 1})"
        )
    if serials is None:
        serials = all_serials
    serials = [str(s) for s in serials]
    if not serials:
        raise CaptureError(f"{meta_path}: serials is empty; pass None for all of {all_serials}")
    unknown = [s for s in serials if s not in all_serials]
    if unknown:
        raise CaptureError(
            f"{meta_path}: unknown camera serial(s) {unknown}; this sequence has serials {all_serials}"
        )
    if len(set(serials)) != len(serials):
        raise CaptureError(f"{meta_path}: serials {serials} name a camera twice")

    extr_path = root / "calibration" / f"extrinsics_{calib_name}" / "extrinsics.yml"
    extr = _load_yaml(extr_path)
    if not isinstance(extr, dict):
        raise CaptureError(f"{extr_path}: expected a mapping with 'extrinsics' and 'master'")
    extrinsics = _field(extr, "extrinsics", dict, extr_path)
    extrinsics = {str(k): v for k, v in extrinsics.items()}
    master = str(extr.get("master", ""))

    views = []
    labels0 = None
    for serial in serials:
        cam_dir = seq_dir / serial
        rgb = read_image(cam_dir / f"color_{frame:06d}.jpg", "DexYCB color")
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise CaptureError(
                f"{cam_dir / f'color_{frame:06d}.jpg'}: expected an 8-bit RGB image, got dtype "
                f"{rgb.dtype} shape {rgb.shape}"
            )
        height, width = rgb.shape[:2]
        depth_path = cam_dir / f"aligned_depth_to_color_{frame:06d}.png"
        raw = read_image(depth_path, "DexYCB depth")
        if raw.dtype != np.uint16 or raw.shape != (height, width):
            raise CaptureError(
                f"{depth_path}: expected uint16 millimetres of shape {(height, width)} (the color "
                f"image's), got dtype {raw.dtype} shape {raw.shape}"
            )
        labels_path = cam_dir / f"labels_{frame:06d}.npz"
        labels = _load_npz(labels_path)
        if "seg" not in labels:
            raise CaptureError(f"{labels_path}: has no 'seg' array (keys {sorted(labels)})")
        seg = labels["seg"]
        if seg.shape != (height, width):
            raise CaptureError(
                f"{labels_path}: seg has shape {seg.shape}; expected {(height, width)} (the color image's)"
            )
        mask = np.zeros((height, width), dtype=np.uint8)
        mask[seg == grasp_id] = LABEL_OBJECT
        mask[seg == SEG_HAND] = LABEL_HAND
        if labels0 is None:
            labels0 = labels

        intr_path = root / "calibration" / "intrinsics" / f"{serial}_{width}x{height}.yml"
        intr = _load_yaml(intr_path)
        color = _field(intr, "color", dict, intr_path) if isinstance(intr, dict) else None
        if color is None:
            raise CaptureError(f"{intr_path}: expected a mapping with a 'color' entry")
        fx, fy, ppx, ppy = (float(_field(color, k, (int, float), intr_path, "color.")) for k in _INTR_KEYS)

        if serial not in extrinsics:
            raise CaptureError(f"{extr_path}: no extrinsics for camera {serial}; it has {sorted(extrinsics)}")
        views.append(
            ViewData(
                name=serial,
                rgb=rgb,
                depth=(raw.astype(np.float64) * DEXYCB_DEPTH_SCALE).astype(np.float32),
                mask=mask,
                fx=fx,
                fy=fy,
                cx=ppx + 0.5,
                cy=ppy + 0.5,
                c2w=_extrinsics_to_c2w(extrinsics[serial], extr_path, serial),
            )
        )

    metadata = {
        "source": "dexycb",
        "sequence": sequence,
        "frame": int(frame),
        "serials": serials,
        "master_serial": master,
        "scene_frame": f"the master camera's ({master}) frame, OpenCV axes",
        "calibration": calib_name,
        "ycb_ids": ycb_ids,
        "ycb_grasp_ind": grasp_ind,
        "grasped_ycb_id": grasp_id,
        "object_name": YCB_CLASSES.get(grasp_id, f"ycb_{grasp_id}"),
        "mano_sides": [str(s) for s in meta.get("mano_sides", []) or []],
        "depth_source_unit": "millimetres",
    }
    ground_truth = _ground_truth(root, labels0, views[0].c2w, grasp_id, grasp_ind)
    return write_capture(
        out,
        views,
        depth_scale=DEFAULT_DEPTH_SCALE,
        metadata=metadata,
        ground_truth=ground_truth,
        overwrite=overwrite,
    )


_INTR_KEYS = ("fx", "fy", "ppx", "ppy")


def _field(d: dict, key: str, types: Any, path: Path, prefix: str = "") -> Any:
    if key not in d:
        raise CaptureError(f"{path}: missing field {prefix}{key}; is this a DexYCB file?")
    value = d[key]
    if isinstance(value, bool) or not isinstance(value, types):
        raise CaptureError(f"{path}: field {prefix}{key} = {value!r} has an unexpected type")
    return value


def _extrinsics_to_c2w(values: Any, path: Path, serial: str) -> np.ndarray:
    try:
        M = np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        M = np.zeros(0)
    if M.size != 12 or not np.isfinite(M).all():
        raise CaptureError(
            f"{path}: extrinsics of camera {serial} = {values!r}; expected 12 finite numbers "
            "(row-major 3x4 [R | t], camera to master)"
        )
    c2w = np.eye(4)
    c2w[:3] = M.reshape(3, 4)
    R = c2w[:3, :3]
    err = float(np.abs(R.T @ R - np.eye(3)).max())
    if 1e-9 < err < _ORTHONORMALISE_BELOW and np.linalg.det(R) > 0:
        U, _, Vt = np.linalg.svd(R)
        c2w[:3, :3] = U @ Vt  # nearest rotation; calibration files round their floats
    return c2w


def _ground_truth(
    root: Path, labels: dict[str, np.ndarray] | None, c2w: np.ndarray, grasp_id: int, grasp_ind: int
) -> dict[str, Any]:
    """The grasped object's pose (and mesh, if present) and the hand joints, in the scene frame."""
    gt: dict[str, Any] = {}
    if labels is None:
        return gt
    pose_y = labels.get("pose_y")
    if pose_y is not None and pose_y.ndim == 3 and pose_y.shape[1:] == (3, 4) and grasp_ind < len(pose_y):
        obj_to_cam = np.eye(4)
        obj_to_cam[:3] = pose_y[grasp_ind]
        if np.isfinite(obj_to_cam).all() and np.abs(obj_to_cam[:3, :3]).sum() > 0:
            gt["object_pose"] = (c2w @ obj_to_cam).tolist()
            mesh = root / "models" / YCB_CLASSES.get(grasp_id, "") / "textured_simple.obj"
            if grasp_id in YCB_CLASSES and mesh.is_file():
                gt["object_mesh"] = mesh.resolve()
    joints = labels.get("joint_3d")
    if joints is not None and joints.size == 63:
        joints = joints.reshape(21, 3).astype(np.float64)
        if np.isfinite(joints).all() and not np.all(joints == -1):  # DexYCB writes -1 for no hand
            gt["hand_joints"] = (joints @ c2w[:3, :3].T + c2w[:3, 3]).tolist()
    return gt


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise CaptureError(f"{path}: DexYCB labels file not found; check the sequence, serial and frame")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as e:  # zipfile.BadZipFile, ValueError (pickled arrays), OSError, ...
        raise CaptureError(
            f"{path}: cannot read it as a plain .npz ({type(e).__name__}: {e}); it is truncated or "
            "holds pickled objects, which are never loaded"
        ) from e


# --------------------------------------------------------------------------------------------------
# YAML: yaml.safe_load only (PyYAML is a dependency)
# --------------------------------------------------------------------------------------------------


def _load_yaml(path: Path) -> Any:
    if not path.is_file():
        raise CaptureError(f"{path}: DexYCB file not found; check the DexYCB root and the sequence name")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CaptureError(f"{path}: cannot read it ({e})") from e
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise CaptureError(f"{path}: not valid YAML ({e})") from e
