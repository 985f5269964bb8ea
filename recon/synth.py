"""Procedural handover captures: a person's hand offering an object, seen by a DexYCB-like RGB-D rig.

The project's built-in default scene, its test fixture, and the way to try the studio without a
camera rig. `generate_capture` writes an ordinary capture folder (`recon.capture`) plus ground truth:

    gt/object.ply   the object's mesh in the scene frame (metres), vertex colours for viewing
    gt/hand.ply     forearm + hand mesh (everything labelled hand), scene frame
    gt/depth.npz    noise-free depth per view (float32 metres, 0 = no surface; key = view name)

and lists them in ``capture.json``'s ``ground_truth`` together with the object's pose, the 21 hand
keypoints (wrist, then thumb/index/middle/ring/little from base to tip) and the smallest hand-object
distance.

Scene frame: metres, +z up, the table top is the plane z = 0, the person stands on the -y side of the
object (``person_azimuth_deg``) and the cameras look at the handover from the opposite side. Labels
follow the project: 0 background (table, floor, wall, the person's body), 1 object, 2 hand (hand and
forearm).

The hand is a right hand of primitives (palm, thumb and four fingers of three phalanges, forearm),
placed by the pose variant (``wrap``: palm on the side, fingers around; ``under``: palm below;
``pinch``: palm standing off, fingertips and thumb holding) and closed onto the object GraspIt-style
until every link touches it (``contact_gap``) or reaches its joint limit; it never penetrates it.

Rendering is headless ray casting on the CPU (`open3d.t.geometry.RaycastingScene`), one geometry per
surface so a hit's geometry id gives its label and its procedural albedo. Shading is Lambertian: a
directional key light with hard shadows, a fill light and ambient, in linear RGB, stored as sRGB.
Pixel convention (`splatsim.conventions`): pixel ``(u, v)`` covers ``[u, u + 1) x [v, v + 1)``; its
depth/label ray goes through the continuous coordinate ``(u + 0.5, v + 0.5)``, i.e. camera direction
``((u + 0.5 - cx) / fx, (v + 0.5 - cy) / fy, 1)``. Colour averages ``supersample**2`` rays per pixel.

The sensor depth follows a simple D435-like model (`simulate_depth_noise`): Gaussian error with
``sigma = depth_sigma0 + depth_sigma_quadratic * z**2``, holes at grazing angles and (randomly) at
depth discontinuities, sparse random dropouts, and millimetre quantisation when written. Masks are
exact. Everything is seeded: the same config and seed give byte-identical images.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import open3d as o3d
from scipy import ndimage

from recon.capture import CAPTURE_JSON, Capture, CaptureError, ViewData, write_capture
from recon.catalogue import (
    CatalogueObject,
    TriMesh,
    box,
    capsule,
    fbm,
    get_object,
    glyph_text,
    hash01,
    is_known_object,
    object_names,
    superellipsoid,
    value_noise,
)
from splatsim.scene import LABEL_BACKGROUND, LABEL_HAND, LABEL_OBJECT

__all__ = [
    "SynthConfig",
    "SynthScene",
    "build_scene",
    "camera_rig",
    "contact_sheet",
    "generate_capture",
    "render_view",
    "simulate_depth_noise",
    "synthesize_views",
]

HandPose = Literal["auto", "wrap", "under", "pinch"]


@dataclass
class SynthConfig:
    """Synthetic handover capture. ``generate_capture(cfg, out)`` takes the output folder separately."""

    object: str = "mustard_bottle"
    """Catalogue object held by the hand (see `recon.catalogue.object_names`)."""
    hand_pose: HandPose = "auto"
    """How the hand holds it: fingers wrapped around (wrap), palm supporting from below (under),
    fingertips and thumb only (pinch); auto takes the object's default."""
    num_views: int = 8
    """Number of cameras (DexYCB uses 8)."""
    width: int = 640
    """Image width in pixels before ``resolution_scale``."""
    height: int = 480
    """Image height in pixels before ``resolution_scale``."""
    resolution_scale: float = 1.0
    """Scales the image size and the intrinsics (0.5 gives 320x240 with fx = fy ~ 307.5)."""
    focal_px: float = 615.0
    """Focal length fx = fy in pixels at ``width`` x ``height`` (RealSense D435 colour at 640x480)."""
    principal_offset_px: tuple[float, float] = (0.0, 0.0)
    """Principal point offset from the image centre (cx, cy) in pixels at ``width`` x ``height``."""
    seed: int = 0
    """Seed for everything random: scene layout, hand, cameras, noise."""
    noise: bool = True
    """Apply the depth sensor model and RGB sensor noise (off: the sensor depth is the exact depth)."""
    depth_sigma0: float = 0.001
    """Depth noise standard deviation at zero range (metres)."""
    depth_sigma_quadratic: float = 0.0025
    """Growth of the depth noise standard deviation with range: sigma = sigma0 + this * z^2 (1/m)."""
    grazing_angle_deg: float = 75.0
    """No depth where the angle between the ray and the surface normal exceeds this (degrees)."""
    edge_threshold: float = 0.03
    """A pixel whose 3x3 neighbourhood spans more depth than this (metres) is a discontinuity edge."""
    edge_dropout_prob: float = 0.5
    """Probability that an edge pixel loses its depth."""
    random_dropout_prob: float = 0.002
    """Probability that any pixel loses its depth."""
    depth_range: tuple[float, float] = (0.15, 4.0)
    """Valid sensor range (metres); depth outside it is missing."""
    rgb_noise_std: float = 1.5
    """RGB sensor noise standard deviation in 8-bit levels."""
    supersample: int = 2
    """Colour rays per pixel along each axis (anti-aliasing); depth and masks use the pixel centre."""
    shadows: bool = True
    """Cast hard shadows from the key light."""
    camera_radius: tuple[float, float] = (0.8, 1.2)
    """Range of camera distances from the object (metres)."""
    camera_azimuth_span_deg: float = 90.0
    """Horizontal extent of the camera patch, centred opposite the person (degrees)."""
    camera_elevation_deg: tuple[float, float] = (10.0, 70.0)
    """Elevation range of the camera patch above the object's horizontal plane (degrees)."""
    camera_jitter_deg: float = 5.0
    """Random jitter of each camera's azimuth and elevation (degrees)."""
    look_at_jitter: float = 0.02
    """Random offset of each camera's look-at point from the object centre (metres)."""
    hold_height: tuple[float, float] = (0.33, 0.45)
    """Range of the object centre's height above the table (metres)."""
    person_azimuth_deg: float = -90.0
    """Direction from the object to the person, counter-clockwise from +x (degrees)."""
    contact_gap: float = 0.0015
    """Gap the closing fingers and palm stop at (metres)."""
    hand_scale: float = 1.0
    """Hand size relative to an average adult hand (jittered by +-5%)."""
    object_scale: float = 1.0
    """Uniform scale of the object about its bounding-box centre (texture included); the hand closes
    around the scaled object as around any other. Varies apparent size independently of the hand, e.g.
    for training data where an object's image size must not give away its distance."""

    def image_size(self) -> tuple[int, int]:
        """Output (width, height) in pixels."""
        w, h = round(self.width * self.resolution_scale), round(self.height * self.resolution_scale)
        if w < 8 or h < 8:
            raise ValueError(
                f"SynthConfig: width x height x resolution_scale = {w}x{h}; expected at least 8x8 pixels"
            )
        return w, h

    def intrinsics(self) -> tuple[float, float, float, float]:
        """(fx, fy, cx, cy) at the output size, pixel centres at +0.5 (`splatsim.conventions`)."""
        w, h = self.image_size()
        sx, sy = w / self.width, h / self.height
        ox, oy = self.principal_offset_px
        return self.focal_px * sx, self.focal_px * sy, (self.width / 2 + ox) * sx, (self.height / 2 + oy) * sy

    def validate(self) -> None:
        """Raises ValueError naming the field for out-of-range settings."""
        if not is_known_object(self.object):
            raise ValueError(
                f"SynthConfig.object = {self.object!r}; expected one of {object_names()} or a procedural "
                "object such as 'procedural_box_000' (recon.catalogue.procedural_name)"
            )
        if self.hand_pose not in ("auto", "wrap", "under", "pinch"):
            raise ValueError(
                f"SynthConfig.hand_pose = {self.hand_pose!r}; expected auto, wrap, under or pinch"
            )
        if self.num_views < 1:
            raise ValueError(f"SynthConfig.num_views = {self.num_views}; expected >= 1")
        if self.supersample < 1:
            raise ValueError(f"SynthConfig.supersample = {self.supersample}; expected >= 1")
        if not (math.isfinite(self.object_scale) and 0.5 <= self.object_scale <= 2.0):
            raise ValueError(f"SynthConfig.object_scale = {self.object_scale}; expected 0.5 to 2.0")
        lo, hi = self.camera_radius
        if not 0.2 <= lo <= hi:
            raise ValueError(f"SynthConfig.camera_radius = {self.camera_radius}; expected 0.2 <= min <= max")
        self.image_size()


