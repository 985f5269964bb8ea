"""Compositing backends behind one signature.

Every backend takes screen-space Gaussians for C cameras and returns accumulated channels and alpha:

    composite(means2d [C,N,2], conics [C,N,3], opacities [C,N], feats [C,N,D], ext [C,N,2],
              depths [C,N], valid [C,N], width, height) -> (acc [C,H,W,D], alpha [C,H,W])

- `composite_cpu`: the compiled numba tile rasterizer with a hand-written backward (the fast path).
- `composite_torch_tiles`: a vectorised pure-torch tile compositor (the "obvious" fast-ish torch
  implementation; used by the benchmark to show what the compiled kernel buys).
- `composite_reference` in `reference.py`: dense and obviously correct, for tests only.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from splatsim.render import cpu_kernels as K
from splatsim.render.projection import ALPHA_THRESHOLD, MAX_ALPHA, TRANSMITTANCE_EPS


def _np32(x: Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().to(torch.float32).cpu().numpy())


class _CpuRasterize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, opacities, feats, ext, depths, valid, width, height):
        m2 = _np32(means2d)
        cn = _np32(conics)
        op = _np32(opacities)
        ft = _np32(feats)
        ex = _np32(ext)
        offsets, ids = K.bin_gaussians(m2, ex, _np32(depths), valid.detach().cpu().numpy(), width, height)
        acc, t_final, last = K.rasterize_forward(offsets, ids, m2, cn, op, ft, ex, width, height)
        ctx.saved_np = (offsets, ids, m2, cn, op, ft, ex, t_final, last)
        ctx.dims = (width, height)
        ctx.torch_meta = (means2d.dtype, means2d.device)
        acc_t = torch.from_numpy(acc).to(dtype=feats.dtype, device=feats.device)
        alpha_t = torch.from_numpy(1.0 - t_final).to(dtype=feats.dtype, device=feats.device)
        return acc_t, alpha_t

    @staticmethod
    def backward(ctx, v_acc, v_alpha):
        offsets, ids, m2, cn, op, ft, ex, t_final, last = ctx.saved_np
        width, height = ctx.dims
        C, N, D = ft.shape
        if v_acc is None:
            v_acc = torch.zeros((C, height, width, D))
        if v_alpha is None:
            v_alpha = torch.zeros((C, height, width))
        grads = K.rasterize_backward(
            offsets, ids, m2, cn, op, ft, ex, width, height, t_final, last, _np32(v_acc), _np32(v_alpha)
        )
        per = torch.from_numpy(K.reduce_grads(ids, grads, C, N)).reshape(C, N, 6 + D)
        dtype, device = ctx.torch_meta
        per = per.to(dtype=dtype, device=device)
        return per[..., 0:2], per[..., 2:5], per[..., 5], per[..., 6:], None, None, None, None, None


def composite_cpu(means2d, conics, opacities, feats, ext, depths, valid, width: int, height: int):
    """Compiled CPU compositor (numba), differentiable in means2d, conics, opacities and feats."""
    return _CpuRasterize.apply(means2d, conics, opacities, feats, ext, depths, valid, width, height)


def composite_torch_tiles(
    means2d: Tensor,
    conics: Tensor,
    opacities: Tensor,
    feats: Tensor,
    ext: Tensor,
    depths: Tensor,
    valid: Tensor,
    width: int,
    height: int,
    tile: int = 16,
    chunk: int = 64,
):
    """Vectorised pure-torch tile compositor (autograd backward). Same semantics as the CPU kernel.

    Intersections are sorted by (camera, tile, depth); each tile's list is padded to a common length
    and composited `chunk` Gaussians at a time for all tiles at once: a cumulative product gives the
    transmittance inside a chunk, the running transmittance carries between chunks.
    """
    C, N, D = feats.shape
    device = feats.device
    ntx = (width + tile - 1) // tile
    nty = (height + tile - 1) // tile
    nt = ntx * nty
    with torch.no_grad():
        mx, my = means2d[..., 0], means2d[..., 1]
        ex, ey = ext[..., 0], ext[..., 1]
        x0 = torch.ceil(mx - ex - 0.5).clamp(min=0)
        x1 = torch.floor(mx + ex - 0.5).clamp(max=width - 1)
        y0 = torch.ceil(my - ey - 0.5).clamp(min=0)
        y1 = torch.floor(my + ey - 0.5).clamp(max=height - 1)
        ok = valid & (ex >= 0) & (x0 <= x1) & (y0 <= y1) & torch.isfinite(mx) & torch.isfinite(my)
        cam, gid = torch.nonzero(ok, as_tuple=True)
        tx0 = (x0[cam, gid] // tile).long()
        tx1 = (x1[cam, gid] // tile).long()
        ty0 = (y0[cam, gid] // tile).long()
        ty1 = (y1[cam, gid] // tile).long()
        nx = tx1 - tx0 + 1
        ny = ty1 - ty0 + 1
        cnt = nx * ny
        rep = torch.repeat_interleave(torch.arange(cam.numel(), device=device), cnt)
        first = torch.cumsum(cnt, 0) - cnt
        local = torch.arange(rep.numel(), device=device) - first[rep]
        itx = tx0[rep] + local % nx[rep]
        ity = ty0[rep] + local // nx[rep]
        tile_id = cam[rep] * nt + ity * ntx + itx
        g_flat = cam[rep] * N + gid[rep]
        dep = depths.reshape(-1)[g_flat]
        # sort by depth (stable in the Gaussian index), then stably by tile
        o1 = torch.sort(g_flat, stable=True).indices
        o2 = torch.sort(dep[o1], stable=True).indices
        order = o1[o2]
        o3 = torch.sort(tile_id[order], stable=True).indices
        order = order[o3]
        tile_sorted = tile_id[order]
        g_sorted = g_flat[order]
        counts = torch.bincount(tile_sorted, minlength=C * nt)
        L = int(counts.max().item()) if counts.numel() else 0
        starts = torch.cumsum(counts, 0) - counts
        pos = torch.arange(tile_sorted.numel(), device=device) - starts[tile_sorted]
        table = torch.full((C * nt, max(L, 1)), -1, dtype=torch.long, device=device)
        table[tile_sorted, pos] = g_sorted

        py, px = torch.meshgrid(torch.arange(tile), torch.arange(tile), indexing="ij")
        tyy = torch.arange(C * nt) % nt // ntx
        txx = torch.arange(C * nt) % nt % ntx
        pix_x = (txx[:, None] * tile + px.reshape(1, -1)).float() + 0.5  # [CT, P]
        pix_y = (tyy[:, None] * tile + py.reshape(1, -1)).float() + 0.5

    m2 = means2d.reshape(C * N, 2)
    cn = conics.reshape(C * N, 3)
    op = opacities.reshape(C * N)
    ft = feats.reshape(C * N, D)
    CT, P = pix_x.shape
    T = torch.ones(CT, P, dtype=feats.dtype, device=device)
    alive = torch.ones(CT, P, dtype=torch.bool, device=device)
    acc = torch.zeros(CT, P, D, dtype=feats.dtype, device=device)
    for s in range(0, L, chunk):
        idx = table[:, s : s + chunk]  # [CT, B]
        present = idx >= 0
        safe = idx.clamp(min=0)
        dx = m2[safe, 0][:, :, None] - pix_x[:, None, :]
        dy = m2[safe, 1][:, :, None] - pix_y[:, None, :]
        a, b, c = cn[safe, 0][..., None], cn[safe, 1][..., None], cn[safe, 2][..., None]
        sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
        alpha = torch.clamp_max(op[safe][..., None] * torch.exp(-sigma), MAX_ALPHA)
        contrib = present[..., None] & (sigma >= 0) & (alpha >= ALPHA_THRESHOLD)
        alpha = torch.where(contrib, alpha, torch.zeros_like(alpha))  # [CT, B, P]
        # transmittance before each Gaussian within the chunk, given the carried T
        cum = torch.cumprod(1.0 - alpha, dim=1)
        T_after = T[:, None, :] * cum
        T_before = torch.cat([T[:, None, :], T_after[:, :-1, :]], dim=1)
        # stop at the first Gaussian that would bring T to <= eps (it and later ones are excluded)
        stop = contrib & (T_after <= TRANSMITTANCE_EPS)
        stopped_before = (torch.cumsum(stop.to(torch.int32), dim=1) - stop.to(torch.int32)) > 0
        use = contrib & ~stop & ~stopped_before & alive[:, None, :]
        w = torch.where(use, alpha * T_before, torch.zeros_like(alpha))
        acc = acc + torch.einsum("tbp,tbd->tpd", w, ft[safe])
        last_T = torch.where(use, T_after, torch.zeros_like(T_after))
        # new T: product over used Gaussians only
        keep = torch.where(use, 1.0 - alpha, torch.ones_like(alpha))
        T = T * torch.prod(keep, dim=1)
        alive = alive & ~(stop.any(dim=1))
        del last_T
    # scatter tiles back to images
    acc_img = (
        acc.reshape(C, nty, ntx, tile, tile, D)
        .permute(0, 1, 3, 2, 4, 5)
        .reshape(C, nty * tile, ntx * tile, D)
    )
    T_img = T.reshape(C, nty, ntx, tile, tile).permute(0, 1, 3, 2, 4).reshape(C, nty * tile, ntx * tile)
    return acc_img[:, :height, :width], 1.0 - T_img[:, :height, :width]
