"""A reconstruction's scene folder is written as one unit: a half-written or mixed folder is refused.

`recon.report.export_scene` writes ``scene.ply``, ``hand.ply``, ``object.ply`` and then ``scene.json``.
Each file is written atomically, but a kill between two of them would leave new and old files side by
side (say a new ``scene.ply`` beside the previous run's ``hand.ply``), which every later stage would
read as one scene. So the export first drops `EXPORT_MARKER` in the folder and removes ``scene.json``,
writes the PLYs, writes ``scene.json`` last with the SHA-256 of every PLY it wrote (``file_sha256``),
then removes the marker. `check_scene_folder` (called by the grasp, demonstration and evaluation stages
before they read a scene folder) refuses a folder holding the marker, or whose PLYs do not match the
hashes in its ``scene.json``. A folder without ``scene.json`` (a splat from another tool) is accepted as
it is.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

EXPORT_MARKER = ".export_incomplete"
"""Present in a scene folder while `recon.report.export_scene` writes it."""


class SceneFolderError(ValueError):
    """A scene folder that is half-written or whose files do not belong together."""


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_scene_folder(scene_dir: str | Path, files: tuple[str, ...] | None = None) -> dict[str, Any] | None:
    """Checks that ``scene_dir`` is a completely written scene folder; returns its ``scene.json`` (or None).

    Args:
        scene_dir: The folder.
        files: Which of the PLYs recorded in ``scene.json`` to verify (default: every one present).

    Raises:
        SceneFolderError: Naming the folder and the file, if the export was interrupted (the marker is
            there) or a PLY's SHA-256 differs from the one ``scene.json`` recorded.
    """
    scene_dir = Path(scene_dir)
    if (scene_dir / EXPORT_MARKER).exists():
        raise SceneFolderError(
            f"{scene_dir}: the reconstruction was stopped while writing this scene folder ({EXPORT_MARKER} "
            "is still there), so its PLY files may come from two different runs. Run `splatsim recon` "
            "again with the same --out: it resumes from its checkpoint and rewrites the folder."
        )
    meta_path = scene_dir / "scene.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SceneFolderError(f"{meta_path}: not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise SceneFolderError(f"{meta_path}: expected a JSON object, got {type(meta).__name__}")
    recorded = meta.get("file_sha256")
    if recorded is None:  # written before the hashes were recorded
        return meta
    if not isinstance(recorded, dict):
        raise SceneFolderError(
            f"{meta_path}: 'file_sha256' should map file names to hashes, got {recorded!r}"
        )
    for name, digest in recorded.items():
        if files is not None and name not in files:
            continue
        path = scene_dir / name
        if not path.is_file():
            continue  # a missing file is reported by whoever needs it
        found = file_sha256(path)
        if found != digest:
            raise SceneFolderError(
                f"{path}: does not match {meta_path} (file_sha256[{name!r}] = {str(digest)[:12]}..., the file "
                f"hashes to {found[:12]}...): the folder mixes files of different reconstructions. Run "
                "`splatsim recon` again into this folder, or copy the whole folder together."
            )
    return meta
