"""Task wrappers: input encoding, backbone, output head, loss and metrics per benchmark."""
from torch_geometric_erwin.training.tasks.base import InputEncoder, OneHot, Task, mlp_head
from torch_geometric_erwin.training.tasks.gaussian import GaussianRegression
from torch_geometric_erwin.training.tasks.regression import NodeRegression
from torch_geometric_erwin.training.tasks.rollout import AutoregressiveRollout

__all__ = ["Task", "InputEncoder", "OneHot", "mlp_head", "NodeRegression", "GaussianRegression",
           "AutoregressiveRollout"]
