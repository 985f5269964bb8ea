"""The project's frames and conventions, stated once and implemented here.

Every other module relies on these; foreign conventions are converted at the reader/writer boundary
with the helpers below and never anywhere else.

Units
    Metres, radians, seconds. Depth in memory is float metres along the camera +z axis (not ray length).

Poses
    A pose is a 4x4 rigid transform ``[[R, t], [0, 1]]`` that maps camera coordinates to world
    coordinates (camera-to-world, "c2w"): ``p_world = R @ p_cam + t``. ``t`` is the camera centre in
    world and the columns of ``R`` are the camera axes in world.
    Camera axes are OpenCV's: x right, y down, z forward (the viewing direction).
    gsplat's ``viewmats`` are world-to-camera: ``viewmat = inv(c2w)`` (see `c2w_to_viewmat`).
    nerfstudio's ``transform_matrix`` (and Blender's) is c2w with OpenGL camera axes: x right, y up,
    z backward; `c2w_opengl_to_opencv` converts (right-multiply by ``diag(1, -1, -1, 1)``).

Quaternions
    wxyz (scalar first) everywhere in the project, as in gsplat and the 3DGS PLY ``rot_0..3``.
    roma uses xyzw (scalar last); only the ``quat_*`` helpers here touch the difference.
    `rotmat_to_quat_wxyz` returns the canonical sign ``w >= 0``.

Pinhole intrinsics and pixel coordinates
    ``K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` maps camera points to *continuous* pixel
    coordinates ``u = fx * x / z + cx``, ``v = fy * y / z + cy`` (u along image columns, v along rows).
    Pixel column ``i`` covers ``[i, i + 1)``, so its centre is at ``i + 0.5`` (gsplat's convention:
    it rasterises pixel ``(i, j)`` at ``(i + 0.5, j + 0.5)``). An ideal centred camera therefore has
    ``cx = width / 2``, ``cy = height / 2``. Intrinsics calibrated with integer pixel centres
    (OpenCV calibration, RealSense ``ppx``/``ppy``) convert at the reader: ``cx = ppx + 0.5``.
    Resizing an image by ``s`` scales K directly (``fx *= s``, ``cx *= s``), which is exact in this
    convention (pixel edges map to pixel edges); the ``(cx + 0.5) * s - 0.5`` rule belongs to the
    integer-centre convention and is *not* used.

Euler angles
    ``(a, b, c)`` are extrinsic rotations about the fixed world x, then y, then z axes:
    ``R = Rz(c) @ Ry(b) @ Rx(a)`` (scipy's ``Rotation.from_euler("xyz", ...)``, lowercase).
    Returned ranges: ``a, c`` in ``(-pi, pi]``, ``b`` in ``[-pi/2, pi/2]``. At gimbal lock
    (``b = +-pi/2``) ``c`` is set to 0 and ``a`` carries the whole remaining rotation.

Actions
    The relative transform from the current hand-eye pose to the next, expressed in the current
    camera frame: ``rel = inv(T_cur) @ T_next``, so ``T_next = T_cur @ rel``. Stored as 6 numbers:
    Euler xyz angles of ``rel``'s rotation (3, above convention), then ``rel``'s translation (3).

All functions are pure, take batched tensors (any leading ``...`` dims, broadcast where stated),
keep dtype and device, and are differentiable through torch autograd where the math is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import roma
import torch
from torch import Tensor

__all__ = [
    "PinholeIntrinsics",
    "action_to_relative_transform",
    "angle_between_rotations",
    "apply_action",
    "backproject_depth",
    "c2w_opencv_to_opengl",
    "c2w_opengl_to_opencv",
    "c2w_to_viewmat",
    "depth_to_world_points",
    "euler_xyz_to_rotmat",
    "interpolate_pose",
    "intrinsics_matrix",
    "look_at",
    "pose_to_action",
    "project_points",
    "quat_wxyz_normalize",
    "quat_wxyz_to_rotmat",
    "quat_wxyz_to_xyzw",
    "quat_xyzw_to_wxyz",
    "relative_transform",
    "rigid_inverse",
    "rotmat_to_euler_xyz",
    "rotmat_to_quat_wxyz",
    "se3_from_rt",
    "transform_points",
    "viewing_axis",
    "viewmat_to_c2w",
]


def _check_trailing(x: Tensor, trailing: tuple[int, ...], name: str) -> None:
    """Raises ValueError unless ``x`` is a tensor whose last dims are ``trailing``."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}.")
    n = len(trailing)
    if x.dim() < n or tuple(x.shape[x.dim() - n :]) != trailing:
        dims = ", ".join(str(d) for d in trailing)
        raise ValueError(f"{name} must have shape [..., {dims}], got {list(x.shape)}.")


