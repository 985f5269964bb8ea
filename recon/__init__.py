"""Capture data model, readers, RGB-D fusion and 3DGS reconstruction."""

import splatsim._threads  # noqa: F401  (OpenMP spin-wait, before torch loads)
