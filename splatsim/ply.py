"""Read and write Gaussian scenes as standard 3DGS PLY files (plus a per-Gaussian `label`).

The layout is that of the original INRIA 3DGS code and gsplat's ``export_splats(format="ply")``,
so splat viewers open our files and we open theirs. One ``vertex`` element, binary little endian,
these float32 properties in this order:

    x y z [nx ny nz] f_dc_0 f_dc_1 f_dc_2 f_rest_0 .. f_rest_{3(K-1)-1} opacity
    scale_0 scale_1 scale_2 rot_0 rot_1 rot_2 rot_3 [label]

- ``f_dc_c`` is ``sh[:, 0, c]``; ``f_rest`` is channel-major: ``f_rest_{c*(K-1) + k-1} = sh[:, k, c]``
  for k = 1..K-1 (all red coefficients, then green, then blue), with K-1 in {0, 3, 8, 15}.
- ``opacity`` is the logit, ``scale_*`` are natural logs, ``rot_*`` is the wxyz quaternion (not
  necessarily unit length) — i.e. exactly the stored fields of :class:`GaussianScene`.
- ``nx ny nz`` (zeros) are written by INRIA 3DGS but not by gsplat; we omit them by default (the
  property list then equals gsplat's) and accept files with or without them.
- ``label`` (float32 holding 0 background, 1 object, 2 hand) is our addition at the end. It is a float,
  not a uchar, because some splat viewers (gradio's ``Model3D`` among them) refuse any non-float vertex
  property; files with an integer ``label`` are read too.
  A file without it reads as all background.

Reading never executes or unpickles anything: the header is parsed as text and the body as plain
numeric arrays (plyfile + numpy, no object dtypes).
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import numpy as np
import torch
from plyfile import PlyData, PlyElement, PlyListProperty, PlyParseError

from splatsim.scene import LABEL_NAMES, NUM_LABELS, GaussianScene, num_sh_coeffs

POSITION_PROPERTIES = ("x", "y", "z")
NORMAL_PROPERTIES = ("nx", "ny", "nz")
DC_PROPERTIES = ("f_dc_0", "f_dc_1", "f_dc_2")
OPACITY_PROPERTY = "opacity"
SCALE_PROPERTIES = ("scale_0", "scale_1", "scale_2")
ROTATION_PROPERTIES = ("rot_0", "rot_1", "rot_2", "rot_3")
LABEL_PROPERTY = "label"
REQUIRED_PROPERTIES = (
    *POSITION_PROPERTIES,
    *DC_PROPERTIES,
    OPACITY_PROPERTY,
    *SCALE_PROPERTIES,
    *ROTATION_PROPERTIES,
)
"""Properties every 3DGS PLY must have; f_rest_* depend on the SH degree (none for degree 0)."""

_F_REST_COUNTS = {3 * (num_sh_coeffs(d) - 1): d for d in range(4)}  # {0: 0, 9: 1, 24: 2, 45: 3}
_F_REST_RE = re.compile(r"^f_rest_(\d+)$")
_LABEL_COMMENT = "splatsim: label 0 background, 1 object, 2 hand; opacity logit, scale log, rot wxyz"


def ply_property_names(sh_degree: int, *, normals: bool = False, label: bool = True) -> list[str]:
    """The vertex property names, in file order, that `write_ply` writes for ``sh_degree``."""
    rest = [f"f_rest_{i}" for i in range(3 * (num_sh_coeffs(sh_degree) - 1))]
    names = [*POSITION_PROPERTIES, *(NORMAL_PROPERTIES if normals else ())]
    names += [*DC_PROPERTIES, *rest, OPACITY_PROPERTY, *SCALE_PROPERTIES, *ROTATION_PROPERTIES]
    return names + ([LABEL_PROPERTY] if label else [])


def _scene_to_vertex_array(scene: GaussianScene, normals: bool, label: bool) -> np.ndarray:
    """Pack a scene into the structured numpy array of the vertex element."""
    s = scene.detach().to(device="cpu", dtype=torch.float32)
    n, k = s.num_gaussians, s.sh.shape[1]
    rest = s.sh[:, 1:, :].transpose(1, 2).reshape(n, 3 * (k - 1))  # channel-major
    columns = [s.means]
    if normals:
        columns.append(torch.zeros(n, 3))
    columns += [s.sh[:, 0, :], rest, s.logit_opacities[:, None], s.log_scales, s.quats]
    floats = torch.cat(columns, dim=1).numpy()
    names = ply_property_names(s.sh_degree, normals=normals, label=label)
    dtype = [(name, "<f4") for name in names[: floats.shape[1]]]
    if label:
        dtype.append((LABEL_PROPERTY, "<f4"))
    vertex = np.empty(n, dtype=dtype)
    for i, (name, _) in enumerate(dtype[: floats.shape[1]]):
        vertex[name] = floats[:, i]
    if label:
        vertex[LABEL_PROPERTY] = s.labels.numpy().astype(np.float32)
    return vertex


def write_ply(
    scene: GaussianScene, path: str | os.PathLike, *, normals: bool = False, label: bool = True
) -> None:
    """Write ``scene`` as a binary little-endian 3DGS PLY, atomically.

    The data go to a temporary file in the same directory, which then replaces ``path``
    (``os.replace``), so readers never see a partial file. Float fields are written as float32:
    a float32 scene round-trips bit for bit, a float64 one is rounded.

    Args:
        scene: The scene; it is validated first (source: the path) so no invalid file is written.
        path: Destination file; its directory must exist.
        normals: Also write zero ``nx ny nz`` after ``z`` (the INRIA layout). Default off, like gsplat.
        label: Write the ``label`` property (default). Without it the file reads back as background.
    """
    path = Path(path)
    scene.validate(source=str(path))
    vertex = _scene_to_vertex_array(scene, normals=normals, label=label)
    ply = PlyData(
        [PlyElement.describe(vertex, "vertex")],
        text=False,
        byte_order="<",
        comments=[_LABEL_COMMENT] if label else [],
    )
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
    try:
        with os.fdopen(fd, "wb") as f:
            ply.write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _expected_layout() -> str:
    return (
        "expected a 3DGS PLY vertex element with float properties "
        + " ".join(REQUIRED_PROPERTIES[:6])
        + " f_rest_0.. (0, 9, 24 or 45 of them) opacity scale_0..2 rot_0..3, and optionally nx ny nz "
        "and an integer 'label'"
    )


def read_ply(path: str | os.PathLike) -> GaussianScene:
    """Read a 3DGS PLY file (ours, gsplat's or INRIA's) into a float32 CPU scene.

    Accepts binary (either byte order) and ASCII files, with or without ``nx ny nz``, with float or
    double properties (converted to float32), and ignores unknown properties and other elements. A
    file without ``label`` reads as all background (label 0).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: naming the file, and where it applies the property and the first bad row, if
            the file is not a readable PLY (not a PLY, truncated), lacks required properties, has an
            unknown SH layout, non-float values where floats are expected, non-integer or
            out-of-range labels, non-finite values, or zero-norm quaternions.
    """
    path = Path(path)
    with open(path, "rb") as f:
        try:
            # Copy-on-write memory map: fast for large files, never writes back. plyfile checks that
            # the file is long enough before mapping, so a truncated file is a parse error.
            ply = PlyData.read(f, mmap="c")
        except (PlyParseError, ValueError, TypeError, EOFError, UnicodeDecodeError, MemoryError) as exc:
            raise ValueError(f"{path}: not a readable PLY file ({type(exc).__name__}: {exc})") from exc
        return _vertex_to_scene(ply, path)


def _vertex_to_scene(ply: PlyData, path: Path) -> GaussianScene:
    names = [e.name for e in ply.elements]
    if "vertex" not in names:
        raise ValueError(f"{path}: no 'vertex' element (elements: {names}); {_expected_layout()}")
    vertex = ply["vertex"]
    props = {p.name: p for p in vertex.properties}

    missing = [name for name in REQUIRED_PROPERTIES if name not in props]
    if missing:
        hint = ""
        if "packed_position" in props:
            hint = " (this looks like a compressed splat PLY; decompress it to the standard layout first)"
        raise ValueError(f"{path}: missing vertex properties {missing}{hint}; {_expected_layout()}")

    rest_indices = sorted(int(m.group(1)) for name in props if (m := _F_REST_RE.match(name)))
    if len(rest_indices) not in _F_REST_COUNTS:
        raise ValueError(
            f"{path}: unknown SH layout: {len(rest_indices)} f_rest_* properties; expected 0, 9, 24 or 45 "
            f"(SH degree 0, 1, 2 or 3)"
        )
    if rest_indices != list(range(len(rest_indices))):
        gaps = sorted(set(range(len(rest_indices))) - set(rest_indices))
        raise ValueError(
            f"{path}: unknown SH layout: f_rest_* indices are not contiguous from 0 (missing "
            f"{['f_rest_' + str(i) for i in gaps]}); expected f_rest_0..f_rest_{len(rest_indices) - 1}"
        )
    sh_degree = _F_REST_COUNTS[len(rest_indices)]
    rest_names = [f"f_rest_{i}" for i in rest_indices]
    float_names = [*REQUIRED_PROPERTIES, *rest_names]
    data = vertex.data

    def column(name: str) -> np.ndarray:
        prop = props[name]
        if isinstance(prop, PlyListProperty) or data.dtype[name].kind != "f":
            kind = "a list" if isinstance(prop, PlyListProperty) else f"'{data.dtype[name]}'"
            raise ValueError(f"{path}: vertex property '{name}' is {kind}; expected a float (float32) scalar")
        values = np.asarray(data[name]).astype(np.float32)  # a copy, detached from the file map
        bad = ~np.isfinite(values)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{path}: vertex property '{name}' has non-finite value {values[row]} at row {row}; "
                f"expected finite values"
            )
        return values

    cols = {name: column(name) for name in float_names}
    n = vertex.count

    def stack(names: tuple[str, ...] | list[str]) -> torch.Tensor:
        if not names:
            return torch.zeros(n, 0)
        return torch.from_numpy(np.stack([cols[name] for name in names], axis=1))

    k = num_sh_coeffs(sh_degree)
    dc = stack(DC_PROPERTIES)[:, None, :]
    rest = stack(rest_names).reshape(n, 3, k - 1).transpose(1, 2)  # channel-major -> [N, K-1, 3]
    sh = torch.cat([dc, rest], dim=1).contiguous()

    if LABEL_PROPERTY in props:
        prop = props[LABEL_PROPERTY]
        if isinstance(prop, PlyListProperty) or data.dtype[LABEL_PROPERTY].kind not in "iuf":
            raise ValueError(
                f"{path}: vertex property '{LABEL_PROPERTY}' is {data.dtype[LABEL_PROPERTY]}; expected a "
                f"number (float or integer) in 0..{NUM_LABELS - 1}"
            )
        raw = np.asarray(data[LABEL_PROPERTY])
        bad = ~np.isfinite(raw) | (raw < 0) | (raw >= NUM_LABELS) | (raw != np.round(raw))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{path}: vertex property '{LABEL_PROPERTY}' has value {raw[row]} at row {row}; expected "
                f"0 ({LABEL_NAMES[0]}), 1 ({LABEL_NAMES[1]}) or 2 ({LABEL_NAMES[2]})"
            )
        labels = torch.from_numpy(raw.astype(np.int64))
    else:
        labels = torch.zeros(n, dtype=torch.int64)

    scene = GaussianScene(
        means=stack(POSITION_PROPERTIES),
        quats=stack(ROTATION_PROPERTIES),
        log_scales=stack(SCALE_PROPERTIES),
        logit_opacities=torch.from_numpy(cols[OPACITY_PROPERTY]),
        sh=sh,
        labels=labels,
    )
    return scene.validate(source=str(path))
