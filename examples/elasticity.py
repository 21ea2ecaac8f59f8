"""Elasticity (Geo-FNO): stress at 972 points of a hyper-elastic unit cell with a void, from a linear
embedding of the positions, trained by relative L2 (Erwin paper, Appendix C).
Trees and the kNN graph are computed once, when the dataset is processed."""
import sys

from torch_geometric_erwin.training import InputEncoder, geo_fno_experiment, pde_training, run

EXPERIMENT = geo_fno_experiment(
    "elasticity", "Elasticity", __doc__,
    encoder=lambda width: InputEncoder(["pos"], 2, width),
    out_channels=1, train=pde_training(epochs=1500, train_size=1000, batch_size=2, lr=1e-3),
    layout="elasticity/Meshes/Random_UnitCell_{sigma,XY}_10.npy")

if __name__ == "__main__":
    sys.exit(run(EXPERIMENT))
