r"""Tiny raw files in each benchmark's exact format and layout, with known values, for tests (yours
and ours), documentation and the examples' ``--synthetic`` runs.

Every writer takes a raw directory (the dataset's ``root/raw``, a local path or any fsspec URL), writes
the benchmark's files under their real names and returns the arrays it wrote, so that what a dataset
makes of them can be checked independently of the dataset code:

.. code-block:: python

    from torch_geometric_erwin.datasets import Airfoil
    from torch_geometric_erwin.testing import write_airfoil

    written = write_airfoil("data/airfoil/raw")
    dataset = Airfoil("data/airfoil", split="train")

:func:`reference_state_dict` gives an ``Erwin``'s weights under the reference code's names, as a
reference checkpoint holds them. The TFRecord helpers (:func:`encode_tensor_proto`,
:func:`encode_example`, :func:`tfrecord_frame`, :func:`masked_crc32c`) build cosmology records by hand,
e.g. damaged ones for a test of the reader.
"""

from torch_geometric_erwin.testing.cosmology_shapenet import (encode_example, encode_tensor_proto,
                                                              masked_crc32c, tfrecord_frame, write_cosmology,
                                                              write_shapenet_car)
from torch_geometric_erwin.testing.geo_fno import write_airfoil, write_elasticity, write_pipe, write_plasticity
from torch_geometric_erwin.testing.md_eagle import write_eagle, write_polymer_md
from torch_geometric_erwin.testing.reference import reference_state_dict

__all__ = ["encode_example", "encode_tensor_proto", "masked_crc32c", "reference_state_dict", "tfrecord_frame",
           "write_airfoil", "write_cosmology", "write_eagle", "write_elasticity", "write_pipe", "write_plasticity",
           "write_polymer_md", "write_shapenet_car"]
