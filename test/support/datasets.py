"""What the dataset tests read of a root's processed files."""
import os.path as osp

from torch_geometric.io import fs


def processed_files(root, *folders):
    """Names of every file under ``root/processed/<folders>``, in any pre-processing's folder, sorted."""
    path = osp.join(root, "processed", *folders)
    if not fs.exists(path):
        return []
    return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.get_fs(path).find(path))


def interrupt_at(count: int):
    """A ``pre_filter`` that raises ``KeyboardInterrupt`` on the ``count``-th sample it is given: a
    processing run stopped by the user midway."""
    seen = []

    def pre_filter(data):
        seen.append(1)
        if len(seen) == count:
            raise KeyboardInterrupt
        return True
    return pre_filter
