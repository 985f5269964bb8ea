"""splatsim core: conventions, Gaussian scenes and their PLY I/O, rasterization backends."""

from splatsim import _threads  # noqa: F401  (OpenMP spin-wait, before torch loads)

__version__ = "0.1.0"
