"""Kill and resume: the real `splatsim recon` and `splatsim demos` commands, SIGKILLed mid-run, run again.

Each test starts the command in its own process, waits for a concrete marker on disk (the first
checkpoint, the first finished episode; never a fixed sleep), kills it with SIGKILL (no handler runs,
unlike the graceful interruptions of tests/recon/test_recon_pipeline.py and tests/trajgen/test_batch.py,
which also compare the resumed result with an uninterrupted run), adds what a kill in the middle of a
write leaves (temporary files), reruns the same command and checks that the run resumed and that nothing
was lost or duplicated.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from reliability_helpers import temporaries

from recon.optimize import CHECKPOINT_JSON
from recon.pipeline import CHECKPOINT_DIR
from recon.report import REPORT_JSON
from splatsim.ply import read_ply
from splatsim.scene import LABEL_HAND, LABEL_OBJECT
from trajgen.dataset import validate_episode

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


def _command(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "ui.cli", *args], cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=ENV
        )


def _kill_when(proc: subprocess.Popen, ready: Callable[[], bool], log: Path, timeout: float = 300) -> None:
    """SIGKILLs ``proc`` as soon as ``ready()``; fails if it ends first (nothing would be interrupted)."""
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if proc.poll() is not None:
                pytest.fail(
                    f"the command ended (exit code {proc.returncode}) before the kill:\n{log.read_text()}"
                )
            if time.monotonic() > deadline:
                pytest.fail(f"no marker after {timeout} s:\n{log.read_text()}")
            time.sleep(0.02)
    finally:
        proc.kill()  # SIGKILL
        proc.wait()


def _run(args: list[str], log: Path) -> str:
    proc = _command(args, log)
    assert proc.wait(timeout=300) == 0, log.read_text()
    return log.read_text()


def test_reconstruction_killed_after_a_checkpoint_resumes_from_it(capture_dir, tmp_path):
    out = tmp_path / "scene"
    iterations = 30
    args = ["recon", "--capture", str(capture_dir), "--out", str(out), "--backend", "cpu",
            "--num-train-views", "0", "--holdout", "1", "--sh-degree", "1", "--iterations", str(iterations),
            "--checkpoint-every", "3", "--no-enabled", "--no-revote-labels"]  # fmt: skip
    ckpt = out / CHECKPOINT_DIR / CHECKPOINT_JSON
    _kill_when(
        _command([*args, "--no-progress"], tmp_path / "killed.log"), ckpt.is_file, tmp_path / "killed.log"
    )

    step = json.loads(ckpt.read_text())["step"]
    assert 3 <= step < iterations and step % 3 == 0
    assert sorted(p.name for p in out.iterdir()) == [CHECKPOINT_DIR]  # no scene.ply, no report yet
    # What a kill in the middle of writing a checkpoint or an export leaves: temporary files.
    (out / CHECKPOINT_DIR / ".checkpoint_0000099.safetensors.12345.tmp").write_bytes(b"partial")
    (out / ".scene.ply.12345.0123abcd.tmp").write_bytes(b"ply\npartial")

    log = _run([*args, "--progress"], tmp_path / "resumed.log")
    assert f"resuming from the checkpoint at step {step}/{iterations}" in log
    report = json.loads((out / REPORT_JSON).read_text())
    assert report["resumed_from_step"] == step and report["steps"] == iterations
    # Nothing lost or duplicated: one loss per 10 steps however the run was cut, one checkpoint left.
    assert len(report["loss_every_10_steps"]) == iterations // 10
    assert sorted(p.name for p in (out / CHECKPOINT_DIR).iterdir()) == [
        CHECKPOINT_JSON,
        f"checkpoint_{iterations:07d}.safetensors",
    ]
    assert not temporaries(out)
    # A valid scene: the PLYs read back and agree with the report.
    scene = read_ply(out / "scene.ply")
    assert scene.num_gaussians == report["num_gaussians"] > 0
    hand, obj = read_ply(out / "hand.ply"), read_ply(out / "object.ply")
    assert hand.num_gaussians > 0 and (hand.labels == LABEL_HAND).all()
    assert obj.num_gaussians > 0 and (obj.labels == LABEL_OBJECT).all()
    assert report["summary"]["heldout_psnr_db"] > 10


def test_demos_killed_after_the_first_episode_lose_and_duplicate_nothing(run_dir, tmp_path):
    out = tmp_path / "demos"
    k = 10  # 2 grasp targets x 10 starts = 20 slots: about 2 s of rendering left after the first
    args = ["demos", "--scenes", str(run_dir), "--out", str(out), "--workers", "1", "--no-pictures",
            "--k", str(k), "--up", "0", "-1", "0", "--translation-step", "0.08", "--rotation-step-deg", "15",
            "--width", "32", "--height", "32"]  # fmt: skip

    def episodes() -> list[Path]:
        return sorted((out / "episodes").rglob("*.hdf5"))

    _kill_when(_command([*args, "--no-progress"], tmp_path / "killed.log"), lambda: bool(episodes()),
               tmp_path / "killed.log")  # fmt: skip

    done = episodes()
    assert 1 <= len(done) < 2 * k and not (out / "index.json").exists()
    # What a kill in the middle of writing an episode leaves: a temporary file beside it.
    partial = out / "episodes" / "run_a" / "g001_s005.hdf5.tmp-12345"
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100)
    written = {path: path.stat().st_mtime_ns for path in done}

    log = _run([*args, "--progress"], tmp_path / "resumed.log")
    assert re.search(rf"{len(done)} of {2 * k} episodes already done", log), log
    manifest = json.loads((out / "shards" / "shard-00000-of-00001.json").read_text())
    assert manifest["valid"] and [s["index"] for s in manifest["slots"]] == list(range(2 * k))
    ok = [s for s in manifest["slots"] if s["status"] == "ok"]
    assert len(ok) >= k and all(s["status"] in ("ok", "no_trajectory") for s in manifest["slots"])
    # Every slot once: the index lists each finished slot's file exactly once, and nothing else is on disk.
    index = json.loads((out / "index.json").read_text())
    files = [e["file"] for e in index["episodes"]]
    assert len(files) == len(set(files)) == len(ok) == index["num_episodes"]
    assert files == [s["file"] for s in ok]
    assert sorted(p.relative_to(out).as_posix() for p in episodes()) == sorted(files)
    assert {(e["grasp_rank"], e["start_id"]) for e in index["episodes"]} == {
        (s["grasp_rank"], s["start_id"]) for s in ok
    }
    # The episodes that survived the kill were kept, not rendered again, and every file is valid.
    for path in done:
        assert path.relative_to(out).as_posix() in files and path.stat().st_mtime_ns == written[path]
    for path in episodes():
        assert validate_episode(path, image_size=(32, 32)) == [], path
    assert not temporaries(out)
