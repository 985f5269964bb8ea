"""Capture data model, readers, RGB-D fusion and 3DGS reconstruction."""
