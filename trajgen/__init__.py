"""Grasp sampling and safety filtering, start poses, trajectories, demonstration rendering."""
