"""splatsim core: conventions, Gaussian scenes and their PLY I/O, rasterization backends."""

__version__ = "0.1.0"
