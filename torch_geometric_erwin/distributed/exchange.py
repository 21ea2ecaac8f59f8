r"""The all-to-all routes of one rotated tree level."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

import torch
from torch import Tensor

from torch_geometric_erwin.distributed.comm import AllToAll, all_to_all


@dataclass
class RotatedExchange:
    r"""Moves a level's rows between the tree order and the rotated tree's order across ranks.

    The level has :math:`S_l` slots, rank :math:`r` holds slots
    :math:`[r s, (r+1) s)` with :math:`s = S_l / R`, and the rotated order is the permutation
    :math:`P` (``tree.rotated[level]``): position :math:`j` of the rotated order holds slot
    :math:`P_j`, whose row lives on rank :math:`\lfloor P_j / s \rfloor`. The rotated order is cut
    into :math:`R` chunks of :math:`s` positions (whole rotated balls, as :math:`s` is a multiple of
    the ball size), and each rank computes the rotated balls of one chunk. Which rank takes which
    chunk is free; the plan gives chunk :math:`c` to rank :math:`\pi(c)` so as to keep many rows
    where they are: with :math:`M_{cr}` the number of positions of chunk :math:`c` whose rows live on
    rank :math:`r`, :math:`\pi` is the greedy matching that repeatedly pairs the chunk and the rank of
    the largest remaining :math:`M_{cr}` (at least half the rows the best matching keeps). A rank
    then sends :math:`s - M_{\pi^{-1}(r) r}` rows each way. Every rank holds the whole permutation,
    so the routes are computed once per tree, identically on every rank, without communication.

    Attributes:
        send_index: ``[s]`` this rank's local slots in the order they are sent (grouped by destination
            rank, by rotated position within a destination).
        send_counts, recv_counts: rows sent to / received from every rank.
        recv_slots: ``[s]`` the local rotated position of every row received (grouped by source rank).
        send_inverse, recv_inverse: the inverse permutations of ``send_index`` and ``recv_slots``.
    """

    send_index: Tensor
    send_counts: List[int]
    recv_slots: Tensor
    recv_counts: List[int]
    send_inverse: Tensor
    recv_inverse: Tensor
    rank: int
    group: object = None

    @classmethod
    def plan(cls, permutation: Tensor, rank: int, world_size: int, group=None) -> "RotatedExchange":
        """The routes of rank ``rank`` for the level permutation ``permutation`` ``[S_l]``."""
        num_slots = permutation.numel()
        share = num_slots // world_size
        permutation = permutation.cpu()
        owner = permutation // share                # where the row of rotated position j lives
        chunk = torch.arange(num_slots) // share    # the chunk of rotated position j
        overlap = torch.zeros(world_size * world_size, dtype=torch.long).index_add_(
            0, chunk * world_size + owner, torch.ones(num_slots, dtype=torch.long)).view(world_size, world_size)
        computer = _match(overlap)                  # the rank that computes chunk c
        destination = computer[chunk]               # who computes rotated position j
        mine = (owner == rank).nonzero().squeeze(1)
        mine = mine[torch.argsort(destination[mine], stable=True)]  # by destination, increasing j within one
        send_index = permutation[mine] - rank * share
        send_counts = torch.bincount(destination[mine], minlength=world_size).tolist()
        own_chunk = int((computer == rank).nonzero())
        wanted = owner[own_chunk * share:(own_chunk + 1) * share]
        recv_slots = torch.argsort(wanted, stable=True)  # by source, increasing j within one
        recv_counts = torch.bincount(wanted, minlength=world_size).tolist()
        return cls(send_index, send_counts, recv_slots, recv_counts, torch.argsort(send_index),
                   torch.argsort(recv_slots), rank, group)

    @property
    def rows_sent(self) -> int:
        """Rows this rank sends to other ranks in one direction (the rows it keeps excluded)."""
        return self.send_index.numel() - self.send_counts[self.rank]

    def to(self, device) -> "RotatedExchange":
        for name in ("send_index", "recv_slots", "send_inverse", "recv_inverse"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def to_rotated(self, x: Tensor) -> Tensor:
        """``[s, C]`` rows in local tree order -> this rank's ``[s, C]`` rows in rotated order."""
        received = AllToAll.apply(x.index_select(0, self.send_index), self.send_counts, self.recv_counts,
                                  self.group)
        return received.index_select(0, self.recv_inverse)

    def from_rotated(self, x: Tensor) -> Tensor:
        """The inverse of :meth:`to_rotated`: rows in rotated order back to the ranks that own them."""
        returned = AllToAll.apply(x.index_select(0, self.recv_slots), self.recv_counts, self.send_counts,
                                  self.group)
        return returned.index_select(0, self.send_inverse)

    @torch.no_grad()
    def rotate_positions(self, pos: Tensor) -> Tensor:
        """:meth:`to_rotated` of positions, without autograd."""
        received = all_to_all(pos.index_select(0, self.send_index), self.send_counts, self.recv_counts,
                              self.group)
        return received.index_select(0, self.recv_inverse)


def _match(overlap: Tensor) -> Tensor:
    """``[R]`` the rank of every chunk: greedily the pair (chunk, rank) of the largest remaining entry of
    ``overlap`` ``[R chunks, R ranks]`` (the first on ties, so every rank finds the same matching)."""
    world_size = overlap.shape[0]
    remaining = overlap.clone()
    computer = torch.empty(world_size, dtype=torch.long)
    for _ in range(world_size):  # R rounds over an R x R matrix, once per tree level
        chunk, rank = divmod(int(torch.argmax(remaining)), world_size)
        computer[chunk] = rank
        remaining[chunk, :] = -1
        remaining[:, rank] = -1
    return computer
