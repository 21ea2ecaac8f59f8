"""Plasticity (Geo-FNO): deformation of a plate hit by a die at a random one of 20 time steps, from
the die profile, the grid positions and a time embedding, trained by relative L2 (Appendix C)."""
import sys

from torch_geometric_erwin.training import InputEncoder, NodeRegression, TimestepEmbedding
from torch_geometric_erwin.training.cli import Experiment, pde_training, run, split_views
from torch_geometric_erwin.transforms import KNNGraphTransform

C_IN, TIME_CHANNELS = 64, 64


def _dataset():
    from torch_geometric_erwin.datasets import Plasticity
    return Plasticity


def load(args):
    # the reference's graph: 8 nearest neighbours, the node itself included
    return split_views(_dataset()(args.data, split=None, transform=KNNGraphTransform(8, loop=True)))


def build_task(backbone, args):
    encoder = InputEncoder(["x", "pos", "time"], 1 + 2 + TIME_CHANNELS, C_IN,
                           encodings={"time": TimestepEmbedding(TIME_CHANNELS)})
    return NodeRegression(backbone(C_IN), encoder, out_channels=4, loss="rel_l2",
                          denormalize=lambda v: _dataset().denormalize(v))


EXPERIMENT = Experiment(
    name="plasticity", description=__doc__, dim=2, preset="plasticity", sizes=("small",),
    train=pde_training(epochs=10000, train_size=900, batch_size=8, lr=5e-4),
    load=load, build_task=build_task,
    layout="raw/plasticity/plas_N987_T20.mat (Geo-FNO 'PDE Benchmarks' folder)")

if __name__ == "__main__":
    sys.exit(run(EXPERIMENT))
