"""Readers that convert foreign datasets into splatsim capture folders (`recon.capture`).

Each reader converts the source's conventions (axes, units, labels) at the boundary and writes a
capture with `recon.capture.write_capture`, so what it returns has passed the same validation as
`recon.capture.load_capture`.
"""

from recon.readers.dexycb import read_dexycb
from recon.readers.nerfstudio import read_nerfstudio

__all__ = ["read_dexycb", "read_nerfstudio"]
