"""EAGLE unsteady 2-D flows on moving meshes: autoregressive rollout of velocity and pressure with
boundary forcing; tested by the cumulative per-horizon RMSE of a 399-step rollout (Sec. 5.3). The mesh
moves with the flow: positions move every step, so the tree is built in every forward."""
import csv
import os
import sys

import torch

from torch_geometric_erwin.training import (AutoregressiveRollout, Experiment, InputEncoder, OneHot,
                                           SinusoidalEncoding, run)

C_IN = {"small": 16, "medium": 16, "large": 32}
NUM_TYPES = 9
PE_CHANNELS = 16


def _dataset():
    from torch_geometric_erwin.datasets.eagle import EAGLE
    return EAGLE


def load(args, pre_transform):  # None: the model builds the tree of every rollout step
    EAGLE = _dataset()
    return (EAGLE(args.data, split="train", window_length=args.train_window, log=False),
            EAGLE(args.data, split="val", log=False),
            EAGLE(args.data, split="test", window_length=args.test_window, log=False))


def build_task(backbone, args):
    EAGLE = _dataset()
    fields, width, encodings = ["state", "node_type"], 4 + NUM_TYPES, {"node_type": OneHot(NUM_TYPES)}
    if args.use_pe:
        fields.append("pos")
        width += PE_CHANNELS
        encodings["pos"] = SinusoidalEncoding(2, PE_CHANNELS)
    c_in = C_IN[args.size]
    encoder = InputEncoder(fields, width, c_in, encodings=encodings)
    return AutoregressiveRollout(
        backbone(c_in), encoder, state_channels=4,
        groups={"velocity": (0, 2, 1.0), "pressure": (2, 4, 0.1)},
        forced_types=(EAGLE.NODE_INPUT, EAGLE.NODE_WALL, EAGLE.NODE_DISABLE),
        denormalize=lambda state: EAGLE.denormalize(state, "state"))


def report(task, trainer, summary, args, out_dir):
    """Per-horizon error CSVs and velocity/pressure frames of the first test rollout."""
    from torch_geometric.loader import DataLoader

    from torch_geometric_erwin.training.plots import plot_rollout_frames
    test = summary.get("test")
    if not test:
        return {}
    for name in ("velocity", "pressure"):
        with open(os.path.join(out_dir, f"error_{name}.csv"), "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["horizon", f"cumulative_rmse_{name}"])
            writer.writerows(enumerate(test[f"cumulative_rmse_{name}"], start=1))
    batch = next(iter(DataLoader(trainer.test_set, batch_size=1))).to(trainer.device)
    task.eval()
    with torch.no_grad():
        out = task(batch)
    pred = task.denormalize(out["state"]).cpu()
    truth = task.denormalize(batch.y.transpose(0, 1)).cpu()

    def fields(state):
        return torch.stack([state[..., :2].norm(dim=-1), state[..., 2]], dim=-1)

    horizon = pred.size(0)
    steps = sorted({0, horizon // 4, horizon // 2, horizon - 1})
    plot_rollout_frames(batch.mesh_pos.transpose(0, 1)[1:].cpu(), fields(truth), fields(pred), steps,
                        os.path.join(out_dir, "rollout_frames.png"))
    return {"rollout_frames": "rollout_frames.png", "error_csv": ["error_velocity.csv", "error_pressure.csv"]}


def write_synthetic(raw_dir):
    from torch_geometric_erwin.testing import write_eagle
    write_eagle(raw_dir)


def add_arguments(parser):
    parser.add_argument("--use-pe", action="store_true",
                        help="add sinusoidal encodings of both mesh coordinates to the inputs")
    parser.add_argument("--train-window", type=int, default=6, help="frames per training window")
    parser.add_argument("--test-window", type=int, default=400,
                        help="frames of the test rollout (399 predicted steps from frame 100)")


EXPERIMENT = Experiment(
    name="eagle", description=__doc__, dimensionality=2, preset="eagle",
    train=dict(steps=200_000, batch_size=12, eval_batch_size=1, lr=8e-4, eta_min=1e-7, val_every=500),
    load=load, build_task=build_task, add_arguments=add_arguments, report=report,
    synthetic_data=write_synthetic, synthetic_options=dict(train_window=3, test_window=4),
    layout="raw/Splits/{train,valid,test}.txt and raw/<Geom>/<scene>/<traj>/{sim.npz,triangles.npy} "
           "(LIRIS eagle-version1)")

if __name__ == "__main__":
    sys.exit(run(EXPERIMENT))
