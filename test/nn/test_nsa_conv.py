"""ErwinNSAConv: each branch against a dense masked reference, batching, gradients, compile/autocast."""
import pytest
import torch
from torch import nn

from torch_geometric_erwin.nn import BallAttention
from torch_geometric_erwin.nn.nsa_conv import ErwinNSAConv
from torch_geometric_erwin.tree import build_ball_tree


class ZeroLocal(nn.Module):
    """Stand-in local branch for tests of the other two branches."""

    def forward(self, x, pos, mask):
        return torch.zeros_like(x)


def make_conv(channels=16, heads=4, kv_heads=2, compress=8, local_size=16, k=3, local=None, **kwargs):
    """A layer with PyTorch's default initialisation of its projections (the gates keep theirs):
    weights larger than the model's (std 0.02) keep the attention away from near-uniform scores,
    where the top-k selection of the dense oracle and of the layer could differ by rounding."""
    torch.manual_seed(0)
    conv = ErwinNSAConv(channels, heads, local if local is not None else ZeroLocal(), compress_ball_size=compress,
                        local_ball_size=local_size, num_selected=k, num_kv_heads=kv_heads, **kwargs)
    for name, module in conv.named_modules():
        if isinstance(module, nn.Linear) and name != "gate":
            module.reset_parameters()
    return conv


def make_inputs(sizes, region, channels=16, seed=1, padding="pow2"):
    gen = torch.Generator().manual_seed(seed)
    pos = torch.randn(sum(sizes), 3, generator=gen)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    tree = build_ball_tree(pos, batch, ball_sizes=[region], padding=padding)
    x = torch.randn(tree.num_slots, channels, generator=gen)
    return x, pos[tree.index], tree


def dense_compressed_keys(conv, k, pos, mask):
    """Per-ball explicit pooling (a Python loop over balls), independent of the vectorised path."""
    l = conv.compress_ball_size
    out = []
    for start in range(0, k.shape[0], l):
        m = mask[start:start + l].to(pos.dtype)
        p = pos[start:start + l]
        centre = (p * m[:, None]).sum(0) / m.sum().clamp(min=1)
        rel = ((p - centre) * m[:, None]).reshape(-1)
        feats = [torch.cat([(k[start:start + l, g] * m[:, None]).reshape(-1), rel]) for g in range(k.shape[1])]
        out.append(torch.stack(feats))
    return torch.stack(out)


def dense_reference(conv, x, pos, tree):
    """Compressed and selected outputs from full [S, S]-style attention with explicit masks."""
    H, G, d, l = conv.num_heads, conv.num_kv_heads, conv.head_dim, conv.compress_ball_size
    R = conv.region_size
    S = x.shape[0]
    mask = tree.mask if conv.mask_padding else torch.ones_like(tree.mask)
    q = conv.q_proj(x).view(S, H, d)
    k, v = conv.kv_proj(x).view(S, 2, G, d).unbind(1)
    k_c = conv.compress_k.mlp(dense_compressed_keys(conv, k, pos, mask))
    v_c = conv.compress_v.mlp(dense_compressed_keys(conv, v, pos, mask))
    slot_graph = tree.slot_batch()
    ball_graph = slot_graph[::l]
    nb = S // l
    ball_valid = mask.view(nb, l).any(1)
    group = torch.arange(H) // (H // G)
    o_cmp = x.new_zeros(S, H, d)
    o_slc = x.new_zeros(S, H, d)
    selections = []
    for i in range(S):
        g = int(slot_graph[i])
        keys_ok = (ball_graph == g) & ball_valid
        logits = torch.einsum("he,nhe->hn", q[i], k_c[:, group]) / d ** 0.5
        probs = torch.softmax(logits.masked_fill(~keys_ok, float("-inf")), -1)
        o_cmp[i] = torch.einsum("hn,nhe->he", probs, v_c[:, group])
        region = (i - int(tree.ptr[g])) // R
        ball_region = (torch.arange(nb) * l - tree.ptr[ball_graph]) // R
        selectable = keys_ok & (ball_region != region)
        sel_i = []
        for kv in range(G):
            score = probs.detach()[group == kv].sum(0)
            order = [int(b) for b in torch.argsort(score, descending=True) if selectable[b]]
            chosen = order[:conv.num_selected]
            sel_i.append(set(chosen))
            allowed = torch.zeros(S, dtype=torch.bool)
            for b in chosen:
                allowed[b * l:(b + 1) * l] = True
            allowed &= mask
            for h in torch.nonzero(group == kv).flatten().tolist():
                if allowed.any():
                    att = torch.softmax((k[:, kv] @ q[i, h] / d ** 0.5).masked_fill(~allowed, float("-inf")), 0)
                    o_slc[i, h] = att @ v[:, kv]
        selections.append(sel_i)
    return (conv.out_compressed(o_cmp.reshape(S, -1)), conv.out_selected(o_slc.reshape(S, -1)), selections)


