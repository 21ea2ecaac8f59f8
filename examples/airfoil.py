"""Airfoil (Geo-FNO): Mach number on the 221 x 51 C-grid around NACA airfoils, from sinusoidal
encodings of both coordinates, trained by relative L2 (Erwin paper, Appendix C).
Trees and the kNN graph are computed once, when the dataset is processed."""
import sys

from torch_geometric_erwin.training import InputEncoder, SinusoidalEncoding, geo_fno_experiment, pde_training, run

EXPERIMENT = geo_fno_experiment(
    "airfoil", "Airfoil", __doc__,
    encoder=lambda width: InputEncoder(["pos"], width, encodings={"pos": SinusoidalEncoding(2, width)}),
    out_channels=1, train=pde_training(epochs=8000, train_size=1000, batch_size=8, lr=1e-3),
    layout="airfoil/naca/NACA_Cylinder_{X,Y,Q}.npy")

if __name__ == "__main__":
    sys.exit(run(EXPERIMENT))
