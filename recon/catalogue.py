"""Procedural household objects with YCB-like sizes, for the synthetic handover scene.

Every object is a triangle mesh in its own frame (metres, bounding-box centre at the origin, +z up as
the object stands) plus an *albedo function*: a deterministic procedural texture evaluated at any
surface point (labels, glyph-like text, stripes, speckles, ...). Per-vertex colour would be far too
coarse for photometric 3DGS optimisation, so the renderer in `recon.synth` evaluates the albedo at
every ray hit instead.

Each entry also carries a grasp description: where a hand wraps it (``grip_center``, the side the palm
rests on, ``palm_side``) and which hand pose suits it by default.

The small mesh and texture toolkit used here (`TriMesh`, `lathe`, `tube`, `superellipsoid`, `box`,
`fbm`, `glyph_text`) is also what `recon.synth` builds the hand, the person and the room from.
"""

from __future__ import annotations

import colorsys
import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
import open3d as o3d

__all__ = [
    "CatalogueObject",
    "TriMesh",
    "box",
    "box_uv",
    "cylinder_uv",
    "fbm",
    "get_object",
    "glyph_text",
    "hash01",
    "is_known_object",
    "lathe",
    "object_names",
    "procedural_name",
    "superellipsoid",
    "tube",
    "value_noise",
]

