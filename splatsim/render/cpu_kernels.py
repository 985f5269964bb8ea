"""Compiled CPU tile rasterizer (numba): binning, forward compositing, race-free backward.

Layout of the work (see ARCHITECTURE.md, "where the speed is"):
- Binning: Gaussians are sorted once per camera by depth (stable), then counting-sorted into 16×16
  tiles, so every tile's list is already front-to-back.
- Forward, in parallel over tiles: the tile's Gaussians are gathered into small contiguous arrays; the
  loop runs over Gaussians outside and over the 16-pixel rows that the Gaussian's box touches inside,
  with all per-pixel state in one float32 buffer so the pixel loop vectorises. A tile stops as soon as
  every pixel's transmittance is spent.
- Backward, in parallel over tiles: each pixel is walked back to front from its final transmittance
  (gsplat's scheme); gradients go into one slot per (tile, Gaussian) intersection — no atomics — and
  are summed per Gaussian afterwards.

Semantics (identical to `reference.py`): along each pixel, Gaussians in depth order contribute
alpha = min(0.999, opacity·exp(−σ)) where σ ≥ 0 and alpha ≥ 1/255; the Gaussian that would bring the
transmittance to ≤ 1e-4 is excluded and compositing stops.
"""

from __future__ import annotations

import os

import numba as nb
import numpy as np

# OpenMP first: thread-safe (the app renders from worker threads) and avoids numba's warning about the
# older TBB that other packages bring along.
if "NUMBA_THREADING_LAYER_PRIORITY" not in os.environ:
    nb.config.THREADING_LAYER_PRIORITY = ["omp", "tbb", "workqueue"]

TILE = 16
TILE_PIX = TILE * TILE
_THR = np.float32(1.0 / 255.0)
_MAXA = np.float32(0.999)
_TEPS = np.float32(1e-4)

_FM = {"nnan", "ninf", "nsz", "arcp", "contract", "afn", "reassoc"}


@nb.njit(inline="always", fastmath=_FM, cache=True)
def _exp_neg(s):
    """exp(−s) for s ≥ 0, as a vectorisable polynomial: (Taylor₆(−s/32))³², |rel err| < 3e-6 on [0, 8].

    Beyond s = 8, exp(−8)·opacity < 1/255, so the clamp never changes which Gaussians contribute.
    """
    s = min(max(s, np.float32(0.0)), np.float32(8.0))
    y = s * np.float32(-1.0 / 32.0)
    p = np.float32(1.0) + y * (
        np.float32(1.0)
        + y
        * (
            np.float32(0.5)
            + y
            * (
                np.float32(1.0 / 6.0)
                + y * (np.float32(1.0 / 24.0) + y * (np.float32(1.0 / 120.0) + y * np.float32(1.0 / 720.0)))
            )
        )
    )
    p = p * p
    p = p * p
    p = p * p
    p = p * p
    p = p * p
    return p


@nb.njit(inline="always", cache=True)
def _tile_grid(width, height):
    """Tiles per image row and per image for a width × height image."""
    ntx = (width + TILE - 1) // TILE
    nty = (height + TILE - 1) // TILE
    return ntx, ntx * nty


@nb.njit(inline="always", cache=True)
def _tile_origin(t, nt, ntx):
    """Camera index and top-left pixel of flat tile index t (tiles of all cameras, row-major)."""
    c = t // nt
    tt = t - c * nt
    ty = tt // ntx
    return c, (tt - ty * ntx) * TILE, ty * TILE


@nb.njit(cache=True)
def _tile_rect(mx, my, ex, ey, width, height):
    """Pixel box [x0, x1] × [y0, y1] whose pixel centres lie within the extents; x0 > x1 if empty."""
    fx0 = np.ceil(mx - ex - 0.5)
    fx1 = np.floor(mx + ex - 0.5)
    fy0 = np.ceil(my - ey - 0.5)
    fy1 = np.floor(my + ey - 0.5)
    if fx0 < 0.0:
        fx0 = 0.0
    if fy0 < 0.0:
        fy0 = 0.0
    if fx1 > width - 1:
        fx1 = width - 1.0
    if fy1 > height - 1:
        fy1 = height - 1.0
    return int(fx0), int(fx1), int(fy0), int(fy1)


