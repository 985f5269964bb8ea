"""The Gaussian scene: one dataclass of per-Gaussian tensors, and synthetic scenes for tests.

Conventions (stated once here; `splatsim.ply` converts to and from files):

- ``means`` [N, 3] in metres, world frame.
- ``quats`` [N, 4] in **wxyz** order (gsplat and the 3DGS PLY order; roma uses xyzw). They are *not*
  required to be unit length: an optimiser moves them freely and every consumer normalises them on
  use (:attr:`GaussianScene.normalized_quats`). Only a zero-norm quaternion is an error, because it
  has no direction to normalise to.
- ``log_scales`` [N, 3]: natural logs of the per-axis standard deviations in metres, so the scales
  are positive by construction. ``scales`` is their ``exp``.
- ``logit_opacities`` [N]: ``opacities`` is their sigmoid, so opacities lie in (0, 1) by construction.
- ``sh`` [N, K, 3] spherical-harmonics coefficients per colour channel, K = (degree + 1)² with degree
  0..3. ``sh[:, 0]`` is the DC term; as in 3DGS, the view-independent colour is
  ``SH_C0 * sh[:, 0] + 0.5`` (see :func:`sh_dc_to_rgb`).
- ``labels`` [N] int64: 0 background, 1 object, 2 hand (the same ids as capture masks and rendered
  masks).

The float fields share one floating dtype (float32 unless converted with :meth:`GaussianScene.to`)
and all fields share one device. Construction does not check anything (it is called in hot loops);
call :meth:`GaussianScene.validate` on anything that came from outside.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

LABEL_BACKGROUND = 0
LABEL_OBJECT = 1
LABEL_HAND = 2
LABEL_NAMES: tuple[str, ...] = ("background", "object", "hand")
"""Label names indexed by label id."""
NUM_LABELS = 3

SH_C0 = 0.28209479177387814
"""Zeroth-order real spherical-harmonic constant, 1 / (2 sqrt(pi))."""

MAX_SH_DEGREE = 3

OPACITY_EPS = 1e-6
"""`GaussianScene.from_activated` clamps opacities to [OPACITY_EPS, 1 - OPACITY_EPS] before the logit."""

_FLOAT_FIELDS = ("means", "quats", "log_scales", "logit_opacities", "sh")
_TRAILING_SHAPES = {"means": (3,), "quats": (4,), "log_scales": (3,), "logit_opacities": ()}


def num_sh_coeffs(degree: int) -> int:
    """Number of SH coefficients per channel, K = (degree + 1)², for degree 0..3."""
    if not 0 <= degree <= MAX_SH_DEGREE:
        raise ValueError(f"SH degree must be in 0..{MAX_SH_DEGREE}; got {degree}")
    return (degree + 1) ** 2


def sh_degree_from_coeffs(k: int) -> int:
    """Inverse of :func:`num_sh_coeffs`; raises ValueError unless k is 1, 4, 9 or 16."""
    degree = math.isqrt(k) - 1 if k > 0 else -1
    if degree < 0 or (degree + 1) ** 2 != k or degree > MAX_SH_DEGREE:
        raise ValueError(f"SH coefficient count must be 1, 4, 9 or 16 (degree 0..3); got {k}")
    return degree


def rgb_to_sh_dc(rgb: Tensor) -> Tensor:
    """RGB colour in [0, 1] (..., 3) -> SH DC coefficient (..., 3), the 3DGS convention."""
    return (rgb - 0.5) / SH_C0


def sh_dc_to_rgb(dc: Tensor) -> Tensor:
    """SH DC coefficient (..., 3) -> view-independent RGB colour (..., 3), not clamped."""
    return dc * SH_C0 + 0.5


def _first_index(bad: Tensor) -> tuple[int, ...]:
    """Index (as a tuple) of the first True element of a boolean tensor."""
    return tuple(int(i) for i in torch.nonzero(bad)[0])


@dataclass(eq=False)
class GaussianScene:
    """A set of N labelled 3D Gaussians. See the module docstring for every field's convention."""

    means: Tensor  # [N, 3] metres
    quats: Tensor  # [N, 4] wxyz, any nonzero norm
    log_scales: Tensor  # [N, 3] log metres
    logit_opacities: Tensor  # [N]
    sh: Tensor  # [N, K, 3], K = (degree + 1)^2
    labels: Tensor  # [N] int64 in {0, 1, 2}

    # ----------------------------------------------------------------------------------------------
    # Derived quantities

    @property
    def num_gaussians(self) -> int:
        return int(self.means.shape[0])

    @property
    def sh_degree(self) -> int:
        return sh_degree_from_coeffs(int(self.sh.shape[1]))

    @property
    def scales(self) -> Tensor:
        """Per-axis standard deviations in metres, [N, 3] (always positive)."""
        return torch.exp(self.log_scales)

    @property
    def opacities(self) -> Tensor:
        """Opacities in (0, 1), [N]."""
        return torch.sigmoid(self.logit_opacities)

    @property
    def normalized_quats(self) -> Tensor:
        """Unit quaternions, wxyz, [N, 4]. Zero-norm rows give NaN; `validate` rejects them."""
        return self.quats / torch.linalg.vector_norm(self.quats, dim=-1, keepdim=True)

    @property
    def colors(self) -> Tensor:
        """View-independent RGB colour from the DC term, [N, 3], not clamped."""
        return sh_dc_to_rgb(self.sh[:, 0])

    # ----------------------------------------------------------------------------------------------
    # Validation

    def validate(self, source: str = "scene") -> GaussianScene:
        """Check shapes, dtypes, devices, finiteness, labels and quaternion norms.

        Args:
            source: What the scene came from (a file name, a function); it starts every message.

        Returns:
            self, so that ``scene = read(...).validate(path)`` reads naturally.

        Raises:
            ValueError: naming the source, the field, the offending value or index and what was
                expected.
        """
        fields = {name: getattr(self, name) for name in (*_FLOAT_FIELDS, "labels")}
        for name, value in fields.items():
            if not isinstance(value, Tensor):
                raise ValueError(
                    f"{source}: field '{name}' is a {type(value).__name__}; expected a torch.Tensor"
                )

        means = self.means
        if means.ndim != 2 or means.shape[1] != 3:
            raise ValueError(f"{source}: field 'means' has shape {tuple(means.shape)}; expected [N, 3]")
        n = means.shape[0]
        for name, trailing in _TRAILING_SHAPES.items():
            shape = tuple(fields[name].shape)
            if shape != (n, *trailing):
                expected = "[" + ", ".join(["N", *map(str, trailing)]) + "]"
                raise ValueError(
                    f"{source}: field '{name}' has shape {shape}; expected {expected} with N={n}"
                )
        sh = self.sh
        if sh.ndim != 3 or sh.shape[0] != n or sh.shape[2] != 3:
            raise ValueError(
                f"{source}: field 'sh' has shape {tuple(sh.shape)}; expected [N, K, 3] with N={n}"
            )
        k = int(sh.shape[1])
        if k not in (1, 4, 9, 16):
            raise ValueError(
                f"{source}: field 'sh' has K={k} coefficients per channel; expected K = (degree+1)^2 "
                f"for degree 0..3, i.e. 1, 4, 9 or 16"
            )
        if tuple(self.labels.shape) != (n,):
            raise ValueError(
                f"{source}: field 'labels' has shape {tuple(self.labels.shape)}; expected [N] with N={n}"
            )

        dtype = means.dtype
        if not dtype.is_floating_point:
            raise ValueError(
                f"{source}: field 'means' has dtype {dtype}; expected a floating dtype (float32)"
            )
        for name in _FLOAT_FIELDS:
            if fields[name].dtype != dtype:
                raise ValueError(
                    f"{source}: field '{name}' has dtype {fields[name].dtype}; expected {dtype} like 'means'"
                )
        if self.labels.dtype != torch.int64:
            raise ValueError(f"{source}: field 'labels' has dtype {self.labels.dtype}; expected torch.int64")
        for name, value in fields.items():
            if value.device != means.device:
                raise ValueError(
                    f"{source}: field '{name}' is on {value.device}; expected {means.device} like 'means'"
                )

        for name in _FLOAT_FIELDS:
            value = fields[name].detach()
            bad = ~torch.isfinite(value)
            if bool(bad.any()):
                idx = _first_index(bad)
                raise ValueError(
                    f"{source}: field '{name}' has non-finite value {float(value[idx])} at index "
                    f"{list(idx)} (Gaussian {idx[0]}); expected finite values"
                )

        labels = self.labels
        bad = (labels < 0) | (labels >= NUM_LABELS)
        if bool(bad.any()):
            i = _first_index(bad)[0]
            raise ValueError(
                f"{source}: field 'labels' has value {int(labels[i])} at index {i}; expected one of "
                f"0 ({LABEL_NAMES[0]}), 1 ({LABEL_NAMES[1]}), 2 ({LABEL_NAMES[2]})"
            )

        norms = torch.linalg.vector_norm(self.quats.detach(), dim=-1)
        bad = norms == 0
        if bool(bad.any()):
            i = _first_index(bad)[0]
            raise ValueError(
                f"{source}: field 'quats' has a zero-norm quaternion at index {i}; expected a nonzero "
                f"wxyz quaternion (it is normalised on use)"
            )
        return self

    # ----------------------------------------------------------------------------------------------
    # Construction

    @classmethod
    def from_activated(
        cls,
        means: Tensor,  # [N, 3]
        quats: Tensor,  # [N, 4] wxyz
        scales: Tensor,  # [N, 3] metres, > 0
        opacities: Tensor,  # [N] in (0, 1)
        colors_rgb: Tensor | None = None,  # [N, 3] in [0, 1]
        sh: Tensor | None = None,  # [N, K, 3]
        labels: Tensor | None = None,  # [N] int, default all background
    ) -> GaussianScene:
        """Build a scene from activated values (scales, opacities, RGB colours).

        Exactly one of ``colors_rgb`` (giving a degree-0 scene) and ``sh`` must be given.
        Opacities must lie in the open interval (0, 1); they are then clamped to
        [OPACITY_EPS, 1 - OPACITY_EPS] so the stored logits stay finite and keep a usable gradient.

        Raises:
            ValueError: for a zero, negative or non-finite scale, an opacity outside (0, 1), both or
                neither of colors_rgb / sh, or anything `validate` rejects.
        """
        source = "GaussianScene.from_activated"
        means = torch.as_tensor(means)
        dtype = means.dtype if means.dtype.is_floating_point else torch.float32
        means = means.to(dtype)

        def _float(x: Tensor) -> Tensor:
            return torch.as_tensor(x, device=means.device).to(dtype)

        quats, scales, opacities = _float(quats), _float(scales), _float(opacities)
        bad = ~(scales > 0) | ~torch.isfinite(scales)
        if bool(bad.any()):
            idx = _first_index(bad)
            raise ValueError(
                f"{source}: 'scales' has value {float(scales[idx])} at index {list(idx)}; expected finite "
                f"standard deviations > 0 in metres"
            )
        bad = ~((opacities > 0) & (opacities < 1))
        if bool(bad.any()):
            idx = _first_index(bad)
            raise ValueError(
                f"{source}: 'opacities' has value {float(opacities[idx])} at index {list(idx)}; expected "
                f"values in the open interval (0, 1) (the logit of 0 or 1 is infinite)"
            )
        if (colors_rgb is None) == (sh is None):
            raise ValueError(f"{source}: pass exactly one of 'colors_rgb' [N, 3] and 'sh' [N, K, 3]")
        if colors_rgb is not None:
            colors_rgb = _float(colors_rgb)
            if colors_rgb.ndim != 2 or colors_rgb.shape[-1] != 3:
                raise ValueError(
                    f"{source}: 'colors_rgb' has shape {tuple(colors_rgb.shape)}; expected [N, 3]"
                )
            sh = rgb_to_sh_dc(colors_rgb)[:, None, :]
        else:
            sh = _float(sh)
        if labels is None:
            labels = torch.full((means.shape[0],), LABEL_BACKGROUND, dtype=torch.int64, device=means.device)
        else:
            labels = torch.as_tensor(labels, device=means.device).to(torch.int64)
        opacities = opacities.clamp(OPACITY_EPS, 1.0 - OPACITY_EPS)
        scene = cls(
            means=means,
            quats=quats,
            log_scales=torch.log(scales),
            logit_opacities=torch.logit(opacities),
            sh=sh,
            labels=labels,
        )
        return scene.validate(source)

    @classmethod
    def empty(
        cls,
        sh_degree: int = 0,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> GaussianScene:
        """A scene with no Gaussians (a neutral element for `concat`)."""
        k = num_sh_coeffs(sh_degree)
        z = dict(device=device, dtype=dtype)
        return cls(
            means=torch.zeros(0, 3, **z),
            quats=torch.zeros(0, 4, **z),
            log_scales=torch.zeros(0, 3, **z),
            logit_opacities=torch.zeros(0, **z),
            sh=torch.zeros(0, k, 3, **z),
            labels=torch.zeros(0, dtype=torch.int64, device=device),
        )

    @classmethod
    def concat(cls, scenes: Sequence[GaussianScene]) -> GaussianScene:
        """Concatenate scenes; SH is zero-padded to the highest degree among them.

        Raises:
            ValueError: for an empty list, or scenes with different float dtypes or devices.
        """
        scenes = list(scenes)
        if not scenes:
            raise ValueError("GaussianScene.concat: got no scenes; expected at least one")
        first = scenes[0]
        for i, s in enumerate(scenes):
            if s.means.dtype != first.means.dtype or s.means.device != first.means.device:
                raise ValueError(
                    f"GaussianScene.concat: scene {i} is {s.means.dtype} on {s.means.device}; expected "
                    f"{first.means.dtype} on {first.means.device} like scene 0 (convert with .to())"
                )
        degree = max(s.sh_degree for s in scenes)
        scenes = [s.with_sh_degree(degree) for s in scenes]
        return cls(**{name: torch.cat([getattr(s, name) for s in scenes], dim=0) for name in _field_names()})

    # ----------------------------------------------------------------------------------------------
    # Transformations (each returns a new scene; tensors are shared only where stated)

    def _map(self, fn) -> GaussianScene:
        return GaussianScene(**{name: fn(name, getattr(self, name)) for name in _field_names()})

    def subset(self, index: Tensor | slice | Sequence[int]) -> GaussianScene:
        """Select Gaussians by a boolean mask [N], integer indices, or a slice (in that order)."""
        if not isinstance(index, slice):
            index = torch.as_tensor(index, device=self.means.device)
            if index.dtype == torch.bool:
                if tuple(index.shape) != (self.num_gaussians,):
                    raise ValueError(
                        f"GaussianScene.subset: boolean mask has shape {tuple(index.shape)}; expected "
                        f"[{self.num_gaussians}]"
                    )
            elif index.dtype.is_floating_point or index.dtype.is_complex or index.ndim != 1:
                raise ValueError(
                    f"GaussianScene.subset: index has dtype {index.dtype} and shape {tuple(index.shape)}; "
                    f"expected a boolean mask [N] or a 1-D integer index"
                )
            else:
                index = index.to(torch.int64)
        return self._map(lambda _, t: t[index])

    def select_label(self, label: int) -> GaussianScene:
        """The Gaussians with one label (LABEL_BACKGROUND, LABEL_OBJECT or LABEL_HAND)."""
        if label not in range(NUM_LABELS):
            raise ValueError(f"GaussianScene.select_label: label {label}; expected 0, 1 or 2 ({LABEL_NAMES})")
        return self.subset(self.labels == label)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> GaussianScene:
        """Move to a device and/or convert the float fields to ``dtype`` (labels stay int64)."""
        if dtype is not None and not dtype.is_floating_point:
            raise ValueError(f"GaussianScene.to: dtype {dtype}; expected a floating dtype")

        def fn(name: str, t: Tensor) -> Tensor:
            return t.to(device=device) if name == "labels" else t.to(device=device, dtype=dtype)

        return self._map(fn)

    def detach(self) -> GaussianScene:
        """Same storage, cut from the autograd graph."""
        return self._map(lambda _, t: t.detach())

    def clone(self) -> GaussianScene:
        """Independent copy (keeps autograd history, like `Tensor.clone`)."""
        return self._map(lambda _, t: t.clone())

    def with_sh_degree(self, degree: int) -> GaussianScene:
        """Truncate the SH to ``degree`` or pad it with zeros; other fields are shared, not copied."""
        k = num_sh_coeffs(degree)
        k_now = self.sh.shape[1]
        if k == k_now:
            sh = self.sh
        elif k < k_now:
            sh = self.sh[:, :k]
        else:
            pad = self.sh.new_zeros(self.sh.shape[0], k - k_now, 3)
            sh = torch.cat([self.sh, pad], dim=1)
        return GaussianScene(
            means=self.means,
            quats=self.quats,
            log_scales=self.log_scales,
            logit_opacities=self.logit_opacities,
            sh=sh,
            labels=self.labels,
        )

    def bounds(self, sigmas: float = 0.0) -> tuple[Tensor, Tensor]:
        """Axis-aligned bounds (min [3], max [3]) of the means, grown by ``sigmas`` times each
        Gaussian's largest scale (e.g. 3.0 for the 3-sigma extent).

        Raises:
            ValueError: for a scene with no Gaussians.
        """
        if self.num_gaussians == 0:
            raise ValueError("GaussianScene.bounds: the scene has no Gaussians")
        means = self.means.detach()
        pad = sigmas * self.scales.detach().amax(dim=-1, keepdim=True) if sigmas else torch.zeros_like(means)
        return (means - pad).amin(dim=0), (means + pad).amax(dim=0)


def _field_names() -> tuple[str, ...]:
    return (*_FLOAT_FIELDS, "labels")


# --------------------------------------------------------------------------------------------------
# Synthetic scenes (deterministic for a given seed; generated on the CPU, then moved)


def _random_unit_quats(n: int, g: torch.Generator) -> Tensor:
    """Uniformly distributed rotations as unit wxyz quaternions [n, 4]."""
    q = torch.randn(n, 4, generator=g)
    q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True).clamp_min(1e-12)
    return q