# ---------------------------------------------------------------------------------------------------
# Small geometry helpers
# ---------------------------------------------------------------------------------------------------


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _rotate(v: np.ndarray, axis: np.ndarray, angle: np.ndarray | float) -> np.ndarray:
    """Rodrigues rotation of vectors ``v`` [..., 3] about unit ``axis`` [..., 3] by ``angle`` [...]."""
    angle = np.asarray(angle, np.float64)[..., None]
    c, s = np.cos(angle), np.sin(angle)
    return v * c + np.cross(axis, v) * s + axis * np.sum(axis * v, -1, keepdims=True) * (1 - c)


def _rot_axis_angle(axis: np.ndarray, angle: float) -> np.ndarray:
    return np.stack([_rotate(e, _unit(axis), angle) for e in np.eye(3)], 1)


def _look_at(eye: np.ndarray, target: np.ndarray, roll: float = 0.0) -> np.ndarray:
    """OpenCV camera-to-world pose at ``eye`` looking at ``target`` with world +z as image up."""
    z = _unit(target - eye)
    x = _unit(np.cross(z, [0.0, 0.0, 1.0]))
    y = np.cross(z, x)
    R = np.stack([x, y, z], 1) @ _rot_axis_angle(np.array([0.0, 0.0, 1.0]), roll)
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, eye
    return T


def _srgb_to_linear(c: np.ndarray) -> np.ndarray:
    c = np.clip(c, 0.0, 1.0)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(c: np.ndarray) -> np.ndarray:
    c = np.clip(c, 0.0, 1.0)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * np.power(c, 1 / 2.4) - 0.055)


# ---------------------------------------------------------------------------------------------------
# The hand: palm, thumb and four fingers of three phalanges, closed onto the object
# ---------------------------------------------------------------------------------------------------

# Per finger (index, middle, ring, little): knuckle offsets (along the fingers, toward the thumb),
# splay (deg), phalanx lengths, radii at the knuckle, the two inner joints and the tip (metres).
_FINGERS = (
    (0.041, 0.026, 7.0, (0.044, 0.026, 0.021), (0.0098, 0.0090, 0.0082, 0.0074)),
    (0.044, 0.008, 0.0, (0.048, 0.030, 0.022), (0.0100, 0.0093, 0.0085, 0.0076)),
    (0.041, -0.010, -6.0, (0.045, 0.028, 0.022), (0.0094, 0.0088, 0.0080, 0.0072)),
    (0.035, -0.027, -13.0, (0.035, 0.021, 0.020), (0.0084, 0.0078, 0.0071, 0.0064)),
)
_FINGER_MAX = np.radians([88.0, 100.0, 75.0])
_FINGER_RATE = np.array([1.0, 1.15, 0.85])
_THUMB_LENGTHS = (0.042, 0.032, 0.027)
_THUMB_RADII = (0.0125, 0.0108, 0.0098, 0.0088)
_THUMB_MAX = np.radians([60.0, 70.0, 80.0])
_THUMB_RATE = np.array([0.8, 1.0, 1.0])


