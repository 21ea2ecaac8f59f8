"""The graph transforms as plain values, so that a model configured with one can be saved."""
from __future__ import annotations

from typing import Any, Mapping

from torch_geometric_erwin.transforms.knn_graph import KNNGraphTransform
from torch_geometric_erwin.transforms.radius_graph import RadiusGraphTransform

#: The transforms whose :meth:`to_config` a model file records.
GRAPH_TRANSFORMS = {cls.__name__: cls for cls in (KNNGraphTransform, RadiusGraphTransform)}


def graph_transform_from_config(config: Mapping[str, Any]):
    """The transform that ``config`` (the ``to_config()`` of a :class:`KNNGraphTransform` or
    :class:`RadiusGraphTransform`) describes."""
    arguments = dict(config)
    name = arguments.pop("transform", None)
    if name not in GRAPH_TRANSFORMS:
        raise ValueError(f"graph_transform {dict(config)!r} names no graph transform of this package; "
                         f"expected 'transform' to be one of {sorted(GRAPH_TRANSFORMS)}")
    return GRAPH_TRANSFORMS[name](**arguments)