@pytest.fixture(params=["union", "per-query"])
def selected_form(request, monkeypatch):
    """Force one of the two equal forms of the selected branch (the module picks by cost)."""
    monkeypatch.setattr(ErwinNSAConv, "_prefer_union", staticmethod(lambda *args: request.param == "union"))
    return request.param


@pytest.mark.parametrize("config", [
    dict(compress=8, local_size=16, k=3, kv_heads=2),
    dict(compress=16, local_size=8, k=2, kv_heads=1),
    dict(compress=8, local_size=8, k=20, kv_heads=4, mask_padding=False),
])
def test_compressed_and_selected_match_dense_reference(config, selected_form):
    conv = make_conv(query_chunk_size=16, **config).double()
    region = conv.region_size
    x, pos, tree = make_inputs([70, 33, 9], region)
    x, pos = x.double(), pos.double()
    with torch.no_grad():
        out = conv.branches(x, pos, ptr=tree.ptr, mask=tree.mask)
        ref_cmp, ref_slc, ref_sel = dense_reference(conv, x, pos, tree)
    torch.testing.assert_close(out.compressed, ref_cmp)
    torch.testing.assert_close(out.selected, ref_slc)
    for i, per_group in enumerate(ref_sel):
        for g, chosen in enumerate(per_group):
            got = set(out.selection[i, g][out.selection_mask[i, g]].tolist())
            assert got == chosen
    # the selection never contains a ball of another graph or of the query's own local region
    ball_graph = tree.slot_batch()[::conv.compress_ball_size]
    slot_graph = tree.slot_batch()
    sel_graph = ball_graph[out.selection]
    assert bool((sel_graph[out.selection_mask] == slot_graph[:, None, None].expand_as(sel_graph)[out.selection_mask]).all())


def test_initial_gates_favour_local():
    conv = make_conv()
    x, pos, tree = make_inputs([40], conv.region_size)
    gates = conv.branches(x, pos, ptr=tree.ptr, mask=tree.mask).gates
    assert torch.allclose(gates[:, 2], torch.sigmoid(torch.tensor(2.0)).expand_as(gates[:, 2]))
    assert torch.allclose(gates[:, :2], torch.sigmoid(torch.tensor(-2.0)).expand_as(gates[:, :2]))


@pytest.mark.parametrize("local", ["zero", "ball attention"])
def test_padding_slots_never_change_real_outputs(local):
    # with Erwin's ball attention as the local branch, padding is hidden from the keys and from the centres
    conv = make_conv(local=BallAttention(16, 4, 16) if local == "ball attention" else None).double()
    x, pos, tree = make_inputs([37, 21], conv.region_size)
    x, pos = x.double(), pos.double()
    base = conv(x, pos, ptr=tree.ptr, mask=tree.mask)
    noisy = x.clone()
    noisy[~tree.mask] += torch.randn_like(noisy[~tree.mask]) * 10
    noisy_pos = pos.clone()
    noisy_pos[~tree.mask] += 5.0
    moved = conv(noisy, noisy_pos, ptr=tree.ptr, mask=tree.mask)
    torch.testing.assert_close(moved[tree.mask], base[tree.mask])


