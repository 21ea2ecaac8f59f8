"""What the examples share: the experiment runner and its command line, trainer loop, schedules, metrics,
encodings, task wrappers, checkpoints."""
from torch_geometric_erwin.training.checkpoint import (load_checkpoint, rng_state, save_checkpoint,
                                                       seed_everything, set_rng_state)
from torch_geometric_erwin.training.distributed import (DistributedContext, destroy_distributed,
                                                        init_distributed, resolve_device)
from torch_geometric_erwin.training.encodings import (RandomFourierFeatures, SinusoidalEncoding,
                                                      TimestepEmbedding)
from torch_geometric_erwin.training.errors import UsageError
from torch_geometric_erwin.training.experiment import Experiment, geo_fno_experiment, pde_training, split_views
from torch_geometric_erwin.training.loggers import MetricLogger, Progress, read_metrics_csv
from torch_geometric_erwin.training.metrics import (gaussian_nll, per_graph_cumulative_rmse,
                                                    per_graph_mse, per_graph_relative_l2)
from torch_geometric_erwin.training.registry import erwin_backbone
from torch_geometric_erwin.training.runner import main, run
from torch_geometric_erwin.training.sampler import ResumableBatchSampler
from torch_geometric_erwin.training.schedules import build_schedule, cosine_schedule, warmup_cosine_schedule
from torch_geometric_erwin.training.tasks import (AutoregressiveRollout, GaussianRegression, InputEncoder, NodeRegression, OneHot,
                                                  Task, mlp_head)
from torch_geometric_erwin.training.trainer import Trainer, TrainConfig, num_parameters, steps_for_budget

__all__ = [
    "Experiment", "geo_fno_experiment", "pde_training", "split_views", "run", "main", "UsageError",
    "erwin_backbone",
    "Trainer", "TrainConfig", "num_parameters", "steps_for_budget",
    "cosine_schedule", "warmup_cosine_schedule", "build_schedule",
    "gaussian_nll", "per_graph_mse", "per_graph_relative_l2", "per_graph_cumulative_rmse",
    "SinusoidalEncoding", "RandomFourierFeatures", "TimestepEmbedding",
    "Task", "InputEncoder", "OneHot", "mlp_head", "NodeRegression", "GaussianRegression",
    "AutoregressiveRollout",
    "ResumableBatchSampler", "MetricLogger", "Progress", "read_metrics_csv",
    "save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state", "seed_everything",
    "DistributedContext", "init_distributed", "destroy_distributed", "resolve_device",
]