def _uniform(shape: tuple[int, ...], lo: float, hi: float, g: torch.Generator) -> Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=g)


def _log_uniform(shape: tuple[int, ...], lo: float, hi: float, g: torch.Generator) -> Tensor:
    """Natural logs of values distributed log-uniformly in [lo, hi]."""
    return _uniform(shape, math.log(lo), math.log(hi), g)


def _random_sh(colors: Tensor, degree: int, rest_std: float, g: torch.Generator) -> Tensor:
    n = colors.shape[0]
    k = num_sh_coeffs(degree)
    rest = rest_std * torch.randn(n, k - 1, 3, generator=g)
    return torch.cat([rgb_to_sh_dc(colors)[:, None, :], rest], dim=1)


def random_scene(
    num: int,
    seed: int = 0,
    extent: float = 1.0,
    *,
    depth_range: tuple[float, float] = (2.0, 5.0),
    sh_degree: int = 0,
    focal_px: float = 300.0,
    sigma_px_range: tuple[float, float] = (1.0, 8.0),
    opacity_range: tuple[float, float] = (0.05, 0.95),
    sh_rest_std: float = 0.1,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> GaussianScene:
    """A random scene in front of a camera at the origin looking down +z (OpenCV axes).

    Means are uniform in x, y in [-extent, extent] and z in ``depth_range``. Each Gaussian's base
    on-screen standard deviation, for a camera with focal length ``focal_px``, is log-uniform in
    ``sigma_px_range`` pixels (so its 3-sigma footprint spans a few to tens of pixels); each axis then
    gets an anisotropy factor in [0.5, 2]. Rotations are uniform, opacities uniform in
    ``opacity_range``, DC colours uniform in [0, 1], higher SH coefficients normal with
    ``sh_rest_std``, labels uniform over {0, 1, 2}. The same ``seed`` gives identical tensors.
    """
    if num < 0:
        raise ValueError(f"random_scene: num={num}; expected >= 0")
    g = torch.Generator().manual_seed(seed)
    xy = _uniform((num, 2), -extent, extent, g)
    z = _uniform((num, 1), depth_range[0], depth_range[1], g)
    means = torch.cat([xy, z], dim=1)
    quats = _random_unit_quats(num, g)
    log_sigma_px = _log_uniform((num, 1), sigma_px_range[0], sigma_px_range[1], g)
    log_aniso = _log_uniform((num, 3), 0.5, 2.0, g)
    log_scales = log_sigma_px + log_aniso + torch.log(z) - math.log(focal_px)
    logit_opacities = torch.logit(_uniform((num,), opacity_range[0], opacity_range[1], g))
    sh = _random_sh(torch.rand(num, 3, generator=g), sh_degree, sh_rest_std, g)
    labels = torch.randint(0, NUM_LABELS, (num,), generator=g)
    scene = GaussianScene(means, quats, log_scales, logit_opacities, sh, labels)
    return scene.to(device=device, dtype=dtype)


def _sphere_surface(n: int, radii: Tensor, g: torch.Generator) -> Tensor:
    d = torch.randn(n, 3, generator=g)
    d = d / torch.linalg.vector_norm(d, dim=-1, keepdim=True).clamp_min(1e-12)
    return d * radii


def _box_surface(n: int, half: Tensor, g: torch.Generator) -> Tensor:
    """Uniform on the surface of an axis-aligned box with half extents ``half`` [3]."""
    areas = torch.stack([half[1] * half[2], half[0] * half[2], half[0] * half[1]])
    face = torch.multinomial(areas.repeat_interleave(2), n, replacement=True, generator=g)
    axis, sign = face // 2, (face % 2) * 2 - 1
    p = (torch.rand(n, 3, generator=g) * 2 - 1) * half
    p[torch.arange(n), axis] = sign.to(p.dtype) * half[axis]
    return p


def _cylinder_surface(n: int, radius: float, height: float, g: torch.Generator) -> Tensor:
    """Uniform on a closed cylinder whose axis is y (vertical in OpenCV camera axes)."""
    side, cap = 2 * math.pi * radius * height, math.pi * radius**2
    part = torch.multinomial(torch.tensor([side, cap, cap]), n, replacement=True, generator=g)
    theta = torch.rand(n, generator=g) * 2 * math.pi
    u = torch.rand(n, generator=g)
    v = torch.rand(n, generator=g)
    r = torch.where(part == 0, torch.full_like(u, radius), radius * torch.sqrt(u))
    y = torch.where(part == 0, (v - 0.5) * height, torch.where(part == 1, -0.5, 0.5) * height)
    return torch.stack([r * torch.cos(theta), y, r * torch.sin(theta)], dim=1)


def object_like_scene(
    num: int,
    seed: int = 0,
    *,
    center: tuple[float, float, float] = (0.0, 0.0, 0.6),
    sh_degree: int = 0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> GaussianScene:
    """A compact handover-like scene in front of a camera at the origin looking down +z.

    Around ``center`` (0.6 m in front of the camera by default), side by side along x: a sphere
    (radius 5 cm), a box (10 x 8 x 7 cm) and a cylinder (radius 3 cm, 16 cm tall, axis along y), all
    labelled object; a hand-like ellipsoidal blob (9 x 4 x 7 cm) in front of the cylinder, labelled
    hand; and a 0.8 x 0.8 m background plane 0.3 m behind ``center``, labelled background. Gaussians
    lie on the surfaces with 1 mm normal jitter, have scales log-uniform in 2-8 mm and random
    rotations, and are mostly opaque (85% in [0.8, 0.99], the rest in [0.2, 0.8]).

    Requires ``num >= 5`` so that every primitive gets at least one Gaussian.
    """
    if num < 5:
        raise ValueError(f"object_like_scene: num={num}; expected >= 5 (one Gaussian per primitive)")
    g = torch.Generator().manual_seed(seed)
    c = torch.tensor(center, dtype=torch.float32)

    fractions = {"sphere": 0.2, "box": 0.2, "cylinder": 0.15, "hand": 0.1}
    counts = {k: max(1, round(f * num)) for k, f in fractions.items()}
    counts["plane"] = num - sum(counts.values())

    parts: list[tuple[Tensor, int, tuple[float, float, float]]] = []
    n = counts["plane"]
    plane = torch.cat([_uniform((n, 2), -0.4, 0.4, g), torch.full((n, 1), 0.3)], dim=1)
    parts.append((plane, LABEL_BACKGROUND, (0.55, 0.55, 0.5)))
    sphere = _sphere_surface(counts["sphere"], torch.full((3,), 0.05), g) + torch.tensor([-0.12, 0.0, 0.0])
    parts.append((sphere, LABEL_OBJECT, (0.85, 0.15, 0.1)))
    box = _box_surface(counts["box"], torch.tensor([0.05, 0.04, 0.035]), g) + torch.tensor([0.0, 0.02, 0.0])
    parts.append((box, LABEL_OBJECT, (0.15, 0.7, 0.2)))
    cyl = _cylinder_surface(counts["cylinder"], 0.03, 0.16, g) + torch.tensor([0.12, 0.0, 0.0])
    parts.append((cyl, LABEL_OBJECT, (0.15, 0.25, 0.85)))
    hand = _sphere_surface(counts["hand"], torch.tensor([0.045, 0.02, 0.035]), g)
    parts.append((hand + torch.tensor([0.12, 0.02, -0.06]), LABEL_HAND, (0.9, 0.7, 0.55)))

    means = torch.cat([p for p, _, _ in parts]) + c
    means = means + 0.001 * torch.randn(num, 3, generator=g)
    labels = torch.cat([torch.full((p.shape[0],), lab, dtype=torch.int64) for p, lab, _ in parts])
    base = torch.cat([torch.tensor(col).expand(p.shape[0], 3) for p, _, col in parts])
    colors = (base + 0.03 * torch.randn(num, 3, generator=g)).clamp(0.02, 0.98)

    quats = _random_unit_quats(num, g)
    log_scales = _log_uniform((num, 3), 0.002, 0.008, g)
    opaque = torch.rand(num, generator=g) < 0.85
    opacities = torch.where(opaque, _uniform((num,), 0.8, 0.99, g), _uniform((num,), 0.2, 0.8, g))
    sh = _random_sh(colors, sh_degree, 0.05, g)
    scene = GaussianScene(means, quats, log_scales, torch.logit(opacities), sh, labels)
    return scene.to(device=device, dtype=dtype)
