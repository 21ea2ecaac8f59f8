"""The message-passing baseline of the Erwin paper's comparisons: :class:`MPNN`."""
from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor, nn
from torch_geometric.data import Data
from torch_geometric.nn import MessagePassing

from torch_geometric_erwin.checks import check_int
from torch_geometric_erwin.nn.models.serialization import Configurable
from torch_geometric_erwin.nn.models._baseline import check_inputs


def _mlp(in_channels: int, hidden_channels: int, out_channels: int, num_layers: int,
         final_act: bool) -> nn.Sequential:
    """``num_layers`` linear layers with GELU in between (and after the last one if ``final_act``)."""
    widths = [in_channels] + [hidden_channels] * (num_layers - 1) + [out_channels]
    layers = []
    for index, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if index < num_layers - 1 or final_act:
            layers.append(nn.GELU())
    return nn.Sequential(*layers)


def _reset_mlp(mlp: nn.Sequential) -> None:
    for module in mlp:
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)


class InteractionLayer(MessagePassing):
    r"""One interaction step of :class:`MPNN`, with edge and node residuals.

    .. math::
        \mathbf{m}_{ij} &= \phi_e\big([\mathbf{e}_{ij}, \mathbf{h}_i, \mathbf{h}_j]\big), \qquad
        \mathbf{a}_i = \operatorname{aggr}_{j \in \mathcal{N}(i)} \mathbf{m}_{ij}, \\
        \mathbf{h}_i &\leftarrow \mathbf{h}_i + \operatorname{LN}\big(\phi_h([\mathbf{h}_i, \mathbf{a}_i])\big),
        \qquad \mathbf{e}_{ij} \leftarrow \mathbf{e}_{ij} + \operatorname{LN}(\mathbf{m}_{ij}),

    with :math:`i` the receiver (``edge_index[1]``) and :math:`j` the sender (``edge_index[0]``).

    Args:
        channels: latent width :math:`L` of nodes and edges.
        mlp_layers: linear layers per MLP (:math:`\phi_e`, :math:`\phi_h`).
        aggr: neighbourhood aggregation (``"mean"``, ``"sum"``, ``"max"`` ...).
        update_edges: apply the edge residual (``False`` for a last layer, whose edges
            nothing reads; ``e`` is then returned unchanged).

    Shapes:
        - input: ``h`` :math:`[N, L]`, ``e`` :math:`[E, L]`, ``edge_index`` :math:`[2, E]`
        - output: ``(h, e)`` with the same shapes
    """

    def __init__(self, channels: int, mlp_layers: int = 2, aggr: str = "mean", update_edges: bool = True):
        super().__init__(aggr=aggr)
        self.channels = channels
        self.message_mlp = _mlp(3 * channels, channels, channels, mlp_layers, final_act=False)
        self.update_mlp = _mlp(2 * channels, channels, channels, mlp_layers, final_act=False)
        self.message_norm = nn.LayerNorm(channels) if update_edges else None
        self.node_norm = nn.LayerNorm(channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        _reset_mlp(self.message_mlp)
        _reset_mlp(self.update_mlp)
        if self.message_norm is not None:
            self.message_norm.reset_parameters()
        self.node_norm.reset_parameters()

    def forward(self, h: Tensor, e: Tensor, edge_index: Tensor) -> tuple[Tensor, Tensor]:
        messages = self.edge_updater(edge_index, h=h, e=e)
        aggregated = self.propagate(edge_index, messages=messages, size=(h.size(0), h.size(0)))
        h_new = self.update_mlp(torch.cat([h, aggregated], dim=-1))
        if self.message_norm is not None:
            e = e + self.message_norm(messages)
        return h + self.node_norm(h_new), e

    def edge_update(self, h_i: Tensor, h_j: Tensor, e: Tensor) -> Tensor:
        return self.message_mlp(torch.cat([e, h_i, h_j], dim=-1))

    def message(self, messages: Tensor) -> Tensor:
        return messages

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.channels}, aggr={self.aggr})"


