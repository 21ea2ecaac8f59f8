"""Cosmology (Quijote halo catalogues): predict every halo's velocity from the positions of the 5000
most massive halos, trained by MSE on standardised velocities (Erwin paper, Sec. 5.1). The halos do not
move: the trees are computed once, when the dataset is processed; the kNN graph, which would take
seven times the memory of the halos, is built on every access."""
import sys

from torch_geometric_erwin.training import Experiment, InputEncoder, NodeRegression, run
from torch_geometric_erwin.transforms import KNNGraphTransform

C_IN = {"small": 32, "medium": 64, "large": 128}


def load(args, pre_transform):
    from torch_geometric_erwin.datasets import Cosmology
    counts = {"train": args.num_samples, "val": args.num_eval_samples, "test": args.num_eval_samples}
    return tuple(Cosmology(args.data, split=split, num_samples=counts[split], pre_transform=pre_transform)
                 for split in ("train", "val", "test"))


def write_synthetic(raw_dir):
    from torch_geometric_erwin.testing import write_cosmology
    write_cosmology(raw_dir)


def add_arguments(parser):
    parser.add_argument("--num-samples", type=int, default=8192,
                        help="training records (the first ones of the train files)")
    parser.add_argument("--num-eval-samples", type=int, default=512,
                        help="validation and test records")


def build_task(backbone, args):
    c_in = C_IN[args.size]
    return NodeRegression(backbone(c_in), InputEncoder(["pos"], 3, c_in), out_channels=3)


EXPERIMENT = Experiment(
    name="cosmology", description=__doc__, dimensionality=3, preset="cosmology", nsa_preset="cosmology-base",
    train=dict(steps=3000, batch_size=16, lr=5e-4, eta_min=1e-6, val_every=500),
    load=load, build_task=build_task, add_arguments=add_arguments,
    # the reference's graph: 10 nearest neighbours, without self-loops; built per access, as it would
    # take seven times the memory of the halos themselves
    static=True, graph=KNNGraphTransform(10), store_graph=False,
    synthetic_data=write_synthetic, synthetic_options=dict(num_samples=4, num_eval_samples=2),
    layout="raw/halos*{train,val,test}*.tfrecord (Zenodo 11479419, quijote_records/)")

if __name__ == "__main__":
    sys.exit(run(EXPERIMENT))
