"""Elasticity (Geo-FNO): stress at 972 points of a hyper-elastic unit cell with a void, from a linear
embedding of the positions, trained by relative L2 (Erwin paper, Appendix C)."""
import sys

from torch_geometric_erwin.training import InputEncoder, NodeRegression
from torch_geometric_erwin.training.cli import Experiment, pde_training, run, split_views
from torch_geometric_erwin.transforms import KNNGraphTransform

C_IN = 64


def _dataset():
    from torch_geometric_erwin.datasets import Elasticity
    return Elasticity


def load(args):
    # the reference's graph: 8 nearest neighbours, the node itself included
    return split_views(_dataset()(args.data, split=None, transform=KNNGraphTransform(8, loop=True)))


def build_task(backbone, args):
    return NodeRegression(backbone(C_IN), InputEncoder(["pos"], 2, C_IN), out_channels=1, loss="rel_l2",
                          denormalize=lambda v: _dataset().denormalize(v))


EXPERIMENT = Experiment(
    name="elasticity", description=__doc__, dim=2, preset="elasticity", sizes=("small",),
    train=pde_training(epochs=1500, train_size=1000, batch_size=2, lr=1e-3),
    load=load, build_task=build_task,
    layout="raw/elasticity/Meshes/Random_UnitCell_{sigma,XY}_10.npy (Geo-FNO 'PDE Benchmarks' folder)")

if __name__ == "__main__":
    sys.exit(run(EXPERIMENT))
