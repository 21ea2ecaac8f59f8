"""benchmarks/scale.py: the baselines' stages build the examples' backbones and run end to end."""
import importlib.util
import os

import pytest
import torch

from support import ROOT


def load_scale():
    spec = importlib.util.spec_from_file_location("benchmark_scale", os.path.join(ROOT, "benchmarks", "scale.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["transolver", "pointnet2", "ptv3", "mpnn"])
def test_baseline_stages_run_the_examples_backbone(name):
    scale = load_scale()
    model = scale.baseline(name)
    assert type(model).__name__ == {"transolver": "Transolver", "pointnet2": "PointNet2",
                                    "ptv3": "SerializedTransformer", "mpnn": "MPNN"}[name]
    if name == "ptv3":  # the serialized transformer has an MD preset; the others take their generic small size
        from torch_geometric_erwin.nn.models.serialized_transformer import PRESETS
        assert model.enc_channels == PRESETS["md-small"]["enc_channels"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for stage in ("infer", "train"):
            scale.make_case(f"{name}-{stage}", 300, None)()
    finally:
        torch.set_num_threads(threads)
