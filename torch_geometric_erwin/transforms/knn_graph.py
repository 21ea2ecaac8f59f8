from __future__ import annotations

from torch_geometric.data import Data
from torch_geometric.data.datapipes import functional_transform
from torch_geometric.transforms import BaseTransform

from torch_geometric_erwin.checks import check_int
from torch_geometric_erwin.nn.graph import knn_graph


@functional_transform("erwin_knn_graph")
class KNNGraphTransform(BaseTransform):
    r"""Sets ``data.edge_index`` to the :math:`k`-nearest-neighbour graph of ``data.pos``
    (functional name: :obj:`erwin_knn_graph`).

    The same edges as PyG's :class:`~torch_geometric.transforms.KNNGraph`, without
    needing torch-cluster, and exact (see :func:`~torch_geometric_erwin.nn.knn_graph`):
    row 0 the neighbour, row 1 the centre. The reference experiments build these
    graphs when batching (cosmology: :math:`k = 10` without self-loops; ShapeNet-Car
    and the PDE tasks: :math:`k = 8` counting the node itself).

    Args:
        k (int): neighbours per node.
        loop (bool): count the node itself as a neighbour. (default: :obj:`False`)
    """

    def __init__(self, k: int, loop: bool = False) -> None:
        self.k, self.loop = check_int("k", k), bool(loop)

    def forward(self, data: Data) -> Data:
        if getattr(data, "pos", None) is None:
            raise ValueError(f"{self.__class__.__name__} needs data.pos")
        data.edge_index = knn_graph(data.pos, self.k, getattr(data, "batch", None), loop=self.loop)
        return data

    def to_config(self) -> dict:
        """The transform as plain values, for a model file (:func:`graph_transform_from_config`)."""
        return {"transform": self.__class__.__name__, "k": self.k, "loop": self.loop}

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(k={self.k}, loop={self.loop})"
