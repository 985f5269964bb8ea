"""Stage bookkeeping for `splatsim demo`: content-hashed configs so finished stages are reused.

A finished stage leaves `<run dir>/.stages/<stage>.json` holding the hash of its configuration and of
its inputs' hashes, plus a short summary. A re-run with the same hash skips the stage; a changed config or
a changed upstream stage re-runs it (and everything downstream, whose input hash changes with it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

MARKERS = ".stages"


def jsonable(obj: Any) -> Any:
    """Dataclasses, paths and tuples as plain JSON values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {k: jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def stage_hash(name: str, config: Any, *upstream: str) -> str:
    """Hash of a stage's name, its configuration and the hashes of the stages it reads from."""
    payload = json.dumps(
        {"stage": name, "config": jsonable(config), "upstream": list(upstream)}, sort_keys=True, default=str
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _marker(run_dir: Path, name: str) -> Path:
    return Path(run_dir) / MARKERS / f"{name}.json"


def finished(run_dir: Path, name: str, h: str) -> dict[str, Any] | None:
    """The stage's recorded summary if it finished with this hash, else None."""
    marker = _marker(run_dir, name)
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    return data.get("summary", {}) if data.get("hash") == h else None


def mark_finished(run_dir: Path, name: str, h: str, summary: dict[str, Any]) -> None:
    """Record (atomically) that the stage finished with this hash."""
    marker = _marker(run_dir, name)
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(
        json.dumps({"hash": h, "finished_at": time.time(), "summary": jsonable(summary)}, indent=2)
    )
    os.replace(tmp, marker)


def _started_marker(run_dir: Path, name: str) -> Path:
    return Path(run_dir) / MARKERS / f"{name}.started.json"


def previous_hash(run_dir: Path, name: str) -> str | None:
    """The hash the stage last started or finished with (None if it never ran here)."""
    for path in (_started_marker(run_dir, name), _marker(run_dir, name)):
        try:
            return json.loads(path.read_text()).get("hash")
        except (OSError, ValueError):
            continue
    return None


def mark_started(run_dir: Path, name: str, h: str) -> None:
    """Record (atomically) that the stage is running with this hash (so a later run can tell whether a
    half-done output belongs to its own configuration and may be resumed)."""
    marker = _started_marker(run_dir, name)
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps({"hash": h, "started_at": time.time()}))
    os.replace(tmp, marker)


def clear(run_dir: Path, name: str) -> None:
    """Forget that a stage finished (before re-running it)."""
    try:
        _marker(run_dir, name).unlink()
    except FileNotFoundError:
        pass
