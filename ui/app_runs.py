"""The web app's runs directory: one folder per run, listed and reopened after a restart.

A run folder holds what ARCHITECTURE.md's "Files a run leaves" lists (``capture/``, ``scene/``,
``grasps.json``, ``demos/``, ``policy/``, ``eval/``, ``export/``) plus the app's own bookkeeping under
``.app/``: one ``<stage>.json`` per stage run from the app (its settings and whether it finished), and
``grasps_base.json`` (every grasp candidate measured with d_s = 0, for instant re-filtering).

Re-running a stage with other settings never deletes anything: its previous outputs and everything
downstream of them move to ``.superseded/<time>-<stage>/`` first (`supersede`). An unfinished stage
with the same settings is left in place so it resumes (the reconstruction and the demonstrations pick
up their checkpoints and finished episodes).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "APP_DIR",
    "STAGES",
    "RunInfo",
    "check_run_name",
    "list_runs",
    "new_run",
    "prepare_stage",
    "read_record",
    "resolve_run",
    "stage_done",
    "supersede",
    "write_record",
]

APP_DIR = ".app"
SUPERSEDED_DIR = ".superseded"
STAGES = ("capture", "scene", "grasps", "demos", "policy", "eval", "export")
"""The stages in order; each one's outputs depend on the stages before it (eval/export on the policy)."""
OUTPUTS: dict[str, tuple[str, ...]] = {
    "capture": ("capture",),
    "scene": ("scene",),
    "grasps": ("grasps.json", "grasps.png", f"{APP_DIR}/grasps_base.json"),
    "demos": ("demos",),
    "policy": ("policy",),
    "eval": ("eval",),
    "export": ("export",),
}
"""What each stage writes inside the run folder."""
DONE_MARKERS: dict[str, str] = {
    "capture": "capture/capture.json",
    "scene": "scene/recon_report.json",
    "grasps": "grasps.json",
    "demos": "demos/index.json",
    "policy": "policy/model.safetensors",
    "eval": "eval/eval_report.json",
    "export": "export/policy.onnx",
}
"""A stage is finished when this file exists (each stage writes it last)."""
DOWNSTREAM: dict[str, tuple[str, ...]] = {
    "capture": ("scene", "grasps", "demos", "policy", "eval", "export"),
    "scene": ("grasps", "demos", "policy", "eval", "export"),
    "grasps": ("demos", "policy", "eval", "export"),
    "demos": ("policy", "eval", "export"),
    "policy": ("eval", "export"),
    "eval": (),
    "export": ("eval",),
}
"""Stages whose outputs become stale when a stage is re-run (eval runs the exported model)."""
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_run_name(name: str) -> str:
    """Returns ``name`` if it is a safe run folder name, else raises ValueError saying what is allowed."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or name.endswith(".") or ".." in name:
        raise ValueError(
            f"run name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def resolve_run(runs_dir: Path, name: str, must_exist: bool = True) -> Path:
    """The folder of run ``name`` under ``runs_dir``; raises ValueError for unsafe or unknown names."""
    check_run_name(name)
    root = Path(runs_dir).resolve()
    path = root / name
    if path.is_symlink() or path.resolve().parent != root:
        raise ValueError(f"run {name!r}: not a folder directly inside {root}")
    if must_exist and not path.is_dir():
        raise ValueError(f"run {name!r} does not exist in {root}; create it first")
    return path


def stage_done(run_dir: Path, stage: str) -> bool:
    """Whether the stage's outputs are complete in the run folder."""
    return (Path(run_dir) / DONE_MARKERS[stage]).is_file()


@dataclass
class RunInfo:
    """One run folder, as the run list shows it."""

    name: str
    path: Path
    modified: float
    """Newest modification time among the run folder and its stage outputs (seconds since the epoch)."""
    stages: list[str] = field(default_factory=list)
    """Finished stages, in pipeline order."""

    def label(self) -> str:
        """``name (date; finished stages)``."""
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.modified))
        done = ", ".join(self.stages) if self.stages else "empty"
        return f"{self.name}  ({when}; {done})"


