from __future__ import annotations

import math

from torch_geometric.data import Data
from torch_geometric.data.datapipes import functional_transform
from torch_geometric.transforms import BaseTransform

from torch_geometric_erwin.nn.graph import radius_graph


@functional_transform("erwin_radius_graph")
class RadiusGraphTransform(BaseTransform):
    r"""Sets ``data.edge_index`` to the radius graph of ``data.pos`` (functional name:
    :obj:`erwin_radius_graph`): an edge from every node :math:`j` to every node :math:`i`
    of the same graph with :math:`\lVert p_j - p_i \rVert \le r`, at most
    ``max_num_neighbors`` per centre, the nearest ones (ties by index).

    PyG's :class:`~torch_geometric.transforms.RadiusGraph` without needing torch-cluster,
    and exact (see :func:`~torch_geometric_erwin.nn.radius_graph`): row 0 the neighbour,
    row 1 the centre.

    Args:
        r (float): radius.
        loop (bool): include self-loops. (default: :obj:`False`)
        max_num_neighbors (int): neighbours kept per node. (default: :obj:`32`)
    """

    def __init__(self, r: float, loop: bool = False, max_num_neighbors: int = 32) -> None:
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not r > 0 or not math.isfinite(r):
            raise ValueError(f"r must be a positive finite radius, got {r!r}")
        if isinstance(max_num_neighbors, bool) or not isinstance(max_num_neighbors, int) or max_num_neighbors < 1:
            raise ValueError(f"max_num_neighbors must be a positive int, got {max_num_neighbors!r}")
        self.r, self.loop, self.max_num_neighbors = float(r), bool(loop), max_num_neighbors

    def forward(self, data: Data) -> Data:
        if getattr(data, "pos", None) is None:
            raise ValueError(f"{self.__class__.__name__} needs data.pos")
        data.edge_index = radius_graph(data.pos, self.r, getattr(data, "batch", None), loop=self.loop,
                                       max_num_neighbors=self.max_num_neighbors)
        return data

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(r={self.r}, loop={self.loop}, max_num_neighbors={self.max_num_neighbors})"