# --------------------------------------------------------------------------------------------------
# Rigid transforms and camera poses
# --------------------------------------------------------------------------------------------------


def se3_from_rt(
    R: Tensor,  # [..., 3, 3]
    t: Tensor,  # [..., 3]
) -> Tensor:  # [..., 4, 4]
    """Builds ``[[R, t], [0, 1]]``; the batch dims of ``R`` and ``t`` broadcast."""
    _check_trailing(R, (3, 3), "R")
    _check_trailing(t, (3,), "t")
    batch = torch.broadcast_shapes(R.shape[:-2], t.shape[:-1])
    top = torch.cat([R.expand(batch + (3, 3)), t.expand(batch + (3,))[..., None]], dim=-1)
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=top.dtype, device=top.device)
    return torch.cat([top, bottom.expand(batch + (1, 4))], dim=-2)


def rigid_inverse(
    T: Tensor,  # [..., 4, 4]
) -> Tensor:  # [..., 4, 4]
    """Inverts a rigid transform in closed form: ``[[R^T, -R^T t], [0, 1]]``."""
    _check_trailing(T, (4, 4), "T")
    Rt = T[..., :3, :3].transpose(-1, -2)
    t = T[..., :3, 3]
    return se3_from_rt(Rt, -(Rt @ t[..., None])[..., 0])


def c2w_to_viewmat(
    c2w: Tensor,  # [..., 4, 4] camera-to-world
) -> Tensor:  # [..., 4, 4] world-to-camera (gsplat viewmats)
    """Camera-to-world pose to gsplat's world-to-camera ``viewmats``."""
    _check_trailing(c2w, (4, 4), "c2w")
    return rigid_inverse(c2w)


def viewmat_to_c2w(
    viewmat: Tensor,  # [..., 4, 4] world-to-camera
) -> Tensor:  # [..., 4, 4] camera-to-world
    """gsplat's world-to-camera ``viewmats`` to a camera-to-world pose."""
    _check_trailing(viewmat, (4, 4), "viewmat")
    return rigid_inverse(viewmat)


def _flip_yz(c2w: Tensor) -> Tensor:
    _check_trailing(c2w, (4, 4), "c2w")
    flip = torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=c2w.dtype, device=c2w.device)
    return c2w * flip  # scales columns: c2w @ diag(1, -1, -1, 1)


def c2w_opengl_to_opencv(
    c2w: Tensor,  # [..., 4, 4] c2w, OpenGL camera axes (x right, y up, z back)
) -> Tensor:  # [..., 4, 4] c2w, OpenCV camera axes (x right, y down, z forward)
    """Converts a nerfstudio/Blender ``transform_matrix`` to the project's c2w (flips camera y, z)."""
    return _flip_yz(c2w)


def c2w_opencv_to_opengl(
    c2w: Tensor,  # [..., 4, 4] c2w, OpenCV camera axes
) -> Tensor:  # [..., 4, 4] c2w, OpenGL camera axes
    """Converts the project's c2w to nerfstudio/Blender's OpenGL-axes ``transform_matrix``."""
    return _flip_yz(c2w)


def transform_points(
    T: Tensor,  # [..., 4, 4]
    points: Tensor,  # [..., N, 3]
) -> Tensor:  # [..., N, 3]
    """Applies ``T`` to points: ``R @ p + t``; batch dims broadcast."""
    _check_trailing(T, (4, 4), "T")
    _check_trailing(points, (3,), "points")
    if points.dim() < 2:
        raise ValueError(f"points must have shape [..., N, 3], got {list(points.shape)}.")
    R = T[..., :3, :3]
    t = T[..., None, :3, 3]
    return points @ R.transpose(-1, -2) + t


def viewing_axis(
    c2w: Tensor,  # [..., 4, 4]
) -> Tensor:  # [..., 3]
    """The camera's viewing direction (its +z axis) in world coordinates."""
    _check_trailing(c2w, (4, 4), "c2w")
    return c2w[..., :3, 2]


