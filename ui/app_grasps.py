"""Grasps in the web app: instant re-filtering for the d_s and top-K sliders, and the 3D plot.

The app computes the grasp candidates once with a vanishing ``d_s`` (`BASE_D_S`, 1 µm; GraspConfig wants
it positive) through `trajgen.grasps.compute_grasps`, which measures every candidate that passes the
geometric filters against the hand, and keeps that document
(``.app/grasps_base.json``). `refilter_document` then gives, from the document alone and in
milliseconds, exactly what ``compute_grasps`` would give for any d_s >= BASE_D_S and top-K: the sampling does
not depend on either, Eq. 1 rejects a candidate on its own measured distance, the later filters
(non-intrusion, swept volume, the authors' box) on their own measurements, and only the ranking and the
SE(3) non-maximum suppression among the safe grasps depend on which others survive, so those two are
run again.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np

from trajgen.grasp_io import FILTERS, STATUS_KEPT
from trajgen.grasp_safety import rank_values
from trajgen.grasp_sampler import nms_se3
from trajgen.gripper import GripperModel

__all__ = ["BASE_D_S", "FILTER_HELP", "counts_markdown", "grasp_figure", "refilter_document"]

BASE_D_S = 1e-6
"""d_s (metres) of the base document that `refilter_document` re-filters."""

GEOMETRIC = ("exceeds_stroke", "object_collision", "min_score")
"""Filters applied before Eq. 1; their verdicts never depend on d_s."""
AFTER_EQ1 = ("non_intrusion", "swept_volume", "authors_box")
FILTER_HELP = {
    "exceeds_stroke": "the object is wider than the gripper opens there",
    "object_collision": "the gripper would hit the object elsewhere",
    "min_score": "poor antipodal quality",
    "eq1_distance": "a hand point lies within d_s of the gripper base (Eq. 1)",
    "non_intrusion": "the gripper would come from the person's side",
    "swept_volume": "the straight approach from the pre-grasp pose sweeps through the hand",
    "authors_box": "a hand point lies in the authors' gripper box",
    "nms": "a near-duplicate of a better kept grasp",
}
_REASON_COLORS = {
    "eq1_distance": "#d62728",
    "non_intrusion": "#ff7f0e",
    "swept_volume": "#9467bd",
    "authors_box": "#8c564b",
    "nms": "#7f7f7f",
}


def refilter_document(base: dict[str, Any], d_s: float, top_k: int) -> dict[str, Any]:
    """The grasps.json document that ``d_s`` and ``top_k`` give, from a document computed with a smaller d_s.

    Args:
        base: A grasps document (`trajgen.grasps.grasps_document`), normally computed with `BASE_D_S`.
        d_s: Eq. 1's safety distance (metres), at least the base's.
        top_k: How many of the best kept grasps become targets.

    Returns:
        A new document; its summary says ``kept == 0`` when no grasp is safe (such a document is not a
        valid grasps.json and must not be written).
    """
    cfg = base["config"]
    base_ds = float(cfg["d_s"])
    if not (math.isfinite(d_s) and d_s >= base_ds):
        raise ValueError(
            f"d_s = {d_s}; expected a distance >= {base_ds} m (the d_s the candidates were measured with)"
        )
    if int(top_k) < 1:
        raise ValueError(f"top_k = {top_k}; expected an integer >= 1")
    doc = copy.deepcopy(base)
    cands = doc["candidates"]
    c = len(cands)
    status = np.array([cand["status"] for cand in cands], dtype=object)
    eq1 = np.array([np.inf if cand.get("eq1_distance") is None else cand["eq1_distance"] for cand in cands])
    geometric = np.isin(status, GEOMETRIC)
    new = status.copy()
    eq1_reject = ~geometric & (eq1 < d_s)
    new[eq1_reject] = "eq1_distance"
    safe = np.nonzero(~geometric & ~eq1_reject & ~np.isin(status, AFTER_EQ1))[0]
    scores = np.array([cand["score"] for cand in cands], dtype=np.float64)
    clear = np.array([np.nan if cand.get("clearance") is None else cand["clearance"] for cand in cands])
    rank_v = rank_values(scores[safe], clear[safe], cfg["clearance_weight"], cfg["clearance_saturation"])
    order = safe[np.lexsort((safe, -rank_v))]
    if safe.size:
        centers = np.array([cand["center"] for cand in cands], dtype=np.float64)
        rotations = np.array([cand["pose"] for cand in cands], dtype=np.float64)[:, :3, :3]
        kept = nms_se3(centers, rotations, order, cfg["nms_distance"], math.radians(cfg["nms_angle_deg"]))
    else:
        kept = np.zeros(0, dtype=np.int64)
    new[safe] = "nms"
    new[kept] = STATUS_KEPT
    targets = kept[: int(top_k)]
    rank = {int(i): r for r, i in enumerate(kept)}
    for i, cand in enumerate(cands):
        cand["status"] = str(new[i])
        cand["rank"] = rank.get(i)
        if eq1_reject[i]:
            cand["clearance"] = None  # compute_grasps measures clearance only past Eq. 1
    doc["config"] = {**cfg, "d_s": float(d_s), "top_k": int(top_k)}
    doc["targets"] = [int(t) for t in targets]
    summary = dict(doc["summary"])
    summary.update(
        rejected={f: int((new == f).sum()) for f in FILTERS},
        safe_before_nms=int(safe.size),
        kept=int(kept.size),
        targets=int(targets.size),
    )
    doc["summary"] = summary
    assert sum(summary["rejected"].values()) + summary["kept"] == c
    return doc


def counts_markdown(doc: dict[str, Any]) -> str:
    """A table of how many candidates each filter rejected, and why, with the kept and target counts."""
    s = doc["summary"]
    cfg = doc["config"]
    lines = [
        f"**{s['kept']} safe grasps kept** of {s['candidates']} candidates "
        f"(d_s = {100 * cfg['d_s']:.1f} cm; the best {s['targets']} are the targets).",
        "",
        "| filter | rejected | why |",
        "|---|---:|---|",
    ]
    for f in FILTERS:
        n = s["rejected"].get(f, 0)
        if n or f in ("eq1_distance", "non_intrusion", "swept_volume"):
            lines.append(f"| {f} | {n} | {FILTER_HELP[f]} |")
    if s.get("warning"):
        lines += ["", f"⚠ {s['warning']}"]
    return "\n".join(lines)


def _why(cand: dict[str, Any], cfg: dict[str, Any]) -> str:
    st = cand["status"]
    if st == "eq1_distance":
        return (
            f"rejected: a hand point {100 * cand['eq1_distance']:.1f} cm from the gripper base "
            f"(< d_s = {100 * cfg['d_s']:.1f} cm, Eq. 1)"
        )
    if st == "non_intrusion" and cand.get("beyond_fraction") is not None:
        return (
            f"rejected: only {100 * cand['beyond_fraction']:.0f}% of the hand lies beyond the grasp "
            f"(needs {100 * cfg['non_intrusion_fraction']:.0f}%): it would come from the person's side"
        )
    if st == "swept_volume":
        return (
            f"rejected: the approach from the pre-grasp pose ({cfg['pregrasp_distance']:.2f} m back) sweeps "
            "through the hand"
        )
    if st in FILTER_HELP:
        return f"rejected: {FILTER_HELP[st]}"
    return "kept"


def _lines(cands: list[dict[str, Any]], gripper: GripperModel) -> tuple[list, list, list]:
    xs: list = []
    ys: list = []
    zs: list = []
    for cand in cands:
        T = np.asarray(cand["pose"], dtype=np.float64)
        seg = gripper.outline(float(cand["opening"])) @ T[:3, :3].T + T[:3, 3]
        for a, b in seg:
            xs += [a[0], b[0], None]
            ys += [a[1], b[1], None]
            zs += [a[2], b[2], None]
    return xs, ys, zs


def _subsample(points: np.ndarray, n: int, seed: int) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if points.shape[0] <= n:
        return points
    idx = np.random.default_rng(seed).choice(points.shape[0], n, replace=False)
    return points[np.sort(idx)]


def grasp_figure(
    doc: dict[str, Any],
    object_points: np.ndarray,  # [N, 3] scene frame
    hand_points: np.ndarray,  # [M, 3] scene frame
    *,
    max_points: int = 2500,
    max_per_reason: int = 60,
    seed: int = 0,
):
    """An interactive plotly figure: hand and object points, targets, kept and rejected grasps with why.

    Hovering a grasp's centre says its id, score, clearance and, for a rejected one, which filter
    rejected it and the measurement. At most ``max_per_reason`` rejected grasps are drawn per filter.
    Geometric rejections (stroke, collision, score) are listed in the legend but hidden at first.
    """
    import plotly.graph_objects as go

    cfg = doc["config"]
    gripper = GripperModel(**doc["gripper"])
    cands = doc["candidates"]
    rng = np.random.default_rng(seed)
    fig = go.Figure()
    for pts, name, color in (
        (_subsample(hand_points, max_points, seed), "hand points", "#d9468f"),
        (_subsample(object_points, max_points, seed + 1), "object points", "#3b6fb6"),
    ):
        fig.add_trace(
            go.Scatter3d(
                x=pts[:, 0],
                y=pts[:, 1],
                z=pts[:, 2],
                mode="markers",
                name=f"{name} ({len(pts)})",
                marker={"size": 1.6, "color": color, "opacity": 0.55},
                hoverinfo="skip",
            )  # fmt: skip
        )
    target_ids = set(doc["targets"])
    groups: list[tuple[str, list[dict[str, Any]], str, float, bool]] = [
        (f"targets ({len(target_ids)})", [cands[i] for i in doc["targets"]], "#0b5d1e", 7.0, True),
        (
            f"kept ({doc['summary']['kept']})",
            [cd for cd in cands if cd["status"] == STATUS_KEPT and cd["id"] not in target_ids],
            "#1a9e3a",
            3.5,
            True,
        ),
    ]
    for reason, color in _REASON_COLORS.items():
        members = [cd for cd in cands if cd["status"] == reason]
        if not members:
            continue
        shown = members
        if len(members) > max_per_reason:
            shown = [members[i] for i in np.sort(rng.choice(len(members), max_per_reason, replace=False))]
        label = f"rejected: {reason} ({len(members)}" + (
            f", {len(shown)} drawn)" if len(shown) < len(members) else ")"
        )
        groups.append((label, shown, color, 2.0, reason != "nms"))
    for label, members, color, width, visible in groups:
        if not members:
            continue
        xs, ys, zs = _lines(members, gripper)
        vis = True if visible else "legendonly"
        fig.add_trace(
            go.Scatter3d(
                x=xs,
                y=ys,
                z=zs,
                mode="lines",
                name=label,
                legendgroup=label,
                visible=vis,
                line={"color": color, "width": width},
                hoverinfo="skip",
            )  # fmt: skip
        )
        centers = np.array([cd["center"] for cd in members])
        text = [
            f"grasp {cd['id']}"
            + (f" · rank {cd['rank']}" if cd.get("rank") is not None else "")
            + f" · score {cd['score']:.2f} · width {100 * cd['width']:.1f} cm"
            + (f" · clearance {100 * cd['clearance']:.1f} cm" if cd.get("clearance") is not None else "")
            + f"<br>{_why(cd, cfg)}"
            for cd in members
        ]
        fig.add_trace(
            go.Scatter3d(
                x=centers[:, 0],
                y=centers[:, 1],
                z=centers[:, 2],
                mode="markers",
                name=label,
                legendgroup=label,
                showlegend=False,
                visible=vis,
                text=text,
                hoverinfo="text",
                marker={"size": 3, "color": color},
            )  # fmt: skip
        )
    geometric = [cd for cd in cands if cd["status"] in GEOMETRIC]
    if geometric:
        centers = np.array([cd["center"] for cd in geometric])
        fig.add_trace(
            go.Scatter3d(
                x=centers[:, 0],
                y=centers[:, 1],
                z=centers[:, 2],
                mode="markers",
                visible="legendonly",
                name=f"rejected by geometry ({len(geometric)})",
                marker={"size": 2, "color": "#bbbbbb"},
                text=[f"grasp {cd['id']}<br>{_why(cd, cfg)}" for cd in geometric],
                hoverinfo="text",
            )  # fmt: skip
        )
    fig.update_layout(
        scene={"aspectmode": "data", "xaxis_title": "x (m)", "yaxis_title": "y (m)", "zaxis_title": "z (m)"},
        margin={"l": 0, "r": 0, "t": 30, "b": 0},
        height=560,
        legend={"orientation": "h", "y": 1.02, "x": 0},
        uirevision="grasps",  # keep the user's camera when the sliders redraw
    )
    return fig
