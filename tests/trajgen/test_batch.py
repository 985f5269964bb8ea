"""`run_demos`: kill-and-resume, deterministic sharding, workers, Ray, merge, config checks, pictures."""

from __future__ import annotations

import importlib.util
import json
import shutil

import h5py
import imageio.v3 as iio
import numpy as np
import pytest
from test_traj_fixtures import small_camera, small_plan, write_run

from trajgen.batch import DemosConfig, Slot, all_slots, merge_demos, run_demos, shard_slots


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    return [write_run(root, "run_a", seed=0), write_run(root, "run_b", num=2500, seed=1)]


def _cfg(runs, out, **kw) -> DemosConfig:
    args = dict(scenes=tuple(str(r) for r in runs), out=str(out), plan=small_plan(), camera=small_camera(),
                workers=1, pictures=False, progress=False)  # fmt: skip
    args.update(kw)
    return DemosConfig(**args)


def _contents(out) -> dict:
    """Every episode file's arrays and ids, keyed by its path relative to ``out``."""
    data = {}
    for path in sorted((out / "episodes").rglob("*.hdf5")):
        with h5py.File(path, "r") as f:
            demo = f["data/demo_0"]
            arrays = {k: demo[k][()] for k in ("obs/rgb", "obs/mask", "actions", "cls", "poses", "clearance")}
            ids = {k: demo.attrs[k] for k in ("scene_id", "grasp_rank", "start_id", "plan_hash")}
        data[path.relative_to(out).as_posix()] = (arrays, ids)
    return data


def _assert_same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        for name, value in a[key][0].items():
            np.testing.assert_array_equal(value, b[key][0][name], err_msg=f"{key}:{name}")
        assert a[key][1] == b[key][1]


def _index_episodes(out) -> list:
    return json.loads((out / "index.json").read_text())["episodes"]


@pytest.fixture(scope="module")
def clean(runs, tmp_path_factory):
    """A clean, unsharded, single-process run (the reference), with pictures."""
    out = tmp_path_factory.mktemp("clean") / "demos"
    res = run_demos(_cfg(runs, out, pictures=True))
    return out, res


def test_clean_run_writes_index_merged_file_and_pictures(clean):
    out, res = clean
    assert res.episodes == res.rendered == 12 and res.resumed == 0 and res.no_trajectory == 0
    assert res.tuples > 0 and res.tuples_per_s > 0 and res.planning["accepted"] == 12
    episodes = _index_episodes(out)
    assert [e["demo"] for e in episodes] == [f"demo_{i}" for i in range(12)]
    assert len({e["file"] for e in episodes}) == 12
    with h5py.File(out / "demos.hdf5", "r") as f:  # robomimic-style file of external links
        assert f["data"].attrs["total"] == res.tuples == sum(e["num_samples"] for e in episodes)
        assert f["data/demo_5/obs/rgb"].shape[1:] == (32, 32, 3)
        assert f["data/demo_5"].attrs["start_id"] == episodes[5]["start_id"]
    manifest = json.loads((out / "shards" / "shard-00000-of-00001.json").read_text())
    assert manifest["valid"] and manifest["counts"]["episodes"] == 12
    for scene in ("run_a", "run_b"):
        assert (out / "pictures" / f"{scene}_trajectories.png").stat().st_size > 10_000
        assert (out / "pictures" / f"{scene}_episode.mp4").stat().st_size > 1_000
        strip = iio.imread(out / "pictures" / f"{scene}_episode.png")
        assert strip.shape[0] == 2 * 2 * 32 and strip.shape[1] % (2 * 32) == 0  # RGB over masks, 2x


