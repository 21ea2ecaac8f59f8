from __future__ import annotations

from torch_geometric.data import Data
from torch_geometric.data.datapipes import functional_transform
from torch_geometric.transforms import BaseTransform

from torch_geometric_erwin.checks import check_int, check_real
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
        self.r, self.loop = check_real("r", r, positive=True), bool(loop)
        self.max_num_neighbors = check_int("max_num_neighbors", max_num_neighbors)

    def forward(self, data: Data) -> Data:
        if getattr(data, "pos", None) is None:
            raise ValueError(f"{self.__class__.__name__} needs data.pos")
        data.edge_index = radius_graph(data.pos, self.r, getattr(data, "batch", None), loop=self.loop,
                                       max_num_neighbors=self.max_num_neighbors)
        return data

    def to_config(self) -> dict:
        """The transform as plain values, for a model file (:func:`graph_transform_from_config`)."""
        return {"transform": self.__class__.__name__, "r": self.r, "loop": self.loop,
                "max_num_neighbors": self.max_num_neighbors}

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(r={self.r}, loop={self.loop}, max_num_neighbors={self.max_num_neighbors})"
