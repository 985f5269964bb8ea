"""Tests for splatsim.conventions: round trips, known values, scipy agreement, gradients, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import roma
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from splatsim.conventions import (
    PinholeIntrinsics,
    action_to_relative_transform,
    angle_between_rotations,
    apply_action,
    backproject_depth,
    c2w_opencv_to_opengl,
    c2w_opengl_to_opencv,
    c2w_to_viewmat,
    depth_to_world_points,
    euler_xyz_to_rotmat,
    interpolate_pose,
    intrinsics_matrix,
    look_at,
    pose_to_action,
    project_points,
    quat_wxyz_normalize,
    quat_wxyz_to_rotmat,
    quat_wxyz_to_xyzw,
    quat_xyzw_to_wxyz,
    relative_transform,
    rigid_inverse,
    rotmat_to_euler_xyz,
    rotmat_to_quat_wxyz,
    se3_from_rt,
    transform_points,
    viewing_axis,
    viewmat_to_c2w,
)

DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: 1e-5, torch.float64: 1e-9}
BATCHES = [(), (5,), (2, 3)]
HSETTINGS = settings(max_examples=40, deadline=None)

angle = st.floats(-math.pi, math.pi, allow_nan=False)
# Middle angle kept away from gimbal lock so the Euler triple is unique.
middle_angle = st.floats(-math.pi / 2 + 1e-3, math.pi / 2 - 1e-3, allow_nan=False)
coord = st.floats(-2.0, 2.0, allow_nan=False)


def f64(data) -> torch.Tensor:
    """Expected values are written in float64 so that they are exact for either tested dtype."""
    return torch.tensor(data, dtype=torch.float64)


def random_rotmat(batch: tuple[int, ...], dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """Uniform random rotations (normalised Gaussian quaternions, via roma: independent of the module)."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch + (4,), generator=g, dtype=torch.float64)
    return roma.unitquat_to_rotmat(q / q.norm(dim=-1, keepdim=True)).to(dtype)


def random_pose(batch: tuple[int, ...], dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 1000)
    t = torch.randn(batch + (3,), generator=g, dtype=torch.float64).to(dtype)
    return se3_from_rt(random_rotmat(batch, dtype, seed), t)


def assert_close(
    actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, scale: float = 1.0
) -> None:
    torch.testing.assert_close(
        actual, expected.to(actual.dtype), atol=TOL[dtype] * scale, rtol=0.0, check_device=False
    )


# ---------------------------------------------------------------------------------------------------
# Rigid transforms
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
def test_c2w_viewmat_round_trip_matches_matrix_inverse(dtype, batch):
    c2w = random_pose(batch, dtype)
    viewmat = c2w_to_viewmat(c2w)
    assert viewmat.shape == batch + (4, 4) and viewmat.dtype == dtype
    assert_close(viewmat, torch.linalg.inv(c2w.double()), dtype)
    assert_close(viewmat_to_c2w(viewmat), c2w, dtype)
    assert_close(c2w @ viewmat, torch.eye(4, dtype=dtype).expand(batch + (4, 4)), dtype)


def test_viewmat_maps_camera_centre_to_origin_and_forward_to_plus_z():
    c2w = look_at(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
    viewmat = c2w_to_viewmat(c2w)
    p = transform_points(viewmat, torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], dtype=torch.float64))
    assert_close(p[0], torch.zeros(3), torch.float64)
    assert_close(p[1], f64([0.0, 0.0, math.sqrt(14.0)]), torch.float64)


@pytest.mark.parametrize("batch", BATCHES)
def test_rigid_inverse_and_se3_from_rt_broadcast(batch):
    R = random_rotmat(batch, torch.float64)
    t = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64)  # broadcast against R's batch
    T = se3_from_rt(R, t)
    assert T.shape == batch + (4, 4)
    assert_close(T[..., 3, :], f64([0.0, 0.0, 0.0, 1.0]).expand(batch + (4,)), torch.float64)
    assert_close(rigid_inverse(rigid_inverse(T)), T, torch.float64)


@pytest.mark.parametrize("dtype", DTYPES)
def test_transform_points_batched(dtype):
    T = random_pose((2, 3), dtype)
    points = torch.randn(2, 3, 7, 3, dtype=dtype)
    out = transform_points(T, points)
    expected = torch.einsum("...ij,...nj->...ni", T[..., :3, :3], points) + T[..., None, :3, 3]
    assert out.shape == (2, 3, 7, 3)
    assert_close(out, expected, dtype)
    # one pose, many point sets
    assert transform_points(T[0, 0], points).shape == (2, 3, 7, 3)


