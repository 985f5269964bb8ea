"""`splatsim train`: the CNN policy on rendered demonstrations (paper Eq. 15-17).

`run_train(cfg)` reads the demonstration shards into memory, splits them into training and validation
*episodes* (seeded; never frames of one episode on both sides), fits the action statistics on the
training side, and minimises Eq. 17,

    L = lambda_T * MSE(t', t) + lambda_R * MSE(r', r) + lambda_C * MSE(C, Cls)    (lambda_C = 1: the paper)

on normalised actions (translation t, Euler rotation r) with Adam. Every epoch it writes into
``cfg.out``:

    model.safetensors  config.json        the policy (`policy.checkpoint`), loadable on its own
    train_state.pt                        optimizer, random generators and position, for resume
    train_log.json  training_curve.png    per-epoch losses, the curve

A run whose ``out`` already holds a ``train_state.pt`` of the same configuration and data continues
from where it stopped (the exact batch, with the same random streams) when ``resume`` is set.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from policy.augment import AugmentConfig, augment_batch
from policy.checkpoint import policy_metadata, save_policy, state_to_cpu
from policy.data import (
    DemoSet,
    action_stats,
    assemble_input,
    camera_intrinsics_or_default,
    column_stats,
    depth_channel,
    depth_metres,
    load_demos,
    split_episodes,
    stack_depth,
    stack_frames,
    stack_geometry,
)
from policy.model import ACTION_DIM, ModelConfig, PolicyNet
from splatsim.scene import LABEL_HAND, LABEL_OBJECT

__all__ = ["TrainConfig", "TrainResult", "eq17_loss", "geometry_loss", "run_train"]

TRAIN_STATE = "train_state.pt"
TRAIN_LOG = "train_log.json"
CURVE_PNG = "training_curve.png"
_RUN_ONLY_FIELDS = ("out", "epochs", "resume", "progress", "max_steps", "num_threads", "log_every", "device")


@dataclass
class TrainConfig:
    """Train the handover policy (ResNet-18-style CNN, Eq. 17) on demonstration shards."""

    data: tuple[Path, ...] = (Path("runs/default/demos"),)
    """Demonstration shards (.hdf5) or folders holding them."""
    out: Path = Path("runs/default/policy")
    """Folder for model.safetensors, config.json, the training log and curve."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Network shape and input resolution."""
    epochs: int = 50
    """Passes over the training episodes (the authors' code: 50)."""
    batch_size: int = 32
    """Frames per optimisation step (the authors' code: 32)."""
    lr: float = 1e-4
    """Adam learning rate (the authors' code: 1e-4)."""
    lr_final_fraction: float = 1.0
    """Cosine-decay the learning rate to this fraction of ``lr`` over the run (1 = constant, the paper)."""
    weight_decay: float = 0.0
    """Adam weight decay (an L2 term in the gradient; with ``decoupled_weight_decay``, AdamW's)."""
    decoupled_weight_decay: bool = False
    """AdamW (Loshchilov and Hutter): shrink the weights by ``lr * weight_decay`` each step, apart from
    Adam's gradient scaling, instead of adding an L2 term to the gradient."""
    lambda_t: float = 100.0
    """lambda_T: weight of the translation loss (Eq. 17)."""
    lambda_r: float = 100.0
    """lambda_R: weight of the rotation loss (Eq. 17)."""
    lambda_c: float = 1.0
    """lambda_C: weight of the score loss L_C (1 in Eq. 17). The action terms, each weighted 100, leave the
    score's MSE (at most 0.25) about a thousandth of the loss, so the shared layers learn little for the
    stop decision; a larger weight makes them."""
    lambda_geometry: float = 0.0
    """Weight of an auxiliary loss (0 = off, the paper): a second head estimates each frame's distance to
    the object and the pre-grasp pose relative to it (`policy.data.GEOMETRY_TARGETS`, from the
    demonstrations' poses and clearances), an MSE on targets normalised like the actions. The stop
    decision hinges on that distance (the success band is 10 cm wide); a dense, continuous target for it
    shapes the shared layers more than the binary stop label alone. The head is not exported."""
    cls_pos_weight: float = 1.0
    """Weight of the pre-grasp frames (Cls = 1) in the score loss L_C; 1 is the paper's plain MSE. They
    are one frame per episode, so a larger weight counters the imbalance."""
    tau_c: float = 0.7
    """tau_c stored with the model: stop when the score reaches it (Eq. 16; 0.7 in the splat)."""
    val_fraction: float = 0.1
    """Fraction of episodes held out for validation."""
    split_by: Literal["episode", "scene"] = "episode"
    """Validation split unit: whole episodes, or whole scenes (objects)."""
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    """Augmentations for real cameras."""
    seed: int = 0
    """Seeds the initial weights, the split, the batch order and the augmentations."""
    init_from: Path | None = None
    """Start from this policy folder's weights and action statistics (fine-tuning) instead of random
    weights and this data's statistics."""
    resume: bool = True
    """Continue from ``out/train_state.pt`` when it belongs to this configuration and data."""
    progress: bool = True
    """Show a progress bar with the loss and ETA."""
    max_steps: int | None = None
    """Stop after this many optimisation steps in total (smoke tests); None = all epochs."""
    num_threads: int = 0
    """torch CPU threads (0 = torch's default)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where the network trains: auto = the GPU when torch sees one, else the CPU. The weights, the
    checkpoints and a resume are the same either way (the saved tensors are on the CPU)."""
    log_every: int = 10
    """Record the training loss every this many steps."""

    def validate(self) -> TrainConfig:
        checks = [
            ("epochs", self.epochs >= 1, "an integer >= 1"),
            ("batch_size", self.batch_size >= 2, "an integer >= 2 (batch norm needs two frames)"),
            ("lr", self.lr > 0, "a positive learning rate"),
            ("lr_final_fraction", 0 < self.lr_final_fraction <= 1, "a fraction in (0, 1]"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("lambda_t", self.lambda_t >= 0, ">= 0"),
            ("lambda_r", self.lambda_r >= 0, ">= 0"),
            ("lambda_c", self.lambda_c >= 0, ">= 0"),
            ("lambda_geometry", self.lambda_geometry >= 0, ">= 0"),
            ("cls_pos_weight", self.cls_pos_weight > 0, "> 0"),
            ("tau_c", 0 < self.tau_c < 1, "a threshold in (0, 1)"),
            ("val_fraction", 0 <= self.val_fraction < 1, "a fraction in [0, 1)"),
            ("split_by", self.split_by in ("episode", "scene"), "'episode' or 'scene'"),
            ("log_every", self.log_every >= 1, ">= 1"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"TrainConfig.{name} = {getattr(self, name)!r}; expected {expected}")
        if self.model.geometry_head and self.lambda_geometry == 0:
            raise ValueError(
                "TrainConfig.model.geometry_head = True with lambda_geometry = 0; the head follows "
                "lambda_geometry: set lambda_geometry > 0 to train one"
            )
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"TrainConfig.max_steps = {self.max_steps}; expected None or >= 1")
        self.model.validate()
        self.augment.validate()
        return self


@dataclass
class TrainResult:
    """What `run_train` made."""

    out_dir: Path
    model_path: Path
    config_path: Path
    curve_png: Path | None
    history: list[dict[str, Any]]
    """One entry per finished epoch: train and validation losses and their parts."""
    steps: int
    epochs_done: int
    resumed_from_step: int | None
    wall_s: float
    num_train_episodes: int
    num_val_episodes: int
    num_train_frames: int
    num_val_frames: int
    scenes: list[str]


def eq17_loss(
    out: Tensor,  # [B, 7] network output: normalised action (6), logit (1)
    action_norm: Tensor,  # [B, 6] normalised target action (euler (3), translation (3))
    cls: Tensor,  # [B] target pre-grasp flag in {0, 1}
    lambda_t: float = 100.0,
    lambda_r: float = 100.0,
    cls_pos_weight: float = 1.0,
    lambda_c: float = 1.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Eq. 17, ``lambda_T * L_T + lambda_R * L_R + lambda_C * L_C`` (``lambda_C`` = 1 in the paper), every
    term an MSE; returns the total and parts.

    ``L_C`` is the MSE between ``sigmoid(logit)`` and the flag, frames with flag 1 weighted by
    ``cls_pos_weight`` (a weighted mean; 1 gives the plain MSE). Frames whose flag is NaN (no stop
    label) are left out of ``L_C``.
    """
    if out.shape[-1] != ACTION_DIM + 1 or action_norm.shape[-1] != ACTION_DIM:
        raise ValueError(
            f"eq17_loss: out {list(out.shape)}, action {list(action_norm.shape)}; expected [B, 7], [B, 6]"
        )
    l_r = F.mse_loss(out[:, :3], action_norm[:, :3])
    l_t = F.mse_loss(out[:, 3:6], action_norm[:, 3:6])
    score = torch.sigmoid(out[:, 6])
    labelled = ~torch.isnan(cls)
    cls = torch.nan_to_num(cls, nan=0.0)
    w = torch.where(cls > 0.5, cls_pos_weight, 1.0).to(score.dtype) * labelled.to(score.dtype)
    l_c = (w * (score - cls) ** 2).sum() / w.sum().clamp_min(1e-12)
    total = lambda_t * l_t + lambda_r * l_r + lambda_c * l_c
    return total, {"L_T": l_t.detach(), "L_R": l_r.detach(), "L_C": l_c.detach()}


def geometry_loss(
    pred: Tensor,  # [B, 7] normalised geometry estimate
    target: Tensor,  # [B, 7] normalised targets, NaN where unknown
) -> Tensor:
    """MSE over the known entries of the geometry targets (0 when none is known)."""
    known = ~torch.isnan(target)
    diff = torch.where(known, pred - torch.nan_to_num(target), torch.zeros_like(pred))
    return (diff**2).sum() / known.sum().clamp_min(1)


def model_config(cfg: TrainConfig) -> ModelConfig:
    """The network shape `run_train` builds: ``cfg.model`` with the geometry head iff ``lambda_geometry`` > 0."""
    return replace(cfg.model, geometry_head=cfg.lambda_geometry > 0)


def _config_hash(cfg: TrainConfig, files: list[str]) -> str:
    d = asdict(cfg)
    for k in _RUN_ONLY_FIELDS:
        d.pop(k, None)
    d["data"] = [str(f) for f in files]
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _batch(
    rgb: Tensor,  # [N, H, W, 3] uint8
    mask: Tensor,  # [N, H, W] uint8
    idx: Tensor,
    augment: AugmentConfig | None,
    g: torch.Generator | None,
    depth: Tensor | None = None,  # [N, H, W] uint16 millimetres (a policy with a depth channel)
) -> Tensor:  # [B, 5, H, W] ([B, 6, H, W] with depth)
    """The network input of frames ``idx``, built like `policy.data.make_policy_input` (the tests compare
    the two), augmented when ``augment`` and ``g`` are given."""
    x = rgb[idx].permute(0, 3, 1, 2).float() / 255.0
    m = mask[idx]
    masks = torch.stack([(m == LABEL_HAND), (m == LABEL_OBJECT)], dim=1).float()
    d = None if depth is None else depth_channel(depth_metres(depth[idx])).unsqueeze(1)
    if augment is not None and g is not None:
        if d is None:
            x, masks = augment_batch(x, masks, augment, g)
        else:
            x, masks, d = augment_batch(x, masks, augment, g, depth=d)
    return assemble_input(x, masks, d)


def train_device(device: str) -> torch.device:
    """The torch device for `TrainConfig.device`."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                "TrainConfig.device = 'cuda': torch sees no CUDA device (torch.cuda.is_available() is False); "
                "install a CUDA build of torch or use device 'cpu' / 'auto'"
            )
        return torch.device("cuda")
    if device == "cpu":
        return torch.device("cpu")
    raise ValueError(f"TrainConfig.device = {device!r}; expected 'auto', 'cpu' or 'cuda'")


def _evaluate(
    net: PolicyNet,
    frames: tuple[Tensor, ...],
    cfg: TrainConfig,
    batch_size: int = 64,
    geometry: Tensor | None = None,
) -> dict[str, float]:
    """Validation losses (Eq. 17 and parts) and readable errors on frames (rgb, mask, actions, cls, and
    depth for a policy with a depth channel), and
    the geometry head's loss and distance error when it has one."""
    rgb, mask, actions, cls = frames[:4]
    depth = frames[4] if len(frames) > 4 else None
    with_geometry = net.cfg.geometry_head and geometry is not None
    dev = next(net.parameters()).device
    n = int(actions.shape[0])
    if n == 0:
        return {}
    net.eval()
    sums = dict.fromkeys(("loss", "L_T", "L_R", "L_C"), 0.0)
    rot_err = trans_err = 0.0
    geo_loss = dist_err = 0.0
    dist_n = 0
    tp = fp = fn = 0
    with torch.no_grad():
        for b0 in range(0, n, batch_size):
            idx = torch.arange(b0, min(n, b0 + batch_size))
            out = net(_batch(rgb, mask, idx, None, None, depth).to(dev)).cpu()
            target = net.normalize_action(actions[idx].to(dev)).cpu()
            loss, parts = eq17_loss(
                out[:, : ACTION_DIM + 1], target, cls[idx], cfg.lambda_t, cfg.lambda_r, 1.0, cfg.lambda_c
            )
            k = len(idx)
            if with_geometry:
                g_out = out[:, ACTION_DIM + 1 :].to(dev)
                l_g = geometry_loss(g_out, net.normalize_geometry(geometry[idx].to(dev))).cpu()
                loss = loss + cfg.lambda_geometry * l_g
                geo_loss += float(l_g) * k
                d_pred = net.denormalize_geometry(g_out)[:, 0].cpu()
                d_true = geometry[idx, 0]
                ok = ~torch.isnan(d_true)
                dist_err += float((d_pred[ok] - d_true[ok]).abs().sum())
                dist_n += int(ok.sum())
            sums["loss"] += float(loss) * k
            for name, v in parts.items():
                sums[name] += float(v) * k
            pred = net.denormalize_action(out[:, :ACTION_DIM].to(dev)).cpu()
            rot_err += float((pred[:, :3] - actions[idx, :3]).abs().sum())
            trans_err += float((pred[:, 3:] - actions[idx, 3:]).abs().sum())
            stop = torch.sigmoid(out[:, ACTION_DIM]) >= cfg.tau_c
            pos = cls[idx] > 0.5  # NaN (unlabelled) counts as neither
            tp += int((stop & pos).sum())
            fp += int((stop & (cls[idx] < 0.5)).sum())
            fn += int((~stop & pos).sum())
    net.train()
    res = {k: v / n for k, v in sums.items()}
    res["rot_mae_deg"] = math.degrees(rot_err / (3 * n))
    res["trans_mae_mm"] = 1000.0 * trans_err / (3 * n)
    res["stop_precision"] = tp / (tp + fp) if tp + fp else float("nan")
    res["stop_recall"] = tp / (tp + fn) if tp + fn else float("nan")
    if with_geometry:
        res["L_G"] = geo_loss / n
        res["distance_mae_mm"] = 1000.0 * dist_err / dist_n if dist_n else float("nan")
    return res


def _write_curve(path: Path, step_log: list[tuple[int, float]], history: list[dict[str, Any]]) -> Path | None:
    if not step_log and not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    ax = axes[0]
    if step_log:
        s, l = zip(*step_log)
        ax.plot(s, l, lw=0.8, alpha=0.5, label="train (per step)")
        if len(l) >= 5:
            k = max(1, len(l) // 20)
            smooth = np.convolve(l, np.ones(k) / k, mode="valid")
            ax.plot(s[k - 1 :], smooth, lw=1.5, label="train (smoothed)")
    ep_steps = [h["step"] for h in history if "val_loss" in h]
    if ep_steps:
        ax.plot(ep_steps, [h["val_loss"] for h in history if "val_loss" in h], "o-", label="validation")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("Eq. 17 loss")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax = axes[1]
    for key, label in (("val_L_T", "L_T"), ("val_L_R", "L_R"), ("val_L_C", "L_C"), ("val_L_G", "L_G")):
        pts = [(h["epoch"], h[key]) for h in history if key in h]
        if pts:
            e, v = zip(*pts)
            ax.plot(e, v, "o-", label=f"validation {label}")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _lr_at(cfg: TrainConfig, step: int, total: int) -> float:
    if cfg.lr_final_fraction >= 1.0 or total <= 1:
        return cfg.lr
    t = min(1.0, step / (total - 1))
    return cfg.lr * (cfg.lr_final_fraction + (1 - cfg.lr_final_fraction) * 0.5 * (1 + math.cos(math.pi * t)))


def run_train(
    cfg: TrainConfig,
    *,
    demos: DemoSet | None = None,
    callback: Callable[[int, dict[str, float]], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Trains the policy (module docstring). ``demos`` skips reading ``cfg.data`` (already in memory).

    Args:
        cfg: The stage configuration.
        demos: Episodes already loaded at ``cfg.model.image_size`` (the benchmark passes them).
        callback: Called after every step as ``callback(step, {"loss": ...})``.
        log: Where progress messages go (default: a rich console on stderr when ``cfg.progress``).

    Raises:
        FileNotFoundError / ValueError: For missing or malformed shards and bad settings.
    """
    t_start = time.perf_counter()
    cfg.validate()
    dev = train_device(cfg.device)
    if log is None:
        from rich.console import Console

        console = Console(stderr=True)
        log = console.print if cfg.progress else (lambda _m: None)
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    size = cfg.model.image_size
    if demos is None:
        demos = load_demos(cfg.data, size)
    if not demos.episodes:
        raise ValueError(f"no episodes in {[str(p) for p in cfg.data]}")
    if demos.camera.get("width") != size or demos.camera.get("height") != size:
        raise ValueError(
            f"demos are {demos.camera.get('width')}x{demos.camera.get('height')} px; the model expects "
            f"{size}x{size} (load them with image_size={size})"
        )
    camera = camera_intrinsics_or_default(demos.camera, size)
    if camera.get("assumed"):
        log("[yellow]the shards record no intrinsics; assuming the default hand-eye camera[/yellow]")

    groups = [e.key if cfg.split_by == "episode" else e.scene_id for e in demos.episodes]
    train_idx, val_idx = split_episodes(groups, cfg.val_fraction, cfg.seed)
    train_eps = [demos.episodes[i] for i in train_idx]
    val_eps = [demos.episodes[i] for i in val_idx]
    rgb, mask, actions, cls, _ = stack_frames(train_eps)
    val_frames = stack_frames(val_eps)[:4] if val_eps else None
    model_cfg = model_config(cfg)
    depth = None
    if model_cfg.depth:  # a policy with a depth channel: every episode must carry depth
        depth = stack_depth(train_eps)
        if val_frames is not None:
            val_frames = (*val_frames, stack_depth(val_eps))
    geometry = val_geometry = None
    if model_cfg.geometry_head:
        geometry = stack_geometry(train_eps)
        if bool(torch.isnan(geometry).all()):
            raise ValueError(
                f"TrainConfig.lambda_geometry = {cfg.lambda_geometry}: the training episodes record no poses and "
                "clearances to derive the geometry targets from (shards written by `splatsim demos` do); "
                "set it to 0"
            )
        val_geometry = stack_geometry(val_eps) if val_eps else None
    n_train = int(actions.shape[0])
    if n_train < 2:
        raise ValueError(f"only {n_train} training frame(s); need at least 2")
    batch = min(cfg.batch_size, n_train)
    steps_per_epoch = n_train // batch  # the last partial batch is dropped (batch norm)
    total_steps = steps_per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    log(
        f"{len(train_eps)} training episodes ({n_train} frames), {len(val_eps)} validation episodes "
        f"({0 if val_frames is None else int(val_frames[2].shape[0])} frames), {len(demos.scene_ids)} scenes; "
        f"{steps_per_epoch} steps per epoch, on {dev}"
    )

    torch.manual_seed(cfg.seed)
    net = PolicyNet(model_cfg)
    if cfg.init_from is not None:
        from policy.checkpoint import load_policy

        init, _ = load_policy(cfg.init_from)
        if init.cfg.as_dict() != model_cfg.as_dict():
            raise ValueError(
                f"TrainConfig.init_from = {cfg.init_from}: its model {init.cfg.as_dict()} differs from "
                f"TrainConfig.model {model_cfg.as_dict()} (lambda_geometry > 0 adds the geometry head)"
            )
        net.load_state_dict(init.state_dict())
    else:
        mean, std = action_stats(actions)
        net.set_action_stats(mean, std)
        if geometry is not None:
            net.set_geometry_stats(*column_stats(geometry))
    net.to(dev)
    optimizer = torch.optim.AdamW if cfg.decoupled_weight_decay else torch.optim.Adam
    opt = optimizer(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    shuffle_g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 1)
    aug_g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 2)

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    h = _config_hash(cfg, demos.files or [e.key for e in demos.episodes])
    state_path = out / TRAIN_STATE
    epoch, batch_in_epoch, step = 0, 0, 0
    history: list[dict[str, Any]] = []
    step_log: list[tuple[int, float]] = []
    epoch_start_shuffle = shuffle_g.get_state()
    resumed_from: int | None = None
    if cfg.resume and state_path.is_file():
        try:
            st = torch.load(state_path, weights_only=True)  # never unpickles arbitrary objects
        except Exception as exc:  # truncated, damaged, or not a training state at all
            raise ValueError(
                f"{state_path}: cannot be read as a training state ({type(exc).__name__}: "
                f"{(str(exc).splitlines() or [''])[0].split('. ')[0]}); delete it to train afresh, or "
                "pass --no-resume"
            ) from exc
        if not isinstance(st, dict):
            raise ValueError(f"{state_path}: holds a {type(st).__name__}; expected a training state (a dict)")
        if st.get("config_hash") == h:
            if "model" in st:  # the weights saved together with the optimizer state they belong to
                net.load_state_dict(st["model"])
            else:
                from safetensors.torch import load_file

                net.load_state_dict(load_file(str(out / "model.safetensors")))
            opt.load_state_dict(st["optimizer"])
            epoch, batch_in_epoch, step = int(st["epoch"]), int(st["batch_in_epoch"]), int(st["step"])
            epoch_start_shuffle = st["shuffle_state"]
            aug_g.set_state(st["aug_state"])
            history = json.loads(st["history"])
            step_log = [tuple(x) for x in json.loads(st["step_log"])]
            resumed_from = step
            log(f"resuming from step {step} (epoch {epoch + 1}, batch {batch_in_epoch})")
        else:
            log(f"[yellow]{state_path} belongs to another configuration or data; starting afresh[/yellow]")

    training_info = {
        "config": json.loads(json.dumps(asdict(cfg), default=str)),
        "config_hash": h,
        "files": demos.files,
        "scenes": demos.scene_ids,
        "train_scenes": sorted({e.scene_id for e in train_eps}),
        "val_scenes": sorted({e.scene_id for e in val_eps}),
        "train_episodes": [e.key for e in train_eps],
        "val_episodes": [e.key for e in val_eps],
        "num_train_frames": n_train,
        "plan": demos.plan,
    }

    def save(final: bool = False) -> None:
        training_info.update(
            steps=step, epochs_done=epoch, history=history, wall_s=time.perf_counter() - t_start
        )
        save_policy(out, net, policy_metadata(net, camera, cfg.tau_c, training_info))
        tmp = state_path.with_name(f".{state_path.name}.{os.getpid()}.tmp")  # atomic: a kill leaves the old
        torch.save(
            {
                "config_hash": h,
                "model": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
                "optimizer": state_to_cpu(opt.state_dict()),
                "epoch": epoch,
                "batch_in_epoch": batch_in_epoch,
                "step": step,
                "shuffle_state": epoch_start_shuffle,
                "aug_state": aug_g.get_state(),
                "history": json.dumps(history),
                "step_log": json.dumps(step_log),
            },
            tmp,
        )
        os.replace(tmp, state_path)
        (out / TRAIN_LOG).write_text(json.dumps({"history": history, "step_log": step_log}, indent=1))
        if final:
            _write_curve(out / CURVE_PNG, step_log, history)

    progress = None
    task = None
    if cfg.progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        progress = Progress(
            TextColumn("[bold]train[/bold] {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TimeRemainingColumn(),
            transient=False,
        )
        progress.start()
        task = progress.add_task(
            f"epoch {epoch + 1}/{cfg.epochs}", total=total_steps, completed=step, loss=float("nan")
        )

    net.train()
    running: list[float] = []
    epoch_losses: list[float] = []
    try:
        while epoch < cfg.epochs and step < total_steps:
            shuffle_g.set_state(epoch_start_shuffle)
            perm = torch.randperm(n_train, generator=shuffle_g)
            next_epoch_shuffle = shuffle_g.get_state()
            while batch_in_epoch < steps_per_epoch and step < total_steps:
                idx = perm[batch_in_epoch * batch : (batch_in_epoch + 1) * batch]
                x = _batch(rgb, mask, idx, cfg.augment, aug_g, depth).to(dev)
                target = net.normalize_action(actions[idx].to(dev))
                for group in opt.param_groups:
                    group["lr"] = _lr_at(cfg, step, total_steps)
                out_t = net(x)
                loss, parts = eq17_loss(
                    out_t[:, : ACTION_DIM + 1],
                    target,
                    cls[idx].to(dev),
                    cfg.lambda_t,
                    cfg.lambda_r,
                    cfg.cls_pos_weight,
                    cfg.lambda_c,
                )
                if geometry is not None:
                    l_g = geometry_loss(
                        out_t[:, ACTION_DIM + 1 :], net.normalize_geometry(geometry[idx].to(dev))
                    )
                    loss = loss + cfg.lambda_geometry * l_g
                    parts["L_G"] = l_g.detach()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                batch_in_epoch += 1
                lv = float(loss.detach())
                if not math.isfinite(lv):
                    raise FloatingPointError(
                        f"training loss became {lv} at step {step}; lower TrainConfig.lr ({cfg.lr})"
                    )
                running.append(lv)
                epoch_losses.append(lv)
                if step % cfg.log_every == 0 or step == total_steps:
                    step_log.append((step, float(np.mean(running))))
                    running = []
                if progress is not None:
                    progress.update(task, advance=1, loss=lv, description=f"epoch {epoch + 1}/{cfg.epochs}")
                if callback is not None:
                    callback(step, {"loss": lv, **{k: float(v) for k, v in parts.items()}})
            if batch_in_epoch >= steps_per_epoch:
                entry: dict[str, Any] = {"epoch": epoch + 1, "step": step}
                if epoch_losses:
                    entry["train_loss"] = float(np.mean(epoch_losses))
                epoch_losses = []
                if val_frames is not None:
                    entry.update(
                        {
                            f"val_{k}" if k != "loss" else "val_loss": v
                            for k, v in _evaluate(net, val_frames, cfg, geometry=val_geometry).items()
                        }
                    )
                entry["elapsed_s"] = time.perf_counter() - t_start
                history.append(entry)
                epoch += 1
                batch_in_epoch = 0
                epoch_start_shuffle = next_epoch_shuffle
                msg = f"epoch {epoch}/{cfg.epochs}: train {entry.get('train_loss', float('nan')):.4f}"
                if "val_loss" in entry:
                    msg += (
                        f", val {entry['val_loss']:.4f} (rot {entry['val_rot_mae_deg']:.2f} deg, "
                        f"trans {entry['val_trans_mae_mm']:.1f} mm, stop recall {entry['val_stop_recall']:.2f}"
                        + (
                            f", distance {entry['val_distance_mae_mm']:.1f} mm)"
                            if "val_distance_mae_mm" in entry
                            else ")"
                        )
                    )
                log(msg)
                save()
    finally:
        if progress is not None:
            progress.stop()
    save(final=True)
    model_path, config_path = out / "model.safetensors", out / "config.json"
    return TrainResult(
        out_dir=out,
        model_path=model_path,
        config_path=config_path,
        curve_png=out / CURVE_PNG if (out / CURVE_PNG).is_file() else None,
        history=history,
        steps=step,
        epochs_done=epoch,
        resumed_from_step=resumed_from,
        wall_s=time.perf_counter() - t_start,
        num_train_episodes=len(train_eps),
        num_val_episodes=len(val_eps),
        num_train_frames=n_train,
        num_val_frames=0 if val_frames is None else int(val_frames[2].shape[0]),
        scenes=demos.scene_ids,
    )