def test_kill_and_resume_loses_and_duplicates_nothing(runs, clean, tmp_path):
    out = tmp_path / "demos"
    seen = []

    def crash_after_four(info):
        seen.append(info["file"])
        if len(seen) == 4:
            raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):
        run_demos(_cfg(runs, out), on_episode=crash_after_four)
    assert not (out / "index.json").exists()
    done = sorted((out / "episodes").rglob("*.hdf5"))
    assert len(done) == 4
    # What a kill can also leave: a half-written temporary file, and (disk trouble) a damaged episode.
    partial = out / "episodes" / "run_b" / "g001_s002.hdf5.tmp-12345"
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100)
    damaged = done[1]
    damaged.write_bytes(damaged.read_bytes()[:3000])

    res = run_demos(_cfg(runs, out))
    assert res.resumed == 3 and res.rendered == 9 and res.redone >= 1 and res.episodes == 12
    assert not list(out.rglob("*.tmp-*"))
    _assert_same(_contents(out), _contents(clean[0]))
    assert _index_episodes(out) == _index_episodes(clean[0])

    again = run_demos(_cfg(runs, out))  # a finished run resumes to nothing
    assert again.rendered == 0 and again.resumed == 12


def test_shards_are_disjoint_and_their_union_is_the_whole(runs, clean, tmp_path):
    slots = all_slots([2, 2], 3)
    for n in (1, 2, 3, 5):
        parts = [shard_slots(slots, n, i) for i in range(n)]
        assert sorted(s.index for p in parts for s in p) == list(range(len(slots)))
    assert slots[4] == Slot(4, 0, 1, 1)

    out = tmp_path / "demos"
    results = [run_demos(_cfg(runs, out, num_shards=3, shard_index=i)) for i in (2, 0, 1)]
    assert [r.index is not None for r in results] == [False, False, True]  # the last one merges
    assert sum(r.episodes for r in results) == 12
    files = [json.loads(m.read_text())["slots"] for r in results for m in r.manifests]
    listed = [s["file"] for shard in files for s in shard]
    assert len(listed) == len(set(listed)) == 12
    _assert_same(_contents(out), _contents(clean[0]))
    assert _index_episodes(out) == _index_episodes(clean[0])


def test_two_workers_equal_one(runs, clean, tmp_path):
    out = tmp_path / "demos"
    res = run_demos(_cfg(runs, out, workers=2))
    assert res.rendered == 12
    _assert_same(_contents(out), _contents(clean[0]))
    assert _index_episodes(out) == _index_episodes(clean[0])


def test_merge_needs_every_shard_and_a_changed_config_is_refused(runs, clean, tmp_path):
    out = tmp_path / "demos"
    run_demos(_cfg(runs, out, num_shards=2, shard_index=0))
    with pytest.raises(ValueError, match="no complete set of valid shards"):
        merge_demos(out)
    with pytest.raises(ValueError, match="different configuration"):
        run_demos(_cfg(runs, out, num_shards=2, shard_index=1, seed=1))
    with pytest.raises(ValueError, match="DemosConfig.shard_index"):
        run_demos(_cfg(runs, out, num_shards=2, shard_index=2))
    with pytest.raises(ValueError, match="no complete set of valid shards"):
        run_demos(_cfg(runs, out, merge_only=True, scenes=()))
    last = run_demos(_cfg(runs, out, num_shards=2, shard_index=1))
    assert last.index == out / "index.json"
    again = run_demos(_cfg(runs, out, merge_only=True, scenes=()))
    assert again.episodes == 12 and again.index == out / "index.json"


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason="ray is not installed (pip install 'splatsim[ray]')"
)
def test_ray_shards_equal_the_local_run(runs, clean, tmp_path):
    out = tmp_path / "demos"
    res = run_demos(_cfg(runs, out, ray=True, num_shards=2))
    assert res.shards == [0, 1] and res.episodes == 12 and res.index is not None
    _assert_same(_contents(out), _contents(clean[0]))
    assert _index_episodes(out) == _index_episodes(clean[0])


@pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason="ray is not installed (pip install 'splatsim[ray]')"
)
def test_ray_path_checks_every_input_before_writing_config_json(runs, tmp_path):
    bad = tmp_path / "run_bad"
    shutil.copytree(runs[1], bad)
    (bad / "grasps.json").write_text("{not json")
    out = tmp_path / "demos"
    with pytest.raises(ValueError, match="grasps.json"):
        run_demos(_cfg([runs[0], bad], out, ray=True, num_shards=2))
    assert not (out / "config.json").exists()  # Ray was never started, nothing recorded the bad input