def test_batch_consistency_and_chunking(selected_form):
    conv = make_conv(query_chunk_size=16).double()
    sizes = [70, 5, 33]
    x, pos, tree = make_inputs(sizes, conv.region_size)
    x, pos = x.double(), pos.double()
    batched = conv(x, pos, ptr=tree.ptr, mask=tree.mask)
    for g in range(len(sizes)):
        part = slice(int(tree.ptr[g]), int(tree.ptr[g + 1]))
        alone = conv(x[part], pos[part], mask=tree.mask[part])
        torch.testing.assert_close(batched[part], alone)
    conv.query_chunk_size = 10_000
    torch.testing.assert_close(conv(x, pos, ptr=tree.ptr, mask=tree.mask), batched)


def test_batch_vector_equals_ptr():
    conv = make_conv()
    x, pos, tree = make_inputs([40, 20], conv.region_size)
    a = conv(x, pos, ptr=tree.ptr, mask=tree.mask)
    b = conv(x, pos, tree.slot_batch(), mask=tree.mask)
    torch.testing.assert_close(a, b)


def test_checkpointed_gradients_equal_plain_gradients():
    conv = make_conv(query_chunk_size=16).double()
    x, pos, tree = make_inputs([70, 33], conv.region_size)
    x, pos = x.double(), pos.double()
    with torch.no_grad():
        conv.gate.weight.normal_()
    grads = []
    for use in (True, False):
        conv.checkpoint = use
        conv.zero_grad()
        xi = x.clone().requires_grad_()
        conv(xi, pos, ptr=tree.ptr, mask=tree.mask).square().sum().backward()
        grads.append([xi.grad] + [p.grad.clone() for p in conv.parameters() if p.grad is not None])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("kwargs, error", [
    (dict(channels=15), ValueError), (dict(compress=12), ValueError), (dict(k=0), ValueError),
    (dict(kv_heads=3), ValueError), (dict(local=object()), TypeError), (dict(k=1.5), TypeError),
    (dict(compress=2**40), ValueError), (dict(local_size=2**40), ValueError),
])
def test_constructor_validation(kwargs, error):
    local = kwargs.pop("local", None)
    with pytest.raises(error):
        if local is not None:
            ErwinNSAConv(16, 4, local, 8, 16, 3)
        else:
            make_conv(**kwargs)


def test_forward_validation():
    conv = make_conv()
    x, pos, tree = make_inputs([40], conv.region_size)
    with pytest.raises(ValueError, match="x"):
        conv(x[:, :3], pos, ptr=tree.ptr)
    with pytest.raises(ValueError, match="pos"):
        conv(x, pos[:-1], ptr=tree.ptr)
    with pytest.raises(ValueError, match="multiple"):
        conv(x[:-8], pos[:-8])
    with pytest.raises(ValueError, match="mask"):
        conv(x, pos, mask=tree.mask.float())
    assert "ErwinNSAConv(16" in repr(conv)


def test_float64_positions_with_float32_features():
    """Positions may be float64 with float32 features (the models keep float64 geometry): the
    compression's padding mask is applied in the features' dtype."""
    conv = make_conv(local=BallAttention(16, 4, 16))
    x, pos, tree = make_inputs([40], conv.region_size)
    torch.testing.assert_close(conv(x, pos.double(), ptr=tree.ptr, mask=tree.mask),
                               conv(x, pos, ptr=tree.ptr, mask=tree.mask))


def test_output_reaches_outside_local_ball_but_not_other_graphs():
    conv = make_conv(k=2)
    with torch.no_grad():  # open the global gates so that their paths carry gradient clearly
        conv.gate.bias.zero_()
    x, pos, tree = make_inputs([90, 50], conv.region_size)
    x.requires_grad_(True)
    out = conv(x, pos, ptr=tree.ptr, mask=tree.mask)
    slot_graph = tree.slot_batch()
    for i in (0, 70, int(tree.ptr[1]) + 3):
        grad, = torch.autograd.grad(out[i].sum(), x, retain_graph=True)
        touched = grad.abs().sum(1) > 0
        g = slot_graph[i]
        assert not bool(touched[slot_graph != g].any())
        ball = torch.arange(x.shape[0]) // conv.local_ball_size == i // conv.local_ball_size
        assert bool(touched[~ball & (slot_graph == g)].any())