def _normalize(v: Tensor, dim: int = -1) -> Tensor:
    return v / torch.linalg.vector_norm(v, dim=dim, keepdim=True)


def look_at(
    eye: Tensor,  # [..., 3] camera centre in world
    target: Tensor,  # [..., 3] point the camera looks at
    up: Tensor | Sequence[float] = (0.0, 0.0, 1.0),  # [..., 3] world up
) -> Tensor:  # [..., 4, 4] c2w, OpenCV axes
    """Camera-to-world pose at ``eye`` looking at ``target``, with image "up" along world ``up``.

    The camera +z points from ``eye`` to ``target``, +x (image right) is ``z x up`` and +y (image down)
    is ``z x x``, i.e. roughly ``-up``. Where ``up`` is parallel to the viewing direction, the world
    axis (x, y, z in that order of preference) least aligned with the view is used as ``up`` instead.

    Raises:
        ValueError: If ``eye`` and ``target`` coincide, or ``up`` is zero.
    """
    _check_trailing(eye, (3,), "eye")
    _check_trailing(target, (3,), "target")
    up = torch.as_tensor(up, dtype=eye.dtype, device=eye.device)
    _check_trailing(up, (3,), "up")
    batch = torch.broadcast_shapes(eye.shape[:-1], target.shape[:-1], up.shape[:-1])
    eye, target, up = (x.expand(batch + (3,)) for x in (eye, target, up))
    eps = torch.finfo(eye.dtype).eps

    forward = target - eye
    dist = torch.linalg.vector_norm(forward, dim=-1)
    scale = 1.0 + torch.maximum(eye.detach().abs().amax(-1), target.detach().abs().amax(-1))
    if bool((dist.detach() <= 16 * eps * scale).any()):
        raise ValueError(
            f"look_at: eye and target coincide (distance {dist.detach().min().item():.3g}); "
            "the viewing direction is undefined. Pass a target distinct from the eye."
        )
    up_norm = torch.linalg.vector_norm(up, dim=-1)
    if bool((up_norm.detach() <= eps).any()):
        raise ValueError(f"look_at: up must be a non-zero vector, got {up.detach().tolist()}.")
    z = forward / dist[..., None]
    up = up / up_norm[..., None]

    x_raw = torch.linalg.cross(z, up)
    parallel = torch.linalg.vector_norm(x_raw, dim=-1) < 1e3 * eps  # [...]
    if bool(parallel.any()):
        axes = torch.eye(3, dtype=z.dtype, device=z.device)
        fallback = axes[torch.argmin(z.detach().abs(), dim=-1)]  # [..., 3], first minimum wins
        up = torch.where(parallel[..., None], fallback, up)
        x_raw = torch.linalg.cross(z, up)
    x = _normalize(x_raw)
    y = torch.linalg.cross(z, x)
    R = torch.stack([x, y, z], dim=-1)
    return se3_from_rt(R, eye)


# --------------------------------------------------------------------------------------------------
# Quaternions (project: wxyz; roma: xyzw)
# --------------------------------------------------------------------------------------------------


def quat_wxyz_to_xyzw(
    q: Tensor,  # [..., 4] wxyz
) -> Tensor:  # [..., 4] xyzw
    """Reorders a scalar-first quaternion (project, gsplat, PLY) to scalar-last (roma)."""
    _check_trailing(q, (4,), "q")
    return torch.cat([q[..., 1:], q[..., :1]], dim=-1)


def quat_xyzw_to_wxyz(
    q: Tensor,  # [..., 4] xyzw
) -> Tensor:  # [..., 4] wxyz
    """Reorders a scalar-last quaternion (roma, scipy) to scalar-first (project)."""
    _check_trailing(q, (4,), "q")
    return torch.cat([q[..., 3:], q[..., :3]], dim=-1)


def quat_wxyz_normalize(
    q: Tensor,  # [..., 4] wxyz
) -> Tensor:  # [..., 4] wxyz, unit norm
    """Scales quaternions to unit norm (a zero quaternion stays zero, as in gsplat)."""
    _check_trailing(q, (4,), "q")
    return torch.nn.functional.normalize(q, dim=-1)


def quat_wxyz_to_rotmat(
    q: Tensor,  # [..., 4] wxyz, any non-zero norm
) -> Tensor:  # [..., 3, 3]
    """Rotation matrix of a (normalised first) wxyz quaternion."""
    return roma.unitquat_to_rotmat(quat_wxyz_to_xyzw(quat_wxyz_normalize(q)))


