"""The handover policy network (paper Eq. 15): a ResNet-18-style CNN in plain torch.

Input (`INPUT_CHANNELS`): float32 ``[B, 5, H, W]`` with values in [0, 1], channels in this order:

    0-2  R, G, B of the hand-eye image with the background removed (black where the mask is 0)
    3    hand mask (1 where the rendered label is hand)
    4    object mask (1 where the rendered label is object)
    5    only with ``ModelConfig.depth`` (beyond the paper): depth aligned to colour, background removed,
         ``clamp(metres, 0, 2) / 2`` (`DEPTH_CHANNEL`)

`policy.data.make_policy_input` builds it from an image and a label mask, for training, the splat and
the robot alike.

Output: 7 numbers per image. The first 6 are the action (`splatsim.conventions`: Euler xyz (3) then
translation (3) of ``inv(T_cur) @ T_next``) *normalised* by the dataset statistics the model carries
as buffers (``action = mean + std * out[:6]``); the 7th is the pre-grasp logit, ``C = sigmoid(logit)``
(Eq. 16 stops when ``C >= tau_c``). `PolicyNet.predict` returns the de-normalised action and C;
`ExportWrapper` is what ONNX export traces.

The network is torchvision's ``resnet18`` layout (7x7 stride-2 stem, max-pool, four stages of two basic
blocks, global average pool, linear head) with a 5-channel stem and a configurable width, written here
because torchvision does not import on the development machines. ``ModelConfig.stem_pool = False``
drops the stem's max-pool (as ResNets for small images do), doubling every stage's resolution.
``ModelConfig.input_pool = k`` averages the input over k x k pixels before the stem: the network sees an
``image_size / k`` image whose mask channels are coverage fractions (anti-aliased edges, so an object's
image size is known to a fraction of a pixel) at the compute of the smaller image.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

__all__ = [
    "ACTION_DIM",
    "GEOMETRY_DIM",
    "DEPTH_CHANNEL",
    "INPUT_CHANNELS",
    "DEPTH_STATS_DIM",
    "MASK_STATS_DIM",
    "ExportWrapper",
    "ModelConfig",
    "PolicyNet",
    "depth_statistics",
    "mask_statistics",
]

INPUT_CHANNELS = ("red", "green", "blue", "hand_mask", "object_mask")
"""Input channel order (the paper's five channels)."""
DEPTH_CHANNEL = "depth"
"""The sixth channel of a policy with ``ModelConfig.depth``: depth aligned to colour, background removed,
``clamp(metres, 0, 2) / 2`` (`policy.data.depth_channel`)."""
ACTION_DIM = 6
"""Euler xyz (3, radians) + translation (3, metres)."""
GEOMETRY_DIM = 7
"""Outputs of the optional geometry head (`policy.data.GEOMETRY_TARGETS`)."""


@dataclass
class ModelConfig:
    """Network shape: a ResNet-18 layout with a 5-channel input."""

    image_size: int = 128
    """Input height and width in pixels: 128 on the CPU, 224 like the authors' code."""
    width: int = 64
    """Channels of the first stage (doubling per stage: 64-128-256-512 in ResNet-18)."""
    blocks: tuple[int, int, int, int] = (2, 2, 2, 2)
    """Basic blocks per stage ((2, 2, 2, 2) is ResNet-18)."""
    stem_pool: bool = True
    """The stem's 3x3 stride-2 max-pool (ResNet-18's). Off, every stage runs at twice the resolution
    (four times the pixels): for small inputs, where at 64 px ResNet-18 leaves 2x2 cells and an object of
    18 px less than one cell of its last stage. Costs about 4x the compute at the same width."""
    input_pool: int = 1
    """Average the input over ``input_pool`` x ``input_pool`` pixels before the stem (1: off). The input
    stays ``image_size`` (what the camera renders and the exported graph takes); the layers after it see
    ``image_size / input_pool``. Its masks are then the fraction of each coarse pixel the hand / object
    covers, not 0 or 1: the object's outline, and so its image size, to a fraction of a coarse pixel.
    At 64 px a pixel is about 3 cm of distance at 0.4 m from an 18 px object; 128 px pooled by 2 costs
    the 64 px network's compute (the rendering is 128 px)."""
    mask_stats: bool = False
    """Feed the two masks' moments to the head beside the convolutional features (`mask_statistics`:
    log area, centroid, spread of the hand and the object mask, computed on the full-size input, so an
    anti-aliased outline gives the object's image size to a small fraction of a pixel), through a small
    MLP (`STATS_HIDDEN` units). ResNet-18's global average pool over 2x2 cells at 64 px keeps that size
    only coarsely; the stop decision hinges on it (about 3 cm of distance per pixel at 0.4 m)."""
    depth: bool = False
    """A sixth input channel after the paper's five (`DEPTH_CHANNEL`): the hand-eye depth aligned to the
    colour image (a wrist RealSense's aligned depth; the splat's expected depth), background removed. A
    single RGB frame gives distance only through an object's apparent size, which an unseen object of
    another size gets wrong; depth measures it. Beyond the paper (RGB + masks); needs demonstrations
    recorded with depth (`trajgen.handeye.HandEyeConfig.depth`) and a camera that gives it."""
    depth_stats: bool = False
    """With ``depth``: feed the hand's and the object's depth statistics to the head beside the
    convolutional features (`depth_statistics`: mean and nearest depth under each mask, in metres, and
    whether the mask has any depth), through a small MLP (`STATS_HIDDEN` units), computed on the full-size
    input. The stop decision is a distance band; these give the network the object's distance as a number
    it need not read off the image's pixels, for any object's shape and size."""
    geometry_head: bool = False
    """Seven more outputs after the action and logit: the frame's `policy.data.GEOMETRY_TARGETS` (distance
    to the object, pre-grasp pose), normalised, an auxiliary training target; set by
    `TrainConfig.lambda_geometry` > 0. Neither `predict` nor the exported graph outputs them."""

    def validate(self) -> ModelConfig:
        """Raises ValueError naming the field for impossible shapes; returns self."""
        if not (isinstance(self.image_size, int) and self.image_size >= 32):
            raise ValueError(
                f"ModelConfig.image_size = {self.image_size!r}; expected an integer >= 32 pixels"
            )
        if not (isinstance(self.width, int) and self.width >= 4):
            raise ValueError(f"ModelConfig.width = {self.width!r}; expected an integer >= 4 channels")
        if len(self.blocks) != 4 or any(int(b) < 1 for b in self.blocks):
            raise ValueError(f"ModelConfig.blocks = {self.blocks!r}; expected four block counts >= 1")
        k = self.input_pool
        if not (isinstance(k, int) and k >= 1 and self.image_size % k == 0 and self.image_size // k >= 32):
            raise ValueError(
                f"ModelConfig.input_pool = {k!r} with image_size {self.image_size}; expected an integer >= 1 "
                "that divides image_size and leaves at least 32 pixels"
            )
        if self.depth_stats and not self.depth:
            raise ValueError(
                "ModelConfig.depth_stats = True needs the depth channel; expected depth = True as well"
            )
        return self

    @property
    def input_channels(self) -> tuple[str, ...]:
        """The input's channels in order: `INPUT_CHANNELS`, then `DEPTH_CHANNEL` with ``depth``."""
        return (*INPUT_CHANNELS, DEPTH_CHANNEL) if self.depth else INPUT_CHANNELS

    def as_dict(self) -> dict:
        d = asdict(self)
        d["blocks"] = list(self.blocks)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        return cls(
            image_size=int(d["image_size"]),
            width=int(d["width"]),
            blocks=tuple(int(b) for b in d["blocks"]),
            stem_pool=bool(d.get("stem_pool", True)),
            input_pool=int(d.get("input_pool", 1)),
            mask_stats=bool(d.get("mask_stats", False)),
            depth=bool(d.get("depth", False)),
            depth_stats=bool(d.get("depth_stats", False)),
            geometry_head=bool(d.get("geometry_head", False)),
        ).validate()


MASK_STATS_DIM = 10
"""`mask_statistics` outputs per image: for the hand, then the object mask, (log area, centroid x, y, spread x, y)."""
STATS_HIDDEN = 64
"""Width of the MLP that takes `mask_statistics` to the head (`ModelConfig.mask_stats`)."""


def mask_statistics(x: Tensor) -> Tensor:  # [B, 5, H, W] in [0, 1] -> [B, 10]
    """The hand and object masks' moments: per mask (hand, then object), ``(log area, cx, cy, sx, sy)``.

    ``area`` is the mask's mean (the fraction of the image it covers, soft masks counting their
    coverage), floored at 1e-4 before the log; ``cx, cy`` the mask-weighted centroid in [-1, 1] (image
    centre 0, x right, y down, pixel centres); ``sx, sy`` the weighted standard deviations about it (a
    disc of radius r: r / 2 in these units). An empty mask gives log(1e-4), centroid 0 and spread 0.
    The slow reference is `tests/policy/test_policy_model.py`'s per-pixel loop.
    """
    h, w = x.shape[-2:]
    m = x[:, 3:5]  # [B, 2, H, W]: hand, object
    u = (torch.arange(w, dtype=x.dtype, device=x.device) + 0.5) * (2.0 / w) - 1.0  # [W]
    v = (torch.arange(h, dtype=x.dtype, device=x.device) + 0.5) * (2.0 / h) - 1.0  # [H]
    mass_x = m.sum(dim=2)  # [B, 2, W]: column sums
    mass_y = m.sum(dim=3)  # [B, 2, H]: row sums
    total = mass_x.sum(dim=2)  # [B, 2]
    denom = total.clamp_min(1e-6)
    cx = (mass_x * u).sum(dim=2) / denom
    cy = (mass_y * v).sum(dim=2) / denom
    vx = (mass_x * (u - cx[..., None]) ** 2).sum(dim=2) / denom
    vy = (mass_y * (v - cy[..., None]) ** 2).sum(dim=2) / denom
    area = total / float(h * w)
    feats = torch.stack(
        [torch.log(area.clamp_min(1e-4)), cx, cy, torch.sqrt(vx + 1e-12), torch.sqrt(vy + 1e-12)], dim=2
    )  # [B, 2, 5]
    return feats.flatten(1)


DEPTH_STATS_DIM = 6
"""`depth_statistics` outputs per image: for the hand, then the object, (mean depth, nearest depth, present)."""


def depth_statistics(x: Tensor) -> Tensor:  # [B, 6, H, W] in [0, 1] -> [B, 6]
    """The hand's and the object's depth under their masks: per mask (hand, then object),
    ``(mean, nearest, present)``.

    A pixel counts for a mask when the mask is at least 0.5 there and the depth channel is above 0 (0:
    no depth, a hole). ``mean`` is the mask-weighted mean depth over those pixels and ``nearest`` the
    smallest, both in metres (`policy.data.DEPTH_RANGE_M` undoes the channel's scaling); ``present`` is
    1 when the mask has any such pixel, else 0 and the two depths 0. The slow reference is
    `tests/policy/test_policy_depth.py`'s per-image loop.
    """
    from policy.data import DEPTH_RANGE_M

    m = x[:, 3:5]  # [B, 2, H, W]: hand, object
    d = x[:, 5:6] * DEPTH_RANGE_M  # [B, 1, H, W] metres
    valid = (m >= 0.5) & (d > 0)  # [B, 2, H, W]
    w = torch.where(valid, m, torch.zeros_like(m))
    total = w.sum(dim=(2, 3))  # [B, 2]
    present = (total > 0).to(x.dtype)
    mean = (w * d).sum(dim=(2, 3)) / total.clamp_min(1e-6)
    nearest = torch.where(valid, d, 2.0 * DEPTH_RANGE_M).amin(dim=(2, 3)) * present  # 2x range: no pixel
    return torch.stack([mean, nearest, present], dim=2).flatten(1)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (1x1 projection when the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class PolicyNet(nn.Module):
    """ResNet-18-style policy: ``[B, 5, H, W]`` in [0, 1] -> ``[B, 7]`` (normalised action, logit)."""

    def __init__(self, cfg: ModelConfig | None = None) -> None:
        super().__init__()
        self.cfg = (cfg or ModelConfig()).validate()
        w = self.cfg.width
        self.conv1 = nn.Conv2d(len(self.cfg.input_channels), w, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        k = self.cfg.input_pool
        self.input_pool = nn.AvgPool2d(k, k) if k > 1 else nn.Identity()
        self.maxpool = nn.MaxPool2d(3, 2, 1) if self.cfg.stem_pool else nn.Identity()
        stages = []
        c_in = w
        for i, n in enumerate(self.cfg.blocks):
            c_out = w * 2**i
            layers = [BasicBlock(c_in, c_out, 1 if i == 0 else 2)]
            layers += [BasicBlock(c_out, c_out, 1) for _ in range(int(n) - 1)]
            stages.append(nn.Sequential(*layers))
            c_in = c_out
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        extra = GEOMETRY_DIM if self.cfg.geometry_head else 0
        self.stats_mlp: nn.Module | None = None
        n_stats = MASK_STATS_DIM * self.cfg.mask_stats + DEPTH_STATS_DIM * self.cfg.depth_stats
        if n_stats:
            self.stats_mlp = nn.Sequential(
                nn.Linear(n_stats, STATS_HIDDEN),
                nn.ReLU(),
                nn.Linear(STATS_HIDDEN, STATS_HIDDEN),
                nn.ReLU(),
            )
        self.fc = nn.Linear(c_in + (STATS_HIDDEN if n_stats else 0), ACTION_DIM + 1 + extra)
        self.register_buffer("action_mean", torch.zeros(ACTION_DIM))
        self.register_buffer("action_std", torch.ones(ACTION_DIM))
        if extra:
            self.register_buffer("geometry_mean", torch.zeros(GEOMETRY_DIM))
            self.register_buffer("geometry_std", torch.ones(GEOMETRY_DIM))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():  # zero-init the last BN of each block (residuals start as identity)
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)
        nn.init.zeros_(self.fc.bias)
        nn.init.normal_(self.fc.weight, std=1e-3)

    def set_action_stats(self, mean: Tensor, std: Tensor) -> None:
        """Stores the dataset's action mean and std [6] (std floored to avoid division by ~0)."""
        mean = torch.as_tensor(mean, dtype=torch.float32).reshape(ACTION_DIM)
        std = torch.as_tensor(std, dtype=torch.float32).reshape(ACTION_DIM).clamp_min(1e-6)
        self.action_mean.copy_(mean)
        self.action_std.copy_(std)

    def set_geometry_stats(self, mean: Tensor, std: Tensor) -> None:
        """Stores the geometry targets' mean and std [7] (the geometry head's normalisation)."""
        if not self.cfg.geometry_head:
            raise ValueError(
                "set_geometry_stats: this network has no geometry head (ModelConfig.geometry_head)"
            )
        self.geometry_mean.copy_(torch.as_tensor(mean, dtype=torch.float32).reshape(GEOMETRY_DIM))
        self.geometry_std.copy_(
            torch.as_tensor(std, dtype=torch.float32).reshape(GEOMETRY_DIM).clamp_min(1e-6)
        )

    def predict_geometry(self, x: Tensor) -> Tensor:  # [B, 5, H, W] -> [B, 7] (metres, radians)
        """The geometry head's de-normalised estimate (`policy.data.GEOMETRY_TARGETS`), in eval mode."""
        if not self.cfg.geometry_head:
            raise ValueError(
                "predict_geometry: this network has no geometry head (ModelConfig.geometry_head)"
            )
        return self.denormalize_geometry(self._eval_forward(x)[:, ACTION_DIM + 1 :])

    def normalize_action(self, action: Tensor) -> Tensor:  # [..., 6] -> [..., 6]
        return (action - self.action_mean) / self.action_std

    def denormalize_action(self, action_norm: Tensor) -> Tensor:  # [..., 6] -> [..., 6]
        return action_norm * self.action_std + self.action_mean

    def normalize_geometry(self, geometry: Tensor) -> Tensor:  # [..., 7] -> [..., 7] (geometry head only)
        return (geometry - self.geometry_mean) / self.geometry_std

    def denormalize_geometry(self, geometry_norm: Tensor) -> Tensor:  # [..., 7] -> [..., 7]
        return geometry_norm * self.geometry_std + self.geometry_mean

    def forward(
        self,
        x: Tensor,  # [B, 5, H, W] float in [0, 1]
    ) -> Tensor:  # [B, 7] normalised action (6), pre-grasp logit (1) (+ normalised geometry (7))
        c = len(self.cfg.input_channels)
        if x.dim() != 4 or x.shape[1] != c:
            raise ValueError(
                f"PolicyNet expects [B, {c}, H, W] input ({', '.join(self.cfg.input_channels)}), got {list(x.shape)}"
            )
        stats = None if self.stats_mlp is None else self.stats_mlp(self.statistics(x))
        x = self.maxpool(self.relu(self.bn1(self.conv1(self.input_pool(x)))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        feats = torch.flatten(self.pool(x), 1)
        if stats is not None:
            feats = torch.cat([feats, stats], dim=1)
        return self.fc(feats)

    def statistics(self, x: Tensor) -> Tensor:  # [B, C, H, W] -> [B, n]: what the stats MLP takes
        """`mask_statistics` (with ``mask_stats``), then `depth_statistics` (with ``depth_stats``)."""
        parts = []
        if self.cfg.mask_stats:
            parts.append(mask_statistics(x))
        if self.cfg.depth_stats:
            parts.append(depth_statistics(x))
        return torch.cat(parts, dim=1)

    @torch.no_grad()
    def _eval_forward(self, x: Tensor) -> Tensor:
        """``self(x)`` in eval mode without gradients; the training mode is restored afterwards."""
        was_training = self.training
        self.eval()
        try:
            return self(x)
        finally:
            self.train(was_training)

    def predict(
        self,
        x: Tensor,  # [B, 5, H, W]
    ) -> tuple[Tensor, Tensor]:  # action [B, 6] (radians, metres), score C [B] in [0, 1]
        """De-normalised action and pre-grasp score, in eval mode."""
        out = self._eval_forward(x)
        return self.denormalize_action(out[:, :ACTION_DIM]), torch.sigmoid(out[:, ACTION_DIM])


class ExportWrapper(nn.Module):
    """What ONNX export traces: input ``image`` [B, 5, H, W] -> ``action`` [B, 6], ``score`` [B].

    The action is de-normalised (radians, metres) and the score passed through the sigmoid, so the
    exported graph needs no statistics from outside.
    """

    def __init__(self, net: PolicyNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        out = self.net(image)
        return self.net.denormalize_action(out[:, :ACTION_DIM]), torch.sigmoid(out[:, ACTION_DIM])