def test_bf16_autocast_runs_and_stays_close():
    conv = make_conv()
    with torch.no_grad():
        conv.gate.bias.zero_()
    x, pos, tree = make_inputs([60, 30], conv.region_size)
    x.requires_grad_(True)
    ref = conv(x, pos, ptr=tree.ptr, mask=tree.mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = conv(x, pos, ptr=tree.ptr, mask=tree.mask)
    low.float().square().sum().backward()
    assert bool(torch.isfinite(x.grad).all())
    # bf16 rounding flips a few top-k choices between near-tied balls (1-2 % over seeds), each of
    # which moves its query's selected output: the tolerance is that of the flips, not of bf16 alone
    selected = conv.branches(x, pos, ptr=tree.ptr, mask=tree.mask).selection.sort(-1).values
    with torch.autocast("cpu", dtype=torch.bfloat16):
        selected_low = conv.branches(x, pos, ptr=tree.ptr, mask=tree.mask).selection.sort(-1).values
    assert float((selected != selected_low).float().mean()) < 0.05
    assert float((low.float() - ref).norm() / ref.norm()) < 0.1


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_torch_compile_matches_eager(backend):
    conv = make_conv(query_chunk_size=32)
    x, pos, tree = make_inputs([60, 40], conv.region_size)
    x.requires_grad_(True)
    compiled = torch.compile(conv, backend=backend)
    out = compiled(x, pos, ptr=tree.ptr, mask=tree.mask)
    out.square().sum().backward()
    torch.testing.assert_close(out, conv(x, pos, ptr=tree.ptr, mask=tree.mask))
    assert bool(torch.isfinite(x.grad).all())


def saved_bytes(conv, x, pos, tree):
    """Bytes of the distinct tensors autograd keeps for backward."""
    storages = {}

    def pack(tensor):
        storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        conv(x.requires_grad_(True), pos, ptr=tree.ptr, mask=tree.mask)
    return sum(storages.values())


@pytest.mark.parametrize("checkpoint", [True, False])
def test_saved_memory_is_linear_in_batch_size(checkpoint):
    conv = make_conv(compress=8, local_size=16, k=4, query_chunk_size=64, checkpoint=checkpoint)
    one = saved_bytes(conv, *make_inputs([256], conv.region_size)[:2], make_inputs([256], conv.region_size)[2])
    x, pos, tree = make_inputs([256] * 8, conv.region_size)
    eight = saved_bytes(conv, x, pos, tree)
    assert eight <= 8.5 * one


def test_checkpointed_memory_is_linear_in_graph_size():
    conv = make_conv(compress=8, local_size=16, k=4, query_chunk_size=64)
    small = saved_bytes(conv, *make_inputs([256], conv.region_size)[:2], make_inputs([256], conv.region_size)[2])
    large = saved_bytes(conv, *make_inputs([2048], conv.region_size)[:2], make_inputs([2048], conv.region_size)[2])
    assert large <= 8.5 * small


def test_both_forms_of_the_selected_branch_give_the_same_gradients(monkeypatch):
    conv = make_conv(compress=8, local_size=16, k=3, kv_heads=2, query_chunk_size=32).double()
    x, pos, tree = make_inputs([70, 33], conv.region_size)
    x, pos = x.double(), pos.double()
    grads = []
    for union in (True, False):
        monkeypatch.setattr(ErwinNSAConv, "_prefer_union", staticmethod(lambda *args, use=union: use))
        conv.zero_grad()
        xi = x.clone().requires_grad_()
        conv.branches(xi, pos, ptr=tree.ptr, mask=tree.mask).selected.square().sum().backward()
        grads.append([xi.grad] + [p.grad.clone() for p in conv.parameters() if p.grad is not None])
    assert len(grads[0]) == len(grads[1]) > 1
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_a_graph_in_one_region_has_an_empty_selected_branch_that_adds_its_bias(selected_form):
    """docs/nsa.md: nothing is selectable, the attention output is zero and the branch is out_selected's bias."""
    conv = make_conv().double()
    with torch.no_grad():
        conv.out_selected.bias.normal_()
    x, pos, tree = make_inputs([9], conv.region_size)
    with torch.no_grad():
        out = conv.branches(x.double(), pos.double(), ptr=tree.ptr, mask=tree.mask)
    assert not out.selection_mask.any()
    torch.testing.assert_close(out.selected, conv.out_selected.bias.expand_as(out.selected))
