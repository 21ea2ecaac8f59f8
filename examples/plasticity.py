"""Plasticity (Geo-FNO): deformation of a plate hit by a die at a random one of 20 time steps, from
the die profile, the grid positions and a time embedding, trained by relative L2 (Appendix C).
Trees and the kNN graph are computed once, when the dataset is processed."""
import sys

from torch_geometric_erwin.training import InputEncoder, TimestepEmbedding, geo_fno_experiment, pde_training, run

TIME_CHANNELS = 64

EXPERIMENT = geo_fno_experiment(
    "plasticity", "Plasticity", __doc__,
    encoder=lambda width: InputEncoder(["x", "pos", "time"], 1 + 2 + TIME_CHANNELS, width,
                                       encodings={"time": TimestepEmbedding(TIME_CHANNELS)}),
    out_channels=4, train=pde_training(epochs=10000, train_size=900, batch_size=8, lr=5e-4),
    layout="plasticity/plas_N987_T20.mat")

if __name__ == "__main__":
    sys.exit(run(EXPERIMENT))