@pytest.mark.parametrize("batch", BATCHES)
def test_opengl_opencv_round_trip_and_axes(batch):
    c2w = random_pose(batch, torch.float64)
    gl = c2w_opencv_to_opengl(c2w)
    assert_close(c2w_opengl_to_opencv(gl), c2w, torch.float64)
    # same centre, same x axis, camera y and z flipped
    assert_close(gl[..., :3, 3], c2w[..., :3, 3], torch.float64)
    assert_close(gl[..., :3, 0], c2w[..., :3, 0], torch.float64)
    assert_close(gl[..., :3, 1:3], -c2w[..., :3, 1:3], torch.float64)


def test_opengl_identity_camera_looks_down_minus_z():
    # An OpenGL camera with identity pose looks along world -z with its image up along world +y.
    cv = c2w_opengl_to_opencv(torch.eye(4, dtype=torch.float64))
    assert_close(viewing_axis(cv), f64([0.0, 0.0, -1.0]), torch.float64)
    assert_close(cv[:3, 1], f64([0.0, -1.0, 0.0]), torch.float64)  # image down = world -y


# ---------------------------------------------------------------------------------------------------
# Quaternions
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", BATCHES)
def test_quat_order_round_trip_and_identity(batch):
    q = torch.randn(batch + (4,), dtype=torch.float64)
    assert torch.equal(quat_xyzw_to_wxyz(quat_wxyz_to_xyzw(q)), q)
    identity_wxyz = torch.tensor([1.0, 0.0, 0.0, 0.0])
    assert torch.equal(quat_wxyz_to_xyzw(identity_wxyz), torch.tensor([0.0, 0.0, 0.0, 1.0]))
    assert torch.equal(
        quat_xyzw_to_wxyz(torch.tensor([1.0, 2.0, 3.0, 4.0])), torch.tensor([4.0, 1.0, 2.0, 3.0])
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
def test_quat_rotmat_agree_with_scipy_and_round_trip(dtype, batch):
    R = random_rotmat(batch, dtype, seed=3)
    q = rotmat_to_quat_wxyz(R)
    assert q.shape == batch + (4,) and q.dtype == dtype
    assert bool((q[..., 0] >= 0).all())
    assert_close(torch.linalg.vector_norm(q, dim=-1), torch.ones(batch), dtype)
    scipy_xyzw = Rotation.from_matrix(R.double().reshape(-1, 3, 3).numpy()).as_quat()
    scipy_wxyz = torch.from_numpy(np.asarray(scipy_xyzw)[:, [3, 0, 1, 2]]).reshape(batch + (4,))
    sign = torch.where(scipy_wxyz[..., :1] < 0, -1.0, 1.0).to(torch.float64)
    assert_close(q, scipy_wxyz * sign, dtype, scale=10)
    assert_close(quat_wxyz_to_rotmat(q), R, dtype, scale=10)
    # rotmat -> quat is defined up to sign: -q is the same rotation
    assert_close(quat_wxyz_to_rotmat(-q), R, dtype, scale=10)


def test_quat_wxyz_to_rotmat_normalises_first():
    q = torch.tensor([0.5, -0.1, 0.7, 0.2], dtype=torch.float64)
    assert_close(quat_wxyz_to_rotmat(3.7 * q), quat_wxyz_to_rotmat(q), torch.float64)
    assert_close(quat_wxyz_normalize(3.7 * q), q / q.norm(), torch.float64)
    R = quat_wxyz_to_rotmat(3.7 * q)
    assert_close(R @ R.T, torch.eye(3), torch.float64)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_quarter_turns_about_each_axis(axis):
    """90 degrees about x, y, z: quaternion, Euler angles and the matrix agree with scipy's and by hand."""
    half = math.sqrt(0.5)
    q = torch.zeros(4, dtype=torch.float64)
    q[0], q[axis + 1] = half, half
    euler = torch.zeros(3, dtype=torch.float64)
    euler[axis] = math.pi / 2
    expected = {
        0: [[1, 0, 0], [0, 0, -1], [0, 1, 0]],
        1: [[0, 0, 1], [0, 1, 0], [-1, 0, 0]],
        2: [[0, -1, 0], [1, 0, 0], [0, 0, 1]],
    }[axis]
    expected = torch.tensor(expected, dtype=torch.float64)
    assert_close(quat_wxyz_to_rotmat(q), expected, torch.float64)
    assert_close(euler_xyz_to_rotmat(euler), expected, torch.float64)
    assert_close(rotmat_to_quat_wxyz(expected), q, torch.float64)
    assert_close(rotmat_to_euler_xyz(expected), euler, torch.float64)
    assert_close(
        angle_between_rotations(torch.eye(3, dtype=torch.float64), expected), f64(math.pi / 2), torch.float64
    )


def test_identity_known_values():
    eye3 = torch.eye(3, dtype=torch.float64)
    assert_close(rotmat_to_quat_wxyz(eye3), f64([1.0, 0.0, 0.0, 0.0]), torch.float64)
    assert_close(rotmat_to_euler_xyz(eye3), torch.zeros(3), torch.float64)
    assert_close(euler_xyz_to_rotmat(torch.zeros(3, dtype=torch.float64)), eye3, torch.float64)
    assert_close(pose_to_action(torch.eye(4), torch.eye(4)), torch.zeros(6), torch.float32)
    assert_close(action_to_relative_transform(torch.zeros(6)), torch.eye(4), torch.float32)


# ---------------------------------------------------------------------------------------------------
# Euler angles
# ---------------------------------------------------------------------------------------------------


@HSETTINGS
@given(a=angle, b=st.floats(-math.pi / 2, math.pi / 2), c=angle)
def test_euler_to_rotmat_matches_scipy_extrinsic_xyz(a, b, c):
    R = euler_xyz_to_rotmat(torch.tensor([a, b, c], dtype=torch.float64))
    expected = torch.from_numpy(Rotation.from_euler("xyz", [a, b, c]).as_matrix())
    assert_close(R, expected, torch.float64)
    # and it is R = Rz(c) Ry(b) Rx(a)
    Rz = Rotation.from_euler("z", c).as_matrix()
    Ry = Rotation.from_euler("y", b).as_matrix()
    Rx = Rotation.from_euler("x", a).as_matrix()
    assert_close(R, torch.from_numpy(Rz @ Ry @ Rx), torch.float64)


@HSETTINGS
@given(a=angle, b=middle_angle, c=angle)
def test_rotmat_to_euler_matches_scipy_away_from_gimbal_lock(a, b, c):
    R = torch.from_numpy(Rotation.from_euler("xyz", [a, b, c]).as_matrix())
    euler = rotmat_to_euler_xyz(R)
    expected = torch.from_numpy(Rotation.from_matrix(R.numpy()).as_euler("xyz"))
    # Equal as angles (a or c may be +-pi).
    diff = torch.remainder(euler - expected + math.pi, 2 * math.pi) - math.pi
    assert float(diff.abs().max()) < 1e-6
    assert_close(euler_xyz_to_rotmat(euler), R, torch.float64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
def test_euler_round_trip(dtype, batch):
    g = torch.Generator().manual_seed(7)
    euler = (torch.rand(batch + (3,), generator=g, dtype=torch.float64) * 2 - 1) * torch.tensor(
        [math.pi * 0.99, math.pi / 2 * 0.95, math.pi * 0.99], dtype=torch.float64
    )
    euler = euler.to(dtype)
    R = euler_xyz_to_rotmat(euler)
    assert R.shape == batch + (3, 3) and R.dtype == dtype
    back = rotmat_to_euler_xyz(R)
    assert back.shape == batch + (3,)
    assert_close(back, euler, dtype, scale=20)  # angles are less well conditioned than the matrix
    assert_close(euler_xyz_to_rotmat(back), R, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b", [math.pi / 2, -math.pi / 2, math.pi / 2 - 1e-7, -math.pi / 2 + 1e-4])
def test_euler_at_gimbal_lock_is_finite_and_reproduces_rotation(dtype, b):
    R = euler_xyz_to_rotmat(torch.tensor([0.3, b, -0.7], dtype=torch.float64)).to(dtype).requires_grad_(True)
    euler = rotmat_to_euler_xyz(R)
    assert bool(torch.isfinite(euler).all())
    assert abs(float(euler[1].detach()) - b) < 1e-3
    assert_close(euler_xyz_to_rotmat(euler.detach()), R.detach(), dtype, scale=2)
    euler.sum().backward()
    assert bool(torch.isfinite(R.grad).all())


# ---------------------------------------------------------------------------------------------------
# Actions
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
def test_action_round_trip(dtype, batch):
    T_cur = random_pose(batch, dtype, seed=1)
    T_next = random_pose(batch, dtype, seed=2)
    action = pose_to_action(T_cur, T_next)
    assert action.shape == batch + (6,) and action.dtype == dtype
    assert_close(apply_action(T_cur, action), T_next, dtype, scale=10)
    assert_close(action_to_relative_transform(action), relative_transform(T_cur, T_next), dtype, scale=10)
    assert_close(pose_to_action(T_cur, apply_action(T_cur, action)), action, dtype, scale=50)


@HSETTINGS
@given(
    e=st.tuples(angle, middle_angle, angle),
    t=st.tuples(coord, coord, coord),
    seed=st.integers(0, 2**16),
)
def test_action_encode_decode_property(e, t, seed):
    T_cur = random_pose((), torch.float64, seed=seed)
    action = torch.tensor([*e, *t], dtype=torch.float64)
    T_next = apply_action(T_cur, action)
    assert_close(apply_action(T_cur, pose_to_action(T_cur, T_next)), T_next, torch.float64)
    decoded = pose_to_action(T_cur, T_next)
    assert_close(euler_xyz_to_rotmat(decoded[:3]), euler_xyz_to_rotmat(action[:3]), torch.float64)
    assert_close(decoded[3:], action[3:], torch.float64)


def test_action_is_expressed_in_current_camera_frame():
    # Moving 10 cm along the current camera's viewing axis is the action (0, 0, 0, 0, 0, 0.1),
    # whatever the camera's orientation in the world.
    T_cur = look_at(torch.tensor([1.0, 1.0, 0.5], dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
    T_next = T_cur.clone()
    T_next[:3, 3] += 0.1 * viewing_axis(T_cur)
    expected = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.1], dtype=torch.float64)
    assert_close(pose_to_action(T_cur, T_next), expected, torch.float64)
    # A yaw about the camera's own z axis shows up as the third Euler angle only.
    Rz = euler_xyz_to_rotmat(torch.tensor([0.0, 0.0, 0.2], dtype=torch.float64))
    T_roll = T_cur.clone()
    T_roll[:3, :3] = T_cur[:3, :3] @ Rz
    assert_close(pose_to_action(T_cur, T_roll), f64([0.0, 0.0, 0.2, 0.0, 0.0, 0.0]), torch.float64)


# ---------------------------------------------------------------------------------------------------
# look_at, viewing axis, angles, interpolation
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_look_at_known_value(dtype):
    c2w = look_at(torch.tensor([1.0, 0.0, 0.0], dtype=dtype), torch.zeros(3, dtype=dtype))
    assert c2w.dtype == dtype
    assert_close(viewing_axis(c2w), f64([-1.0, 0.0, 0.0]), dtype)
    assert_close(c2w[:3, 1], f64([0.0, 0.0, -1.0]), dtype)  # image down = world down
    assert_close(c2w[:3, 0], f64([0.0, 1.0, 0.0]), dtype)  # right-handed: x = y cross z
    assert_close(c2w[:3, 3], f64([1.0, 0.0, 0.0]), dtype)


@pytest.mark.parametrize("batch", BATCHES)
def test_look_at_batched_is_proper_rotation(batch):
    g = torch.Generator().manual_seed(5)
    eye = torch.randn(batch + (3,), generator=g, dtype=torch.float64)
    target = torch.randn(batch + (3,), generator=g, dtype=torch.float64)
    c2w = look_at(eye, target)
    assert c2w.shape == batch + (4, 4)
    R = c2w[..., :3, :3]
    assert_close(R.transpose(-1, -2) @ R, torch.eye(3).expand(batch + (3, 3)), torch.float64)
    assert_close(torch.linalg.det(R), torch.ones(batch), torch.float64)
    direction = (target - eye) / (target - eye).norm(dim=-1, keepdim=True)
    assert_close(viewing_axis(c2w), direction, torch.float64)
    assert bool((R[..., 2, 1] <= 1e-12).all())  # camera y (image down) never points up
    # the target projects to the image centre
    K = PinholeIntrinsics.from_fov(1.0, 64, 48).K()
    uv, depth = project_points(transform_points(c2w_to_viewmat(c2w), target[..., None, :]), K)
    assert_close(uv[..., 0, :], f64([32.0, 24.0]).expand(batch + (2,)), torch.float64)
    assert bool((depth > 0).all())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("eye", [(0.0, 0.0, 2.0), (0.0, 0.0, -3.0), (0.0, 1e-9, 1.0)])
def test_look_at_up_parallel_to_view_is_finite_and_deterministic(dtype, eye):
    eye = torch.tensor(eye, dtype=dtype)
    c2w = look_at(eye, torch.zeros(3, dtype=dtype))
    assert bool(torch.isfinite(c2w).all())
    R = c2w[:3, :3]
    assert_close(R.T @ R, torch.eye(3), dtype)
    assert_close(viewing_axis(c2w), -eye / eye.norm(), dtype)
    assert torch.equal(c2w, look_at(eye, torch.zeros(3, dtype=dtype)))


def test_look_at_degenerate_eye_equals_target_raises():
    p = torch.tensor([0.5, -1.0, 2.0])
    with pytest.raises(ValueError, match="eye and target coincide"):
        look_at(p, p.clone())
    with pytest.raises(ValueError, match="up must be a non-zero"):
        look_at(p, torch.zeros(3), up=(0.0, 0.0, 0.0))


def test_angle_between_rotations_known_values_and_precision():
    eye3 = torch.eye(3, dtype=torch.float64)
    for theta in [0.0, 1e-8, 0.3, math.pi / 2, math.pi - 1e-6, math.pi]:
        R = euler_xyz_to_rotmat(torch.tensor([0.0, 0.0, theta], dtype=torch.float64))
        assert abs(float(angle_between_rotations(eye3, R)) - theta) < 1e-9
    R0, R1 = random_rotmat((2, 3), torch.float64, 1), random_rotmat((2, 3), torch.float64, 2)
    expected = roma.rotmat_geodesic_distance(R0, R1)
    assert_close(angle_between_rotations(R0, R1), expected, torch.float64, scale=100)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
def test_interpolate_pose_endpoints_and_midpoint(dtype, batch):
    T0, T1 = random_pose(batch, dtype, 11), random_pose(batch, dtype, 12)
    assert_close(interpolate_pose(T0, T1, 0.0), T0, dtype, scale=0.1)
    assert_close(interpolate_pose(T0, T1, 1.0), T1, dtype, scale=0.1)
    mid = interpolate_pose(T0, T1, 0.5)
    assert mid.shape == batch + (4, 4) and mid.dtype == dtype
    assert_close(mid[..., :3, 3], 0.5 * (T0[..., :3, 3] + T1[..., :3, 3]), dtype)
    total = angle_between_rotations(T0[..., :3, :3], T1[..., :3, :3])
    assert_close(angle_between_rotations(T0[..., :3, :3], mid[..., :3, :3]), total / 2, dtype, scale=10)
    assert_close(angle_between_rotations(mid[..., :3, :3], T1[..., :3, :3]), total / 2, dtype, scale=10)


def test_interpolate_pose_tensor_t_broadcasts_and_takes_shortest_arc():
    T0 = torch.eye(4, dtype=torch.float64)
    T1 = se3_from_rt(
        euler_xyz_to_rotmat(torch.tensor([0.0, 0.0, 1.5 * math.pi], dtype=torch.float64)),
        torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64),
    )
    t = torch.linspace(0, 1, 5, dtype=torch.float64)
    out = interpolate_pose(T0, T1, t)
    assert out.shape == (5, 4, 4)
    # a 270 degree turn is a -90 degree turn: half way is -45 degrees
    assert_close(rotmat_to_euler_xyz(out[2, :3, :3]), f64([0.0, 0.0, -math.pi / 4]), torch.float64)
    assert_close(out[:, 0, 3], t, torch.float64)
    batched = interpolate_pose(
        random_pose((3,), torch.float64), random_pose((3,), torch.float64, 1), t[:, None]
    )
    assert batched.shape == (5, 3, 4, 4)


# ---------------------------------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_gradients_finite_at_zero_angle(dtype):
    R = torch.eye(3, dtype=dtype, requires_grad=True)
    rotmat_to_euler_xyz(R).sum().backward()
    assert bool(torch.isfinite(R.grad).all())

    euler = torch.zeros(3, dtype=dtype, requires_grad=True)
    jac = torch.autograd.functional.jacobian(lambda e: rotmat_to_euler_xyz(euler_xyz_to_rotmat(e)), euler)
    assert_close(jac, torch.eye(3), dtype)

    T_cur = torch.eye(4, dtype=dtype, requires_grad=True)
    T_next = torch.eye(4, dtype=dtype, requires_grad=True)
    pose_to_action(T_cur, T_next).square().sum().backward()
    assert bool(torch.isfinite(T_cur.grad).all() and torch.isfinite(T_next.grad).all())

    T = random_pose((), dtype, 4)
    T0, T1 = T.clone().requires_grad_(True), T.clone().requires_grad_(True)
    t = torch.tensor(0.3, dtype=dtype, requires_grad=True)
    out = interpolate_pose(T0, T1, t)
    assert_close(out, T, dtype)
    out.sum().backward()
    for x in (T0, T1, t):
        assert bool(torch.isfinite(x.grad).all())

    R0 = torch.eye(3, dtype=dtype, requires_grad=True)
    angle_between_rotations(R0, torch.eye(3, dtype=dtype)).backward()
    assert bool(torch.isfinite(R0.grad).all())


def test_gradcheck_float64():
    e = torch.tensor([0.3, -0.4, 1.1], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(euler_xyz_to_rotmat, (e,))
    R = euler_xyz_to_rotmat(e.detach()).requires_grad_(True)
    assert torch.autograd.gradcheck(rotmat_to_euler_xyz, (R,))
    T0 = random_pose((2,), torch.float64, 1).requires_grad_(True)
    T1 = random_pose((2,), torch.float64, 2).requires_grad_(True)
    t = torch.tensor([0.25, 0.8], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(interpolate_pose, (T0, T1, t))
    assert torch.autograd.gradcheck(pose_to_action, (T0, T1))
    eye = torch.tensor([1.0, 0.5, 0.3], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p: look_at(p, torch.zeros(3, dtype=torch.float64)), (eye,))


# ---------------------------------------------------------------------------------------------------
# Intrinsics, projection, back-projection
# ---------------------------------------------------------------------------------------------------


def test_intrinsics_matrix_known_and_broadcast():
    K = intrinsics_matrix(500.0, 400.0, 320.0, 240.0)
    assert K.dtype == torch.float64
    assert torch.equal(K, torch.tensor([[500.0, 0, 320], [0, 400, 240], [0, 0, 1]], dtype=torch.float64))
    fx = torch.tensor([100.0, 200.0], dtype=torch.float32)
    Kb = intrinsics_matrix(fx, fx, 32.0, 24.0)
    assert Kb.shape == (2, 3, 3) and Kb.dtype == torch.float32
    assert torch.equal(Kb[1, 0, 0], torch.tensor(200.0))


def test_pinhole_intrinsics_K_scaled_resized_from_fov():
    intr = PinholeIntrinsics(fx=600.0, fy=610.0, cx=320.0, cy=240.0, width=640, height=480)
    K = intr.K()
    assert K.dtype == torch.float64 and K.shape == (3, 3)
    assert intr.K(torch.float32).dtype == torch.float32
    half = intr.scaled(0.5)
    assert (half.width, half.height) == (320, 240)
    assert (half.fx, half.fy, half.cx, half.cy) == (300.0, 305.0, 160.0, 120.0)  # K scaled directly
    assert intr.resized(1280, 960) == intr.scaled(2.0)
    with pytest.raises(ValueError, match="factor"):
        intr.scaled(0.0)

    square = PinholeIntrinsics.from_fov(math.pi / 2, 100, 80)
    assert math.isclose(square.fx, 50.0) and math.isclose(square.fy, 50.0)
    assert (square.cx, square.cy) == (50.0, 40.0)
    assert math.isclose(square.fov_x, math.pi / 2)
    assert math.isclose(PinholeIntrinsics.from_fov(1.0, 100, 80, fov_y_rad=0.7).fov_y, 0.7)
    with pytest.raises(ValueError, match="fov_x_rad"):
        PinholeIntrinsics.from_fov(math.pi, 100, 80)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("fx", 0.0),
        ("fy", -1.0),
        ("fx", math.nan),
        ("width", 0),
        ("height", -5),
        ("cx", -0.1),
        ("cx", 641.0),
        ("cy", 481.0),
        ("width", math.nan),
    ],
)
def test_pinhole_intrinsics_validation_names_field_and_value(field, value):
    kwargs = dict(fx=600.0, fy=600.0, cx=320.0, cy=240.0, width=640, height=480)
    kwargs[field] = value
    with pytest.raises(ValueError, match=rf"PinholeIntrinsics\.{field} .*{value}"):
        PinholeIntrinsics(**kwargs)


def test_pinhole_intrinsics_validate_returns_self():
    # The principal point may lie on the image border.
    intr = PinholeIntrinsics(fx=1.0, fy=1.0, cx=0.0, cy=2.0, width=4, height=2)
    assert intr.validate() is intr


@pytest.mark.parametrize("dtype", DTYPES)
def test_point_straight_ahead_projects_to_principal_point(dtype):
    K = intrinsics_matrix(torch.tensor(500.0, dtype=dtype), torch.tensor(400.0, dtype=dtype), 321.5, 239.25)
    uv, depth = project_points(torch.tensor([[0.0, 0.0, 2.5], [0.1, -0.2, 2.0]], dtype=dtype), K)
    assert_close(uv[0], f64([321.5, 239.25]), dtype, scale=100)
    assert_close(uv[1], f64([321.5 + 25.0, 239.25 - 40.0]), dtype, scale=100)
    assert_close(depth, f64([2.5, 2.0]), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
def test_backproject_then_project_returns_pixel_centres(dtype, batch):
    H, W = 6, 8
    K = PinholeIntrinsics(fx=7.0, fy=6.0, cx=3.7, cy=3.1, width=W, height=H).K(dtype)
    g = torch.Generator().manual_seed(9)
    depth = (torch.rand(batch + (H, W), generator=g, dtype=torch.float64) + 0.5).to(dtype)
    points = backproject_depth(depth, K)
    assert points.shape == batch + (H, W, 3) and points.dtype == dtype
    assert_close(points[..., 2], depth, dtype)
    uv, z = project_points(points.flatten(-3, -2), K)
    rows, cols = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    centres = torch.stack([cols, rows], dim=-1).to(torch.float64).reshape(H * W, 2) + 0.5
    assert_close(uv, centres.expand(batch + (H * W, 2)), dtype, scale=10)
    assert_close(z, depth.flatten(-2), dtype)


def test_backproject_pixel_at_principal_point_lies_on_axis():
    # With cx, cy at a pixel centre, that pixel back-projects onto the optical axis.
    K = intrinsics_matrix(10.0, 10.0, 2.5, 1.5)
    points = backproject_depth(torch.full((4, 5), 3.0, dtype=torch.float64), K)
    assert_close(points[1, 2], f64([0.0, 0.0, 3.0]), torch.float64)


@pytest.mark.parametrize("dtype", DTYPES)
def test_depth_to_world_points_consistent_with_pose(dtype):
    H, W = 5, 7
    K = PinholeIntrinsics.from_fov(1.2, W, H).K(dtype)
    c2w = random_pose((2,), dtype, 21)
    depth = torch.full((2, H, W), 1.5, dtype=dtype)
    world = depth_to_world_points(depth, K, c2w)
    assert world.shape == (2, H, W, 3)
    back = transform_points(c2w_to_viewmat(c2w), world.flatten(-3, -2))
    assert_close(back.unflatten(-2, (H, W)), backproject_depth(depth, K), dtype, scale=10)


# ---------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fn", "args", "message"),
    [
        (c2w_to_viewmat, (torch.eye(3),), r"c2w must have shape \[\.\.\., 4, 4\], got \[3, 3\]"),
        (quat_wxyz_to_xyzw, (torch.zeros(3),), r"q must have shape \[\.\.\., 4\]"),
        (rotmat_to_euler_xyz, (torch.eye(4),), r"R must have shape \[\.\.\., 3, 3\]"),
        (action_to_relative_transform, (torch.zeros(7),), r"action must have shape \[\.\.\., 6\]"),
        (transform_points, (torch.eye(4), torch.zeros(3)), r"points must have shape \[\.\.\., N, 3\]"),
        (project_points, (torch.zeros(4, 2), torch.eye(3)), r"points_cam must have shape"),
        (
            backproject_depth,
            (torch.zeros(5), torch.eye(3)),
            r"depth must be a tensor of shape \[\.\.\., H, W\]",
        ),
        (c2w_to_viewmat, (np.eye(4),), r"c2w must be a torch.Tensor"),
        (rigid_inverse, (torch.eye(3),), r"T must have shape"),
    ],
)
def test_bad_shapes_raise_value_error(fn, args, message):
    with pytest.raises(ValueError, match=message):
        fn(*args)