def rotmat_to_quat_wxyz(
    R: Tensor,  # [..., 3, 3]
) -> Tensor:  # [..., 4] wxyz, w >= 0
    """Unit wxyz quaternion of a rotation matrix, in the canonical sign ``w >= 0``."""
    _check_trailing(R, (3, 3), "R")
    q = quat_xyzw_to_wxyz(roma.rotmat_to_unitquat(R))
    return torch.where(q[..., :1] < 0, -q, q)


# --------------------------------------------------------------------------------------------------
# Euler angles (extrinsic x-y-z: R = Rz(c) @ Ry(b) @ Rx(a))
# --------------------------------------------------------------------------------------------------


def _rot_x(a: Tensor) -> Tensor:
    c, s, o, z = torch.cos(a), torch.sin(a), torch.ones_like(a), torch.zeros_like(a)
    return torch.stack([o, z, z, z, c, -s, z, s, c], dim=-1).unflatten(-1, (3, 3))


def _rot_y(b: Tensor) -> Tensor:
    c, s, o, z = torch.cos(b), torch.sin(b), torch.ones_like(b), torch.zeros_like(b)
    return torch.stack([c, z, s, z, o, z, -s, z, c], dim=-1).unflatten(-1, (3, 3))


def _rot_z(c_: Tensor) -> Tensor:
    c, s, o, z = torch.cos(c_), torch.sin(c_), torch.ones_like(c_), torch.zeros_like(c_)
    return torch.stack([c, -s, z, s, c, z, z, z, o], dim=-1).unflatten(-1, (3, 3))


def euler_xyz_to_rotmat(
    euler: Tensor,  # [..., 3] (a, b, c) radians, extrinsic x, y, z
) -> Tensor:  # [..., 3, 3]
    """``R = Rz(c) @ Ry(b) @ Rx(a)`` (scipy ``from_euler("xyz", ...)``)."""
    _check_trailing(euler, (3,), "euler")
    return _rot_z(euler[..., 2]) @ _rot_y(euler[..., 1]) @ _rot_x(euler[..., 0])


def rotmat_to_euler_xyz(
    R: Tensor,  # [..., 3, 3]
) -> Tensor:  # [..., 3] (a, b, c), a and c in (-pi, pi], b in [-pi/2, pi/2]
    """Extrinsic xyz Euler angles with ``R = Rz(c) @ Ry(b) @ Rx(a)``; finite at gimbal lock.

    ``b`` and ``c`` come from R's first column; ``a`` from the residual ``Ry(-b) @ Rz(-c) @ R``,
    so the angles reproduce ``R`` to rounding even near gimbal lock, where ``c`` is set to 0.
    """
    _check_trailing(R, (3, 3), "R")
    r00, r10, r20 = R[..., 0, 0], R[..., 1, 0], R[..., 2, 0]
    cos_b_sq = r00 * r00 + r10 * r10
    locked = cos_b_sq <= torch.finfo(R.dtype).eps ** 2
    # Evaluate the discarded branch at safe points so that gradients stay finite.
    cos_b = torch.where(locked, torch.zeros_like(r00), torch.sqrt(torch.where(locked, 1.0, cos_b_sq)))
    b = torch.atan2(-r20, cos_b)
    c = torch.where(
        locked,
        torch.zeros_like(r00),
        torch.atan2(torch.where(locked, 0.0, r10), torch.where(locked, 1.0, r00)),
    )
    residual = _rot_y(-b) @ _rot_z(-c) @ R  # = Rx(a)
    a = torch.atan2(residual[..., 2, 1], residual[..., 1, 1])
    return torch.stack([a, b, c], dim=-1)


# --------------------------------------------------------------------------------------------------
# Actions: rel = inv(T_cur) @ T_next, stored as (euler xyz, translation)
# --------------------------------------------------------------------------------------------------


def relative_transform(
    T_cur: Tensor,  # [..., 4, 4]
    T_next: Tensor,  # [..., 4, 4]
) -> Tensor:  # [..., 4, 4]
    """``inv(T_cur) @ T_next``: the motion to ``T_next`` expressed in ``T_cur``'s frame."""
    _check_trailing(T_next, (4, 4), "T_next")
    return rigid_inverse(T_cur) @ T_next


