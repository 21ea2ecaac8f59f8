r"""Ball attention with the distance bias (Erwin eqs. 8-10) in the C++ kernels of
``csrc/ball_attention.h``, as the custom op ``erwin::ball_attention``.

.. math::
    O_B = \mathrm{softmax}\Big(\frac{Q_B K_B^\top}{\sqrt{d_h}} + \sigma_h D_B\Big) V_B,
    \qquad (D_B)_{ij} = \lVert r_i - r_j \rVert

One task per ball and head keeps its scores in the caches and never stores them: the forward pass
keeps each query row's log-sum-exp and the backward pass forms the probabilities again from it, so
no ``[balls, heads, m, m]`` tensor is written, kept or read back. The distances are formed per ball
from the slots' positions relative to the ball's centre ``r``, in a buffer of the thread, so no
``[balls, m, m]`` tensor exists either. Q, K and V are read from the
projection's output ``qkv [S, (three h e)]`` and the output is written as ``[S, (h e)]`` rows
for the output projection, so neither is copied to a head-major layout.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from torch_geometric_erwin.ops._extension import arrays, extension


def _hidden_bytes(hidden: Optional[Tensor], balls: int, m: int) -> Optional[Tensor]:
    return None if hidden is None else hidden.reshape(balls, m).contiguous().view(torch.uint8)


@torch.library.custom_op("erwin::ball_attention", mutates_args=(), device_types="cpu")
def ball_attention(qkv: Tensor, sigma: Tensor, rel_pos: Tensor, ball_size: int,
                   hidden: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    """Attention of ``qkv [balls * m, (three h e)]`` (float32) with ``sigma [h]``, the slots'
    positions relative to their ball's centre ``rel_pos [balls * m, D]`` (float32), the ball size
    ``m`` and ``hidden`` (bool, ``[balls, m]`` or any shape of that size, True on keys to hide) or
    None; returns ``out [balls * m, (h e)]`` and the rows' log-sum-exp ``[balls, h, m]``."""
    balls, m = qkv.shape[0] // ball_size, ball_size
    qkv = qkv.contiguous()
    out, lse = qkv.new_empty(balls * m, qkv.shape[1] // 3), qkv.new_empty(balls, sigma.shape[0], m)
    extension().ball_attention_forward(*arrays(qkv, sigma.contiguous(), rel_pos.contiguous()), m,
                                       *arrays(_hidden_bytes(hidden, balls, m), out, lse), torch.get_num_threads())
    return out, lse


@ball_attention.register_fake
def _(qkv, sigma, rel_pos, ball_size, hidden):
    return qkv.new_empty(qkv.shape[0], qkv.shape[1] // 3), qkv.new_empty(qkv.shape[0] // ball_size,
                                                                        sigma.shape[0], ball_size)


@torch.library.custom_op("erwin::ball_attention_backward", mutates_args=(), device_types="cpu")
def ball_attention_backward(qkv: Tensor, sigma: Tensor, rel_pos: Tensor, ball_size: int, hidden: Optional[Tensor],
                            out: Tensor, lse: Tensor, grad_out: Tensor) -> Tuple[Tensor, Tensor]:
    """Gradients of :func:`ball_attention` for ``qkv`` and ``sigma`` given that of ``out``."""
    balls, m = qkv.shape[0] // ball_size, ball_size
    qkv = qkv.contiguous()
    grad_qkv, grad_sigma_parts = torch.empty_like(qkv), qkv.new_empty(balls, sigma.shape[0])
    extension().ball_attention_backward(*arrays(qkv, sigma.contiguous(), rel_pos.contiguous()), m,
                                        *arrays(_hidden_bytes(hidden, balls, m), out.contiguous(), lse.contiguous(),
                                                grad_out.contiguous(), grad_qkv, grad_sigma_parts),
                                        torch.get_num_threads())
    return grad_qkv, grad_sigma_parts.sum(0)


@ball_attention_backward.register_fake
def _(qkv, sigma, rel_pos, ball_size, hidden, out, lse, grad_out):
    return torch.empty_like(qkv), sigma.new_empty(sigma.shape)


def _setup_context(ctx, inputs, output):
    qkv, sigma, rel_pos, ball_size, hidden = inputs
    ctx.save_for_backward(qkv, sigma, rel_pos, hidden, *output)
    ctx.ball_size = ball_size
    ctx.mark_non_differentiable(output[1])


def _backward(ctx, grad_out, _grad_lse):
    qkv, sigma, rel_pos, hidden, out, lse = ctx.saved_tensors
    grad_qkv, grad_sigma = ball_attention_backward(qkv, sigma, rel_pos, ctx.ball_size, hidden, out, lse, grad_out)
    return grad_qkv, grad_sigma, None, None, None


ball_attention.register_autograd(_backward, setup_context=_setup_context)
