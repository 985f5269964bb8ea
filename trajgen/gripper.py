"""Parallel-jaw gripper model: dimensions, grasp frame and collision volume (Robotiq 2F-85 by default).

Grasp frame (ARCHITECTURE.md, Contact-GraspNet's convention)
    +z is the approach axis (from the gripper toward the object), +x the finger-closing axis, +y = z x x.
    The origin is the gripper's base on the approach axis (where it mounts on the wrist), as in
    Contact-GraspNet and 6-DOF GraspNet, whose grasp poses are the gripper base and whose contacts lie
    ``gripper_depth`` (0.1034 m for their Panda hand) ahead of it. For this gripper the contacts'
    midpoint (the *grasp centre*) lies ``depth`` ahead of the origin, between the finger pads, which
    span ``z`` in ``[tip_depth - finger_length, tip_depth]``.

    With s = 0.3 m (Eq. 7) the pre-grasp origin is then ``s + depth`` (~0.44 m) from the grasp centre,
    which is the 0.35-0.45 m that the paper's simulated evaluation counts as a reached pre-grasp.

Collision volume
    A union of boxes in the grasp frame, mirror-symmetric about the y-z plane, so every box is given
    by bounds on ``|x|``, ``y`` and ``z`` (``lo``/``hi`` arrays whose x entries bound ``|x|``):

    - ``body``: the housing and finger linkages, ``|x| <= body_width/2``, ``|y| <= body_thickness/2``,
      ``0 <= z <= palm`` (``palm = tip_depth - finger_length``);
    - ``fingers``: ``opening/2 <= |x| <= opening/2 + finger_thickness``, ``|y| <= finger_breadth/2``,
      ``palm <= z <= tip_depth``;
    - ``closing``: the region between the open fingers, ``|x| <= opening/2``, same y and z as the
      fingers. The object belongs there; a hand point there would be pinched.

    The swept volume of the straight approach from the pre-grasp pose (``s`` back along -z) extends
    every box's lower z bound by ``-s``.

Pure numpy; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "BOX_BODY",
    "BOX_CLOSING",
    "BOX_FINGERS",
    "GRIPPERS",
    "GripperModel",
    "gripper_by_name",
    "robotiq_2f_85",
    "robotiq_2f_140",
]

BOX_BODY, BOX_FINGERS, BOX_CLOSING = 0, 1, 2
"""Indices of the boxes returned by `GripperModel.boxes`."""


@dataclass(frozen=True)
class GripperModel:
    """A parallel-jaw gripper; the defaults approximate a Robotiq 2F-85 (85 mm stroke)."""

    name: str = "robotiq_2f_85"
    """Label written to grasps.json."""
    max_width: float = 0.085
    """Stroke: the widest opening between the finger pads (metres)."""
    depth: float = 0.135
    """Distance along +z from the origin (gripper base) to the grasp centre between the finger pads, the
    nominal contact depth (Contact-GraspNet's ``gripper_depth``)."""
    tip_depth: float = 0.150
    """Distance along +z from the origin to the fingertips."""
    finger_length: float = 0.045
    """Length of the finger pads along +z, from the palm to the fingertips."""
    finger_thickness: float = 0.010
    """Thickness of each finger along the closing axis x."""
    finger_breadth: float = 0.022
    """Breadth of the finger pads along y."""
    body_width: float = 0.095
    """Extent of the housing and finger linkages along the closing axis x."""
    body_thickness: float = 0.065
    """Extent of the housing along y."""

    def __post_init__(self) -> None:
        for name in (
            "max_width",
            "depth",
            "tip_depth",
            "finger_length",
            "finger_thickness",
            "finger_breadth",
            "body_width",
            "body_thickness",
        ):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"GripperModel.{name} = {value}; expected a positive length in metres.")
        if not self.palm < self.depth <= self.tip_depth:
            raise ValueError(
                f"GripperModel: depth = {self.depth} must lie on the finger pads, in "
                f"(tip_depth - finger_length, tip_depth] = ({self.palm:.4f}, {self.tip_depth:.4f}]."
            )

    @property
    def palm(self) -> float:
        """z of the palm, where the finger pads start."""
        return self.tip_depth - self.finger_length

    def opening_for(
        self,
        widths: np.ndarray,  # [...] contact widths (metres)
        margin: float,
    ) -> np.ndarray:  # [...]
        """The opening used to approach an object ``widths`` wide: ``width + 2 margin``, capped at the stroke."""
        return np.minimum(np.asarray(widths, np.float64) + 2.0 * margin, self.max_width)

    def boxes(
        self,
        openings: np.ndarray,  # [C] opening between the finger pads per grasp
        sweep: float = 0.0,
    ) -> tuple[np.ndarray, np.ndarray]:  # lo [C, 3, 3], hi [C, 3, 3]
        """The body, fingers and closing-region boxes per grasp (x bounds on ``|x|``), in the grasp frame.

        Args:
            openings: The finger opening of each grasp (metres).
            sweep: Extends every box back along -z by this much: the volume swept by the straight
                approach from ``sweep`` metres back (the pre-grasp pose at ``sweep = s``).
        """
        o = np.atleast_1d(np.asarray(openings, np.float64))
        n = o.shape[0]
        lo = np.empty((n, 3, 3))
        hi = np.empty((n, 3, 3))
        half_o = o / 2
        lo[:, BOX_BODY] = [0.0, -self.body_thickness / 2, 0.0]
        hi[:, BOX_BODY] = [self.body_width / 2, self.body_thickness / 2, self.palm]
        lo[:, BOX_FINGERS, 0] = half_o
        hi[:, BOX_FINGERS, 0] = half_o + self.finger_thickness
        lo[:, BOX_CLOSING, 0] = 0.0
        hi[:, BOX_CLOSING, 0] = half_o
        for b in (BOX_FINGERS, BOX_CLOSING):
            lo[:, b, 1:] = [-self.finger_breadth / 2, self.palm]
            hi[:, b, 1:] = [self.finger_breadth / 2, self.tip_depth]
        lo[:, :, 2] -= sweep
        return lo, hi

    def outline(self, opening: float) -> np.ndarray:  # [K, 2, 3] line segments in the grasp frame
        """Line segments drawing the gripper (palm bar, two fingers, stem) for pictures."""
        h = opening / 2
        p, t = self.palm, self.tip_depth
        return np.array(
            [
                [[0.0, 0.0, 0.0], [0.0, 0.0, p]],  # stem from the base to the palm
                [[-h, 0.0, p], [h, 0.0, p]],  # palm bar
                [[-h, 0.0, p], [-h, 0.0, t]],  # fingers
                [[h, 0.0, p], [h, 0.0, t]],
            ]
        )


def robotiq_2f_85() -> GripperModel:
    """Robotiq 2F-85: 85 mm stroke (the paper's gripper, and the default)."""
    return GripperModel()


def robotiq_2f_140() -> GripperModel:
    """Robotiq 2F-140: 140 mm stroke, longer fingers; for objects wider than the 2F-85 opens."""
    return GripperModel(
        name="robotiq_2f_140",
        max_width=0.140,
        depth=0.175,
        tip_depth=0.195,
        finger_length=0.065,
        finger_thickness=0.012,
        finger_breadth=0.027,
        body_width=0.155,
        body_thickness=0.065,
    )


GRIPPERS = {"robotiq_2f_85": robotiq_2f_85, "robotiq_2f_140": robotiq_2f_140}
"""The built-in gripper models by name (the name written to grasps.json)."""


def gripper_by_name(name: str) -> GripperModel:
    """The built-in gripper model called ``name`` (a key of `GRIPPERS`)."""
    if name not in GRIPPERS:
        raise ValueError(f"Unknown gripper {name!r}; expected one of {sorted(GRIPPERS)}.")
    return GRIPPERS[name]()
