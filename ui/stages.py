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


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def stage_hash(name: str, config: Any, *upstream: str) -> str:
    """Hash of a stage's name, its configuration and the hashes of the stages it reads from."""
    payload = json.dumps(
        {"stage": name, "config": _jsonable(config), "upstream": list(upstream)}, sort_keys=True, default=str
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
        json.dumps({"hash": h, "finished_at": time.time(), "summary": _jsonable(summary)}, indent=2)
    )
    os.replace(tmp, marker)


def clear(run_dir: Path, name: str) -> None:
    """Forget that a stage finished (before re-running it)."""
    try:
        _marker(run_dir, name).unlink()
    except FileNotFoundError:
        pass