class MPNN(Configurable, nn.Module):
    r"""Message-passing baseline used in the Erwin paper's comparisons.

    Node features are embedded by a linear layer with GELU, edges by one on the relative position
    :math:`\mathbf{p}_i - \mathbf{p}_j` (receiver minus sender), as in the reference; then ``num_layers``
    :class:`InteractionLayer` steps update nodes and edges with residual
    connections (the last step updates nodes only: nothing reads its edges), and an optional linear layer maps the nodes to ``out_channels``.
    The inputs get Erwin's checks and messages (shapes, dtypes, NaN/Inf in ``x`` and ``pos``, a sorted
    ``batch``, edges within the nodes and graphs); ``batch`` is only checked: the edges alone decide which
    nodes interact.

    Args:
        in_channels: node input features :math:`F`.
        hidden_channels: latent width :math:`L`.
        num_layers: number of message-passing steps.
        out_channels: output width; ``None`` returns the :math:`L` latent features.
        dimensionality: spatial dimension :math:`D` of ``pos``.
        mlp_layers: linear layers per MLP of the interaction steps.
        aggr: neighbourhood aggregation.

    Shapes:
        - input: ``x`` :math:`[N, F]`, ``pos`` :math:`[N, D]`, ``edge_index`` :math:`[2, E]`
          (``edge_index[0]`` senders, ``edge_index[1]`` receivers)
        - output: :math:`[N, \text{out\_channels}]` (or :math:`[N, L]`)
    """

    def __init__(self, in_channels: int, hidden_channels: int, num_layers: int,
                 out_channels: Optional[int] = None, dimensionality: int = 3, mlp_layers: int = 2,
                 aggr: str = "mean"):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("hidden_channels", hidden_channels),
                            ("num_layers", num_layers), ("dimensionality", dimensionality),
                            ("mlp_layers", mlp_layers)):
            check_int(name, value)
        if out_channels is not None and (not isinstance(out_channels, int) or out_channels < 1):
            raise ValueError(f"out_channels must be a positive int or None, got {out_channels!r}")
        self.in_channels, self.hidden_channels = in_channels, hidden_channels
        self.num_layers, self.dimensionality = num_layers, dimensionality
        self.out_channels = hidden_channels if out_channels is None else out_channels
        # one Linear + GELU each, as the reference's encoders
        self.node_encoder = _mlp(in_channels, hidden_channels, hidden_channels, 1, final_act=True)
        self.edge_encoder = _mlp(dimensionality, hidden_channels, hidden_channels, 1, final_act=True)
        self.layers = nn.ModuleList(
            InteractionLayer(hidden_channels, mlp_layers, aggr, update_edges=i < num_layers - 1)
            for i in range(num_layers))
        self.lin_out = None if out_channels is None else nn.Linear(hidden_channels, out_channels)
        self.reset_parameters()

    @classmethod
    def upgrade_config(cls, config):
        if "dim" in config:  # the argument's name in model files of version 0.1
            config["dimensionality"] = config.pop("dim")
        return config

    def reset_parameters(self) -> None:
        _reset_mlp(self.node_encoder)
        _reset_mlp(self.edge_encoder)
        for layer in self.layers:
            layer.reset_parameters()
        if self.lin_out is not None:
            self.lin_out.reset_parameters()

    def forward(self, x: Union[Tensor, Data], pos: Optional[Tensor] = None,
                batch: Optional[Tensor] = None, edge_index: Optional[Tensor] = None) -> Tensor:
        if isinstance(x, Data) or hasattr(x, "to_data_list"):
            data = x
            return self.forward(data.x, data.pos, getattr(data, "batch", None), data.edge_index)
        if pos is None or edge_index is None:
            raise ValueError("MPNN needs pos and edge_index (give a graph, e.g. from a kNN or radius "
                             "transform)")
        # Erwin's checks and messages; a batch, when given, must be sorted and hold every edge within a graph
        check_inputs(x, pos, batch, edge_index, self.in_channels, self.dimensionality, self.node_encoder[0].weight.dtype)
        h = self.node_encoder(x)
        pos = pos.to(x.dtype)  # positions of any floating dtype, as for Erwin
        e = self.edge_encoder(pos[edge_index[1]] - pos[edge_index[0]])
        for layer in self.layers:
            h, e = layer(h, e, edge_index)
        return h if self.lin_out is None else self.lin_out(h)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, "
                f"hidden_channels={self.hidden_channels}, num_layers={self.num_layers}, dimensionality={self.dimensionality})")