def test_a_scene_folder_with_only_scene_ply_still_checks_that_grasps_json_belongs_to_it(runs, tmp_path):
    from trajgen.batch import _ScenePlanner, resolve_scenes

    lone = tmp_path / "lone"
    shutil.copytree(runs[0], lone)
    for name in ("hand.ply", "object.ply"):
        (lone / "scene" / name).unlink()
    planner = _ScenePlanner(resolve_scenes([str(lone)])[0], _cfg(runs, tmp_path / "o"))
    assert len(planner.grasp_ids) == 2 and len(planner.hand_points) > 0  # hand/object from scene.ply labels
    shutil.copyfile(runs[1] / "grasps.json", lone / "grasps.json")  # another scene's grasps
    with pytest.raises(ValueError, match="another scene"):
        run_demos(_cfg([lone], tmp_path / "demos"))
    assert not (tmp_path / "demos" / "config.json").exists()


def test_a_target_whose_pre_grasp_is_unusable_is_replaced_by_the_next_kept_grasp(runs, tmp_path):
    from trajgen.batch import _ScenePlanner, resolve_scenes

    run = tmp_path / "one_target"
    shutil.copytree(runs[0], run)
    doc = json.loads((run / "grasps.json").read_text())
    doc["targets"] = [0]  # the sphere grasp only; the box grasp (id 1) stays kept, rank 1
    (run / "grasps.json").write_text(json.dumps(doc))
    # the sphere grasp's pre-grasp lies level with the objects (height 0 along up = -y), the box grasp's
    # 0.37 m above: a 0.1 m minimum height rules out the first only
    plan = small_plan(min_height=0.1)
    src = resolve_scenes([str(run)])[0]
    off = _ScenePlanner(src, _cfg(runs, tmp_path / "a", plan=plan, backfill=False))
    assert off.grasp_ids == [0] and "min_height" in off.plan(0).skipped
    on = _ScenePlanner(src, _cfg(runs, tmp_path / "b", plan=plan))
    assert on.grasp_ids == [1] and on.replaced == {0: {"grasp_id": 0, "reason": off.plan(0).skipped}}
    assert on.plan(0).skipped is None and len(on.plan(0).trajectories) == 3
    res = run_demos(_cfg([run], tmp_path / "demos", plan=plan, top_k=1))
    assert res.episodes == 3
    manifest = json.loads(res.manifests[0].read_text())
    assert manifest["grasps"][0]["grasp_id"] == 1 and manifest["grasps"][0]["replaces"]["grasp_id"] == 0


def test_a_depth_run_adds_depth_and_changes_nothing_else(runs, clean, tmp_path):
    """`splatsim demos --depth`: every episode (and its index) as without depth, plus obs/depth."""
    from dataclasses import replace

    from policy.data import load_demos

    out = tmp_path / "demos"
    res = run_demos(_cfg(runs, out, camera=replace(small_camera(), depth=True)))
    assert res.episodes == 12
    with_depth, without = _contents(out), _contents(clean[0])
    assert sorted(with_depth) == sorted(without)
    for key in without:  # same frames and actions; the plan hash differs (the camera is part of it)
        for name, value in without[key][0].items():
            np.testing.assert_array_equal(value, with_depth[key][0][name], err_msg=f"{key}:{name}")
    for path in sorted((out / "episodes").rglob("*.hdf5")):
        with h5py.File(path, "r") as f:
            demo = f["data/demo_0"]
            depth, mask = demo["obs/depth"][()], demo["obs/mask"][()]
            assert depth.dtype == np.uint16 and depth.shape == mask.shape
            assert (depth[mask > 0] > 0).all()  # hand and object pixels have depth
            assert 100 < np.median(depth[mask > 0]) < 3000  # millimetres
    demos = load_demos([out])
    assert all(e.depth is not None and e.depth.shape == e.mask.shape for e in demos.episodes)