Albedo = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``albedo(points [N, 3], normals [N, 3]) -> sRGB [N, 3] in [0, 1]``, both in the object frame."""


# ---------------------------------------------------------------------------------------------------
# Meshes
# ---------------------------------------------------------------------------------------------------


@dataclass
class TriMesh:
    """A plain triangle mesh: ``vertices`` [V, 3] float64 metres, ``triangles`` [F, 3] int64.

    Pieces are concatenated without welding, so creases between pieces stay sharp under smooth
    (vertex-normal) shading.
    """

    vertices: np.ndarray
    triangles: np.ndarray

    def __post_init__(self) -> None:
        self.vertices = np.asarray(self.vertices, dtype=np.float64).reshape(-1, 3)
        self.triangles = np.asarray(self.triangles, dtype=np.int64).reshape(-1, 3)

    @staticmethod
    def concat(meshes: Sequence[TriMesh]) -> TriMesh:
        verts, tris, offset = [], [], 0
        for m in meshes:
            verts.append(m.vertices)
            tris.append(m.triangles + offset)
            offset += len(m.vertices)
        return TriMesh(np.concatenate(verts), np.concatenate(tris))

    def transformed(self, T: np.ndarray) -> TriMesh:
        """Apply a 4x4 affine transform (rigid, or with scaling: normals are recomputed anyway)."""
        T = np.asarray(T, dtype=np.float64)
        return TriMesh(self.vertices @ T[:3, :3].T + T[:3, 3], self.triangles.copy())

    def translated(self, t: Sequence[float]) -> TriMesh:
        return TriMesh(self.vertices + np.asarray(t, dtype=np.float64), self.triangles.copy())

    def face_normals(self) -> np.ndarray:
        v = self.vertices[self.triangles]
        n = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
        return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-20)

    def vertex_normals(self) -> np.ndarray:
        """Area-weighted vertex normals (unit; zero where a vertex only has degenerate triangles)."""
        v = self.vertices[self.triangles]
        fn = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
        vn = np.zeros_like(self.vertices)
        for k in range(3):
            np.add.at(vn, self.triangles[:, k], fn)
        return vn / np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-20)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self.vertices.min(axis=0), self.vertices.max(axis=0)

    def to_open3d(self, colors: np.ndarray | None = None) -> o3d.geometry.TriangleMesh:
        m = o3d.geometry.TriangleMesh(
            o3d.utility.Vector3dVector(self.vertices),
            o3d.utility.Vector3iVector(self.triangles.astype(np.int32)),
        )
        m.vertex_normals = o3d.utility.Vector3dVector(self.vertex_normals())
        if colors is not None:
            m.vertex_colors = o3d.utility.Vector3dVector(np.clip(np.asarray(colors, np.float64), 0.0, 1.0))
        return m


def _grid_triangles(rows: int, cols: int, wrap: bool) -> np.ndarray:
    """Two triangles per quad of a ``rows x cols`` vertex grid (columns wrap around if ``wrap``)."""
    ncol = cols if wrap else cols - 1
    i, j = np.meshgrid(np.arange(rows - 1), np.arange(ncol), indexing="ij")
    a = i * cols + j
    b = i * cols + (j + 1) % cols
    c = (i + 1) * cols + j
    d = (i + 1) * cols + (j + 1) % cols
    return np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([b, d, c], -1).reshape(-1, 3)])


def lathe(profiles: Sequence[Sequence[tuple[float, float]]], segments: int = 48) -> TriMesh:
    """Surface of revolution about +z. Each profile is a polyline of ``(radius, z)`` points.

    Separate profiles are separate pieces (sharp creases between them). Traverse a profile so that
    the surface's outside lies to the right of the direction of travel in the (r, z) plane (e.g.
    bottom to top along an outer wall) for outward-facing triangles.
    """
    phi = np.linspace(0.0, 2 * np.pi, segments, endpoint=False)
    pieces = []
    for prof in profiles:
        p = np.asarray(prof, dtype=np.float64)
        r, z = p[:, 0:1], p[:, 1:2]
        verts = np.stack(
            [r * np.cos(phi)[None], r * np.sin(phi)[None], np.broadcast_to(z, (len(p), segments))], -1
        )
        pieces.append(TriMesh(verts.reshape(-1, 3), _grid_triangles(len(p), segments, wrap=True)))
    return TriMesh.concat(pieces)


def _frames_along(path: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parallel-transport frames (tangent, normal, binormal) along a polyline [N, 3]."""
    tan = np.gradient(path, axis=0)
    tan /= np.linalg.norm(tan, axis=1, keepdims=True)
    ref = np.array([0.0, 0.0, 1.0]) if abs(tan[0, 2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    nrm = np.zeros_like(path)
    n = np.cross(tan[0], ref)
    nrm[0] = n / np.linalg.norm(n)
    for k in range(1, len(path)):
        n = nrm[k - 1] - tan[k] * np.dot(nrm[k - 1], tan[k])
        nrm[k] = n / np.linalg.norm(n)
    return tan, nrm, np.cross(tan, nrm)


def tube(path: np.ndarray, radii: np.ndarray, segments: int = 24, scale_b: float = 1.0) -> TriMesh:
    """A tube swept along ``path`` [N, 3] with per-point ``radii`` [N]; end radii of 0 close it.

    ``scale_b`` squashes the cross-section along the binormal (elliptical tubes).
    """
    path = np.asarray(path, dtype=np.float64)
    radii = np.asarray(radii, dtype=np.float64)
    _, nrm, bin_ = _frames_along(path)
    phi = np.linspace(0.0, 2 * np.pi, segments, endpoint=False)
    ring = np.cos(phi)[None, :, None] * nrm[:, None] + scale_b * np.sin(phi)[None, :, None] * bin_[:, None]
    verts = path[:, None] + radii[:, None, None] * ring
    tris = _grid_triangles(len(path), segments, wrap=True)
    return TriMesh(verts.reshape(-1, 3), tris[:, ::-1])


def superellipsoid(
    half: Sequence[float], e_lat: float = 1.0, e_lon: float = 1.0, n_lat: int = 32, n_lon: int = 48
) -> TriMesh:
    """Superellipsoid with half-extents ``half``; exponents < 1 give boxy shapes, 1 an ellipsoid."""

    def spow(x: np.ndarray, e: float) -> np.ndarray:
        return np.sign(x) * np.abs(x) ** e

    theta = np.linspace(-np.pi / 2, np.pi / 2, n_lat + 1)
    phi = np.linspace(-np.pi, np.pi, n_lon, endpoint=False)
    th, ph = np.meshgrid(theta, phi, indexing="ij")
    ct, st = spow(np.cos(th), e_lat), spow(np.sin(th), e_lat)
    verts = np.stack(
        [half[0] * ct * spow(np.cos(ph), e_lon), half[1] * ct * spow(np.sin(ph), e_lon), half[2] * st], -1
    )
    return TriMesh(verts.reshape(-1, 3), _grid_triangles(n_lat + 1, n_lon, wrap=True))


def box(
    size: Sequence[float], center: Sequence[float] = (0.0, 0.0, 0.0), step: float | None = None
) -> TriMesh:
    """Axis-aligned box (6 separate faces, so its edges stay sharp), faces gridded at ``step`` metres."""
    h = np.asarray(size, dtype=np.float64) / 2
    pieces = []
    for axis in range(3):
        for sign in (-1.0, 1.0):
            u, v = (axis + 1) % 3, (axis + 2) % 3
            nu = 1 if step is None else max(1, math.ceil(2 * h[u] / step))
            nv = 1 if step is None else max(1, math.ceil(2 * h[v] / step))
            gu, gv = np.meshgrid(
                np.linspace(-h[u], h[u], nu + 1), np.linspace(-h[v], h[v], nv + 1), indexing="ij"
            )
            quad = np.zeros((nu + 1, nv + 1, 3))
            quad[..., axis] = sign * h[axis]
            quad[..., u], quad[..., v] = gu, gv
            tris = _grid_triangles(nu + 1, nv + 1, wrap=False)
            pieces.append(TriMesh(quad.reshape(-1, 3), tris[:, ::-1] if sign > 0 else tris))
    return TriMesh.concat(pieces).translated(center)


def capsule(
    p0: np.ndarray, p1: np.ndarray, r0: float, r1: float, segments: int = 20, rings: int = 6
) -> TriMesh:
    """Tapered capsule (cone between two hemispheres) from ``p0`` (radius r0) to ``p1`` (radius r1)."""
    p0, p1 = np.asarray(p0, np.float64), np.asarray(p1, np.float64)
    length = float(np.linalg.norm(p1 - p0))
    a = np.linspace(-np.pi / 2, 0.0, rings + 1)
    bottom = [(r0 * np.cos(t), r0 * np.sin(t)) for t in a]
    top = [(r1 * np.cos(t), length + r1 * np.sin(t)) for t in -a[::-1]]
    mesh = lathe([bottom + top], segments)
    z = (p1 - p0) / max(length, 1e-12)
    x = np.cross(z, [0.0, 0.0, 1.0] if abs(z[2]) < 0.9 else [1.0, 0.0, 0.0])
    x /= np.linalg.norm(x)
    T = np.eye(4)
    T[:3, :3] = np.stack([x, np.cross(z, x), z], 1)
    T[:3, 3] = p0
    return mesh.transformed(T)


# ---------------------------------------------------------------------------------------------------
# Procedural textures (deterministic, vectorised)
# ---------------------------------------------------------------------------------------------------


def _fmix32(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


_PRIMES = (0x8DA6B343, 0xD8163841, 0xCB1AB31F, 0x165667B1)


def _to_u32(x: np.ndarray) -> np.ndarray:
    """Integer-valued array (any dtype, negatives included) to wrapped uint32."""
    x = np.asarray(x)
    return x.astype(np.uint32) if x.dtype == np.uint32 else x.astype(np.int64).astype(np.uint32)


def hash01(*ints: np.ndarray, seed: int = 0) -> np.ndarray:
    """Deterministic hash of up to four integer-valued arrays to float32 in [0, 1)."""
    h = np.uint32((seed * 0x9E3779B1 + 0x7F4A7C15) & 0xFFFFFFFF)
    for k, x in enumerate(ints):
        h = h ^ (_to_u32(x) * np.uint32(_PRIMES[k]))
    h = _fmix32(np.asarray(h, np.uint32))
    return (h >> np.uint32(8)).astype(np.float32) * np.float32(1.0 / (1 << 24))


def value_noise(p: np.ndarray, scale: float, seed: int = 0) -> np.ndarray:
    """Smooth 3D value noise in [0, 1] with feature size ``scale`` (metres) at points ``p`` [N, 3]."""
    q = np.asarray(p, np.float64) / scale
    i = np.floor(q)
    f = (q - i).astype(np.float32)
    f = f * f * (3.0 - 2.0 * f)
    base = _to_u32(i)
    hs = np.uint32((seed * 0x9E3779B1 + 0x7F4A7C15) & 0xFFFFFFFF)
    terms = [[(base[:, k] + np.uint32(o)) * np.uint32(_PRIMES[k]) for o in (0, 1)] for k in range(3)]
    out = np.zeros(len(q), np.float32)
    for dx in (0, 1):
        wx = f[:, 0] if dx else 1.0 - f[:, 0]
        for dy in (0, 1):
            wxy = wx * (f[:, 1] if dy else 1.0 - f[:, 1])
            hxy = terms[0][dx] ^ terms[1][dy] ^ hs
            for dz in (0, 1):
                wz = f[:, 2] if dz else 1.0 - f[:, 2]
                h = _fmix32(hxy ^ terms[2][dz])
                out += wxy * wz * ((h >> np.uint32(8)).astype(np.float32) * np.float32(1.0 / (1 << 24)))
    return out


def fbm(p: np.ndarray, scale: float, seed: int = 0, octaves: int = 3) -> np.ndarray:
    """Fractal sum of `value_noise` octaves, normalised to [0, 1]."""
    total, amp, norm = np.zeros(len(p), np.float32), 1.0, 0.0
    for o in range(octaves):
        total += amp * value_noise(p, scale / 2**o, seed=seed + 101 * o)
        norm += amp
        amp *= 0.5
    return total / norm


def glyph_text(
    u: np.ndarray, v: np.ndarray, char_w: float, line_h: float, seed: int, density: float = 0.8
) -> np.ndarray:
    """Boolean mask of text-like glyph blocks in a ``(u, v)`` plane (metres, v up).

    Lines of ``line_h``, characters of ``char_w``, each character a random 3x5 pixel glyph, with word
    gaps; looks like print from a distance and gives the optimiser sharp high-contrast texture.
    """
    row = np.floor(v / line_h)
    fv = v / line_h - row
    col = np.floor(u / char_w)
    fu = u / char_w - col
    in_line = (fv > 0.2) & (fv < 0.85)
    word = hash01(row, np.floor(col / 5), seed=seed) < density
    gap = hash01(row, col, seed=seed + 1) < 0.18
    gx = np.clip(np.floor((fu - 0.1) / 0.8 * 3), 0, 2)
    gy = np.clip(np.floor((fv - 0.2) / 0.65 * 5), 0, 4)
    in_char = (fu > 0.1) & (fu < 0.9)
    pix = hash01(row, col, gx + 3 * gy, seed=seed + 2) < 0.55
    return in_line & in_char & word & ~gap & pix


def cylinder_uv(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cylindrical coordinates about +z: (arc length at the point's radius, z, radius)."""
    r = np.hypot(p[:, 0], p[:, 1])
    return np.arctan2(p[:, 1], p[:, 0]) * np.maximum(r, 1e-9), p[:, 2], r


def box_uv(p: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-face planar coordinates (u, v up where possible) and the face id 0..5 (axis*2 + side)."""
    axis = np.argmax(np.abs(n), axis=1)
    side = (n[np.arange(len(n)), axis] > 0).astype(np.int64)
    u = np.where(axis == 0, p[:, 1] * (2 * side - 1), np.where(axis == 1, -p[:, 0] * (2 * side - 1), p[:, 0]))
    v = np.where(axis == 2, p[:, 1], p[:, 2])
    return u, v, axis * 2 + side


def _rgb(hexcode: str) -> np.ndarray:
    return np.array([int(hexcode[i : i + 2], 16) / 255.0 for i in (1, 3, 5)], np.float32)


def _paint(base: np.ndarray, mask: np.ndarray, color: np.ndarray | str, alpha: float = 1.0) -> np.ndarray:
    c = _rgb(color) if isinstance(color, str) else np.asarray(color, np.float32)
    w = mask.astype(np.float32)[:, None] * alpha
    return base * (1.0 - w) + c * w


def _fill(n: int, color: str) -> np.ndarray:
    return np.broadcast_to(_rgb(color), (n, 3)).astype(np.float32)


def _grain(
    col: np.ndarray, p: np.ndarray, seed: int, amount: float = 0.08, scale: float = 0.01
) -> np.ndarray:
    """Multiplicative print/material noise so no surface is perfectly flat-coloured."""
    return col * (1.0 - amount + 2 * amount * fbm(p, scale, seed, octaves=2))[:, None]


def _ellipse(u: np.ndarray, v: np.ndarray, cu: float, cv: float, ru: float, rv: float) -> np.ndarray:
    return ((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2 < 1.0


# ---------------------------------------------------------------------------------------------------
# Object builders and their textures (raw frames; `get_object` recentres them)
# ---------------------------------------------------------------------------------------------------


def _can_mesh(r: float, h: float, segments: int = 64) -> TriMesh:
    b = 0.0025
    return lathe(
        [
            [(0.0, -h / 2), (r - b, -h / 2)],
            [(r - b, -h / 2), (r, -h / 2 + b)],
            [(r, -h / 2 + b), (r, -h / 2 + 0.35 * h), (r, h / 2 - b)],
            [(r, h / 2 - b), (r - b, h / 2)],
            [(r - b, h / 2), (r - 2 * b, h / 2 - 0.002), (0.0, h / 2 - 0.002)],
        ],
        segments,
    )


def _metal(p: np.ndarray, seed: int) -> np.ndarray:
    r = np.hypot(p[:, 0], p[:, 1])
    ridges = 0.5 + 0.5 * np.sin(r * 2 * np.pi / 0.004)
    col = _fill(len(p), "#b9bcc0") * (0.8 + 0.15 * ridges)[:, None]
    return _grain(col, p, seed, 0.1, 0.006)


def _can_label(
    p: np.ndarray,
    n: np.ndarray,
    h: float,
    seed: int,
    base: str,
    band: str,
    text: str,
    band_frac: tuple[float, float] = (0.1, 0.35),
    logo: str | None = "#f4f1e6",
) -> np.ndarray:
    u, z, _ = cylinder_uv(p)
    col = _fill(len(p), base)
    zn = (z + h / 2) / h
    col = _paint(col, (zn > band_frac[0]) & (zn < band_frac[1]), band)
    if logo is not None:
        col = _paint(col, _ellipse(u, zn, 0.0, 0.62, 0.045, 0.12), logo)
        col = _paint(
            col,
            glyph_text(u + 0.03, z - 0.6 * h, 0.006, 0.012, seed + 7, 0.9)
            & _ellipse(u, zn, 0.0, 0.62, 0.04, 0.1),
            "#7a1010",
        )
    col = _paint(
        col,
        glyph_text(u, z, 0.0045, 0.009, seed)
        & ((zn < 0.08) | (zn > 0.4))
        & ~_ellipse(u, zn, 0.0, 0.62, 0.05, 0.14),
        text,
    )
    col = _paint(col, (np.abs(u - 0.09) < 0.02) & (zn > 0.42) & (zn < 0.85), "#ffffff")
    col = _paint(
        col,
        glyph_text(u, z, 0.003, 0.006, seed + 3) & (np.abs(u - 0.09) < 0.018) & (zn > 0.43) & (zn < 0.84),
        "#202020",
    )
    col = _grain(col, p, seed)
    rim = (zn < 0.06) | (zn > 0.94) | (np.abs(n[:, 2]) > 0.5)
    col[rim] = _metal(p[rim], seed)
    return col


def _box_label(
    p: np.ndarray,
    n: np.ndarray,
    size: Sequence[float],
    seed: int,
    base: str,
    accent: str,
    text: str,
    picture: tuple[str, str] | None = None,
) -> np.ndarray:
    u, v, face = box_uv(p, n)
    h = np.asarray(size) / 2
    col = _fill(len(p), base)
    big = face // 2 == 1  # the two largest faces when x >= y: front and back (+-y)
    col = _paint(col, big & (v > h[2] * 0.25) & (v < h[2] * 0.7), accent)
    col = _paint(col, big & _ellipse(u, v, -h[0] * 0.25, h[2] * 0.47, h[0] * 0.5, h[2] * 0.18), "#fbf4d8")
    col = _paint(
        col,
        big
        & glyph_text(u + h[0], v, 0.011, 0.022, seed + 1, 0.95)
        & _ellipse(u, v, -h[0] * 0.25, h[2] * 0.47, h[0] * 0.45, h[2] * 0.15),
        "#5a0b0b",
    )
    if picture is not None:
        pic = big & (np.abs(u - h[0] * 0.2) < h[0] * 0.5) & (v < -h[2] * 0.05) & (v > -h[2] * 0.8)
        spots = fbm(p, 0.012, seed + 9, octaves=3)
        pc = _paint(_fill(len(p), picture[0]), spots > 0.55, picture[1])
        col = np.where(pic[:, None], pc, col)
    col = _paint(
        col, glyph_text(u, v, 0.004, 0.008, seed) & (~big | (v < -h[2] * 0.82) | (v > h[2] * 0.78)), text
    )
    col = _paint(col, (face == 5) & (np.abs(u) < h[0] * 0.6) & (np.abs(v) < h[1] * 0.5), accent, 0.8)
    return _grain(col, p, seed)


def _mustard_mesh() -> TriMesh:
    body = superellipsoid((0.048, 0.029, 0.075), e_lat=0.35, e_lon=0.75, n_lat=40, n_lon=64).translated(
        (0, 0, -0.02)
    )
    shoulder = lathe([[(0.02, 0.045), (0.016, 0.058), (0.012, 0.062)]], 40)
    cap = lathe(
        [
            [(0.0, 0.058), (0.0145, 0.058)],
            [(0.0145, 0.058), (0.0145, 0.082)],
            [(0.0145, 0.082), (0.008, 0.084), (0.005, 0.095), (0.0, 0.096)],
        ],
        40,
    )
    return TriMesh.concat([body, shoulder, cap])


def _mustard_albedo(p: np.ndarray, n: np.ndarray) -> np.ndarray:
    seed = 11
    col = _fill(len(p), "#f2c41b")
    x, z = p[:, 0], p[:, 2]
    front = np.abs(p[:, 1]) > 0.012
    label = front & (z > -0.085) & (z < 0.02) & (np.abs(x) < 0.038)
    col = _paint(col, label, "#f7f3e8")
    col = _paint(col, label & _ellipse(x, z, 0.0, -0.01, 0.03, 0.017), "#c8102e")
    col = _paint(
        col,
        label & glyph_text(x, z, 0.006, 0.014, seed, 0.95) & _ellipse(x, z, 0.0, -0.01, 0.028, 0.014),
        "#ffffff",
    )
    col = _paint(col, label & glyph_text(x, z, 0.0035, 0.007, seed + 1) & (z < -0.035), "#1d3f8f")
    col = _paint(col, label & (np.abs(z + 0.078) < 0.004), "#2e8b3d")
    cap = z > 0.057
    col[cap] = (
        _fill(int(cap.sum()), "#f5b80c")
        * (0.85 + 0.15 * (np.sin(np.arctan2(p[cap, 1], p[cap, 0]) * 30) > 0))[:, None]
    )
    return _grain(col, p, seed, 0.06)


def _bleach_mesh() -> TriMesh:
    body = superellipsoid((0.05, 0.032, 0.1), e_lat=0.3, e_lon=0.7, n_lat=40, n_lon=64).translated(
        (0, 0, -0.025)
    )
    neck = lathe([[(0.024, 0.07), (0.02, 0.083), (0.017, 0.088)]], 40)
    cap = lathe(
        [[(0.0, 0.086), (0.019, 0.086)], [(0.019, 0.086), (0.019, 0.118)], [(0.019, 0.118), (0.0, 0.12)]], 40
    )
    return TriMesh.concat([body, neck, cap])


def _bleach_albedo(p: np.ndarray, n: np.ndarray) -> np.ndarray:
    seed = 12
    col = _fill(len(p), "#f1f1ec")
    x, z = p[:, 0], p[:, 2]
    front = np.abs(p[:, 1]) > 0.015
    label = front & (z > -0.1) & (z < 0.03) & (np.abs(x) < 0.04)
    col = _paint(col, label, "#1565c0")
    col = _paint(col, label & _ellipse(x, z, 0.0, -0.02, 0.032, 0.022), "#ffffff")
    col = _paint(
        col,
        label & glyph_text(x, z, 0.007, 0.015, seed, 0.95) & _ellipse(x, z, 0.0, -0.02, 0.03, 0.02),
        "#0d2c6b",
    )
    col = _paint(
        col, label & glyph_text(x, z, 0.0035, 0.0075, seed + 1) & ((z < -0.05) | (z > 0.01)), "#ffffff"
    )
    col = _paint(col, label & (np.abs(z + 0.095) < 0.004), "#e53935")
    col = _paint(col, z > 0.085, "#1e88e5")
    return _grain(col, p, seed, 0.05)


def _bowl_mesh() -> TriMesh:
    R, depth, t = 0.08, 0.052, 0.004
    a = np.linspace(0.0, np.pi / 2, 16)
    outer = [(0.035, 0.0), (0.037, 0.004)] + [
        (max(R * np.sin(x), 0.037), 0.004 + (depth - 0.004) * (1 - np.cos(x))) for x in a[4:]
    ]
    inner = [(R - t, depth)] + [((R - t) * np.sin(x), t + (depth - t) * (1 - np.cos(x))) for x in a[::-1][1:]]
    return lathe([[(0.0, 0.0), (0.035, 0.0)], outer, [(R, depth), (R - t, depth)], inner], 64).translated(
        (0, 0, -depth / 2)
    )


def _bowl_albedo(p: np.ndarray, n: np.ndarray) -> np.ndarray:
    col = _fill(len(p), "#b3261e")
    r = np.hypot(p[:, 0], p[:, 1])
    col = _paint(col, (np.abs(r - 0.05) < 0.002) & (p[:, 2] > 0.0), "#e8d7c0", 0.7)
    ang = np.arctan2(p[:, 1], p[:, 0])
    col = _paint(col, (np.sin(ang * 12) > 0.6) & (p[:, 2] > 0.018), "#8c1c15", 0.5)
    col = _paint(col, fbm(p, 0.006, 21, 3) > 0.68, "#e0a090", 0.35)
    return _grain(col, p, 13, 0.05)


def _mug_mesh() -> TriMesh:
    r, h, t = 0.04, 0.082, 0.0035
    body = lathe(
        [
            [(0.0, -h / 2), (r - 0.003, -h / 2), (r, -h / 2 + 0.003)],
            [(r, -h / 2 + 0.003), (r, h / 2)],
            [(r, h / 2), (r - t, h / 2)],
            [(r - t, h / 2), (r - t, -h / 2 + 0.008), (0.0, -h / 2 + 0.008)],
        ],
        64,
    )
    s = np.linspace(-np.pi / 2, np.pi / 2, 24)
    path = np.stack([r - 0.002 + 0.03 * np.cos(s), np.zeros_like(s), -0.024 * np.sin(s)], 1)
    handle = tube(path, np.full(len(s), 0.0065), 20, scale_b=1.4)
    return TriMesh.concat([body, handle])


def _mug_albedo(p: np.ndarray, n: np.ndarray) -> np.ndarray:
    u, z, r = cylinder_uv(p)
    col = _fill(len(p), "#1f4e9a")
    col = _paint(col, (np.sin(u * 2 * np.pi / 0.02) > 0.3) & (np.abs(z) < 0.02), "#f5f0e6")
    col = _paint(col, glyph_text(u, z, 0.006, 0.014, 14, 0.8) & (z > 0.022) & (z < 0.036), "#f5f0e6")
    inside = (r < 0.0375) & (z > -0.035)
    col = _paint(col, inside, "#efe9dc")
    return _grain(col, p, 14, 0.05)


def _drill_mesh() -> TriMesh:
    body = lathe(
        [
            [(0.0, -0.08), (0.026, -0.08)],
            [(0.026, -0.08), (0.031, -0.06), (0.031, 0.05), (0.027, 0.075)],
            [(0.027, 0.075), (0.0, 0.075)],
        ],
        48,
    ).transformed(np.array([[0, 0, 1, 0], [0, 1, 0, 0], [-1, 0, 0, 0.065], [0, 0, 0, 1.0]]))
    chuck = lathe(
        [
            [(0.0, 0.075), (0.019, 0.075)],
            [(0.019, 0.075), (0.016, 0.11)],
            [(0.016, 0.11), (0.004, 0.112)],
            [(0.004, 0.112), (0.003, 0.13), (0.0, 0.13)],
        ],
        36,
    ).transformed(np.array([[0, 0, 1, 0], [0, 1, 0, 0], [-1, 0, 0, 0.065], [0, 0, 0, 1.0]]))
    handle = superellipsoid((0.02, 0.017, 0.065), e_lat=0.4, e_lon=0.6).translated((-0.02, 0.0, -0.005))
    battery = box((0.085, 0.065, 0.045), center=(-0.015, 0.0, -0.085), step=0.01)
    return TriMesh.concat([body, chuck, handle, battery])


def _drill_albedo(p: np.ndarray, n: np.ndarray) -> np.ndarray:
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    col = _fill(len(p), "#12827a")
    col = _paint(col, (z < 0.035) & (z > -0.06), "#1b1b1b")
    col = _paint(col, z <= -0.06, "#26282a")
    col = _paint(
        col, (z <= -0.06) & glyph_text(x, np.where(np.abs(n[:, 1]) > 0.5, z, y), 0.004, 0.008, 15), "#d9d9d9"
    )
    col = _paint(col, x > 0.07, "#8d9196")
    col = _paint(
        col,
        (x > -0.05)
        & (x < 0.03)
        & (np.abs(y) > 0.02)
        & glyph_text(x, z, 0.005, 0.01, 16)
        & (z > 0.045)
        & (z < 0.08),
        "#f2d21b",
    )
    col = _paint(col, (np.abs(x - 0.0) < 0.006) & (z < 0.03) & (z > 0.005), "#f2d21b")
    return _grain(col, p, 15, 0.06, 0.004)


def _banana_mesh() -> TriMesh:
    s = np.linspace(-1.0, 1.0, 40)
    ang = s * 0.75
    R = 0.13
    path = np.stack([R * (1 - np.cos(ang)) - 0.03, np.zeros_like(s), R * np.sin(ang)], 1)
    radii = 0.0185 * np.sqrt(np.clip(1 - s**2, 0, None)) ** 0.6 + 0.004 * (np.abs(s) < 0.999)
    radii[0] = radii[-1] = 0.0
    radii[1] = radii[-2] = 0.0045
    return tube(path, radii, 14, scale_b=0.92)


def _banana_albedo(p: np.ndarray, n: np.ndarray) -> np.ndarray:
    z = p[:, 2]
    col = _fill(len(p), "#f0cf3c")
    col = _paint(col, np.clip((z - 0.06) / 0.03, 0, 1) > 0.5, "#9fb83a", 0.6)
    col = _paint(col, np.abs(z) > 0.088, "#4a3516")
    spots = value_noise(p, 0.0025, 17) > 0.8
    col = _paint(col, spots & (value_noise(p, 0.02, 18) > 0.45), "#5b4018", 0.85)
    ridge = np.sin(np.arctan2(p[:, 1], p[:, 0] + 0.02) * 5) > 0.9
    col = _paint(col, ridge, "#c9a52a", 0.4)
    return _grain(col, p, 17, 0.08, 0.008)


def _apple_mesh() -> TriMesh:
    a = np.linspace(-np.pi / 2, np.pi / 2, 28)
    prof = (
        [(0.0, -0.03)]
        + [(0.038 * np.cos(t) * (1 + 0.06 * np.sin(t)), 0.034 * np.sin(t)) for t in a[1:-1]]
        + [(0.0, 0.026)]
    )
    stem = tube(
        np.array([[0.0, 0.0, 0.024], [0.001, 0.0, 0.034], [0.004, 0.0, 0.045]]),
        np.array([0.002, 0.0018, 0.0015]),
        10,
    )
    return TriMesh.concat([lathe([prof], 56), stem])


def _apple_albedo(p: np.ndarray, n: np.ndarray) -> np.ndarray:
    col = _fill(len(p), "#b5161b")
    streak = value_noise(p * np.array([6.0, 6.0, 0.7]), 0.05, 19)
    col = _paint(col, streak > 0.55, "#d9482b", 0.7)
    col = _paint(col, fbm(p, 0.02, 20, 2) > 0.62, "#b8b63a", 0.6)
    col = _paint(col, value_noise(p, 0.0015, 22) > 0.88, "#f0d890", 0.6)
    col = _paint(col, p[:, 2] > 0.028, "#5a3d1e")
    return _grain(col, p, 19, 0.05)


def _brick_albedo(p: np.ndarray, n: np.ndarray) -> np.ndarray:
    col = _fill(len(p), "#c9302c")
    col = _paint(col, value_noise(p, 0.0012, 23) > 0.7, "#7d1614", 0.7)
    col = _paint(col, value_noise(p, 0.0018, 24) < 0.2, "#e06a5d", 0.5)
    return _grain(col, p, 23, 0.06, 0.01)


def _wood_block_albedo(p: np.ndarray, n: np.ndarray) -> np.ndarray:
    ring = np.sin((np.hypot(p[:, 0] + 0.3, p[:, 1] * 3) + 0.01 * fbm(p, 0.03, 25)) * 2 * np.pi / 0.006)
    col = _paint(_fill(len(p), "#d8b07a"), ring > 0.3, "#b7874f", 0.7)
    return _grain(col, p, 25, 0.08, 0.004)


# ---------------------------------------------------------------------------------------------------
# The catalogue
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CatalogueObject:
    """One household object: mesh, texture and grasp description, in its own (centred, z-up) frame."""

    name: str
    description: str
    """What the object is and how people typically hold it when handing it over."""
    mesh_raw: TriMesh
    albedo_raw: Albedo
    offset: np.ndarray
    """Raw-frame bounding-box centre; the public frame is the raw frame shifted by ``-offset``."""
    grip_center: np.ndarray
    """Point (object frame) a power grasp closes around."""
    palm_side: np.ndarray
    """Unit vector (object frame) from ``grip_center`` toward where the palm rests in a wrap grasp."""
    default_pose: str
    """Hand pose that suits the object: ``wrap``, ``under`` or ``pinch``."""
    gripper: str = "robotiq_2f_85"
    """Name of the parallel-jaw gripper that can hold it (`trajgen.gripper.gripper_by_name`): the Robotiq
    2F-85 unless the object is wider than its 85 mm stroke at every pair of opposing faces."""

    @property
    def trimesh(self) -> TriMesh:
        """The mesh in the object frame (bounding-box centre at the origin)."""
        return self.mesh_raw.translated(-self.offset)

    @property
    def size(self) -> np.ndarray:
        """Bounding-box extents [3] in metres."""
        lo, hi = self.mesh_raw.bounds()
        return hi - lo

    def albedo(self, points: np.ndarray, normals: np.ndarray) -> np.ndarray:
        """sRGB albedo [N, 3] in [0, 1] at object-frame ``points`` [N, 3] with ``normals`` [N, 3]."""
        return np.clip(self.albedo_raw(np.asarray(points, np.float64) + self.offset, normals), 0.0, 1.0)

    def mesh(self) -> o3d.geometry.TriangleMesh:
        """open3d mesh in the object frame, vertex colours from the albedo (for viewing only)."""
        tm = self.trimesh
        return tm.to_open3d(self.albedo(tm.vertices, tm.vertex_normals()))


@dataclass(frozen=True)
class _Entry:
    description: str
    build: Callable[[], TriMesh]
    albedo: Albedo
    grip_center: tuple[float, float, float] = (0.0, 0.0, 0.0)
    palm_side: tuple[float, float, float] = (-1.0, 0.0, 0.0)
    default_pose: str = "wrap"
    gripper: str = "robotiq_2f_85"


def _can_entry(
    desc: str,
    r: float,
    h: float,
    base: str,
    band: str,
    text: str,
    default_pose: str = "wrap",
    gripper: str = "robotiq_2f_85",
    **kw,
) -> _Entry:
    seed = zlib.crc32(desc.encode()) & 0xFFFF
    return _Entry(
        desc,
        lambda: _can_mesh(r, h),
        lambda p, n: _can_label(p, n, h, seed, base, band, text, **kw),
        default_pose=default_pose,
        gripper=gripper,
    )


def _box_entry(
    desc: str, size: tuple[float, float, float], base: str, accent: str, text: str, **kw
) -> _Entry:
    seed = zlib.crc32(desc.encode()) & 0xFFFF
    return _Entry(
        desc,
        lambda: box(size, step=0.01),
        lambda p, n: _box_label(p, n, size, seed, base, accent, text, **kw),
    )


_ENTRIES: dict[str, _Entry] = {
    "master_chef_can": _can_entry(
        "Coffee can, cylinder r 0.051 m, h 0.14 m; wrapped around its body. 102 mm across and 140 mm "
        "tall: wider than a Robotiq 2F-85 opens (85 mm), so the 2F-140 takes it.",
        0.051,
        0.14,
        "#1d4f91",
        "#c62828",
        "#f5f5f5",
        gripper="robotiq_2f_140",
    ),
    "cracker_box": _box_entry(
        "Cracker box 0.16 x 0.06 x 0.21 m; palm on a narrow side, fingers over the 6 cm depth.",
        (0.16, 0.06, 0.21),
        "#c0161b",
        "#f7d417",
        "#ffffff",
        picture=("#e0b25c", "#9c6b2a"),
    ),
    "sugar_box": _box_entry(
        "Sugar box 0.09 x 0.038 x 0.175 m; wrapped around its thin depth.",
        (0.09, 0.038, 0.175),
        "#f7e463",
        "#ffffff",
        "#1f3e99",
    ),
    "tomato_soup_can": _can_entry(
        "Soup can, cylinder r 0.0335 m, h 0.101 m; wrapped around its body.",
        0.0335,
        0.101,
        "#f4f1ea",
        "#c8102e",
        "#2b2b2b",
        band_frac=(0.5, 0.93),
        logo="#d4a437",
    ),
    "mustard_bottle": _Entry(
        "Mustard squeeze bottle 0.096 x 0.058 x 0.19 m with a cap; wrapped around the lower body.",
        _mustard_mesh,
        _mustard_albedo,
        grip_center=(0.0, 0.0, -0.03),
    ),
    "tuna_can": _can_entry(
        "Tuna can, cylinder r 0.0425 m, h 0.033 m; handed over pinched at the rim (held from below, the "
        "curled fingers leave a gripper almost no way in).",
        0.0425,
        0.033,
        "#2a6db0",
        "#f4f1ea",
        "#ffd54f",
        band_frac=(0.3, 0.7),
        logo=None,
        default_pose="pinch",
    ),
    "pudding_box": _box_entry(
        "Pudding box 0.11 x 0.035 x 0.089 m; wrapped around its thin depth.",
        (0.11, 0.035, 0.089),
        "#5d3a1a",
        "#1565c0",
        "#ffffff",
        picture=("#7b4a25", "#3e2410"),
    ),
    "gelatin_box": _box_entry(
        "Gelatin box 0.085 x 0.028 x 0.073 m; wrapped around its thin depth.",
        (0.085, 0.028, 0.073),
        "#d81b60",
        "#ffffff",
        "#ffffff",
        picture=("#ef5350", "#b71c1c"),
    ),
    "potted_meat_can": _Entry(
        "Potted meat can 0.097 x 0.05 x 0.082 m (rounded box); wrapped around its depth.",
        lambda: superellipsoid((0.0485, 0.025, 0.041), e_lat=0.15, e_lon=0.25, n_lat=24, n_lon=64),
        lambda p, n: _box_label(p, n, (0.097, 0.05, 0.082), 31, "#1e5aa8", "#ffd200", "#ffffff"),
    ),
    "banana": _Entry(
        "Banana, curved tube ~0.19 m long, r 0.018 m; wrapped around its middle.",
        _banana_mesh,
        _banana_albedo,
    ),
    "bleach_cleanser": _Entry(
        "Bleach bottle 0.1 x 0.065 x 0.25 m with a cap; wrapped around the lower body.",
        _bleach_mesh,
        _bleach_albedo,
        grip_center=(0.0, 0.0, -0.04),
    ),
    "bowl": _Entry(
        "Open bowl, r 0.08 m, h 0.052 m; supported from below.",
        _bowl_mesh,
        _bowl_albedo,
        default_pose="under",
    ),
    "mug": _Entry(
        "Mug, r 0.04 m, h 0.082 m, handle toward +x; wrapped around the body, handle away from the palm.",
        _mug_mesh,
        _mug_albedo,
    ),
    "power_drill": _Entry(
        "Cordless drill 0.21 x 0.065 x 0.2 m; wrapped around its pistol handle, index at the trigger.",
        _drill_mesh,
        _drill_albedo,
        grip_center=(-0.02, 0.0, -0.005),
    ),
    "apple": _Entry(
        "Apple, ~0.076 m across; held from below or wrapped.",
        _apple_mesh,
        _apple_albedo,
        default_pose="under",
    ),
    "foam_brick": _Entry(
        "Foam brick 0.075 x 0.05 x 0.05 m (rounded box); wrapped or pinched.",
        lambda: superellipsoid((0.0375, 0.025, 0.025), e_lat=0.2, e_lon=0.2, n_lat=24, n_lon=48),
        _brick_albedo,
        default_pose="pinch",
    ),
    "wood_block": _Entry(
        "Wooden block 0.085 x 0.085 x 0.2 m; wrapped around its body. 85 mm square: no wider than a "
        "Robotiq 2F-85 opens, with no margin left, so the 2F-140 takes it.",
        lambda: box((0.085, 0.085, 0.2), step=0.01),
        _wood_block_albedo,
        gripper="robotiq_2f_140",
    ),
}


def object_names() -> list[str]:
    """Names of all catalogue objects, sorted (the procedural ones are not listed: there is one per index)."""
    return sorted(_ENTRIES)


PROCEDURAL_KINDS = ("box", "can")
"""Shapes of the procedural objects (`procedural_name`)."""
PROCEDURAL_BOX = ((0.06, 0.22), (0.025, 0.07), (0.06, 0.24))
"""Uniform ranges (metres) of a procedural box's width (x), depth (y, across which the hand and the
gripper close: at most 70 mm, inside a Robotiq 2F-85's 85 mm stroke) and height (z): a household
range, from a tea box to a cereal box."""
PROCEDURAL_CAN = ((0.02, 0.055), (0.04, 0.2))
"""Uniform ranges (metres) of a procedural can's radius and height: from a spice jar to a coffee can.
Cans wider than 75 mm are taken by the Robotiq 2F-140, like the master chef can."""


def procedural_name(kind: str, index: int) -> str:
    """Name of the ``index``-th procedural ``kind`` (``box`` or ``can``), e.g. ``procedural_box_007``.

    Procedural objects are training material, not household objects: a box or a can whose size
    (`PROCEDURAL_BOX`, `PROCEDURAL_CAN`) and label colours are drawn from a generator seeded by the kind
    and the index, so the same name is always the same object. `get_object` builds them like catalogue
    objects (a wrap grasp, the palm on the -x side), and `recon.synth` puts them in a hand.
    """
    if kind not in PROCEDURAL_KINDS:
        raise ValueError(f"procedural object kind {kind!r}; expected one of {PROCEDURAL_KINDS}")
    if not (isinstance(index, int) and 0 <= index <= 999):
        raise ValueError(f"procedural object index {index!r}; expected an integer in [0, 999]")
    return f"procedural_{kind}_{index:03d}"


def _parse_procedural(name: str) -> tuple[str, int] | None:
    parts = name.split("_")
    if len(parts) != 3 or parts[0] != "procedural" or parts[1] not in PROCEDURAL_KINDS:
        return None
    if not (len(parts[2]) == 3 and parts[2].isdigit()):
        return None
    return parts[1], int(parts[2])


def is_known_object(name: str) -> bool:
    """Whether `get_object` knows ``name``: a catalogue object or a procedural one."""
    return name in _ENTRIES or _parse_procedural(name) is not None


def _hex(rgb: np.ndarray) -> str:
    return "#" + "".join(f"{int(round(255 * float(np.clip(c, 0, 1)))):02x}" for c in rgb)


def _procedural_entry(kind: str, index: int) -> _Entry:
    rng = np.random.default_rng([0x5EED, PROCEDURAL_KINDS.index(kind), index])
    hues = rng.uniform(0, 1, 3)
    sats = rng.uniform(0.3, 0.95, 3)
    vals = rng.uniform(0.35, 0.98, 3)
    base, accent, text = (
        _hex(np.asarray(colorsys.hsv_to_rgb(h, s, v))) for h, s, v in zip(hues, sats, vals, strict=True)
    )
    if kind == "box":
        (wl, wh), (dl, dh), (hl, hh) = PROCEDURAL_BOX
        w, d, h = rng.uniform(wl, wh), rng.uniform(dl, dh), rng.uniform(hl, hh)
        w = max(w, d)  # x is the wider side, y the depth the hand closes across
        size = (round(w, 4), round(d, 4), round(h, 4))
        picture = (
            (_hex(rng.uniform(0.2, 0.95, 3)), _hex(rng.uniform(0.05, 0.6, 3))) if rng.random() < 0.5 else None
        )
        return _box_entry(
            f"Procedural box {size[0]} x {size[1]} x {size[2]} m; wrapped around its depth.",
            size,
            base,
            accent,
            text,
            picture=picture,
        )
    (rl, rh), (hl, hh) = PROCEDURAL_CAN
    r, h = round(rng.uniform(rl, rh), 4), round(rng.uniform(hl, hh), 4)
    lo = rng.uniform(0.05, 0.5)
    return _can_entry(
        f"Procedural can, cylinder r {r} m, h {h} m; wrapped around its body.",
        r,
        h,
        base,
        accent,
        text,
        band_frac=(lo, min(0.95, lo + rng.uniform(0.2, 0.45))),
        logo=_hex(rng.uniform(0.5, 1.0, 3)) if rng.random() < 0.5 else None,
        gripper="robotiq_2f_140" if 2 * r > 0.075 else "robotiq_2f_85",
    )


@cache
def get_object(name: str) -> CatalogueObject:
    """The catalogue object called ``name`` (built on first use, then cached)."""
    if name in _ENTRIES:
        e = _ENTRIES[name]
    elif (proc := _parse_procedural(name)) is not None:
        e = _procedural_entry(*proc)
    else:
        raise ValueError(
            f"Unknown catalogue object {name!r}; expected one of {object_names()} or a procedural name "
            "such as 'procedural_box_000' (recon.catalogue.procedural_name)."
        )
    mesh = e.build()
    lo, hi = mesh.bounds()
    offset = (lo + hi) / 2
    side = np.asarray(e.palm_side, np.float64)
    return CatalogueObject(
        name=name,
        description=e.description,
        mesh_raw=mesh,
        albedo_raw=e.albedo,
        offset=offset,
        grip_center=np.asarray(e.grip_center, np.float64) - offset,
        palm_side=side / np.linalg.norm(side),
        default_pose=e.default_pose,
        gripper=e.gripper,
    )