def list_runs(runs_dir: str | Path) -> list[RunInfo]:
    """The runs under ``runs_dir``, most recently changed first.

    Only plain folders with a valid run name count: hidden folders, files and symbolic links are skipped.
    """
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    runs = []
    for entry in root.iterdir():
        if entry.is_symlink() or not entry.is_dir() or not _NAME_RE.match(entry.name):
            continue
        stages = [s for s in STAGES if stage_done(entry, s)]
        times = [entry.stat().st_mtime]
        for s in STAGES:
            marker = entry / DONE_MARKERS[s]
            if marker.is_file():
                times.append(marker.stat().st_mtime)
        runs.append(RunInfo(entry.name, entry, max(times), stages))
    runs.sort(key=lambda r: (-r.modified, r.name))
    return runs


def new_run(runs_dir: str | Path, name: str | None = None) -> Path:
    """Creates a run folder; without a name, ``run-<date>-<time>`` (made unique with a suffix)."""
    root = Path(runs_dir)
    root.mkdir(parents=True, exist_ok=True)
    if name:
        path = resolve_run(root, name, must_exist=False)
        if path.exists():
            raise ValueError(f"run {name!r} already exists in {root}; open it or choose another name")
        path.mkdir()
        return path
    base = time.strftime("run-%Y%m%d-%H%M%S")
    for k in range(1000):
        candidate = root / (base if k == 0 else f"{base}-{k}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise RuntimeError(f"{root}: could not find a free run name starting with {base}")


def _record_path(run_dir: Path, stage: str) -> Path:
    return Path(run_dir) / APP_DIR / f"{stage}.json"


def read_record(run_dir: Path, stage: str) -> dict[str, Any] | None:
    """The app's record of the stage in this run (settings, status, times), or None."""
    try:
        data = json.loads(_record_path(run_dir, stage).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_record(run_dir: Path, stage: str, record: dict[str, Any]) -> None:
    """Writes the stage's record atomically."""
    path = _record_path(run_dir, stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=1, default=str), encoding="utf-8")
    os.replace(tmp, path)


def supersede(run_dir: Path, stages: tuple[str, ...] | list[str], reason: str) -> Path | None:
    """Moves the outputs of ``stages`` (those present) to ``.superseded/<time>-<reason>/``.

    Returns the folder they went to, or None when there was nothing to move. Their app records move too.
    """
    run_dir = Path(run_dir)
    present = [
        (stage, rel)
        for stage in stages
        for rel in (*OUTPUTS[stage], f"{APP_DIR}/{stage}.json")
        if (run_dir / rel).exists() or (run_dir / rel).is_symlink()
    ]
    if not present:
        return None
    dest = run_dir / SUPERSEDED_DIR / f"{time.strftime('%Y%m%d-%H%M%S')}-{reason}"
    k = 1
    while dest.exists():
        dest = dest.with_name(f"{dest.name.split('~')[0]}~{k}")
        k += 1
    for _stage, rel in present:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(run_dir / rel), str(target))
    return dest


def prepare_stage(run_dir: Path, stage: str, settings: dict[str, Any]) -> str:
    """Gets the run folder ready to run ``stage`` with ``settings``; says what to do.

    Returns:
        ``"reuse"`` when the stage already finished with these settings (nothing to run);
        ``"resume"`` when it started with these settings but did not finish (run it: it continues);
        ``"run"`` otherwise, after moving its old outputs away (`supersede`).
        Downstream outputs are moved away whenever the stage will run.
    """
    run_dir = Path(run_dir)
    record = read_record(run_dir, stage)
    same = record is not None and record.get("settings") == json.loads(json.dumps(settings, default=str))
    if same and record.get("status") == "done" and stage_done(run_dir, stage):
        return "reuse"
    action = "resume" if same else "run"
    if action == "run":
        supersede(run_dir, [stage, *DOWNSTREAM[stage]], stage)
    else:
        supersede(run_dir, list(DOWNSTREAM[stage]), stage)
    write_record(run_dir, stage, {"settings": settings, "status": "running", "started_at": time.time()})
    return action


def finish_stage(run_dir: Path, stage: str, ok: bool, error: str | None = None, **extra: Any) -> None:
    """Marks the stage's record finished (``ok``) or failed, keeping its settings."""
    record = read_record(run_dir, stage) or {}
    record.update(status="done" if ok else "failed", finished_at=time.time(), error=error, **extra)
    write_record(run_dir, stage, record)