def pose_to_action(
    T_cur: Tensor,  # [..., 4, 4] current hand-eye c2w
    T_next: Tensor,  # [..., 4, 4] next hand-eye c2w
) -> Tensor:  # [..., 6] (euler xyz (3), translation (3))
    """Encodes the step from ``T_cur`` to ``T_next`` as the project's 6-D action."""
    rel = relative_transform(T_cur, T_next)
    return torch.cat([rotmat_to_euler_xyz(rel[..., :3, :3]), rel[..., :3, 3]], dim=-1)


def action_to_relative_transform(
    action: Tensor,  # [..., 6] (euler xyz (3), translation (3))
) -> Tensor:  # [..., 4, 4]
    """Decodes a 6-D action into the relative transform ``inv(T_cur) @ T_next``."""
    _check_trailing(action, (6,), "action")
    return se3_from_rt(euler_xyz_to_rotmat(action[..., :3]), action[..., 3:])


def apply_action(
    T_cur: Tensor,  # [..., 4, 4]
    action: Tensor,  # [..., 6]
) -> Tensor:  # [..., 4, 4] T_next
    """``T_next = T_cur @ action_to_relative_transform(action)``."""
    _check_trailing(T_cur, (4, 4), "T_cur")
    return T_cur @ action_to_relative_transform(action)


# --------------------------------------------------------------------------------------------------
# Rotation distance and pose interpolation
# --------------------------------------------------------------------------------------------------


def angle_between_rotations(
    R0: Tensor,  # [..., 3, 3]
    R1: Tensor,  # [..., 3, 3]
) -> Tensor:  # [...] radians in [0, pi]
    """Geodesic angle of ``R0^T @ R1``, accurate near 0 and near pi (atan2, not acos)."""
    _check_trailing(R0, (3, 3), "R0")
    _check_trailing(R1, (3, 3), "R1")
    M = R0.transpose(-1, -2) @ R1
    skew = torch.stack(
        [M[..., 2, 1] - M[..., 1, 2], M[..., 0, 2] - M[..., 2, 0], M[..., 1, 0] - M[..., 0, 1]], -1
    )
    sin_angle = 0.5 * torch.linalg.vector_norm(skew, dim=-1)
    cos_angle = 0.5 * (M[..., 0, 0] + M[..., 1, 1] + M[..., 2, 2] - 1.0)
    return torch.atan2(sin_angle, cos_angle)


def interpolate_pose(
    T0: Tensor,  # [..., 4, 4]
    T1: Tensor,  # [..., 4, 4]
    t: float | Tensor,  # scalar or [...] broadcastable with the pose batch dims
) -> Tensor:  # [..., 4, 4]
    """Interpolates poses: linear in position, geodesic (SLERP, shortest arc) in rotation.

    ``t = 0`` returns ``T0`` and ``t = 1`` returns ``T1`` (to rounding); values outside ``[0, 1]``
    extrapolate. Differentiable everywhere, including at ``T0 == T1``.
    """
    _check_trailing(T0, (4, 4), "T0")
    _check_trailing(T1, (4, 4), "T1")
    t = torch.as_tensor(t, dtype=T0.dtype, device=T0.device)
    batch = torch.broadcast_shapes(T0.shape[:-2], T1.shape[:-2], t.shape)
    T0, T1, t = T0.expand(batch + (4, 4)), T1.expand(batch + (4, 4)), t.expand(batch)

    position = torch.lerp(T0[..., :3, 3], T1[..., :3, 3], t[..., None])

    R0 = T0[..., :3, :3]
    q = rotmat_to_quat_wxyz(R0.transpose(-1, -2) @ T1[..., :3, :3])  # relative rotation, w >= 0
    w, v = q[..., 0], q[..., 1:]
    sin_half_sq = (v * v).sum(-1)
    # Below this the Taylor form v * t is exact to rounding; it keeps gradients finite at v = 0.
    small = sin_half_sq < torch.finfo(T0.dtype).eps
    sin_half = torch.sqrt(torch.where(small, 1.0, sin_half_sq))
    half = torch.atan2(sin_half, w)
    ratio = torch.where(small, t, torch.sin(t * half) / sin_half)  # sin(t * half) / sin(half)
    q_t = torch.cat([torch.cos(t * half)[..., None], v * ratio[..., None]], dim=-1)
    R = R0 @ quat_wxyz_to_rotmat(q_t)
    return se3_from_rt(R, position)


