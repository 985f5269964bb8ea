"""Grasp sampling and safety filtering, start poses, trajectories, demonstration rendering."""

import splatsim._threads  # noqa: F401  (OpenMP spin-wait, before torch loads)
