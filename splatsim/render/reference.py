"""Slow, dense, obviously-correct compositor in plain torch. Tests only.

Every Gaussian is evaluated at every pixel (no tiles, no bounding boxes), front to back in depth order,
with autograd providing the gradients. The CPU kernel must match it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from splatsim.render.projection import ALPHA_THRESHOLD, MAX_ALPHA, TRANSMITTANCE_EPS


def composite_reference(
    means2d: Tensor,  # [C, N, 2]
    conics: Tensor,  # [C, N, 3]
    opacities: Tensor,  # [C, N]
    feats: Tensor,  # [C, N, D]
    ext: Tensor,  # [C, N, 2] (only its sign is used: negative = culled)
    depths: Tensor,  # [C, N]
    valid: Tensor,  # [C, N]
    width: int,
    height: int,
    return_ambiguous: bool = False,
):
    """Dense compositing. Returns acc [C,H,W,D], alpha [C,H,W] (and an ambiguity mask [C,H,W]).

    The ambiguity mask marks pixels where some Gaussian sits within a relative 2e-5 (alpha) or 1e-4
    (transmittance) of a threshold
    (alpha vs 1/255, transmittance vs 1e-4, σ vs 0): there, float rounding may legitimately flip a
    discrete decision, so tests compare images only outside it.
    """
    C, N, D = feats.shape
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=means2d.dtype), torch.arange(width, dtype=means2d.dtype), indexing="ij"
    )
    px = xs.reshape(-1) + 0.5
    py = ys.reshape(-1) + 0.5
    accs, alphas, ambs = [], [], []
    for c in range(C):
        keep = torch.nonzero(valid[c] & (ext[c, :, 0] >= 0), as_tuple=True)[0]
        order = keep[torch.sort(depths[c, keep], stable=True).indices]
        T = torch.ones_like(px)
        alive = torch.ones_like(px, dtype=torch.bool)
        amb = torch.zeros_like(px, dtype=torch.bool)
        acc = torch.zeros(px.shape[0], D, dtype=feats.dtype)
        for i in order.tolist():
            dx = means2d[c, i, 0] - px
            dy = means2d[c, i, 1] - py
            a, b, cc = conics[c, i, 0], conics[c, i, 1], conics[c, i, 2]
            sigma = 0.5 * (a * dx * dx + cc * dy * dy) + b * dx * dy
            alpha = torch.clamp_max(opacities[c, i] * torch.exp(-sigma), MAX_ALPHA)
            ok = (sigma >= 0) & (alpha >= ALPHA_THRESHOLD) & alive
            next_T = T * (1.0 - alpha)
            term = ok & (next_T <= TRANSMITTANCE_EPS)
            use = ok & ~term
            acc = acc + torch.where(use, alpha * T, torch.zeros_like(T))[:, None] * feats[c, i][None, :]
            if return_ambiguous:
                with torch.no_grad():
                    amb |= alive & ((alpha - ALPHA_THRESHOLD).abs() < 2e-5 * ALPHA_THRESHOLD)
                    amb |= alive & (sigma.abs() < 1e-5)
                    amb |= alive & ok & ((next_T - TRANSMITTANCE_EPS).abs() < 1e-4 * TRANSMITTANCE_EPS)
            T = torch.where(use, next_T, T)
            alive = alive & ~term
        accs.append(acc.reshape(height, width, D))
        alphas.append((1.0 - T).reshape(height, width))
        ambs.append(amb.reshape(height, width))
    out = (torch.stack(accs), torch.stack(alphas))
    if return_ambiguous:
        return out + (torch.stack(ambs),)
    return out
