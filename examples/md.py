"""Molecular dynamics (single-chain coarse-grained polymers): a Gaussian over each bead's next
acceleration, trained by negative log-likelihood (Erwin paper, Sec. 5.2). The beads move from one window
to the next: positions move every step, so the tree is built in every forward."""
import sys

from torch_geometric_erwin.training import Experiment, GaussianRegression, InputEncoder, OneHot, run

C_IN = 16  # the presets' c_in (small/medium); the encoder output width


def load(args, pre_transform):  # None: the model builds every window's tree
    from torch_geometric_erwin.datasets.polymer_md import PolymerMD
    return tuple(PolymerMD(args.data, split=split, seq_len=args.seq_len, log=False)
                 for split in ("train", "val", "test"))


def build_task(backbone, args):
    num_inputs = 3 * (args.seq_len - 1)
    encoder = InputEncoder(["x", "node_type"], num_inputs + 4, C_IN, encodings={"node_type": OneHot(4)})
    return GaussianRegression(backbone(C_IN), encoder, out_channels=3)


def write_synthetic(raw_dir):
    from torch_geometric_erwin.testing import write_polymer_md
    write_polymer_md(raw_dir)


def add_arguments(parser):
    parser.add_argument("--seq-len", type=int, default=16, help="input frames per window")


EXPERIMENT = Experiment(
    name="md", description=__doc__, dimensionality=3, preset="md", nsa_preset="md-base",
    train=dict(steps=100_000, batch_size=32, lr=5e-4, eta_min=1e-7, val_every=5000),
    load=load, build_task=build_task, add_arguments=add_arguments,
    synthetic_data=write_synthetic, synthetic_options=dict(seq_len=4),
    layout="raw/polymer_train/<traj>/{ptype,bond,position}.h5, raw/polymer_test/<traj>/..., "
           "raw/splits/{train,val,test_class2}.txt (Zenodo 6764836 + mlcgmd split lists)")

if __name__ == "__main__":
    sys.exit(run(EXPERIMENT))