# --------------------------------------------------------------------------------------------------
# Pinhole cameras: intrinsics, projection, back-projection
# --------------------------------------------------------------------------------------------------


def intrinsics_matrix(
    fx: float | Tensor,  # [...]
    fy: float | Tensor,  # [...]
    cx: float | Tensor,  # [...]
    cy: float | Tensor,  # [...]
) -> Tensor:  # [..., 3, 3]
    """Pinhole ``K``; tensor arguments broadcast and set the dtype (float64 if all are numbers)."""
    tensors = [x for x in (fx, fy, cx, cy) if isinstance(x, Tensor)]
    dtype = torch.float64
    if tensors:
        dtype = tensors[0].dtype
        for x in tensors[1:]:
            dtype = torch.promote_types(dtype, x.dtype)
        if not dtype.is_floating_point:
            dtype = torch.float64
    device = tensors[0].device if tensors else None
    fx, fy, cx, cy = (torch.as_tensor(x, dtype=dtype, device=device) for x in (fx, fy, cx, cy))
    fx, fy, cx, cy = torch.broadcast_tensors(fx, fy, cx, cy)
    zero, one = torch.zeros_like(fx), torch.ones_like(fx)
    return torch.stack([fx, zero, cx, zero, fy, cy, zero, zero, one], dim=-1).unflatten(-1, (3, 3))


