"""``grasps.json``: writer, validating reader, scene fingerprint; and reading point clouds from PLY files.

The file (format ``splatsim.grasps``, version 1) is plain JSON, readable without this package::

    {
      "format": "splatsim.grasps", "version": 1,
      "convention": "...", "units": "metres", "frame": "scene",
      "fingerprint": {"object_points_sha256": ..., "hand_points_sha256": ..., "num_object_points": ...,
                      "num_hand_points": ..., "scene_json": {...}},
      "object_mean": [x, y, z],            # Eq. 2: the object-centred frame's origin in the scene
      "gripper": {...}, "config": {...},
      "summary": {"candidates": C, "rejected": {filter: count, ...}, "kept": K, "targets": T, ...},
      "targets": [candidate ids, best first],
      "candidates": [
        {"id": 0, "status": "kept" | <the filter that rejected it>, "rank": 0 | null,
         "pose": 4x4 grasp-to-scene, "width": ..., "opening": ..., "center": [...], "score": ...,
         "antipodal": ..., "centring": ..., "clearance": ... | null, "eq1_distance": ... | null,
         "beyond_fraction": ... | null},
        ...
      ]
    }

Rejecting filters, in the order they are applied (a candidate carries the first that rejects it):
``exceeds_stroke``, ``object_collision``, ``min_score``, ``eq1_distance``, ``non_intrusion``,
``swept_volume``, ``authors_box``, ``nms``. Measurements a candidate never reached are ``null``.

The fingerprint hashes the object and hand points (float32, little endian, file order) the grasps were
computed for; `read_grasps` with ``scene_dir`` recomputes it and refuses a file from another scene.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from plyfile import PlyData

__all__ = [
    "FILTERS",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "GraspFile",
    "GraspFileError",
    "STATUS_KEPT",
    "check_fingerprint",
    "load_points",
    "points_sha256",
    "read_grasps",
    "scene_fingerprint",
    "write_grasps_json",
]

FORMAT_NAME = "splatsim.grasps"
FORMAT_VERSION = 1
STATUS_KEPT = "kept"
FILTERS = (
    "exceeds_stroke",
    "object_collision",
    "min_score",
    "eq1_distance",
    "non_intrusion",
    "swept_volume",
    "authors_box",
    "nms",
)
"""The rejecting filters, in the order they are applied."""

_CANDIDATE_FLOATS = ("width", "opening", "score", "antipodal", "centring")
_CANDIDATE_OPTIONAL = ("clearance", "eq1_distance", "beyond_fraction")


class GraspFileError(ValueError):
    """A grasps.json that is malformed, inconsistent, or computed for another scene."""


def load_points(path: str | os.PathLike) -> np.ndarray:  # [N, 3] float64
    """The ``x y z`` of a PLY's vertices: Gaussian means of a 3DGS PLY, or any point cloud or mesh.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: Naming the file, if it is not a readable PLY, has no vertex ``x y z``, or holds
            non-finite coordinates.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with open(path, "rb") as f:
            ply = PlyData.read(f)
    except Exception as exc:  # plyfile raises several types for malformed files
        raise ValueError(f"{path}: not a readable PLY file ({type(exc).__name__}: {exc})") from exc
    if "vertex" not in [e.name for e in ply.elements]:
        raise ValueError(f"{path}: no 'vertex' element; expected a point cloud or 3DGS PLY")
    vertex = ply["vertex"]
    names = [p.name for p in vertex.properties]
    missing = [k for k in ("x", "y", "z") if k not in names]
    if missing:
        raise ValueError(f"{path}: vertex lacks {missing}; expected x y z coordinates")
    pts = np.stack([np.asarray(vertex[k], dtype=np.float64) for k in ("x", "y", "z")], axis=1)
    if not np.isfinite(pts).all():
        bad = int(np.nonzero(~np.isfinite(pts).all(axis=1))[0][0])
        raise ValueError(f"{path}: vertex {bad} has a non-finite coordinate {pts[bad].tolist()}")
    return pts


def points_sha256(points: np.ndarray) -> str:
    """SHA-256 of the points as float32 little endian, in order (the precision of a PLY's x y z)."""
    return hashlib.sha256(np.ascontiguousarray(np.asarray(points), dtype="<f4").tobytes()).hexdigest()


