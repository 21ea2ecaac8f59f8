"""Process groups in tests: a free local port, and a preflight of plain torch.distributed."""
import datetime
import os
import socket

import torch
import torch.distributed as dist


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def gloo_preflight(rank, world_size, port):
    """Plain torch.distributed, none of our code: a failure here is the machine's, not ours."""
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=30))
    total = torch.ones(1)
    dist.all_reduce(total)
    dist.barrier()
    dist.destroy_process_group()
    assert int(total) == world_size