@dataclass(frozen=True)
class PinholeIntrinsics:
    """Pinhole camera intrinsics in pixels, with the image size they belong to.

    See the module docstring for the pixel-coordinate convention (pixel centres at ``+0.5``).
    Construction validates the values (`validate`).
    """

    fx: float
    """Focal length along image columns, pixels."""
    fy: float
    """Focal length along image rows, pixels."""
    cx: float
    """Principal point column, continuous pixel coordinates (``width / 2`` when centred)."""
    cy: float
    """Principal point row, continuous pixel coordinates (``height / 2`` when centred)."""
    width: int
    """Image width, pixels."""
    height: int
    """Image height, pixels."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> PinholeIntrinsics:
        """Checks the values, returning ``self``.

        Raises:
            ValueError: Naming the field and value, if a focal length or image size is not positive
                or the principal point lies outside the image.
        """
        for name in ("fx", "fy"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(
                    f"PinholeIntrinsics.{name} must be a positive focal length in pixels, got {value}."
                )
        for name in ("width", "height"):
            value = getattr(self, name)
            if not (float(value).is_integer() and value > 0):
                raise ValueError(
                    f"PinholeIntrinsics.{name} must be a positive integer pixel count, got {value}."
                )
        for name, size_name in (("cx", "width"), ("cy", "height")):
            value, size = getattr(self, name), getattr(self, size_name)
            if not (math.isfinite(value) and 0 <= value <= size):
                raise ValueError(
                    f"PinholeIntrinsics.{name} must lie in [0, {size_name}] = [0, {size}] "
                    f"(continuous pixel coordinates), got {value}."
                )
        return self

    def K(self, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> Tensor:
        """The 3x3 matrix ``K`` as a tensor."""
        return intrinsics_matrix(
            torch.tensor(self.fx, dtype=dtype, device=device),
            torch.tensor(self.fy, dtype=dtype, device=device),
            torch.tensor(self.cx, dtype=dtype, device=device),
            torch.tensor(self.cy, dtype=dtype, device=device),
        )

    def resized(self, width: int, height: int) -> PinholeIntrinsics:
        """Intrinsics of the same camera with the image resized to ``width x height``.

        K scales directly (``fx, cx *= width / self.width``; ``fy, cy *= height / self.height``), as in
        gsplat and OpenCV; exact for the pixel-centre-at-``+0.5`` convention.
        """
        sx, sy = width / self.width, height / self.height
        return PinholeIntrinsics(
            self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy, int(width), int(height)
        )

    def scaled(self, factor: float) -> PinholeIntrinsics:
        """Intrinsics for the image resized by ``factor`` (sizes rounded to whole pixels).

        K is scaled by the actual size ratios (see `resized`), which equal ``factor`` whenever
        ``width * factor`` and ``height * factor`` are whole numbers.
        """
        if not (math.isfinite(factor) and factor > 0):
            raise ValueError(f"PinholeIntrinsics.scaled: factor must be positive, got {factor}.")
        width, height = max(1, round(self.width * factor)), max(1, round(self.height * factor))
        return self.resized(width, height)

    @classmethod
    def from_fov(
        cls, fov_x_rad: float, width: int, height: int, fov_y_rad: float | None = None
    ) -> PinholeIntrinsics:
        """Centred intrinsics from the horizontal field of view (square pixels unless ``fov_y_rad``)."""
        for name, fov in (("fov_x_rad", fov_x_rad), ("fov_y_rad", fov_y_rad)):
            if fov is not None and not (0 < fov < math.pi):
                raise ValueError(
                    f"PinholeIntrinsics.from_fov: {name} must lie in (0, pi) radians, got {fov}."
                )
        fx = 0.5 * width / math.tan(0.5 * fov_x_rad)
        fy = fx if fov_y_rad is None else 0.5 * height / math.tan(0.5 * fov_y_rad)
        return cls(fx, fy, 0.5 * width, 0.5 * height, width, height)

    @property
    def fov_x(self) -> float:
        """Horizontal field of view, radians."""
        return 2.0 * math.atan(0.5 * self.width / self.fx)

    @property
    def fov_y(self) -> float:
        """Vertical field of view, radians."""
        return 2.0 * math.atan(0.5 * self.height / self.fy)


def project_points(
    points_cam: Tensor,  # [..., N, 3] camera frame (OpenCV axes)
    K: Tensor,  # [..., 3, 3]
) -> tuple[Tensor, Tensor]:  # uv [..., N, 2] continuous pixels, depth [..., N]
    """Projects camera-frame points to continuous pixel coordinates ``u = fx * x / z + cx``.

    Pixel column ``i`` covers ``[i, i + 1)`` (centre ``i + 0.5``), as in gsplat. ``uv`` is
    meaningless where ``depth <= 0``; callers mask with ``depth``.
    """
    _check_trailing(points_cam, (3,), "points_cam")
    _check_trailing(K, (3, 3), "K")
    if points_cam.dim() < 2:
        raise ValueError(f"points_cam must have shape [..., N, 3], got {list(points_cam.shape)}.")
    homogeneous = points_cam @ K.transpose(-1, -2)
    depth = points_cam[..., 2]
    return homogeneous[..., :2] / depth[..., None], depth


def backproject_depth(
    depth: Tensor,  # [..., H, W] metres along camera +z
    K: Tensor,  # [..., 3, 3]
) -> Tensor:  # [..., H, W, 3] camera frame
    """Lifts every pixel centre ``(col + 0.5, row + 0.5)`` to the camera-frame point at its depth.

    The inverse of `project_points`: projecting the result gives back the pixel centres.
    """
    _check_trailing(K, (3, 3), "K")
    if not isinstance(depth, Tensor) or depth.dim() < 2:
        raise ValueError(
            f"depth must be a tensor of shape [..., H, W], got {getattr(depth, 'shape', depth)}."
        )
    H, W = depth.shape[-2:]
    u = torch.arange(W, dtype=depth.dtype, device=depth.device) + 0.5  # [W]
    v = torch.arange(H, dtype=depth.dtype, device=depth.device)[:, None] + 0.5  # [H, 1]
    fx, fy = K[..., 0, 0, None, None], K[..., 1, 1, None, None]
    cx, cy, skew = K[..., 0, 2, None, None], K[..., 1, 2, None, None], K[..., 0, 1, None, None]
    y = (v - cy) / fy
    x = (u - cx - skew * y) / fx
    x, y = torch.broadcast_tensors(x, y)
    rays = torch.stack([x, y, torch.ones_like(x)], dim=-1)  # [..., H, W, 3]
    return rays * depth[..., None]


def depth_to_world_points(
    depth: Tensor,  # [..., H, W]
    K: Tensor,  # [..., 3, 3]
    c2w: Tensor,  # [..., 4, 4]
) -> Tensor:  # [..., H, W, 3] world frame
    """Lifts every pixel of a depth image to world coordinates (see `backproject_depth`)."""
    _check_trailing(c2w, (4, 4), "c2w")
    points = backproject_depth(depth, K)
    H, W = points.shape[-3:-1]
    return transform_points(c2w, points.flatten(-3, -2)).unflatten(-2, (H, W))
