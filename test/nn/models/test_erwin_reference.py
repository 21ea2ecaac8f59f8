"""Erwin.from_reference gives the reference ErwinTransformer's outputs (needs a checkout: ERWIN_REFERENCE=path).

Run with ``ERWIN_REFERENCE=/path/to/erwin python -m pytest test/test_erwin_reference.py``; the procedure is
described in docs/reference.md.
"""
import pytest
import torch

from support.reference import load_reference_erwin
from torch_geometric_erwin.nn import Erwin, knn_graph
from torch_geometric_erwin.tree import build_ball_tree

reference = load_reference_erwin()
pytestmark = pytest.mark.skipif(reference is None, reason="set ERWIN_REFERENCE to a checkout of the reference")

CONFIGS = {
    "u-net": dict(c_in=8, c_hidden=[16, 32, 64], ball_sizes=[16, 16, 8], enc_num_heads=[2, 4, 8],
                  enc_depths=[2, 2, 2], dec_num_heads=[2, 4], dec_depths=[2, 2], strides=[2, 2], rotate=45,
                  mp_steps=2, dimensionality=3),
    "old-int-widths": dict(c_in=8, c_hidden=8, ball_sizes=[16, 8], enc_num_heads=[2, 4], enc_depths=[3, 2],
                           dec_num_heads=[2], dec_depths=[2], strides=[2], rotate=30, mp_steps=1,
                           dimensionality=3),
    "no-coarsening-2d": dict(c_in=8, c_hidden=[16, 16], ball_sizes=[32, 32], enc_num_heads=[2, 2],
                             enc_depths=[3, 2], dec_num_heads=[2], dec_depths=[2], strides=[1], rotate=45,
                             mp_steps=2, dimensionality=2),
    "no-rotation": dict(c_in=8, c_hidden=[16, 32], ball_sizes=[16, 16], enc_num_heads=[2, 2],
                        enc_depths=[2, 2], dec_num_heads=[2], dec_depths=[2], strides=[2], rotate=0,
                        mp_steps=0, dimensionality=3),
}


def reference_and_ours(config, decode=True):
    torch.manual_seed(0)
    ref_config = dict(config)
    if isinstance(config["c_hidden"], int):  # the old API's integer width, c * prod(strides[:l]) per level
        ref_config["c_hidden"] = [config["c_hidden"] * 2 ** level for level in range(len(config["ball_sizes"]))]
    ref = reference.ErwinTransformer(**ref_config, decode=decode).eval()
    with torch.no_grad():
        for module in ref.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
                module.weight.normal_()
                module.bias.normal_()
    compiled_keys = {f"_orig_mod.{key}": value for key, value in ref.state_dict().items()}
    return ref, Erwin.from_reference(compiled_keys, **config, decode=decode).eval()


def inputs(dimensionality, sizes=(100, 300, 64)):
    generator = torch.Generator().manual_seed(1)
    pos = torch.randn(sum(sizes), dimensionality, generator=generator)
    x = torch.randn(sum(sizes), 8, generator=generator)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return x, pos, batch, knn_graph(pos, 8, batch)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_outputs_equal_the_reference(name):
    config = CONFIGS[name]
    ref, ours = reference_and_ours(config)
    x, pos, batch, edge_index = inputs(config["dimensionality"])
    tree = build_ball_tree(pos, batch, ball_sizes=config["ball_sizes"], strides=config["strides"],
                           rotate=config["rotate"])
    with torch.no_grad():
        expected = ref(x, pos, batch, edge_index, tree_idx=tree.index, tree_mask=tree.mask,
                       tree_idx_rot=list(tree.rotated) or [None] * len(config["ball_sizes"]))
        out = ours(x, pos, batch, edge_index, tree=tree)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_outputs_equal_the_reference_on_its_own_trees():
    """Trees from the reference's ball-tree package (balltree-erwin) work unchanged."""
    balltree = pytest.importorskip("balltree")
    config = CONFIGS["u-net"]
    ref, ours = reference_and_ours(config)
    x, pos, batch, edge_index = inputs(3, sizes=(128, 256, 64))
    tree_idx, tree_mask, rotated = balltree.build_balltree_with_rotations(
        pos, batch, config["strides"], config["ball_sizes"], config["rotate"])
    ours_tree = build_ball_tree(pos, batch, ball_sizes=config["ball_sizes"], strides=config["strides"])
    # the record follows the reference's build; the leaf radii were recorded for our own slot order
    ours_tree.index, ours_tree.mask, ours_tree.rotated = tree_idx, tree_mask, list(rotated)
    ours_tree.rotate, ours_tree.radius = float(config["rotate"]), None
    with torch.no_grad():
        expected = ref(x, pos, batch, edge_index, tree_idx=tree_idx, tree_mask=tree_mask,
                       tree_idx_rot=list(rotated))
        out = ours(x, pos, batch, edge_index, tree=ours_tree)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_decode_false_equals_the_reference_bottleneck():
    config = CONFIGS["u-net"]
    ref, ours = reference_and_ours(config, decode=False)
    x, pos, batch, edge_index = inputs(3)
    tree = build_ball_tree(pos, batch, ball_sizes=config["ball_sizes"], strides=config["strides"], rotate=45)
    with torch.no_grad():
        expected, expected_batch = ref(x, pos, batch, edge_index, tree_idx=tree.index, tree_mask=tree.mask,
                                       tree_idx_rot=list(tree.rotated))
        out, out_batch = ours(x, pos, batch, edge_index, tree=tree)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(out_batch, expected_batch)


def test_parameter_counts_equal_the_reference_but_unused_pooling():
    for config in CONFIGS.values():
        ref, ours = reference_and_ours(config)
        unused = sum(p.numel() for i, stride in enumerate(config["strides"]) if stride == 1
                     for p in ref.encoder[i].pool.parameters())
        assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters()) - unused


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_reference_state_dict_has_the_reference_names_and_shapes(name):
    from torch_geometric_erwin.testing import reference_state_dict
    ref, ours = reference_and_ours(CONFIGS[name])
    theirs, mine = ref.state_dict(), reference_state_dict(ours)
    assert set(mine) <= set(theirs)
    assert all(".pool." in key for key in set(theirs) - set(mine))  # the unused stride-1 pooling
    for key, value in mine.items():
        assert value.numel() == theirs[key].numel() and (key.endswith("sigma_att") or
                                                         value.shape == theirs[key].shape), key
