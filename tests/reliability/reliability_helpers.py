"""Helpers shared by the reliability suite (a uniquely named module: test folders are not packages)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from plyfile import PlyData, PlyElement


def assert_names(message: str, *fragments: str) -> None:
    """The message holds every fragment (file, field, value, what was expected)."""
    missing = [f for f in fragments if f not in message]
    assert not missing, f"message lacks {missing}:\n{message}"


def temporaries(root: Path) -> list[Path]:
    """What an atomic writer leaves when it is interrupted (`.<name>.<pid>.tmp`, `<name>.tmp-<pid>`)."""
    return [p for p in root.rglob("*") if ".tmp" in p.name] if root.exists() else []


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def drop_ply_property(path: Path, name: str) -> None:
    """Rewrites a PLY without one vertex property (a file from a tool that does not write it)."""
    vertex = PlyData.read(str(path))["vertex"].data
    keep = [n for n in vertex.dtype.names if n != name]
    out = np.empty(len(vertex), dtype=[(n, vertex.dtype[n]) for n in keep])
    for n in keep:
        out[n] = vertex[n]
    PlyData([PlyElement.describe(out, "vertex")]).write(str(path))


def truncate(path: Path, keep: float = 0.5) -> None:
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])


def train_config(demos: Path, out: Path, **kw):
    """The tiny policy training the suite uses (32 px, width 4, one step)."""
    from policy.model import ModelConfig
    from policy.train import TrainConfig

    args = dict(data=(demos,), out=out, model=ModelConfig(32, 4), epochs=1, batch_size=4, max_steps=1,
                progress=False)  # fmt: skip
    args.update(kw)
    return TrainConfig(**args)
