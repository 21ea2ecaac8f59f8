"""Pipe (Geo-FNO): horizontal velocity on a 128 x 128 curvilinear pipe grid, from LayerNorm-ed
sinusoidal encodings of both coordinates, trained by relative L2 (Erwin paper, Appendix C).
Trees and the kNN graph are computed once, when the dataset is processed."""
import sys

from torch_geometric_erwin.training import InputEncoder, SinusoidalEncoding, geo_fno_experiment, pde_training, run

EXPERIMENT = geo_fno_experiment(
    "pipe", "Pipe", __doc__,
    encoder=lambda width: InputEncoder(["pos"], width, encodings={"pos": SinusoidalEncoding(2, width)}, norm=True),
    out_channels=1, train=pde_training(epochs=2000, train_size=1000, batch_size=4, lr=5e-4),
    layout="pipe/Pipe_{X,Y,Q}.npy")

if __name__ == "__main__":
    sys.exit(run(EXPERIMENT))