@dataclass
class _Chain:
    """A planar kinematic chain (a finger): all joints flex about the same axis."""

    base: np.ndarray
    direction: np.ndarray
    axis: np.ndarray
    lengths: np.ndarray
    radii: np.ndarray
    angles: np.ndarray
    max_angles: np.ndarray
    rate: np.ndarray

    def joints(self, angles: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Joint positions [n + 1, 3] (base ... tip) and segment directions [n, 3]."""
        a = self.angles if angles is None else angles
        dirs = _rotate(np.broadcast_to(self.direction, (len(a), 3)), self.axis, np.cumsum(a))
        pts = self.base + np.concatenate([np.zeros((1, 3)), np.cumsum(dirs * self.lengths[:, None], 0)])
        return pts, dirs


def _segment_samples(chain: _Chain, angles: np.ndarray, k: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Sample points [n, k, 3] along each segment axis and the capsule radius there [n, k]."""
    pts, _ = chain.joints(angles)
    t = np.linspace(0.0, 1.0, k)
    samples = pts[:-1, None] + (pts[1:] - pts[:-1])[:, None] * t[None, :, None]
    radii = chain.radii[:-1, None] + (chain.radii[1:] - chain.radii[:-1])[:, None] * t[None]
    return samples, radii


class _Distance:
    """Unsigned distance to one mesh (open3d ray-casting scene)."""

    def __init__(self, mesh: TriMesh) -> None:
        self.scene = o3d.t.geometry.RaycastingScene()
        self.scene.add_triangles(
            o3d.core.Tensor(mesh.vertices.astype(np.float32)),
            o3d.core.Tensor(mesh.triangles.astype(np.uint32)),
        )

    def __call__(self, points: np.ndarray) -> np.ndarray:
        q = o3d.core.Tensor(np.asarray(points, np.float32).reshape(-1, 3))
        return self.scene.compute_distance(q).numpy().astype(np.float64).reshape(np.shape(points)[:-1])


def _close_chains(chains: list[_Chain], dist: _Distance, gap: float, step_deg: float = 0.6) -> None:
    """Flexes every chain's joints until each link touches the object (within ``gap``) or hits its limit.

    GraspIt-style auto-grasp: all active joints close together; when link ``k`` would come closer
    than ``gap``, the step is bisected and joints ``0..k`` stop, the distal joints keep closing.
    """
    step = math.radians(step_deg)
    active = [np.ones(len(c.angles), bool) for c in chains]

    def clearance(chain: _Chain, angles: np.ndarray) -> np.ndarray:
        s, r = _segment_samples(chain, angles)
        return (dist(s) - r).min(axis=1)

    for _ in range(int(300 / step_deg)):
        if not any(a.any() for a in active):
            break
        for c, act in zip(chains, active):
            if not act.any():
                continue
            delta = act * c.rate * step
            proposal = np.minimum(c.angles + delta, c.max_angles)
            clear = clearance(c, proposal)
            hit = np.flatnonzero(clear < gap)
            if hit.size == 0:
                c.angles = proposal
                act &= proposal < c.max_angles - 1e-9
                continue
            frac = 0.5
            for _ in range(4):
                trial = np.minimum(c.angles + delta * frac, c.max_angles)
                if (clearance(c, trial) >= gap).all():
                    c.angles = trial
                    break
                frac *= 0.5
            act[: hit[0] + 1] = False


_THUMB_CANDIDATES = ((50.0, -0.032), (75.0, -0.032), (100.0, -0.05), (25.0, -0.03), (100.0, -0.032))
"""Thumb rest directions (degrees from the fingers toward the thumb side) and base offsets along the
fingers (metres), in order of preference: the first that wraps onto the object wins."""


def _close_thumb(candidates: list[_Chain], dist: _Distance, gap: float) -> _Chain:
    """Closes each candidate thumb; returns the first that touches the object with its tip after curling
    at least 20 degrees without penetrating it, else the best of them."""
    scored = []
    for c in candidates:
        _close_chains([c], dist, gap)
        s, r = _segment_samples(c, c.angles)
        clear = (dist(s) - r).min(axis=1)
        ok = clear.min() > -0.0005
        touch = clear[-1] < gap + 0.003
        curl = float(c.angles[1:].sum())
        if ok and touch and curl > math.radians(20.0):
            return c
        scored.append((ok, touch, curl, c))
    return max(scored, key=lambda t: t[:3])[3]


@dataclass
class _HandPart:
    kind: int  # 0 palm, 1 phalanx, 2 distal phalanx (nail), 3 forearm
    origin: np.ndarray
    axis: np.ndarray
    length: float
    dorsal: np.ndarray


@dataclass
class _Hand:
    mesh: TriMesh
    tri_part: np.ndarray
    parts: list[_HandPart]
    keypoints: np.ndarray  # [21, 3]
    elbow: np.ndarray  # [3]


def _build_hand(
    obj_mesh: TriMesh,
    grip: np.ndarray,
    n: np.ndarray,
    d: np.ndarray,
    pose: str,
    forearm_dir: np.ndarray,
    scale: float,
    gap: float,
) -> _Hand:
    """Right hand with palm normal ``n`` (toward the object) and fingers along ``d``, closed on the object.

    The palm starts 0.25 m back along ``-n`` from ``grip`` and slides along ``n`` until the hand comes
    within ``gap`` of the object (``pinch``: within a fingertip stand-off), then the fingers close.
    """
    n, d = _unit(n), _unit(d)
    l = np.cross(d, n)  # toward the thumb (right hand)
    dist = _Distance(obj_mesh)
    palm_half = np.array([0.047, 0.042, 0.0145]) * scale

    def make_chains(center: np.ndarray) -> list[_Chain]:
        chains = []
        for kd, kl, splay, lengths, radii in _FINGERS:
            fd = _rotate(d, n, math.radians(splay))
            rest = np.radians([6.0, 8.0, 5.0])
            chains.append(
                _Chain(
                    base=center + scale * (kd * d + kl * l) - 0.003 * scale * n,
                    direction=fd,
                    axis=_unit(np.cross(fd, n)),
                    lengths=np.asarray(lengths) * scale,
                    radii=np.asarray(radii) * scale,
                    angles=rest,
                    max_angles=_FINGER_MAX.copy(),
                    rate=_FINGER_RATE.copy(),
                )
            )
        return chains

    def make_thumb(center: np.ndarray, phi_deg: float, base_d: float) -> _Chain:
        # Rest direction at ``phi_deg`` from the fingers toward the thumb side; it curls toward the
        # object on the far side from the fingers (it wraps the opposite way round, as in a power grasp).
        phi = math.radians(phi_deg)
        td = _unit(math.cos(phi) * d + math.sin(phi) * l - 0.1 * n)
        return _Chain(
            base=center + scale * (base_d * d + 0.02 * l - 0.002 * n),
            direction=td,
            axis=_unit(np.cross(td, _unit(n - 0.5 * d))),
            lengths=np.asarray(_THUMB_LENGTHS) * scale,
            radii=np.asarray(_THUMB_RADII) * scale,
            angles=np.radians([10.0, 10.0, 5.0]),
            max_angles=_THUMB_MAX.copy(),
            rate=_THUMB_RATE.copy(),
        )

    R_palm = np.stack([d, l, n], 1)
    palm_unit = superellipsoid(palm_half, e_lat=0.55, e_lon=0.45, n_lat=16, n_lon=28)
    palm_local = palm_unit.vertices

    # The wrist bends halfway between the hand's axis and the forearm's natural direction.
    forearm_dir = _unit(_unit(forearm_dir) - d)
    wrist_offset = -0.04 * scale * d - 0.006 * scale * n
    fore_t = np.linspace(0.0, 0.12, 13)[:, None]
    fore_r = 0.024 * scale + (0.036 - 0.024) * scale * fore_t[:, 0] / 0.26

    def rest_clearance(center: np.ndarray) -> float:
        pts = [palm_local @ R_palm.T + center, center + wrist_offset + fore_t * scale * forearm_dir]
        rad = [np.zeros(len(palm_local)), fore_r]
        for c in make_chains(center):
            s, r = _segment_samples(c, c.angles, 4)
            pts.append(s.reshape(-1, 3))
            rad.append(r.reshape(-1))
        return float((dist(np.concatenate(pts)) - np.concatenate(rad)).min())

    stand_off = gap if pose != "pinch" else 0.022 * scale
    start = grip - 0.25 * n
    lo, hi = 0.0, None
    for s in np.arange(0.0, 0.5, 0.004):
        if rest_clearance(start + s * n) < stand_off:
            hi = s
            break
        lo = s
    if hi is None:
        raise ValueError("synthetic hand: the palm slid past the object without touching it")
    for _ in range(8):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if rest_clearance(start + mid * n) >= stand_off else (lo, mid)
    center = start + lo * n

    chains = make_chains(center)
    _close_chains(chains, dist, gap)
    chains.append(_close_thumb([make_thumb(center, *c) for c in _THUMB_CANDIDATES], dist, gap))

    parts: list[_HandPart] = []
    meshes: list[TriMesh] = []

    def add(mesh: TriMesh, part: _HandPart) -> None:
        meshes.append(mesh)
        parts.append(part)

    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R_palm, center
    add(palm_unit.transformed(T), _HandPart(0, center, d, 2 * palm_half[0], -n))
    keypoints = [center - 0.047 * scale * d]
    for c in [chains[4], *chains[:4]]:
        pts, dirs = c.joints()
        keypoints.extend(pts)
        for k in range(len(dirs)):
            dorsal = -_unit(np.cross(c.axis, dirs[k]))
            seg = capsule(pts[k], pts[k + 1], c.radii[k], c.radii[k + 1], segments=16, rings=4)
            add(seg, _HandPart(2 if k == len(dirs) - 1 else 1, pts[k], dirs[k], c.lengths[k], dorsal))
    # Thenar bulge joining the thumb to the palm, and the forearm.
    thumb = chains[4]
    add(
        capsule(
            center + scale * (-0.02 * d + 0.012 * l - 0.002 * n),
            thumb.joints()[0][1],
            0.014 * scale,
            0.011 * scale,
        ),
        _HandPart(0, center, d, 0.05, -n),
    )
    wrist = center + wrist_offset
    elbow = wrist + 0.26 * scale * forearm_dir
    add(
        capsule(wrist, elbow, 0.024 * scale, 0.036 * scale, segments=28, rings=6),
        _HandPart(3, wrist, forearm_dir, 0.26 * scale, -n),
    )
    tri_part = np.concatenate([np.full(len(m.triangles), i) for i, m in enumerate(meshes)])
    return _Hand(TriMesh.concat(meshes), tri_part, parts, np.asarray(keypoints), elbow)


_SKIN_TONES = np.array(
    [[0.94, 0.78, 0.67], [0.88, 0.69, 0.57], [0.80, 0.60, 0.46], [0.66, 0.46, 0.32], [0.49, 0.33, 0.23]]
)


def _hand_albedo(hand: _Hand, skin: np.ndarray, seed: int):
    kinds = np.array([p.kind for p in hand.parts])
    origins = np.array([p.origin for p in hand.parts])
    axes = np.array([p.axis for p in hand.parts])
    lengths = np.array([p.length for p in hand.parts])
    dorsals = np.array([p.dorsal for p in hand.parts])
    nail = np.clip(skin * np.array([1.05, 0.93, 0.95]) + 0.12, 0, 1)

    def albedo(p: np.ndarray, nrm: np.ndarray, prim: np.ndarray) -> np.ndarray:
        part = hand.tri_part[prim]
        col = np.broadcast_to(skin, (len(p), 3)).astype(np.float32).copy()
        col *= (0.9 + 0.2 * fbm(p, 0.012, seed, 3))[:, None]
        t = np.sum((p - origins[part]) * axes[part], 1) / lengths[part]
        dors = np.sum(nrm * dorsals[part], 1)
        kind = kinds[part]
        # Redder skin toward the joints and on the palm side; creases at the joints.
        phal = kind >= 1
        joint = phal & (kind <= 2) & ((t < 0.08) | (t > 0.94))
        col[joint] *= np.array([0.88, 0.78, 0.78], np.float32)
        palmar = (kind <= 2) & (dors < -0.3)
        col[palmar] = col[palmar] * 0.92 + np.array([0.1, 0.05, 0.05], np.float32)
        is_nail = (kind == 2) & (t > 0.5) & (t < 1.02) & (dors > 0.55)
        col[is_nail] = nail * (0.95 + 0.1 * value_noise(p[is_nail], 0.003, seed + 1))[:, None]
        tip = is_nail & (t > 0.95)
        col[tip] = np.array([0.96, 0.93, 0.9], np.float32)
        # Forearm: fine hair speckle on its back.
        fore = (kind == 3) & (dors > 0.0)
        speck = value_noise(p[fore], 0.0012, seed + 2) > 0.85
        col[fore] *= np.where(speck, 0.9, 1.0)[:, None].astype(np.float32)
        return col

    return albedo


# ---------------------------------------------------------------------------------------------------
# The scene
# ---------------------------------------------------------------------------------------------------


@dataclass
class _Surface:
    name: str
    mesh: TriMesh
    label: int
    albedo: Any  # (points [N,3] world, normals [N,3] world, triangle ids [N]) -> sRGB [N,3]


@dataclass
class SynthScene:
    """The synthetic scene: surfaces (world frame) and what the ground truth records about them."""

    surfaces: list[_Surface]
    object: CatalogueObject
    object_pose: np.ndarray  # [4, 4] object frame -> scene frame
    hand_pose: str
    hand_keypoints: np.ndarray  # [21, 3] scene frame
    object_center: np.ndarray  # [3]
    person_direction: np.ndarray  # [3] unit, horizontal, object -> person
    key_light: np.ndarray  # [3] unit, toward the light
    fill_light: np.ndarray  # [3]
    object_scale: float = 1.0
    """The object's uniform scale (`SynthConfig.object_scale`): its mesh is ``object_pose`` applied to
    ``object_scale`` times the catalogue mesh."""
    _raycaster: Any = field(default=None, repr=False)
    _normals: list[np.ndarray] = field(default_factory=list, repr=False)

    def surface(self, name: str) -> _Surface:
        for s in self.surfaces:
            if s.name == name:
                return s
        raise KeyError(name)

    def raycaster(self) -> o3d.t.geometry.RaycastingScene:
        """Ray-casting scene with geometry id i = ``surfaces[i]``."""
        if self._raycaster is None:
            rc = o3d.t.geometry.RaycastingScene()
            for i, s in enumerate(self.surfaces):
                gid = rc.add_triangles(
                    o3d.core.Tensor(s.mesh.vertices.astype(np.float32)),
                    o3d.core.Tensor(s.mesh.triangles.astype(np.uint32)),
                )
                assert gid == i, (gid, i)
            self._raycaster = rc
            self._normals = [s.mesh.vertex_normals().astype(np.float32) for s in self.surfaces]
        return self._raycaster


def _object_albedo(obj: CatalogueObject, T: np.ndarray, scale: float = 1.0):
    R, t = T[:3, :3], T[:3, 3]

    def albedo(p: np.ndarray, nrm: np.ndarray, prim: np.ndarray) -> np.ndarray:
        return obj.albedo((p - t) @ R / scale, nrm @ R)

    return albedo


def _env_albedo(kind: str, origin: np.ndarray, u_axis: np.ndarray, seed: int, rng: np.random.Generator):
    """Albedo of the table, floor, wall and the person's body (planar coordinates along ``u_axis``)."""
    if kind == "wall":
        paint = np.array([[0.86, 0.84, 0.78], [0.78, 0.82, 0.84], [0.84, 0.80, 0.74]])[rng.integers(3)]
        posters = [
            (rng.uniform(-1.2, 1.2), rng.uniform(0.35, 1.1), rng.uniform(0.25, 0.5), rng.uniform(0.3, 0.6), k)
            for k in range(5)
        ]
        hues = rng.uniform(0.15, 0.85, (5, 3))
    if kind == "shirt":
        shirt = np.array(
            [[0.15, 0.2, 0.4], [0.5, 0.5, 0.52], [0.18, 0.35, 0.25], [0.45, 0.12, 0.15], [0.8, 0.8, 0.78]]
        )[rng.integers(5)]
    v_axis = np.array([0.0, 0.0, 1.0])

    def albedo(p: np.ndarray, nrm: np.ndarray, prim: np.ndarray) -> np.ndarray:
        q = p - origin
        u = q @ u_axis
        if kind == "floor":
            w = q @ _unit(np.cross(v_axis, u_axis))
            tile = (np.floor(u / 0.4) + np.floor(w / 0.4)) % 2
            col = np.where(tile[:, None] > 0, [0.55, 0.53, 0.5], [0.45, 0.44, 0.42]).astype(np.float32)
            grout = (np.abs(u / 0.4 - np.round(u / 0.4)) < 0.015) | (
                np.abs(w / 0.4 - np.round(w / 0.4)) < 0.015
            )
            col[grout] = 0.3
            return col * (0.85 + 0.3 * fbm(p, 0.05, seed, 3))[:, None]
        if kind == "table":
            w = q @ _unit(np.cross(v_axis, u_axis))
            grain = np.sin((w + 0.02 * fbm(p * np.array([0.2, 0.2, 1.0]), 0.05, seed, 3)) * 2 * np.pi / 0.012)
            col = np.where(grain[:, None] > 0.2, [0.62, 0.45, 0.28], [0.70, 0.52, 0.33]).astype(np.float32)
            col *= (0.85 + 0.3 * fbm(p, 0.08, seed + 1, 2))[:, None]
            paper = (np.abs(u - 0.25) < 0.105) & (np.abs(w - 0.25) < 0.148) & (q[:, 2] > -0.001)
            col[paper] = 0.92
            text = paper & glyph_text(u, w, 0.006, 0.012, seed + 3, 0.9)
            col[text & (np.abs(u - 0.25) < 0.09) & (np.abs(w - 0.25) < 0.13)] = 0.2
            checker = (np.abs(u + 0.3) < 0.1) & (np.abs(w - 0.2) < 0.1) & (q[:, 2] > -0.001)
            cb = ((np.floor((u + 0.3) / 0.025) + np.floor((w - 0.2) / 0.025)) % 2) > 0
            col[checker] = np.where(cb[checker, None], 0.1, 0.9)
            return col
        if kind == "wall":
            col = np.broadcast_to(paint, (len(p), 3)).astype(np.float32).copy()
            col *= (0.9 + 0.2 * fbm(p, 0.1, seed, 3))[:, None]
            z = p[:, 2]
            col[z < 0.08 - 0.75] = [0.92, 0.92, 0.9]
            for cu, cz, hw, hh, k in posters:
                inside = np.flatnonzero((np.abs(u - cu) < hw / 2) & (np.abs(z - cz) < hh / 2))
                if inside.size == 0:
                    continue
                pu, pz = u[inside] - cu, z[inside] - cz
                blocks = hash01(np.floor(pu / 0.05), np.floor(pz / 0.05), seed=seed + k) > 0.5
                art = (
                    hues[k] * ((0.5 + fbm(p[inside], 0.06, seed + 10 + k, 3)) * (0.7 + 0.3 * blocks))[:, None]
                )
                txt = glyph_text(pu, pz, 0.012, 0.025, seed + 20 + k, 0.7) & (pz < -hh * 0.3)
                art[txt] = 0.1
                art[(np.abs(pu) > hw / 2 - 0.015) | (np.abs(pz) > hh / 2 - 0.015)] = 0.12
                col[inside] = art
            return col
        if kind == "shirt":
            col = np.broadcast_to(shirt, (len(p), 3)).astype(np.float32).copy()
            weave = np.sin(p[:, 2] * 2 * np.pi / 0.004) * np.sin(u * 2 * np.pi / 0.004)
            col *= (0.85 + 0.08 * weave + 0.2 * fbm(p, 0.03, seed, 3))[:, None]
            return col
        raise AssertionError(kind)

    return albedo


def _head_albedo(skin: np.ndarray, top_z: float, seed: int):
    def albedo(p: np.ndarray, nrm: np.ndarray, prim: np.ndarray) -> np.ndarray:
        col = np.broadcast_to(skin, (len(p), 3)).astype(np.float32).copy()
        col *= (0.9 + 0.2 * fbm(p, 0.02, seed, 2))[:, None]
        hair = p[:, 2] > top_z - 0.06 + 0.03 * np.sin(np.arctan2(p[:, 1], p[:, 0]) * 3)
        col[hair] = (
            np.array([0.12, 0.09, 0.07], np.float32)
            * (0.8 + 0.4 * value_noise(p[hair], 0.004, seed))[:, None]
        )
        return col

    return albedo


def build_scene(cfg: SynthConfig) -> SynthScene:
    """Builds the handover scene (object, hand, person, table, wall, floor) for ``cfg.seed``."""
    cfg.validate()
    rng = np.random.default_rng([cfg.seed, 0])
    obj = get_object(cfg.object)
    pose = obj.default_pose if cfg.hand_pose == "auto" else cfg.hand_pose
    scale = cfg.hand_scale * rng.uniform(0.95, 1.05)
    ez = np.array([0.0, 0.0, 1.0])

    # Grasp frame in the object frame: palm normal n (into the object) and finger direction d.
    k = cfg.object_scale
    half = k * obj.size / 2
    if pose in ("wrap", "pinch"):
        n_o = -obj.palm_side
        d_o = np.cross(n_o, ez)
        if pose == "wrap":  # the object lies diagonally across the palm, fingers pointing a little down
            d_o = _rotate(d_o, n_o, math.radians(rng.uniform(12.0, 24.0)))
        grip_o = k * obj.grip_center
        if pose == "pinch":
            grip_o[2] += 0.3 * half[2]
    else:  # under
        n_o = ez.copy()
        d_o = -obj.palm_side
        reach = float(np.abs(half @ d_o))
        grip_o = k * obj.grip_center + d_o * np.clip(reach - 0.04 * scale, -0.01, 0.03)
        grip_o[2] = -half[2]

    # Object pose in the scene: small tilt, yaw so the forearm points back toward the person.
    tilt_axis = _unit(np.array([*rng.normal(size=2), 0.0]))
    R_tilt = _rot_axis_angle(tilt_axis, math.radians(rng.uniform(0.0, 7.0)))
    person_az = math.radians(cfg.person_azimuth_deg)
    person_dir = np.array([math.cos(person_az), math.sin(person_az), 0.0])
    arm_az = person_az + math.radians(rng.uniform(20.0, 40.0))
    back = R_tilt @ -d_o
    yaw = arm_az - math.atan2(back[1], back[0])
    R_obj = _rot_axis_angle(ez, yaw) @ R_tilt
    center = np.array([0.0, 0.0, rng.uniform(*cfg.hold_height)])
    T_obj = np.eye(4)
    T_obj[:3, :3], T_obj[:3, 3] = R_obj, center
    obj_mesh = obj.trimesh.transformed(T_obj @ np.diag([k, k, k, 1.0]))

    slope = math.radians(rng.uniform(10.0, 25.0) if pose != "pinch" else rng.uniform(5.0, 15.0))
    forearm_dir = np.array(
        [math.cos(arm_az) * math.cos(slope), math.sin(arm_az) * math.cos(slope), -math.sin(slope)]
    )
    hand = _build_hand(
        obj_mesh,
        T_obj[:3, :3] @ grip_o + center,
        R_obj @ n_o,
        R_obj @ d_o,
        pose,
        forearm_dir,
        scale,
        cfg.contact_gap,
    )
    skin = np.clip(_SKIN_TONES[rng.integers(len(_SKIN_TONES))] + rng.uniform(-0.025, 0.025, 3), 0, 1)

    # The person's body (background): upper arm in a sleeve, torso, neck, head.
    right = np.cross(-person_dir, ez)
    torso_c = center + 0.47 * person_dir + np.array([0.0, 0.0, -0.1])
    torso_top = center[2] + 0.24
    torso_bottom = -0.3
    torso_h = torso_top - torso_bottom
    R_body = np.stack([right, -person_dir, ez], 1)
    T_torso = np.eye(4)
    T_torso[:3, :3] = R_body
    T_torso[:3, 3] = [torso_c[0], torso_c[1], (torso_top + torso_bottom) / 2]
    torso = superellipsoid((0.19, 0.11, torso_h / 2), e_lat=0.25, e_lon=0.6, n_lat=20, n_lon=40).transformed(
        T_torso
    )
    shoulder = np.array([torso_c[0], torso_c[1], torso_top - 0.05]) + 0.16 * right
    elbow = hand.elbow
    forearm_dir = _unit(elbow - hand.keypoints[0])
    upper_arm = TriMesh.concat(
        [
            capsule(elbow, shoulder, 0.043, 0.05, 24, 6),
            capsule(elbow - 0.03 * forearm_dir, elbow, 0.04, 0.045),
        ]
    )
    neck_base = np.array([torso_c[0], torso_c[1], torso_top])
    head_c = neck_base + np.array([0.0, 0.0, 0.17])
    head = superellipsoid((0.075, 0.09, 0.11), n_lat=20, n_lon=32).transformed(
        np.block([[R_body, head_c[:, None]], [np.zeros((1, 3)), np.ones((1, 1))]])
    )
    neck = capsule(neck_base - 0.02 * ez, head_c - 0.05 * ez, 0.05, 0.045)

    # Room: table (top at z = 0) between person and cameras, floor, wall behind the person.
    cam_dir = -person_dir
    T_tab = np.eye(4)
    T_tab[:3, :3] = np.stack([np.cross(ez, cam_dir), cam_dir, ez], 1)
    T_tab[:3, 3] = 0.2 * cam_dir + np.array([0.0, 0.0, -0.02])
    table = box((1.4, 1.0, 0.04)).transformed(T_tab)
    floor = box((8.0, 8.0, 0.02), center=(0.0, 0.0, -0.76))
    wall_c = 1.3 * person_dir + np.array([0.0, 0.0, 0.5])
    T_wall = np.eye(4)
    T_wall[:3, :3] = np.stack([right, person_dir, ez], 1)
    T_wall[:3, 3] = wall_c
    side_walls = [
        box((0.05, 8.0, 2.6), center=(sign * 3.0, 0.0, 0.0)).transformed(T_wall) for sign in (-1.0, 1.0)
    ]
    wall = TriMesh.concat([box((8.0, 0.05, 2.6)).transformed(T_wall), *side_walls])
    wall_face = wall_c - 0.025 * person_dir

    seed = int(rng.integers(1 << 30))
    surfaces = [
        _Surface("object", obj_mesh, LABEL_OBJECT, _object_albedo(obj, T_obj, k)),
        _Surface("hand", hand.mesh, LABEL_HAND, _hand_albedo(hand, skin, seed + 1)),
        _Surface(
            "table", table, LABEL_BACKGROUND, _env_albedo("table", T_tab[:3, 3], T_tab[:3, 0], seed + 2, rng)
        ),
        _Surface(
            "floor", floor, LABEL_BACKGROUND, _env_albedo("floor", np.zeros(3), np.eye(3)[0], seed + 3, rng)
        ),
        _Surface(
            "wall", wall, LABEL_BACKGROUND, _env_albedo("wall", wall_face * [1, 1, 0], right, seed + 4, rng)
        ),
        _Surface(
            "body",
            TriMesh.concat([torso, upper_arm, neck]),
            LABEL_BACKGROUND,
            _env_albedo("shirt", torso_c, right, seed + 5, rng),
        ),
        _Surface("head", head, LABEL_BACKGROUND, _head_albedo(skin, head_c[2] + 0.11, seed + 6)),
    ]
    key = _unit(0.6 * cam_dir + 0.35 * right + ez)
    fill = _unit(0.5 * cam_dir - 0.8 * right + 0.3 * ez)
    return SynthScene(surfaces, obj, T_obj, pose, hand.keypoints, center, person_dir, key, fill, k)


# ---------------------------------------------------------------------------------------------------
# Cameras and rendering
# ---------------------------------------------------------------------------------------------------


def camera_rig(cfg: SynthConfig, scene: SynthScene) -> list[np.ndarray]:
    """Camera-to-world poses [4, 4] of a DexYCB-like rig: a patch of a sphere facing the handover.

    Cameras are stratified over ``camera_azimuth_span_deg`` x ``camera_elevation_deg`` on the side
    opposite the person, at ``camera_radius`` from the object, looking at it with a little jitter.
    """
    rng = np.random.default_rng([cfg.seed, 1])
    n = cfg.num_views
    el_lo, el_hi = cfg.camera_elevation_deg
    span = cfg.camera_azimuth_span_deg
    rows = max(1, min(n, round(math.sqrt(n * max(el_hi - el_lo, 1.0) / max(span, 1.0)))))
    counts = [n // rows + (1 if r < n % rows else 0) for r in range(rows)]
    az0 = math.atan2(-scene.person_direction[1], -scene.person_direction[0])
    poses = []
    for r, count in enumerate(counts):
        el = el_lo + (r + 0.5) / rows * (el_hi - el_lo)
        for c in range(count):
            az = math.degrees(az0) - span / 2 + (c + 0.5 + 0.5 * (r % 2) - 0.25) / count * span
            az_j = math.radians(az + rng.uniform(-1, 1) * cfg.camera_jitter_deg)
            el_j = math.radians(el + rng.uniform(-1, 1) * cfg.camera_jitter_deg)
            radius = rng.uniform(*cfg.camera_radius)
            eye = scene.object_center + radius * np.array(
                [math.cos(el_j) * math.cos(az_j), math.cos(el_j) * math.sin(az_j), math.sin(el_j)]
            )
            target = scene.object_center + rng.normal(0.0, cfg.look_at_jitter, 3)
            poses.append(_look_at(eye, target, roll=math.radians(rng.uniform(-2.0, 2.0))))
    return poses


def _pixel_rays(
    K: tuple[float, float, float, float], c2w: np.ndarray, width: int, height: int, offsets: np.ndarray
):
    """World ray directions [N, 3] float32 (camera z component 1) through pixel (u, v) + offset, for
    each offset in turn (all rays start at the camera centre)."""
    fx, fy, cx, cy = K
    R = c2w[:3, :3]
    u = np.arange(width, dtype=np.float64)
    v = np.arange(height, dtype=np.float64)
    d = np.empty((len(offsets), height, width, 3), np.float32)
    for k, (ox, oy) in enumerate(offsets):
        x = ((u + ox - cx) / fx)[None, :, None]
        y = ((v + oy - cy) / fy)[:, None, None]
        d[k] = x * R[:, 0] + y * R[:, 1] + R[:, 2]
    return d.reshape(-1, 3)


def _cast(scene: SynthScene, origin: np.ndarray, dirs: np.ndarray) -> dict[str, np.ndarray]:
    rays = np.empty((len(dirs), 6), np.float32)
    rays[:, :3] = origin
    rays[:, 3:] = dirs
    out = scene.raycaster().cast_rays(o3d.core.Tensor(rays))
    return {k: v.numpy() for k, v in out.items()}


def render_view(
    scene: SynthScene,
    K: tuple[float, float, float, float],
    c2w: np.ndarray,
    width: int,
    height: int,
    supersample: int = 2,
    shadows: bool = True,
) -> dict[str, np.ndarray]:
    """Renders one view of the scene.

    Returns:
        ``rgb`` [H, W, 3] float32 linear RGB in [0, 1], ``depth`` [H, W] float32 metres along +z
        (0 = no surface), ``mask`` [H, W] uint8 labels, ``cos_incidence`` [H, W] float32 |cos| of the
        angle between the pixel-centre ray and the surface's geometric normal.
    """
    rc = scene.raycaster()
    labels = np.array([s.label for s in scene.surfaces], np.uint8)
    invalid = rc.INVALID_ID
    npix = width * height

    # Pixel centres: depth, labels, incidence.
    o = c2w[:3, 3].astype(np.float32)
    d = _pixel_rays(K, c2w, width, height, np.array([[0.5, 0.5]]))
    hit = _cast(scene, o, d)
    gid = hit["geometry_ids"]
    ok = gid != invalid
    depth = np.where(ok, hit["t_hit"], 0.0).astype(np.float32)
    mask = np.where(ok, labels[np.minimum(gid, len(labels) - 1)], LABEL_BACKGROUND).astype(np.uint8)
    d_unit = d / np.linalg.norm(d, axis=1, keepdims=True)
    cos_inc = np.abs(np.sum(hit["primitive_normals"] * d_unit, 1)).astype(np.float32)

    # Colour: supersampled rays.
    ss = supersample
    offs = (np.arange(ss) + 0.5) / ss
    offsets = np.stack(np.meshgrid(offs, offs, indexing="xy"), -1).reshape(-1, 2)
    if ss == 1:
        d_c, h_c = d, hit
    else:
        d_c = _pixel_rays(K, c2w, width, height, offsets)
        h_c = _cast(scene, o, d_c)
    g = h_c["geometry_ids"]
    rgb = np.full((len(g), 3), 0.02, np.float32)
    okc = np.flatnonzero(g != invalid)
    dv = d_c[okc]
    pts = o + h_c["t_hit"][okc, None] * dv
    prim = h_c["primitive_ids"][okc].astype(np.int64)
    uv = h_c["primitive_uvs"][okc]
    fn = h_c["primitive_normals"][okc]
    gsel = g[okc]
    nrm = np.zeros_like(pts)
    alb = np.zeros((len(okc), 3), np.float32)
    for i, s in enumerate(scene.surfaces):
        sel = np.flatnonzero(gsel == i)
        if sel.size == 0:
            continue
        tri = s.mesh.triangles[prim[sel]]
        vn = scene._normals[i]
        b1, b2 = uv[sel, 0:1], uv[sel, 1:2]
        n_i = (1.0 - b1 - b2) * vn[tri[:, 0]] + b1 * vn[tri[:, 1]] + b2 * vn[tri[:, 2]]
        bad = np.linalg.norm(n_i, axis=1) < 1e-6
        n_i[bad] = fn[sel][bad]
        n_i /= np.linalg.norm(n_i, axis=1, keepdims=True)
        nrm[sel] = n_i
        alb[sel] = s.albedo(pts[sel], n_i, prim[sel])
    # Two-sided shading: normals face the viewer.
    flip = np.sum(nrm * dv, 1) > 0
    nrm[flip] *= -1
    fn[np.sum(fn * dv, 1) > 0] *= -1
    key = np.clip(nrm @ scene.key_light.astype(np.float32), 0.0, None)
    if shadows:
        lit = np.flatnonzero(key > 0)
        origin = pts[lit] + fn[lit] * 1e-3
        rays = np.empty((len(lit), 6), np.float32)
        rays[:, :3], rays[:, 3:] = origin, scene.key_light
        occluded = rc.test_occlusions(o3d.core.Tensor(rays)).numpy().astype(bool)
        key[lit[occluded]] = 0.0
    fill = np.clip(nrm @ scene.fill_light.astype(np.float32), 0.0, None)
    shade = 0.32 + 0.85 * key + 0.22 * fill
    rgb[okc] = (_srgb_to_linear(alb) * shade[:, None]).astype(np.float32)
    rgb = rgb.reshape(len(offsets), npix, 3).mean(0)
    return {
        "rgb": rgb.reshape(height, width, 3),
        "depth": depth.reshape(height, width),
        "mask": mask.reshape(height, width),
        "cos_incidence": cos_inc.reshape(height, width),
    }


def simulate_depth_noise(
    depth: np.ndarray,  # [H, W] float metres, 0 = no surface
    cos_incidence: np.ndarray,  # [H, W] |cos| between the ray and the surface normal
    rng: np.random.Generator,
    cfg: SynthConfig,
) -> np.ndarray:  # [H, W] float32 metres, 0 = missing
    """D435-like sensor depth from exact depth (quantisation happens when the PNG is written)."""
    z = depth.astype(np.float64)
    valid = z > 0
    sigma = cfg.depth_sigma0 + cfg.depth_sigma_quadratic * z**2
    noisy = z + rng.standard_normal(z.shape) * sigma
    drop = ~valid | (cos_incidence < math.cos(math.radians(cfg.grazing_angle_deg)))
    hi = ndimage.maximum_filter(z, size=3, mode="nearest")
    lo = ndimage.minimum_filter(np.where(valid, z, np.inf), size=3, mode="nearest")
    edge = valid & (hi - lo > cfg.edge_threshold)
    drop |= edge & (rng.random(z.shape) < cfg.edge_dropout_prob)
    drop |= rng.random(z.shape) < cfg.random_dropout_prob
    drop |= (noisy < cfg.depth_range[0]) | (noisy > cfg.depth_range[1])
    return np.where(drop, 0.0, noisy).astype(np.float32)


def synthesize_views(cfg: SynthConfig) -> tuple[list[ViewData], dict[str, np.ndarray], SynthScene]:
    """Builds the scene and renders every view in memory.

    Returns:
        The views (sensor depth, exact masks), the exact depth per view name (float32 metres), and the
        scene.
    """
    scene = build_scene(cfg)
    width, height = cfg.image_size()
    K = cfg.intrinsics()
    views, gt_depth = [], {}
    for i, c2w in enumerate(camera_rig(cfg, scene)):
        name = f"cam{i:02d}"
        out = render_view(scene, K, c2w, width, height, cfg.supersample, cfg.shadows)
        rng = np.random.default_rng([cfg.seed, 2, i])
        srgb = _linear_to_srgb(out["rgb"]) * 255.0
        if cfg.noise:
            depth = simulate_depth_noise(out["depth"], out["cos_incidence"], rng, cfg)
            srgb = srgb + rng.standard_normal(srgb.shape) * cfg.rgb_noise_std
        else:
            lo, hi = cfg.depth_range
            depth = np.where((out["depth"] >= lo) & (out["depth"] <= hi), out["depth"], 0.0).astype(
                np.float32
            )
        rgb = np.clip(np.rint(srgb), 0, 255).astype(np.uint8)
        fx, fy, cx, cy = K
        views.append(ViewData(name, rgb, depth, out["mask"], fx, fy, cx, cy, c2w))
        gt_depth[name] = out["depth"]
    return views, gt_depth, scene


def _min_distance(a: TriMesh, b: TriMesh) -> float:
    """Smallest distance between two meshes' surfaces (vertices of each against the other)."""
    d_ab = _Distance(b)(a.vertices).min()
    d_ba = _Distance(a)(b.vertices).min()
    return float(min(d_ab, d_ba))


def generate_capture(cfg: SynthConfig, out: Path | str, overwrite: bool = False) -> Capture:
    """Renders the synthetic handover and writes it as a capture folder at ``out`` with ground truth.

    Args:
        cfg: The scene, camera and sensor settings.
        out: The capture folder to write (created).
        overwrite: Replace a capture already in ``out``.
    """
    out = Path(out)
    if (out / CAPTURE_JSON).exists() and not overwrite:
        raise CaptureError(
            f"{out / CAPTURE_JSON}: a capture already exists there; pass overwrite=True or choose "
            "another folder"
        )
    views, gt_depth, scene = synthesize_views(cfg)
    gt_dir = out / "gt"
    gt_dir.mkdir(parents=True, exist_ok=True)
    obj_s, hand_s = scene.surface("object"), scene.surface("hand")
    obj_colors = scene.object.albedo(scene.object.trimesh.vertices, scene.object.trimesh.vertex_normals())
    for path, mesh in (
        (gt_dir / "object.ply", obj_s.mesh.to_open3d(obj_colors)),
        (gt_dir / "hand.ply", hand_s.mesh.to_open3d()),
    ):
        if not o3d.io.write_triangle_mesh(str(path), mesh, write_ascii=False):
            raise OSError(f"{path}: open3d could not write the ground-truth mesh")
    np.savez_compressed(gt_dir / "depth.npz", **gt_depth)
    ground_truth = {
        "object_mesh": "gt/object.ply",
        "hand_mesh": "gt/hand.ply",
        "depth": "gt/depth.npz",
        "depth_note": "noise-free depth per view name, float32 metres along +z, 0 = no surface",
        "object_name": scene.object.name,
        "object_description": scene.object.description,
        "object_pose": scene.object_pose,
        "object_scale": scene.object_scale,
        "object_size": scene.object.size * scene.object_scale,
        "hand_pose": scene.hand_pose,
        "hand_keypoints": scene.hand_keypoints,
        "hand_object_min_distance": _min_distance(obj_s.mesh, hand_s.mesh),
        "table_height": 0.0,
        "up": [0.0, 0.0, 1.0],
    }
    metadata = {
        "source": "synthetic",
        "generator": "recon.synth",
        "seed": cfg.seed,
        "object": cfg.object,
        "config": asdict(cfg),
        "labels": {"0": "background", "1": "object", "2": "hand"},
    }
    return write_capture(out, views, 0.001, metadata, ground_truth, overwrite=overwrite)


# ---------------------------------------------------------------------------------------------------
# Preview
# ---------------------------------------------------------------------------------------------------


def _turbo(t: np.ndarray) -> np.ndarray:
    """Polynomial approximation of the Turbo colormap, ``t`` in [0, 1] -> RGB [..., 3] in [0, 1]."""
    t = np.clip(t, 0.0, 1.0)
    r = 0.13572138 + t * (
        4.61539260 + t * (-42.66032258 + t * (132.13108234 + t * (-152.94239396 + t * 59.28637943)))
    )
    g = 0.09140261 + t * (
        2.19418839 + t * (4.84296658 + t * (-14.18503333 + t * (4.27729857 + t * 2.82956604)))
    )
    b = 0.10667330 + t * (
        12.64194608 + t * (-60.58204836 + t * (110.36276771 + t * (-89.90310912 + t * 27.34824973)))
    )
    return np.clip(np.stack([r, g, b], -1), 0.0, 1.0)


def contact_sheet(capture: Capture, tile_width: int = 320, columns: int = 2) -> np.ndarray:
    """Preview image [H, W, 3] uint8: per view RGB | colourised depth | mask overlay, views in a grid.

    Depth uses one Turbo range for all views (near blue, far red; missing black); the overlay tints
    the object green and the hand magenta.
    """
    views = [capture.read_view(i) for i in range(capture.num_views)]
    valid = np.concatenate([v.depth[v.depth > 0] for v in views]) if views else np.zeros(0)
    lo, hi = np.percentile(valid, [2, 98]) if valid.size else (0.0, 1.0)
    tiles = []
    for v in views:
        th = max(1, round(v.height * tile_width / v.width))
        rows = (np.arange(th) * v.height / th).astype(int)
        cols = (np.arange(tile_width) * v.width / tile_width).astype(int)
        rgb = v.rgb[rows][:, cols].astype(np.float32) / 255.0
        dep = v.depth[rows][:, cols]
        dcol = _turbo((dep - lo) / max(hi - lo, 1e-6)) * (dep > 0)[..., None]
        over = rgb * 0.45
        if v.mask is not None:
            m = v.mask[rows][:, cols]
            over = np.where((m == LABEL_OBJECT)[..., None], 0.5 * rgb + 0.5 * np.array([0.1, 0.9, 0.2]), over)
            over = np.where((m == LABEL_HAND)[..., None], 0.5 * rgb + 0.5 * np.array([0.95, 0.1, 0.8]), over)
        pad = np.ones((th, 4, 3))
        tiles.append(np.concatenate([rgb, pad, dcol, pad, over], 1))
    th, tw = tiles[0].shape[:2]
    nrows = math.ceil(len(tiles) / columns)
    sheet = np.ones((nrows * (th + 8) + 8, columns * (tw + 8) + 8, 3))
    for k, tile in enumerate(tiles):
        r, c = divmod(k, columns)
        y, x = 8 + r * (th + 8), 8 + c * (tw + 8)
        sheet[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
    return np.clip(np.rint(sheet * 255), 0, 255).astype(np.uint8)
