"""Utilities around the ball tree: pictures of its balls and rotated partitions."""

from torch_geometric_erwin.utils.plot import ball_assignment, plot_ball_tree

__all__ = ["plot_ball_tree", "ball_assignment"]
