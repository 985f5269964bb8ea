"""ui.app_grasps: re-filtering from the d_s ~ 0 document equals computing the grasps again; the 3D plot."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from trajgen.grasps import GraspConfig, NoSafeGraspError, compute_grasps, grasps_document
from ui.app_grasps import BASE_D_S, counts_markdown, grasp_figure, refilter_document


def _box_points(size, n, rng):
    """Points on the surface of an axis-aligned box centred at the origin."""
    half = np.asarray(size) / 2
    pts = rng.uniform(-half, half, (n, 3))
    axis = rng.integers(0, 3, n)
    side = rng.choice([-1.0, 1.0], n)
    pts[np.arange(n), axis] = side * half[axis]
    return pts


@pytest.fixture(scope="module")
def scene():
    rng = np.random.default_rng(0)
    obj = _box_points((0.05, 0.05, 0.12), 1500, rng) + [0.0, 0.0, 0.4]
    # A hand holding the box's lower half from the -y side.
    hand = rng.normal([0.0, -0.05, 0.36], [0.03, 0.015, 0.03], (600, 3))
    return obj, hand


@pytest.fixture(scope="module")
def base(scene):
    cfg = GraspConfig(d_s=BASE_D_S, num_contacts=150, plot=False)
    return cfg, grasps_document(compute_grasps(*scene, cfg), cfg)


@pytest.mark.parametrize(
    ("d_s", "top_k"),
    [(0.05, 3), (0.1, 3), (0.1, 1), (0.14, 3), (0.3, 3)],  # kept changes at 0.14 (NMS again), none at 0.3
)
def test_refilter_equals_recomputing(scene, base, d_s, top_k):
    cfg0, base_doc = base
    cfg = replace(cfg0, d_s=d_s, top_k=top_k)
    mine = refilter_document(base_doc, d_s, top_k)
    try:
        ref = grasps_document(compute_grasps(*scene, cfg), cfg)
    except NoSafeGraspError as exc:
        assert mine["summary"]["kept"] == 0
        assert mine["summary"]["rejected"] == exc.summary["rejected"]
        return
    for key in ("status", "rank", "clearance", "eq1_distance", "beyond_fraction"):
        assert [c[key] for c in mine["candidates"]] == [c[key] for c in ref["candidates"]], key
    assert mine["targets"] == ref["targets"]
    assert mine["summary"] == ref["summary"]
    assert mine["config"] == ref["config"]


def test_refilter_is_monotone_and_checks_inputs(base):
    _, base_doc = base
    kept = [refilter_document(base_doc, d, 5)["summary"]["kept"] for d in (0.05, 0.1, 0.2)]
    eq1 = [refilter_document(base_doc, d, 5)["summary"]["rejected"]["eq1_distance"] for d in (0.05, 0.1, 0.2)]
    assert eq1 == sorted(eq1), "a larger d_s rejects at least as many grasps by Eq. 1"
    assert kept[0] >= 1
    with pytest.raises(ValueError, match="expected a distance"):
        refilter_document(base_doc, 0.0, 5)
    with pytest.raises(ValueError, match="top_k"):
        refilter_document(base_doc, 0.1, 0)
    assert base_doc["config"]["d_s"] == BASE_D_S, "refilter_document never changes its input"


def test_figure_and_counts(scene, base):
    _, base_doc = base
    doc = refilter_document(base_doc, 0.1, 2)
    fig = grasp_figure(doc, *scene, max_points=500)
    names = [t.name for t in fig.data]
    assert names[0].startswith("hand points") and names[1].startswith("object points")
    assert any(n.startswith("targets (") for n in names)
    reasons = [n for n in names if n and n.startswith("rejected: eq1_distance")]
    if doc["summary"]["rejected"]["eq1_distance"]:
        assert reasons, names
        hover = next(t for t in fig.data if t.name == reasons[0] and t.mode == "markers")
        assert "< d_s = 10.0 cm" in hover.text[0]
    assert fig.layout.uirevision == "grasps", "slider redraws keep the user's camera"
    md = counts_markdown(doc)
    assert f"**{doc['summary']['kept']} safe grasps kept**" in md and "| eq1_distance |" in md