def scene_fingerprint(
    object_points: np.ndarray,  # [N, 3]
    hand_points: np.ndarray,  # [M, 3]
    scene_info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What identifies the scene a grasps file belongs to: hashes and counts of both point clouds, plus
    identifying entries of ``scene.json`` (informational; only the hashes are checked)."""
    fp: dict[str, Any] = {
        "object_points_sha256": points_sha256(object_points),
        "hand_points_sha256": points_sha256(hand_points),
        "num_object_points": int(np.asarray(object_points).reshape(-1, 3).shape[0]),
        "num_hand_points": int(np.asarray(hand_points).reshape(-1, 3).shape[0]),
    }
    if scene_info:
        keep = {
            k: v for k, v in scene_info.items() if k in ("id", "config_hash", "capture", "source", "counts")
        }
        if keep:
            fp["scene_json"] = keep
    return fp


def check_fingerprint(found: dict[str, Any], expected: dict[str, Any], where: str) -> None:
    """Raises GraspFileError unless both point-cloud hashes match."""
    for key, name in (("object_points_sha256", "object"), ("hand_points_sha256", "hand")):
        if found.get(key) != expected.get(key):
            raise GraspFileError(
                f"{where} was computed for another scene: its {name} point cloud hash "
                f"{str(found.get(key))[:12]}... differs from this scene's {str(expected.get(key))[:12]}... "
                f"({found.get('num_' + name + '_points')} vs {expected.get('num_' + name + '_points')} points). "
                "Recompute the grasps for this scene (`splatsim grasps`)."
            )


def _finite(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_grasps_json(path: str | os.PathLike, doc: dict[str, Any]) -> Path:
    """Writes a grasps document atomically (temporary file, then rename), one candidate per line."""
    path = Path(path)
    candidates = doc.get("candidates", [])
    head = {k: v for k, v in doc.items() if k != "candidates"}
    text = json.dumps(head, indent=2, allow_nan=False)
    lines = [json.dumps({k: _finite(v) for k, v in c.items()}, allow_nan=False) for c in candidates]
    assert text.endswith("\n}"), text[-10:]
    if lines:
        text = text[:-2] + ',\n  "candidates": [\n    ' + ",\n    ".join(lines) + "\n  ]\n}\n"
    else:
        text = text[:-2] + ',\n  "candidates": []\n}\n'
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


@dataclass
class GraspFile:
    """A validated grasps.json."""

    path: Path
    poses: np.ndarray  # [C, 4, 4] grasp -> scene
    widths: np.ndarray  # [C]
    openings: np.ndarray  # [C]
    centers: np.ndarray  # [C, 3]
    scores: np.ndarray  # [C]
    clearances: np.ndarray  # [C], NaN where not measured
    statuses: list[str]
    ranks: np.ndarray  # [C] int, -1 unless kept
    targets: np.ndarray  # [T] candidate ids, best first
    summary: dict[str, Any]
    fingerprint: dict[str, Any]
    object_mean: np.ndarray  # [3]
    gripper: dict[str, Any]
    config: dict[str, Any]
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def kept(self) -> np.ndarray:  # [K] candidate ids, best first
        ids = np.nonzero(self.ranks >= 0)[0]
        return ids[np.argsort(self.ranks[ids])]

    def target_poses(self) -> np.ndarray:  # [T, 4, 4]
        return self.poses[self.targets]


def _fail(path: Path, msg: str) -> GraspFileError:
    return GraspFileError(f"{path}: {msg}")


def read_grasps(
    path: str | os.PathLike,
    *,
    scene_dir: str | os.PathLike | None = None,
    fingerprint: dict[str, Any] | None = None,
) -> GraspFile:
    """Reads and validates a grasps.json.

    Checks the format and version, every candidate's fields (a rigid 4x4 pose, finite numbers, a known
    status), that the ranks and targets name kept candidates, and that the summary's counts match the
    statuses. With ``scene_dir`` (holding ``object.ply`` and ``hand.ply``) or an explicit
    ``fingerprint``, also that the file was computed for that scene.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        GraspFileError: Naming the file and what is wrong.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; compute grasps first (`splatsim grasps`)")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(path, f"not valid JSON ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
        raise _fail(
            path, f"not a grasps file (format {doc.get('format') if isinstance(doc, dict) else None!r})"
        )
    if doc.get("version") != FORMAT_VERSION:
        raise _fail(path, f"version {doc.get('version')!r}; this reader understands {FORMAT_VERSION}")
    for key in ("fingerprint", "summary", "targets", "candidates", "object_mean", "gripper", "config"):
        if key not in doc:
            raise _fail(path, f"missing {key!r}")
    cands = doc["candidates"]
    if not isinstance(cands, list) or not cands:
        raise _fail(path, "no candidates")
    c = len(cands)
    known = {STATUS_KEPT, *FILTERS}
    try:
        if not all(isinstance(cand, dict) and cand.get("id") == i for i, cand in enumerate(cands)):
            bad = next(
                i for i, cand in enumerate(cands) if not (isinstance(cand, dict) and cand.get("id") == i)
            )
            raise _fail(path, f"candidate {bad}: expected an object with id {bad}")
        try:
            poses = np.asarray([cand["pose"] for cand in cands], dtype=np.float64)
        except ValueError as exc:
            raise _fail(path, "every candidate's pose must be a 4x4 matrix of numbers") from exc
        centers = np.asarray([cand["center"] for cand in cands], dtype=np.float64)
        floats = {k: np.asarray([cand[k] for cand in cands], dtype=np.float64) for k in _CANDIDATE_FLOATS}
        optional = {
            k: np.asarray([np.nan if cand.get(k) is None else cand[k] for cand in cands], dtype=np.float64)
            for k in _CANDIDATE_OPTIONAL
        }
        statuses = [cand.get("status") for cand in cands]
        rank_list = [cand.get("rank") for cand in cands]
    except (KeyError, TypeError, ValueError) as exc:
        raise _fail(path, f"a candidate has a bad or missing field ({type(exc).__name__}: {exc})") from exc

    def first(bad: np.ndarray) -> int:
        return int(np.nonzero(bad)[0][0])

    if poses.shape != (c, 4, 4):
        raise _fail(path, "every candidate's pose must be a 4x4 matrix")
    if not np.isfinite(poses).all():
        raise _fail(
            path, f"candidate {first(~np.isfinite(poses).all(axis=(1, 2)))}: pose must be a finite 4x4 matrix"
        )
    R = poses[:, :3, :3]
    gram = np.einsum("cji,cjk->cik", R, R)
    rigid = (
        np.isclose(poses[:, 3], [0.0, 0.0, 0.0, 1.0], atol=1e-9).all(axis=1)
        & np.isclose(gram, np.eye(3), atol=1e-5).all(axis=(1, 2))
        & (np.linalg.det(R) > 0)
    )
    if not rigid.all():
        raise _fail(
            path, f"candidate {first(~rigid)}: pose is not a rigid transform (rotation + translation)"
        )
    if centers.shape != (c, 3) or not np.isfinite(centers).all():
        raise _fail(path, "every candidate's center must be 3 finite numbers")
    for k, v in floats.items():
        if v.shape != (c,) or not np.isfinite(v).all():
            raise _fail(path, f"every candidate's {k} must be a finite number")
    unknown = [i for i, st in enumerate(statuses) if st not in known]
    if unknown:
        raise _fail(
            path, f"candidate {unknown[0]}: status {statuses[unknown[0]]!r}; expected one of {sorted(known)}"
        )
    ranks = np.full(c, -1, dtype=np.int64)
    for i, (st, rank) in enumerate(zip(statuses, rank_list)):
        if (st == STATUS_KEPT) != (rank is not None):
            raise _fail(
                path, f"candidate {i}: a rank is given exactly to kept candidates (status {st}, rank {rank})"
            )
        if rank is not None:
            ranks[i] = int(rank)
    kept_ranks = np.sort(ranks[ranks >= 0])
    if kept_ranks.size == 0:
        raise _fail(path, "no kept candidate (a grasps file always holds at least one safe grasp)")
    if not np.array_equal(kept_ranks, np.arange(kept_ranks.size)):
        raise _fail(path, "the kept candidates' ranks must be 0..K-1, each once")
    targets = np.asarray(doc["targets"], dtype=np.int64).reshape(-1)
    if targets.size == 0 or (targets < 0).any() or (targets >= c).any():
        raise _fail(path, f"targets {doc['targets']} must be ids of kept candidates")
    if not np.array_equal(ranks[targets], np.arange(targets.size)):
        raise _fail(path, "targets must be the best-ranked kept candidates, best first")
    summary = doc["summary"]
    counts = {f: statuses.count(f) for f in FILTERS}
    rejected = summary.get("rejected", {}) if isinstance(summary, dict) else {}
    if (
        summary.get("candidates") != c
        or summary.get("kept") != int(kept_ranks.size)
        or any(rejected.get(f, 0) != counts[f] for f in FILTERS)
    ):
        raise _fail(path, f"summary {summary} does not match the candidates' statuses {counts}")
    object_mean = np.asarray(doc["object_mean"], dtype=np.float64)
    if object_mean.shape != (3,) or not np.isfinite(object_mean).all():
        raise _fail(path, "object_mean must be 3 finite numbers")
    if scene_dir is not None:
        scene_dir = Path(scene_dir)
        fingerprint = scene_fingerprint(
            load_points(scene_dir / "object.ply"), load_points(scene_dir / "hand.ply")
        )
    if fingerprint is not None:
        check_fingerprint(doc["fingerprint"], fingerprint, str(path))
    return GraspFile(
        path=path,
        poses=poses,
        widths=floats["width"],
        openings=floats["opening"],
        centers=centers,
        scores=floats["score"],
        clearances=optional["clearance"],
        statuses=statuses,
        ranks=ranks,
        targets=targets,
        summary=summary,
        fingerprint=doc["fingerprint"],
        object_mean=object_mean,
        gripper=doc["gripper"],
        config=doc["config"],
        raw=doc,
    )
