"""ui.app_runs (run folders: names, listing, superseding) and ui.app_jobs (the one-at-a-time worker)."""

from __future__ import annotations

import os
import threading
import time

import pytest

from ui.app_jobs import JobRunner, format_seconds
from ui.app_runs import (
    check_run_name,
    finish_stage,
    list_runs,
    new_run,
    prepare_stage,
    read_record,
    resolve_run,
    supersede,
)


def _touch(path, text="x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.mark.parametrize("name", ["a", "run-1", "mug_pinch.seed3", "A" * 64])
def test_good_run_names(name):
    assert check_run_name(name) == name


@pytest.mark.parametrize(
    "name", ["", ".", "..", ".hidden", "-x", "a/b", "a\\b", "../x", "a..b", "x.", "a b", "A" * 65]
)
def test_bad_run_names(name):
    with pytest.raises(ValueError, match="run name"):
        check_run_name(name)


def test_list_runs_newest_first_with_stages(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    _touch(old / "capture/capture.json")
    _touch(old / "scene/recon_report.json")
    _touch(old / "grasps.json")
    _touch(new / "capture/capture.json")
    _touch(new / "scene/scene.ply")  # unfinished scene: not listed as finished
    os.utime(old / "capture/capture.json", (1e9, 1e9))
    os.utime(old / "scene/recon_report.json", (1e9, 1e9))
    os.utime(old / "grasps.json", (1e9, 1e9))
    os.utime(old, (1e9, 1e9))
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "a file.txt").write_text("not a run")
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir(exist_ok=True)
    (tmp_path / "link").symlink_to(outside)
    runs = list_runs(tmp_path)
    assert [r.name for r in runs] == ["new", "old"]
    assert runs[0].stages == ["capture"]
    assert runs[1].stages == ["capture", "scene", "grasps"]
    assert "capture, scene, grasps" in runs[1].label()
    assert list_runs(tmp_path / "missing") == []


def test_new_run_and_resolve(tmp_path):
    a = new_run(tmp_path)
    b = new_run(tmp_path)
    assert a != b and a.is_dir() and b.is_dir() and a.name.startswith("run-")
    named = new_run(tmp_path, "mug")
    assert named == tmp_path / "mug"
    with pytest.raises(ValueError, match="already exists"):
        new_run(tmp_path, "mug")
    assert resolve_run(tmp_path, "mug") == (tmp_path / "mug").resolve()
    with pytest.raises(ValueError, match="does not exist"):
        resolve_run(tmp_path, "nope")
    with pytest.raises(ValueError, match="run name"):
        resolve_run(tmp_path, "../mug")
    outside = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    outside.mkdir(exist_ok=True)
    (tmp_path / "sneaky").symlink_to(outside)
    with pytest.raises(ValueError, match="not a folder directly inside"):
        resolve_run(tmp_path, "sneaky")


def test_prepare_stage_reuse_resume_and_supersede(tmp_path):
    run = tmp_path / "r"
    _touch(run / "capture/capture.json")
    _touch(run / "scene/scene.ply")
    _touch(run / "grasps.json", "old grasps")
    assert prepare_stage(run, "scene", {"steps": 10}) == "run"
    # The scene existed without a record of its settings: it moved aside, with everything downstream.
    moved = list((run / ".superseded").iterdir())
    assert len(moved) == 1 and (moved[0] / "scene/scene.ply").is_file()
    assert (moved[0] / "grasps.json").read_text() == "old grasps"
    assert (run / "capture/capture.json").is_file(), "upstream stays"
    assert read_record(run, "scene")["status"] == "running"
    # Interrupted with the same settings: resume in place.
    _touch(run / "scene/checkpoints/checkpoint.json")
    assert prepare_stage(run, "scene", {"steps": 10}) == "resume"
    assert (run / "scene/checkpoints/checkpoint.json").is_file()
    _touch(run / "scene/recon_report.json")
    finish_stage(run, "scene", True)
    assert read_record(run, "scene")["status"] == "done"
    assert prepare_stage(run, "scene", {"steps": 10}) == "reuse"
    # Other settings: the finished scene moves aside too.
    assert prepare_stage(run, "scene", {"steps": 20}) == "run"
    assert not (run / "scene").exists()
    assert len(list((run / ".superseded").iterdir())) == 2


def test_supersede_moves_only_what_exists(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    assert supersede(run, ["demos"], "x") is None
    _touch(run / "demos/index.json")
    _touch(run / "policy/model.safetensors")
    dest = supersede(run, ["demos", "policy", "eval"], "grasps")
    assert (dest / "demos/index.json").is_file() and (dest / "policy/model.safetensors").is_file()
    assert not (run / "demos").exists()


def test_job_runner_runs_one_at_a_time_in_order():
    runner = JobRunner()
    try:
        running = []
        overlap = []
        order = []
        lock = threading.Lock()

        def work(name):
            def fn(ctx):
                with lock:
                    running.append(name)
                    if len(running) > 1:
                        overlap.append(list(running))
                for i in range(3):
                    ctx.progress(i + 1, 3, f"{name} {i}")
                    time.sleep(0.01)
                with lock:
                    running.remove(name)
                    order.append(name)
                return name

            return fn

        jobs = [runner.submit(f"run{i}", "scene", "reconstruction", work(f"j{i}")) for i in range(4)]
        for job in jobs:
            assert job.wait(10)
        assert order == ["j0", "j1", "j2", "j3"] and not overlap
        assert all(j.status == "done" and j.fraction == 1.0 for j in jobs)
        assert jobs[0].result == "j0"
        assert "done in" in jobs[0].describe()
    finally:
        runner.close()


def test_job_runner_attaches_to_an_active_job_and_reports_errors():
    runner = JobRunner()
    try:
        gate = threading.Event()
        first = runner.submit("r", "scene", "reconstruction", lambda ctx: gate.wait(10))
        again = runner.submit("r", "scene", "reconstruction", lambda ctx: 1 / 0)
        assert again is first, "a second click attaches to the running job"
        other = runner.submit(
            "r", "grasps", "grasps", lambda ctx: (_ for _ in ()).throw(ValueError("scene.ply: bad"))
        )
        assert other.status == "queued" and "queued" in other.describe()
        assert [j.stage for j in runner.find("r", active_only=True)] == ["scene", "grasps"]
        gate.set()
        assert other.wait(10)
        assert other.status == "failed" and other.error == "scene.ply: bad"
        crash = runner.submit("r", "demos", "demos", lambda ctx: 1 / 0)
        assert crash.wait(10)
        assert crash.status == "failed" and crash.error.startswith("ZeroDivisionError")
        ok = runner.submit("r", "demos", "demos", lambda ctx: "fine")
        assert ok.wait(10) and ok.result == "fine", "the worker survives a crashing job"
        assert runner.latest("r", "demos") is ok
    finally:
        runner.close()


def test_job_eta_and_format_seconds():
    runner = JobRunner()
    try:
        seen = {}

        def fn(ctx):
            ctx.progress(0, 100, "start")
            time.sleep(0.2)
            ctx.progress(50, 100, "half")
            seen["eta"] = job.eta_s()
            seen["describe"] = job.describe()

        job = runner.submit("r", "scene", "reconstruction", fn)
        assert job.wait(10)
        assert 0.05 < seen["eta"] < 5
        assert "50/100 steps" in seen["describe"] and "ETA" in seen["describe"]
    finally:
        runner.close()
    assert format_seconds(5) == "5 s" and format_seconds(75) == "1 min 15 s" and format_seconds(None) == "?"
    assert format_seconds(3725) == "1 h 02 min"
