"""`splatsim demo` end to end on a tiny plan: every stage runs, a re-run reuses them all, a changed knob
re-runs only the stages downstream of it, and `--device cuda` without CUDA is a plain error."""

from __future__ import annotations

import json
import time

import pytest
import torch

from ui import stages
from ui.cli import main

STAGES = ("capture", "scene", "grasps", "demos", "policy", "export", "eval")

TINY = [
    "--device",
    "cpu",
    "--plan.resolution-scale",
    "0.25",
    "--plan.recon-iterations",
    "5",
    "--plan.top-k",
    "1",
    "--plan.starts-per-grasp",
    "3",
    "--plan.image-size",
    "32",
    "--plan.width",
    "8",
    "--plan.epochs",
    "2",
    "--plan.eval-starts",
    "2",
]


def _markers(out):
    return {s: json.loads((out / stages.MARKERS / f"{s}.json").read_text()) for s in STAGES}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    assert main(["demo", "--out", str(out), *TINY]) == 0
    return out


def test_every_stage_runs_and_leaves_its_files(demo_run):
    out = demo_run
    marks = _markers(out)
    assert set(marks) == set(STAGES)
    for rel in (
        "capture/capture.json",
        "scene/scene.ply",
        "grasps.json",
        "demos/index.json",
        "policy/model.safetensors",
        "policy/config.json",
        "export/policy.onnx",
        "eval/table.md",
        "eval/eval_report.json",
    ):
        assert (out / rel).is_file(), rel
    assert marks["export"]["summary"]["max_abs_diff"] <= 1e-4
    report = json.loads((out / "eval" / "eval_report.json").read_text())
    assert {e["method"] for e in report["episodes"]} == {"policy", "ibvs_mask"}
    assert len(report["episodes"]) == 2 * 2  # two held-out starts, policy and baseline
    assert report["policy"]["runtime"] == "onnx"  # the exported model drove the splat robot


def test_rerun_reuses_every_stage(demo_run, capsys):
    capsys.readouterr()
    before = _markers(demo_run)
    t0 = time.perf_counter()
    assert main(["demo", "--out", str(demo_run), *TINY]) == 0
    took = time.perf_counter() - t0
    text = capsys.readouterr().out
    for s in STAGES:
        assert f"{s}: reused" in text
    assert _markers(demo_run) == before
    assert took < 30


def test_changed_training_knob_reruns_only_downstream(demo_run, capsys):
    capsys.readouterr()
    before = _markers(demo_run)
    args = [a if a != "2" or i == 0 or TINY[i - 1] != "--plan.epochs" else "3" for i, a in enumerate(TINY)]
    assert main(["demo", "--out", str(demo_run), *args]) == 0
    text = capsys.readouterr().out
    after = _markers(demo_run)
    for s in ("capture", "scene", "grasps", "demos"):
        assert f"{s}: reused" in text and after[s] == before[s]
    for s in ("policy", "export", "eval"):
        assert after[s]["hash"] != before[s]["hash"]
    assert after["policy"]["summary"]["epochs"] == 3


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda_is_a_plain_error(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "x"), "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "splatsim: error:" in err and "--device cuda" in err
    assert not (tmp_path / "x" / stages.MARKERS).exists()


def test_interrupted_stage_resumes_with_its_partial_output(demo_run, capsys):
    """A stage killed after it started (its 'started' marker, no 'finished' one) keeps its output and
    resumes; here training, whose train_state.pt is already at the last step, so nothing is redone."""
    before = _markers(demo_run)
    (demo_run / stages.MARKERS / "policy.json").unlink()
    capsys.readouterr()
    args = [a if a != "2" or i == 0 or TINY[i - 1] != "--plan.epochs" else "3" for i, a in enumerate(TINY)]
    assert main(["demo", "--out", str(demo_run), *args]) == 0
    out = capsys.readouterr()
    assert "policy: done" in out.out
    assert "resuming from step" in out.out + out.err
    after = _markers(demo_run)
    assert after["policy"]["hash"] == before["policy"]["hash"]
    assert after["policy"]["summary"]["steps"] == before["policy"]["summary"]["steps"]
