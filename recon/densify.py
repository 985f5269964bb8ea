"""Adaptive density control (3DGS's clone / split / prune), as settings plus an explicit state dict.

Same spirit and thresholds as gsplat's `DefaultStrategy`, written here because gsplat is an optional
dependency (CPU installs have no gsplat) and its strategy wants gsplat's ``info`` dict (``radii``,
``gaussian_ids``, ``n_cameras``) and draws its split samples from the global RNG. Here:

- `DensifyConfig` holds the settings (a plain dataclass, a field of the stage config);
- the running state is a dict of tensors (``grad2d``, ``count``) that `accumulate` fills after every
  backward pass from ``RenderOutput.means2d.grad`` and ``RenderOutput.extents`` and that the checkpoint
  saves;
- `densify_and_prune` edits the parameter dict and the Adam state in place (new Gaussians start with
  zero moments), drawing split positions from an explicit `torch.Generator`.

Screen-space gradients are normalised like gsplat's (multiplied by half the image size and by the
number of cameras averaged in the loss), so ``grow_grad2d`` means the same as there.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from splatsim.conventions import quat_wxyz_to_rotmat

__all__ = ["DensifyConfig", "accumulate", "densify_and_prune", "init_state", "replace_gaussians"]


@dataclass
class DensifyConfig:
    """When and how Gaussians are cloned, split and pruned during optimisation."""

    enabled: bool = False
    """Run adaptive density control at all. Off by default: the fused init already has about one Gaussian
    per training pixel, and on the default synthetic capture growing at step 50 of 200 lowered held-out
    PSNR at step 100 from 28.97 to 28.14 dB while adding Gaussians (time). Turn it on for captures whose
    depth is sparse or incomplete."""
    start_step: int = 100
    """First step at which Gaussians are grown or pruned."""
    stop_step: int = 500
    """No growing or pruning after this step (let the last steps settle)."""
    every: int = 100
    """Grow and prune every this many steps."""
    grow_grad2d: float = 0.0002
    """Grow Gaussians whose mean screen-space gradient norm (gsplat's normalisation) exceeds this."""
    grow_scale_m: float = 0.004
    """Growing Gaussians at most this large (largest axis, metres) are cloned; larger ones are split."""
    split_factor: float = 1.6
    """A split Gaussian becomes two whose scales are divided by this."""
    prune_opacity: float = 0.01
    """Prune Gaussians whose opacity fell below this."""
    prune_scale_m: float = 0.05
    """Prune Gaussians whose largest axis exceeds this (metres): floaters blown up to cover holes."""
    max_gaussians: int = 400_000
    """Never grow beyond this many Gaussians (the largest gradients win)."""


def init_state(n: int, device: torch.device | str = "cpu") -> dict[str, Tensor]:
    """Fresh running statistics for ``n`` Gaussians."""
    return {"grad2d": torch.zeros(n, device=device), "count": torch.zeros(n, device=device)}


@torch.no_grad()
def accumulate(
    state: dict[str, Tensor],
    means2d_grad: Tensor,  # [C, N, 2] d loss / d pixel position
    extents: Tensor,  # [C, N, 2] on-screen half-widths, negative where culled
    width: int,
    height: int,
) -> None:
    """Adds one step's normalised screen-space gradient norms of the visible Gaussians to ``state``."""
    C = means2d_grad.shape[0]
    g = means2d_grad.detach().clone()
    g[..., 0] *= 0.5 * width * C
    g[..., 1] *= 0.5 * height * C
    visible = (extents > 0).all(dim=-1)  # [C, N]
    norms = torch.where(visible, g.norm(dim=-1), torch.zeros_like(g[..., 0]))
    state["grad2d"] += norms.sum(0).to(state["grad2d"])
    state["count"] += visible.sum(0).to(state["count"])


@torch.no_grad()
def replace_gaussians(
    params: dict[str, Tensor],
    optimizer: torch.optim.Optimizer,
    state: dict[str, Tensor],
    fn: Callable[[str, Tensor], Tensor],
    state_fn: Callable[[str, Tensor], Tensor],
) -> None:
    """Rebuilds every per-Gaussian tensor with ``fn(name, tensor)``.

    Trainable parameters get new leaf tensors registered in their optimizer group; their Adam moments
    are rebuilt with ``state_fn(name, moment)``. Non-trainable entries (``labels``) and the densify
    ``state`` are rebuilt with ``fn`` only.
    """
    groups = {g["name"]: g for g in optimizer.param_groups}
    for name in list(params):
        old = params[name]
        new = fn(name, old.detach())
        if name in groups:
            new = new.detach().requires_grad_(True)
            group = groups[name]
            opt_state = optimizer.state.pop(old, None)
            if opt_state is not None:
                for k, v in list(opt_state.items()):
                    if k != "step" and isinstance(v, Tensor) and v.shape[:1] == old.shape[:1]:
                        opt_state[k] = state_fn(k, v)
                optimizer.state[new] = opt_state
            group["params"] = [new]
        params[name] = new
    for k in list(state):
        state[k] = fn(k, state[k])


@torch.no_grad()
def densify_and_prune(
    params: dict[str, Tensor],
    optimizer: torch.optim.Optimizer,
    state: dict[str, Tensor],
    cfg: DensifyConfig,
    step: int,
    generator: torch.Generator,
) -> dict[str, int]:
    """At the configured steps: clone small and split large high-gradient Gaussians, then prune.

    ``params`` holds ``means`` [N, 3], ``quats`` [N, 4] wxyz, ``log_scales`` [N, 3],
    ``logit_opacities`` [N], ``sh0`` [N, 1, 3], ``shN`` [N, K-1, 3] and ``labels`` [N] (copied to the
    children). Returns the counts ``{"cloned", "split", "pruned"}`` (all 0 on other steps).
    """
    counts = {"cloned": 0, "split": 0, "pruned": 0}
    if not cfg.enabled or step < cfg.start_step or step > cfg.stop_step or step % cfg.every != 0:
        return counts
    n = params["means"].shape[0]
    grads = state["grad2d"] / state["count"].clamp(min=1)
    high = grads > cfg.grow_grad2d
    room = max(cfg.max_gaussians - n, 0)
    if int(high.sum()) > room:
        keep = torch.zeros_like(high)
        if room > 0:
            keep[torch.topk(torch.where(high, grads, torch.zeros_like(grads)), room).indices] = True
        high = high & keep
    max_scale = params["log_scales"].exp().amax(-1)
    clone = high & (max_scale <= cfg.grow_scale_m)
    split = high & ~clone

    # Clone: an identical copy (the next steps' gradients pull the two apart).
    sel_c = torch.nonzero(clone).squeeze(1)
    counts["cloned"] = int(sel_c.numel())
    # Split: two children sampled from the parent's Gaussian, scales shrunk.
    sel_s = torch.nonzero(split).squeeze(1)
    counts["split"] = int(sel_s.numel())
    if sel_c.numel() or sel_s.numel():
        scales = params["log_scales"][sel_s].exp()
        R = quat_wxyz_to_rotmat(params["quats"][sel_s])
        noise = torch.randn((2, sel_s.numel(), 3), generator=generator).to(scales)
        children = params["means"][sel_s][None] + torch.einsum("nij,nj,bnj->bni", R, scales, noise)
        keep_idx = torch.nonzero(~split).squeeze(1)

        def fn(name: str, t: Tensor) -> Tensor:
            if name == "means":
                new_s = children.reshape(-1, 3)
            elif name == "log_scales":
                new_s = (t[sel_s] - math.log(cfg.split_factor)).repeat(2, 1)
            else:
                new_s = t[sel_s].repeat((2,) + (1,) * (t.dim() - 1))
            return torch.cat([t[keep_idx], t[sel_c], new_s])

        def state_fn(_: str, v: Tensor) -> Tensor:
            zeros = v.new_zeros((sel_c.numel() + 2 * sel_s.numel(),) + v.shape[1:])
            return torch.cat([v[keep_idx], zeros])

        replace_gaussians(params, optimizer, state, fn, state_fn)

    opac = torch.sigmoid(params["logit_opacities"])
    prune = (opac < cfg.prune_opacity) | (params["log_scales"].exp().amax(-1) > cfg.prune_scale_m)
    if bool(prune.all()):  # never prune everything
        prune[torch.argmax(opac)] = False
    if bool(prune.any()):
        keep = torch.nonzero(~prune).squeeze(1)
        counts["pruned"] = int(prune.sum())

        def keep_fn(_: str, t: Tensor) -> Tensor:
            return t[keep]

        replace_gaussians(params, optimizer, state, keep_fn, keep_fn)
    for k in state:
        state[k].zero_()
    return counts
