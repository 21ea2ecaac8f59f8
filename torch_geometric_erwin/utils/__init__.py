"""Utilities: pictures of the ball tree's balls and rotated partitions, and memory predictions."""

from torch_geometric_erwin.utils.memory import available_memory, estimate_erwin_memory
from torch_geometric_erwin.utils.plot import ball_assignment, plot_ball_tree

__all__ = ["plot_ball_tree", "ball_assignment", "estimate_erwin_memory", "available_memory"]
