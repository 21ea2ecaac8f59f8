"""ShapeNet-Car: surface pressure on 3586 mesh points of each car, from random Fourier features of
the positions, trained by MSE on normalised pressure (Erwin paper, Sec. 5.4). The cars do not move:
trees and the kNN graph are computed once, when the dataset is processed."""
import sys

from torch_geometric_erwin.training import Experiment, InputEncoder, NodeRegression, RandomFourierFeatures, run
from torch_geometric_erwin.transforms import KNNGraphTransform

C_IN = 64


def _dataset():
    from torch_geometric_erwin.datasets import ShapeNetCar
    return ShapeNetCar


def load(args, pre_transform):
    return tuple(_dataset()(args.data, split=split, pre_transform=pre_transform) for split in ("train", "val", "test"))


def build_task(backbone, args):
    encoder = InputEncoder(["pos"], C_IN, encodings={"pos": RandomFourierFeatures(3, C_IN)})
    return NodeRegression(backbone(C_IN), encoder, out_channels=1,
                          denormalize=lambda p: _dataset().denormalize(p))


def write_synthetic(raw_dir):
    """The real 889 cars (the reference's split needs them), of 24 points each."""
    from torch_geometric_erwin.testing import write_shapenet_car
    write_shapenet_car(raw_dir, cars_per_param=(99,) * 8 + (97,), num_points=24)


EXPERIMENT = Experiment(
    name="shapenet_car", description=__doc__, dimensionality=3, preset="shapenet", nsa_preset="shapenet-base",
    train=dict(steps=100_000, batch_size=2, lr=1e-3, eta_min=5e-5, val_every=100),
    load=load, build_task=build_task, synthetic_data=write_synthetic,
    # the reference's graph: 8 nearest neighbours, the node itself included
    static=True, graph=KNNGraphTransform(8, loop=True),
    layout="raw/param{0..8}/<car_id>/{mesh_points.th,pressure.th} (UPT SETUP_DATA.md preprocessing)")

if __name__ == "__main__":
    sys.exit(run(EXPERIMENT))
