"""How the fixture writers put a file on any fsspec file system."""
from torch_geometric_erwin.datasets.io.atomic import atomic_write


def write_file(path: str, payload: bytes) -> None:
    """``payload`` as the file ``path`` (a local path or an fsspec URL), its folders created."""
    with atomic_write(path, "wb") as handle:
        handle.write(payload)
