"""Pipe (Geo-FNO): horizontal velocity on a 128 x 128 curvilinear pipe grid, from LayerNorm-ed
sinusoidal encodings of both coordinates, trained by relative L2 (Erwin paper, Appendix C)."""
import sys

from torch_geometric_erwin.training import InputEncoder, NodeRegression, SinusoidalEncoding
from torch_geometric_erwin.training.cli import Experiment, pde_training, run, split_views
from torch_geometric_erwin.transforms import KNNGraphTransform

C_IN = 64


def _dataset():
    from torch_geometric_erwin.datasets import Pipe
    return Pipe


def load(args):
    # the reference's graph: 8 nearest neighbours, the node itself included
    return split_views(_dataset()(args.data, split=None, transform=KNNGraphTransform(8, loop=True)))


def build_task(backbone, args):
    encoder = InputEncoder(["pos"], C_IN, encodings={"pos": SinusoidalEncoding(2, C_IN)}, norm=True)
    return NodeRegression(backbone(C_IN), encoder, out_channels=1, loss="rel_l2",
                          denormalize=lambda v: _dataset().denormalize(v))


EXPERIMENT = Experiment(
    name="pipe", description=__doc__, dim=2, preset="pipe", sizes=("small",),
    train=pde_training(epochs=2000, train_size=1000, batch_size=4, lr=5e-4),
    load=load, build_task=build_task,
    layout="raw/pipe/Pipe_{X,Y,Q}.npy (Geo-FNO 'PDE Benchmarks' folder)")

if __name__ == "__main__":
    sys.exit(run(EXPERIMENT))