@nb.njit(cache=True)
def bin_gaussians(means2d, ext, depths, valid, width, height):
    """Tile lists for C cameras.

    Args:
        means2d: [C, N, 2] float32 pixel coordinates.
        ext: [C, N, 2] float32 half-widths of the contributing box (negative: culled).
        depths: [C, N] float32.
        valid: [C, N] bool.

    Returns:
        offsets [C·T + 1] int64 into `ids`; ids [n_isect] int64, flat index c·N + n, each tile's slice
        sorted front to back (stable in the Gaussian index for equal depths).
    """
    C, N = depths.shape
    ntx, nt = _tile_grid(width, height)
    counts = np.zeros(C * nt + 1, dtype=np.int64)
    orders = np.empty((C, N), dtype=np.int64)
    norder = np.zeros(C, dtype=np.int64)
    for c in range(C):
        # Keep only Gaussians that can touch the image, then sort those by depth.
        keep = np.empty(N, dtype=np.int64)
        nk = 0
        for n in range(N):
            if not valid[c, n]:
                continue
            ex = ext[c, n, 0]
            ey = ext[c, n, 1]
            mx = means2d[c, n, 0]
            my = means2d[c, n, 1]
            if not (ex >= 0.0 and ey >= 0.0 and np.isfinite(mx) and np.isfinite(my)):
                continue
            x0, x1, y0, y1 = _tile_rect(mx, my, ex, ey, width, height)
            if x0 > x1 or y0 > y1:
                continue
            keep[nk] = n
            nk += 1
        d = np.empty(nk, dtype=np.float32)
        for i in range(nk):
            d[i] = depths[c, keep[i]]
        srt = np.argsort(d, kind="mergesort")
        for i in range(nk):
            n = keep[srt[i]]
            orders[c, i] = n
            x0, x1, y0, y1 = _tile_rect(
                means2d[c, n, 0], means2d[c, n, 1], ext[c, n, 0], ext[c, n, 1], width, height
            )
            for ty in range(y0 // TILE, y1 // TILE + 1):
                for tx in range(x0 // TILE, x1 // TILE + 1):
                    counts[c * nt + ty * ntx + tx + 1] += 1
        norder[c] = nk
    offsets = np.cumsum(counts)
    fill = offsets[:-1].copy()
    ids = np.empty(offsets[-1], dtype=np.int64)
    for c in range(C):
        for i in range(norder[c]):
            n = orders[c, i]
            x0, x1, y0, y1 = _tile_rect(
                means2d[c, n, 0], means2d[c, n, 1], ext[c, n, 0], ext[c, n, 1], width, height
            )
            for ty in range(y0 // TILE, y1 // TILE + 1):
                for tx in range(x0 // TILE, x1 // TILE + 1):
                    t = c * nt + ty * ntx + tx
                    ids[fill[t]] = c * N + n
                    fill[t] += 1
    return offsets, ids


@nb.njit(cache=True)
def _gather_tile(start, n, ids, means2d, conics, opac, feats, ext, N, y0t, height, D):
    """Copy one tile's Gaussians into contiguous arrays; rows r0..r1 are tile-local (r0 > r1: none)."""
    g = np.empty((n, 6), dtype=np.float32)
    gf = np.empty((n, D), dtype=np.float32)
    rows = np.empty((n, 2), dtype=np.int64)
    for j in range(n):
        fid = ids[start + j]
        c = fid // N
        i = fid - c * N
        mx = means2d[c, i, 0]
        my = means2d[c, i, 1]
        g[j, 0] = mx
        g[j, 1] = my
        g[j, 2] = conics[c, i, 0]
        g[j, 3] = conics[c, i, 1]
        g[j, 4] = conics[c, i, 2]
        g[j, 5] = opac[c, i]
        for k in range(D):
            gf[j, k] = feats[c, i, k]
        ey = ext[c, i, 1]
        r0 = int(np.ceil(my - ey - 0.5)) - y0t
        r1 = int(np.floor(my + ey - 0.5)) - y0t
        if r0 < 0:
            r0 = 0
        if r1 > TILE - 1:
            r1 = TILE - 1
        if r1 > height - 1 - y0t:
            r1 = height - 1 - y0t
        rows[j, 0] = r0
        rows[j, 1] = r1
    return g, gf, rows


# Offsets of the per-pixel state inside a tile's float32 buffer. Unsigned on purpose: numba wraps
# negative signed indices, and that select stops LLVM from vectorising the pixel loops.
_U = np.uint64
_T = _U(0)  # transmittance; negative once the pixel has stopped (|T| is its final transmittance)
_W = _U(TILE_PIX)  # this Gaussian's weight alpha·T per pixel (scratch)
_L = _U(2 * TILE_PIX)  # index (in the tile list) of the last contributing Gaussian, −1 if none
_ACC = _U(3 * TILE_PIX)  # accumulated channels, one 256-float plane each
_M15 = _U(15)
_S4 = _U(4)


@nb.njit(inline="always", fastmath=_FM, cache=True)
def _fwd_rows(st, lo, hi, x0f, y0f, mx, my, ca, cb, cc, op, jf):
    """One Gaussian over pixels [lo, hi) of the tile: update T, last, and the weight scratch plane."""
    nterm = 0
    for p in range(lo, hi):
        dx = mx - (x0f + np.float32(p & _M15))
        dy = my - (y0f + np.float32(p >> _S4))
        sigma = np.float32(0.5) * (ca * dx * dx + cc * dy * dy) + cb * dx * dy
        alpha = min(_MAXA, op * _exp_neg(sigma))
        T = st[_T + p]
        ok = sigma >= np.float32(0.0) and alpha >= _THR and T > np.float32(0.0)
        nT = T * (np.float32(1.0) - alpha)
        term = ok and nT <= _TEPS
        contrib = ok and nT > _TEPS
        st[_W + p] = alpha * T if contrib else np.float32(0.0)
        st[_T + p] = -T if term else (nT if contrib else T)
        st[_L + p] = jf if contrib else st[_L + p]
        nterm += 1 if term else 0
    return nterm


@nb.njit(inline="always", fastmath=_FM, cache=True)
def _fwd_channel(st, base, lo, hi, f):
    for p in range(lo, hi):
        st[base + p] += st[_W + p] * f


@nb.njit(parallel=True, fastmath=_FM, cache=True)
def rasterize_forward(offsets, ids, means2d, conics, opac, feats, ext, width, height):
    """Front-to-back compositing of D channels. Returns acc [C,H,W,D], T_final [C,H,W], last [C,H,W]."""
    C, N, D = feats.shape
    ntx, nt = _tile_grid(width, height)
    out = np.zeros((C, height, width, D), dtype=np.float32)
    out_t = np.ones((C, height, width), dtype=np.float32)
    out_last = np.full((C, height, width), -1, dtype=np.int32)
    for t in nb.prange(C * nt):
        c, x0t, y0t = _tile_origin(t, nt, ntx)
        start = offsets[t]
        n = offsets[t + 1] - start
        if n == 0:
            continue
        g, gf, rows = _gather_tile(start, n, ids, means2d, conics, opac, feats, ext, N, y0t, height, D)
        st = np.zeros((3 + D) * TILE_PIX, dtype=np.float32)
        alive = 0
        for p in range(TILE_PIX):
            inside = (x0t + (p & 15) < width) and (y0t + (p >> 4) < height)
            st[p] = 1.0 if inside else -1.0
            st[2 * TILE_PIX + p] = -1.0
            alive += 1 if inside else 0
        x0f = np.float32(x0t) + np.float32(0.5)
        y0f = np.float32(y0t) + np.float32(0.5)
        for j in range(n):
            r0 = rows[j, 0]
            r1 = rows[j, 1]
            if r0 > r1:
                continue
            lo = _U(r0 * TILE)
            hi = _U((r1 + 1) * TILE)
            nterm = _fwd_rows(
                st, lo, hi, x0f, y0f, g[j, 0], g[j, 1], g[j, 2], g[j, 3], g[j, 4], g[j, 5], np.float32(j)
            )
            for k in range(D):
                _fwd_channel(st, _ACC + _U(k * TILE_PIX), lo, hi, gf[j, k])
            alive -= nterm
            if alive <= 0:
                break
        for p in range(TILE_PIX):
            x = x0t + (p & 15)
            y = y0t + (p >> 4)
            if x < width and y < height:
                out_t[c, y, x] = abs(st[p])
                out_last[c, y, x] = int(st[2 * TILE_PIX + p])
                for k in range(D):
                    out[c, y, x, k] = st[(3 + k) * TILE_PIX + p]
    return out, out_t, out_last


# Offsets of the backward per-pixel state (then D planes of "colour behind", then D upstream grads).
_BT = _U(0)  # transmittance, rewound from T_final
_BM = _U(1 * TILE_PIX)  # 1 where this Gaussian contributed to the pixel
_BFAC = _U(2 * TILE_PIX)  # alpha·T (its weight)
_BRA = _U(3 * TILE_PIX)  # 1/(1−alpha), masked
_BVA = _U(4 * TILE_PIX)  # dL/dalpha for this Gaussian
_BVIS = _U(5 * TILE_PIX)  # exp(−σ) where the alpha clamp is inactive, else 0
_BTF = _U(6 * TILE_PIX)  # final transmittance
_BVAO = _U(7 * TILE_PIX)  # dL/d(rendered alpha)
_BL = _U(8 * TILE_PIX)  # last contributing index
_NB = 9  # number of fixed planes


@nb.njit(inline="always", fastmath=_FM, cache=True)
def _bwd_rows(st, lo, hi, x0f, y0f, mx, my, ca, cb, cc, op, jf):
    for p in range(lo, hi):
        dx = mx - (x0f + np.float32(p & _M15))
        dy = my - (y0f + np.float32(p >> _S4))
        sigma = np.float32(0.5) * (ca * dx * dx + cc * dy * dy) + cb * dx * dy
        vis = _exp_neg(sigma)
        araw = op * vis
        alpha = min(_MAXA, araw)
        ok = sigma >= np.float32(0.0) and alpha >= _THR and jf <= st[_BL + p]
        m = np.float32(1.0) if ok else np.float32(0.0)
        ra = np.float32(1.0) / (np.float32(1.0) - alpha)
        T = st[_BT + p] * ra if ok else st[_BT + p]
        st[_BT + p] = T
        st[_BM + p] = m
        st[_BFAC + p] = alpha * T * m
        st[_BRA + p] = ra * m
        st[_BVA + p] = m * st[_BTF + p] * ra * st[_BVAO + p]
        st[_BVIS + p] = vis if araw <= _MAXA else np.float32(0.0)


@nb.njit(inline="always", fastmath=_FM, cache=True)
def _bwd_channel(st, bb, vv, lo, hi, ck):
    vc = np.float32(0.0)
    for p in range(lo, hi):
        vk = st[vv + p]
        st[_BVA + p] += (ck * st[_BT + p] * st[_BM + p] - st[bb + p] * st[_BRA + p]) * vk
        vc += st[_BFAC + p] * vk
        st[bb + p] += ck * st[_BFAC + p]
    return vc


@nb.njit(inline="always", fastmath=_FM, cache=True)
def _bwd_geom(st, lo, hi, x0f, y0f, mx, my, ca, cb, cc, op, out):
    gmx = np.float32(0.0)
    gmy = np.float32(0.0)
    ga = np.float32(0.0)
    gb = np.float32(0.0)
    gc = np.float32(0.0)
    gop = np.float32(0.0)
    for p in range(lo, hi):
        dx = mx - (x0f + np.float32(p & _M15))
        dy = my - (y0f + np.float32(p >> _S4))
        va = st[_BVA + p]
        vis = st[_BVIS + p]
        vsig = -op * vis * va
        ga += np.float32(0.5) * vsig * dx * dx
        gb += vsig * dx * dy
        gc += np.float32(0.5) * vsig * dy * dy
        gmx += vsig * (ca * dx + cb * dy)
        gmy += vsig * (cb * dx + cc * dy)
        gop += vis * va
    out[0] = gmx
    out[1] = gmy
    out[2] = ga
    out[3] = gb
    out[4] = gc
    out[5] = gop


@nb.njit(parallel=True, fastmath=_FM, cache=True)
def rasterize_backward(
    offsets, ids, means2d, conics, opac, feats, ext, width, height, t_final, last, v_out, v_alpha
):
    """Gradients per intersection: [n_isect, 6 + D] = (d mx, d my, d a, d b, d c, d opacity, d feats)."""
    C, N, D = feats.shape
    ntx, nt = _tile_grid(width, height)
    grads = np.zeros((ids.shape[0], 6 + D), dtype=np.float32)
    for t in nb.prange(C * nt):
        c, x0t, y0t = _tile_origin(t, nt, ntx)
        start = offsets[t]
        n = offsets[t + 1] - start
        if n == 0:
            continue
        st = np.zeros((_NB + 2 * D) * TILE_PIX, dtype=np.float32)
        jmax = -1
        for p in range(TILE_PIX):
            x = x0t + (p & 15)
            y = y0t + (p >> 4)
            if x < width and y < height:
                st[p] = t_final[c, y, x]
                st[6 * TILE_PIX + p] = t_final[c, y, x]
                st[7 * TILE_PIX + p] = v_alpha[c, y, x]
                lp = last[c, y, x]
                st[8 * TILE_PIX + p] = lp
                if lp > jmax:
                    jmax = lp
                for k in range(D):
                    st[(_NB + D + k) * TILE_PIX + p] = v_out[c, y, x, k]
            else:
                st[8 * TILE_PIX + p] = -1.0
        if jmax < 0:
            continue
        g, gf, rows = _gather_tile(start, jmax + 1, ids, means2d, conics, opac, feats, ext, N, y0t, height, D)
        x0f = np.float32(x0t) + np.float32(0.5)
        y0f = np.float32(y0t) + np.float32(0.5)
        for j in range(jmax, -1, -1):
            r0 = rows[j, 0]
            r1 = rows[j, 1]
            if r0 > r1:
                continue
            lo = _U(r0 * TILE)
            hi = _U((r1 + 1) * TILE)
            mx = g[j, 0]
            my = g[j, 1]
            ca = g[j, 2]
            cb = g[j, 3]
            cc = g[j, 4]
            op = g[j, 5]
            _bwd_rows(st, lo, hi, x0f, y0f, mx, my, ca, cb, cc, op, np.float32(j))
            for k in range(D):
                bb = _U((_NB + k) * TILE_PIX)
                vv = _U((_NB + D + k) * TILE_PIX)
                grads[start + j, 6 + k] = _bwd_channel(st, bb, vv, lo, hi, gf[j, k])
            _bwd_geom(st, lo, hi, x0f, y0f, mx, my, ca, cb, cc, op, grads[start + j])
    return grads


@nb.njit(cache=True)
def reduce_grads(ids, grads, C, N):
    """Sum per-intersection gradients into per-Gaussian arrays [C·N, 6 + D] (serial, race-free)."""
    out = np.zeros((C * N, grads.shape[1]), dtype=np.float32)
    for i in range(ids.shape[0]):
        fid = ids[i]
        for k in range(grads.shape[1]):
            out[fid, k] += grads[i, k]
    return out
