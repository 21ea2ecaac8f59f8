r"""A built-in synthetic benchmark with real long-range structure:
:class:`SyntheticNBody` (softened gravitational accelerations of clustered
particles) and the exact, chunked :func:`gravitational_acceleration`."""
from __future__ import annotations

import hashlib
import itertools
import math
import numbers
import os.path as osp
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data, InMemoryDataset
from torch_geometric.data.separate import separate
from torch_geometric.io import fs

from torch_geometric_erwin.datasets._window_store import dataset_root
from torch_geometric_erwin.datasets.io.atomic import atomic_torch_save
from torch_geometric_erwin.datasets.base import ProcessedCache

SizeSpec = Union[int, Sequence[int], Mapping[str, int]]
RangeSpec = Union[int, Tuple[int, int]]


def gravitational_acceleration(pos: Tensor, mass: Tensor, softening: float, gravity: float = 1.0,
                               chunk_size: int = 64) -> Tensor:
    r"""Exact softened gravitational acceleration of every particle due to all
    the others,

    .. math::
        \mathbf{a}_i = G \sum_{j \neq i} m_j \,
        \frac{\mathbf{x}_j - \mathbf{x}_i}{\left(\lVert \mathbf{x}_j - \mathbf{x}_i
        \rVert^2 + \varepsilon^2\right)^{3/2}},

    in float64, for ``chunk_size`` query particles at a time: memory is
    :math:`O(\text{chunk\_size} \cdot N)`, time :math:`O(N^2)`. (The term
    :math:`j = i` is zero, so it needs no masking.)

    Only correctly rounded operations (``+ - * /`` and ``sqrt``) are used, and
    each row is summed by a fixed pairwise tree over :math:`j`: the result is
    bitwise the same whatever the number of threads and whatever
    ``chunk_size``.

    Args:
        pos (torch.Tensor): positions ``[N, D]``.
        mass (torch.Tensor): masses ``[N]``.
        softening (float): Plummer softening length :math:`\varepsilon > 0`.
        gravity (float, optional): gravitational constant :math:`G`.
            (default: :obj:`1.0`)
        chunk_size (int, optional): query particles per step. (default: :obj:`64`)

    Returns:
        torch.Tensor: accelerations ``[N, D]``, float64.

    Example:
        >>> pos = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
        >>> gravitational_acceleration(pos, torch.tensor([1.0, 2.0]), softening=1e-3)[:, 0]
        tensor([ 2.0000, -1.0000], dtype=torch.float64)
    """
    if not isinstance(pos, Tensor) or pos.dim() != 2 or pos.size(0) == 0:
        raise ValueError(f"pos must be a tensor of shape [N, D] with N >= 1, "
                         f"got {getattr(pos, 'shape', type(pos).__name__)}")
    if not isinstance(mass, Tensor) or tuple(mass.shape) != (pos.size(0),):
        raise ValueError(f"mass must be a tensor of shape [{pos.size(0)}], "
                         f"got {getattr(mass, 'shape', type(mass).__name__)}")
    _check_positive_real(softening, "softening")
    _check_positive_real(gravity, "gravity")
    _check_int(chunk_size, "chunk_size", low=1)

    pos, mass = pos.detach().double(), mass.detach().double()
    num_nodes, dim = pos.shape
    # Each row is summed by a pairwise tree over a power of two of columns: pad with massless
    # particles (their terms are exactly zero).
    width = 1 << (num_nodes - 1).bit_length()
    padded_pos = pos.new_zeros(width, dim)
    padded_pos[:num_nodes] = pos
    padded_mass = mass.new_zeros(width)
    padded_mass[:num_nodes] = mass
    columns = [padded_pos[:, d].contiguous() for d in range(dim)]
    eps2 = float(softening) ** 2
    out = torch.empty(num_nodes, dim, dtype=torch.float64, device=pos.device)
    for start in range(0, num_nodes, chunk_size):
        query = pos[start:start + chunk_size]
        rows = query.size(0)
        diffs = [columns[d].unsqueeze(0) - query[:, d:d + 1] for d in range(dim)]  # x_j - x_i
        r2 = diffs[0] * diffs[0]
        square = torch.empty_like(r2)
        for d in range(1, dim):  # separate multiply and add (no fused multiply-add)
            r2 += torch.mul(diffs[d], diffs[d], out=square)
        r2 += eps2
        weight = padded_mass.unsqueeze(0) / r2.sqrt().mul_(r2)  # m_j / (r^2 + eps^2)^{3/2}
        for d in range(dim):
            out[start:start + rows, d] = _pairwise_row_sum(diffs[d].mul_(weight))
    return out.mul_(float(gravity))


def _pairwise_row_sum(values: Tensor) -> Tensor:
    r"""Sums each row of ``values`` ``[R, 2^k]`` (overwritten) by halving in
    place: a summation order fixed by the shape alone (elementwise adds only)."""
    while values.size(1) > 1:
        half = values.size(1) // 2
        values[:, :half] += values[:, half:]
        values = values[:, :half]
    return values[:, 0]


class SyntheticNBody(ProcessedCache, InMemoryDataset):
    r"""Synthetic gravitational N-body graphs: predict every particle's
    softened gravitational acceleration due to *all* the other particles
    from the positions and masses.

    Every graph holds :math:`N` particles of total mass 1 in :math:`D = 2` or
    3 dimensions (:math:`G = 1`), drawn as a two-level mixture of Plummer
    spheres (truncated at :attr:`plummer_mass_cut` of their mass; in 2-D the
    projected Plummer profile):

    * a random number (``num_halos``) of extended *halos* (scale radii
      log-uniform in :attr:`halo_radius`, centres uniform in
      :math:`[-0.5, 0.5]^D`, Dirichlet weights) made of a few heavy
      particles: :attr:`heavy_particle_fraction` of the particles carry
      :attr:`heavy_mass_fraction` of the mass;
    * a random number (``num_clusters``) of compact *clusters* of light
      particles (scale radii log-uniform in :attr:`cluster_radius`, centres
      drawn from the halo distribution, Dirichlet weights) holding the rest.

    Particle masses get a log-normal jitter (:attr:`mass_jitter`) within each
    population; positions are shifted to the centre of mass and the particles
    randomly permuted. The target is :func:`gravitational_acceleration`
    (exact, float64, chunked) of the float32 positions and masses. Most of
    it comes from far away: in the default configuration the exact
    contribution of a particle's 64 nearest neighbours explains less than 20%
    of the target variance, and of its 4-layer receptive field in a 16-NN
    graph about 40% (3-D) or 27% (2-D) (see ``docs/datasets/nbody.md`` and
    ``benchmarks/nbody_locality.py``).

    A graph is the :obj:`~torch_geometric.data.Data`

    * ``pos`` ``[N, D]``: positions (generation units, root-mean-square
      radius about 0.5; not rescaled),
    * ``x`` ``[N, 1]``: mass over the mean particle mass,
      :math:`m_i N` (:meth:`normalize` with ``field="mass"``),
    * ``y`` ``[N, D]``: acceleration over :attr:`acc_std`
      (:meth:`normalize` with ``field="acc"``),

    without edges (models build their own neighbourhoods). Graph :math:`k` of a
    split is drawn from its own :class:`numpy.random.Generator` seeded with
    ``(seed, split, k)``: it does not depend on the sizes of the splits, the
    number of threads or the order of processing. Graphs are generated in
    :meth:`process` (nothing to download) and cached in
    ``root/processed`` under a name that encodes every generation parameter
    (the class-level constants below included, as a short hash), written
    under a temporary name and then moved, so an interrupted run leaves
    nothing that a later run would load.

    Args:
        root (str or os.PathLike): root directory, any fsspec URL (``memory://``, ``s3://``).
        split (str, optional): ``"train"``, ``"val"``, ``"test"`` or
            :obj:`None` for all three, in that order. Only the requested
            splits are generated. (default: :obj:`"train"`)
        num_graphs (int or tuple or dict, optional): graphs per split: one
            int for every split, a ``(train, val, test)`` triple, or a dict
            with some of the keys ``"train"``, ``"val"``, ``"test"`` (the
            others keep their defaults). (default: ``(1000, 100, 100)``)
        num_particles (int, optional): particles per graph :math:`N \geq 2`.
            (default: :obj:`2048`)
        dimensionality (int, optional): 2 or 3. (default: :obj:`3`)
        num_halos (int or tuple, optional): number of halos, or an inclusive
            ``(low, high)`` range to draw it from uniformly per graph.
            (default: ``(1, 3)``)
        num_clusters (int or tuple, optional): number of clusters, or an
            inclusive ``(low, high)`` range. (default: ``(8, 32)``)
        softening (float, optional): softening length :math:`\varepsilon`.
            (default: :obj:`0.05`)
        seed (int, optional): base seed. (default: :obj:`0`)
        transform (callable, optional): applied to every graph on access.
        pre_transform (callable, optional): applied to every graph once,
            before caching.
        pre_filter (callable, optional): graphs for which it returns
            :obj:`False` are not cached.
        log (bool, optional): print progress when processing.
            (default: :obj:`True`)
        force_reload (bool, optional): regenerate even if cached.
            (default: :obj:`False`)
    """
    splits = ("train", "val", "test")
    split_keys = ("train", "valid", "test")
    default_num_graphs = {"train": 1000, "val": 100, "test": 100}

    #: Fraction of the particles in the halos (heavy particles).
    heavy_particle_fraction = 0.125
    #: Fraction of the total mass carried by the halos.
    heavy_mass_fraction = 0.9
    #: Range of the halo scale radii (log-uniform).
    halo_radius = (0.3, 0.6)
    #: Range of the cluster scale radii (log-uniform).
    cluster_radius = (0.02, 0.1)
    #: Halo centres are uniform in ``[-halo_box, halo_box]^D``.
    halo_box = 0.5
    #: Plummer spheres are truncated at this fraction of their mass.
    plummer_mass_cut = 0.9
    #: Standard deviation of the log-normal jitter of particle masses.
    mass_jitter = 0.3
    #: :attr:`acc_std` is the root-mean-square acceleration of train graphs
    #: ``0 .. calibration_graphs - 1`` (generated even for a smaller train split).
    calibration_graphs = 16
    #: Format version, part of the cache file names.
    version = 1

    def __init__(self, root: str, split: Optional[str] = "train",
                 num_graphs: SizeSpec = (1000, 100, 100), num_particles: int = 2048,
                 dimensionality: int = 3,
                 num_halos: RangeSpec = (1, 3), num_clusters: RangeSpec = (8, 32),
                 softening: float = 0.05, seed: int = 0, transform: Optional[Callable] = None,
                 pre_transform: Optional[Callable] = None, pre_filter: Optional[Callable] = None,
                 log: bool = True, force_reload: bool = False) -> None:
        root = dataset_root(root)
        if split is not None and split not in self.splits:
            raise ValueError(f"split must be one of {self.splits} or None, got {split!r}")
        self.num_graphs = _parse_sizes(num_graphs, self.splits, self.default_num_graphs)
        self.num_particles = _check_int(num_particles, "num_particles", low=2)
        self.dimensionality = _check_int(dimensionality, "dimensionality", low=2)
        if self.dimensionality not in (2, 3):
            raise ValueError(f"dimensionality must be 2 or 3, got {dimensionality!r}")
        self.num_halos = _parse_range(num_halos, "num_halos")
        self.num_clusters = _parse_range(num_clusters, "num_clusters")
        self.softening = _check_positive_real(softening, "softening")
        self.seed = _check_int(seed, "seed", low=0)
        for name, value in (("transform", transform), ("pre_transform", pre_transform),
                            ("pre_filter", pre_filter)):
            if value is not None and not callable(value):
                raise TypeError(f"{name} must be callable or None, got {type(value).__name__}")
        for name, value in (("log", log), ("force_reload", force_reload)):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
        self.split = split
        self._splits = self.splits if split is None else (split,)
        #: Scale of ``x``: ``x = mass / mass_scale`` (the mean particle mass, :math:`1/N`).
        self.mass_scale = 1.0 / self.num_particles
        self.acc_std: float = float("nan")

        super().__init__(root, transform, pre_transform, pre_filter, log=log, force_reload=force_reload)

        parts, counts = [], []
        for name in self._splits:
            stored = self.load_processed(self._processed_path(name))
            if stored.get("version") != self.version or stored.get("config") != self._config():
                raise RuntimeError(f"'{self._processed_path(name)}' does not hold this configuration; "
                                   f"delete it or pass force_reload=True")
            self.acc_std = float(stored["acc_std"])
            data = Data.from_dict(stored["data"])
            parts.append((data, stored["slices"]))
            counts.append(stored["num_graphs"])
        self._counts = counts
        if len(parts) == 1:
            self._data, self.slices = parts[0]
        else:
            graphs = [_separate(data, slices, i) for (data, slices), n in zip(parts, counts)
                      for i in range(n)]
            self._data, self.slices = self.collate(graphs)

    # ------------------------------------------------------------------ files
    @property
    def raw_file_names(self) -> List[str]:
        return []

    @property
    def processed_file_names(self) -> List[str]:
        return [self._file_name(s) for s in self._splits]

    def _config(self) -> Dict:
        return {"num_particles": self.num_particles, "dim": self.dimensionality, "num_halos": self.num_halos,
                "num_clusters": self.num_clusters, "softening": self.softening, "seed": self.seed,
                "mixture": self._mixture()}

    def _mixture(self) -> Dict:
        r"""The class-level generation constants (a subclass may change them)."""
        return {name: getattr(self, name) for name in (
            "heavy_particle_fraction", "heavy_mass_fraction", "halo_radius", "cluster_radius",
            "halo_box", "plummer_mass_cut", "mass_jitter", "calibration_graphs")}

    def _file_name(self, split: str) -> str:
        (h0, h1), (c0, c1) = self.num_halos, self.num_clusters
        mixture = hashlib.sha256(repr(sorted(self._mixture().items())).encode()).hexdigest()[:8]
        return (f"{split}_v{self.version}_n{self.num_particles}_d{self.dimensionality}_halos{h0}-{h1}"
                f"_clusters{c0}-{c1}_soft{self.softening!r}_seed{self.seed}"
                f"_mix{mixture}_graphs{self.num_graphs[split]}.pt")

    def _processed_path(self, split: str) -> str:
        return osp.join(self.processed_dir, self._file_name(split))

    def _download(self) -> None:
        return  # nothing to fetch: no raw directory is created

    def download(self) -> None:
        r"""Does nothing: the graphs are generated in :meth:`process`."""

    # ------------------------------------------------------------ processing
    def process(self) -> None:
        r"""Generates the requested splits that are not cached yet (all of
        them with ``force_reload``) and saves each atomically.

        Graphs are generated in parallel, one per Python thread, on as many
        threads as :func:`torch.get_num_threads` says; meanwhile torch's
        intra-op threads are set to 1 (and restored afterwards): many small
        parallel kernels would spend their time in barriers, badly so on a
        busy machine."""
        todo = [s for s in self._splits if self.force_reload or not fs.exists(self._processed_path(s))]
        if not todo:
            return
        threads = torch.get_num_threads()
        pool = ThreadPoolExecutor(max(1, threads))
        try:
            torch.set_num_threads(1)
            calibration = list(pool.map(lambda k: self.generate("train", k),
                                        range(self.calibration_graphs)))
            acc_std = float(torch.cat([acc for _, _, acc in calibration]).pow(2).mean().sqrt())
            for split in todo:
                reuse = calibration if split == "train" else []
                generated = pool.map(lambda k: self.generate(split, k),
                                     range(len(reuse), self.num_graphs[split]))
                graphs = []
                for pos, mass, acc in itertools.chain(reuse[:self.num_graphs[split]], generated):
                    data = Data(pos=pos, x=(mass * self.num_particles).unsqueeze(-1),
                                y=(acc / acc_std).float())
                    if self.pre_filter is not None and not self.pre_filter(data):
                        continue
                    graphs.append(data if self.pre_transform is None else self.pre_transform(data))
                if not graphs:
                    raise RuntimeError(f"pre_filter rejected every graph of split {split!r}")
                data, slices = self.collate(graphs)
                atomic_torch_save({"version": self.version, "config": self._config(), "acc_std": acc_std,
                                   "num_graphs": len(graphs), "data": data.to_dict(), "slices": slices},
                                  self._processed_path(split))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            torch.set_num_threads(threads)

    def generate(self, split: str, index: int) -> Tuple[Tensor, Tensor, Tensor]:
        r"""Graph ``index`` of ``split``, unnormalised and uncached.

        Returns:
            ``(pos, mass, acc)``: float32 positions ``[N, D]`` and masses
            ``[N]`` (summing to 1 up to rounding), and the float64
            acceleration ``[N, D]`` of exactly those float32 values.
        """
        if split not in self.splits:
            raise ValueError(f"split must be one of {self.splits}, got {split!r}")
        _check_int(index, "index", low=0)
        rng = np.random.default_rng([self.seed, self.splits.index(split), index])
        pos, mass = self._sample(rng)
        pos, mass = torch.from_numpy(pos).float(), torch.from_numpy(mass).float()
        return pos, mass, gravitational_acceleration(pos, mass, self.softening)

    def _sample(self, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
        n, dimensionality = self.num_particles, self.dimensionality
        num_halos = int(rng.integers(self.num_halos[0], self.num_halos[1] + 1))
        num_clusters = int(rng.integers(self.num_clusters[0], self.num_clusters[1] + 1))
        num_heavy = min(max(1, round(n * self.heavy_particle_fraction)), n - 1)
        num_light = n - num_heavy

        halo_radius = _log_uniform(rng, *self.halo_radius, num_halos)
        halo_centre = rng.uniform(-self.halo_box, self.halo_box, (num_halos, dimensionality))
        # Heavy particles and cluster centres both follow the halo distribution.
        halo = rng.choice(num_halos, size=num_heavy + num_clusters, p=rng.dirichlet(np.ones(num_halos)))
        points = halo_centre[halo] + halo_radius[halo, None] * self._plummer(rng, halo.size)
        heavy, cluster_centre = points[:num_heavy], points[num_heavy:]

        cluster_radius = _log_uniform(rng, *self.cluster_radius, num_clusters)
        cluster = rng.choice(num_clusters, size=num_light, p=rng.dirichlet(np.ones(num_clusters)))
        light = cluster_centre[cluster] + cluster_radius[cluster, None] * self._plummer(rng, num_light)

        jitter = np.exp(self.mass_jitter * rng.standard_normal(n))
        mass = np.concatenate([self.heavy_mass_fraction * jitter[:num_heavy] / jitter[:num_heavy].sum(),
                               (1 - self.heavy_mass_fraction) * jitter[num_heavy:]
                               / jitter[num_heavy:].sum()])
        pos = np.concatenate([heavy, light])
        pos -= (mass[:, None] * pos).sum(0) / mass.sum()
        order = rng.permutation(n)
        return pos[order], mass[order]

    def _plummer(self, rng: np.random.Generator, count: int) -> np.ndarray:
        r"""``count`` points of a unit Plummer sphere (3-D) or of its projection
        (2-D), by inverting the enclosed-mass fraction
        :math:`u = r^3 / (1 + r^2)^{3/2}` (3-D) or :math:`u = r^2 / (1 + r^2)`
        (2-D) for :math:`u` uniform in :math:`(0, \text{cut}]`."""
        u = self.plummer_mass_cut * (1.0 - rng.random(count))
        if self.dimensionality == 3:
            radius = 1.0 / np.sqrt(u ** (-2.0 / 3.0) - 1.0)
        else:
            radius = np.sqrt(u / (1.0 - u))
        direction = rng.standard_normal((count, self.dimensionality))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        return radius[:, None] * direction

    # ---------------------------------------------------------------- access
    def get_idx_split(self) -> Dict[str, Tensor]:
        r"""OGB-style split indices into this dataset: ``{"train", "valid",
        "test"}`` -> graph indices (empty for the splits not loaded)."""
        out = {key: torch.empty(0, dtype=torch.long) for key in self.split_keys}
        start = 0
        for name, count in zip(self._splits, self._counts):
            out[self.split_keys[self.splits.index(name)]] = torch.arange(start, start + count)
            start += count
        return out

    # --------------------------------------------------------- normalisation
    def normalize(self, value: Tensor, field: str = "acc") -> Tensor:
        r"""Physical to stored units: accelerations (``field="acc"``) are
        divided by :attr:`acc_std`, masses (``"mass"``) by :attr:`mass_scale`."""
        return value / self._scale(value, field)

    def denormalize(self, value: Tensor, field: str = "acc") -> Tensor:
        r"""Inverse of :meth:`normalize`: ``y`` to accelerations, ``x`` to masses."""
        return value * self._scale(value, field)

    def _scale(self, value: Tensor, field: str) -> float:
        if not isinstance(value, Tensor):
            raise TypeError(f"value must be a torch.Tensor, got {type(value).__name__}")
        scales = {"acc": self.acc_std, "mass": self.mass_scale}
        if field not in scales:
            raise ValueError(f"field must be one of {tuple(scales)}, got {field!r}")
        return scales[field]

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(split={self.split!r}, graphs={len(self)}, "
                f"num_particles={self.num_particles}, dimensionality={self.dimensionality})")


# ---------------------------------------------------------------- helpers
def _separate(data: Data, slices: Optional[Dict], index: int) -> Data:
    if slices is None:  # a single stored graph
        return data
    return separate(cls=data.__class__, batch=data, idx=index, slice_dict=slices, decrement=False)


def _log_uniform(rng: np.random.Generator, low: float, high: float, count: int) -> np.ndarray:
    return np.exp(rng.uniform(math.log(low), math.log(high), count))


def _check_int(value, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value!r}")
    return int(value)


def _check_positive_real(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return float(value)


def _parse_range(value: RangeSpec, name: str) -> Tuple[int, int]:
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a (low, high) pair, got {value!r}")
        low, high = (_check_int(v, name, low=1) for v in value)
        if low > high:
            raise ValueError(f"{name} must satisfy low <= high, got {value!r}")
        return low, high
    count = _check_int(value, name, low=1)
    return count, count


def _parse_sizes(value: SizeSpec, splits: Sequence[str], defaults: Dict[str, int]) -> Dict[str, int]:
    if isinstance(value, Mapping):
        unknown = set(value) - set(splits)
        if unknown:
            raise ValueError(f"num_graphs keys must be among {tuple(splits)}, got {sorted(map(str, unknown))}")
        sizes = {**defaults, **value}
    elif isinstance(value, (tuple, list)):
        if len(value) != len(splits):
            raise ValueError(f"num_graphs must have {len(splits)} entries {tuple(splits)}, got {value!r}")
        sizes = dict(zip(splits, value))
    else:
        sizes = {s: value for s in splits}
    for s in splits:
        _check_int(sizes[s], "num_graphs", low=1)
    return {s: int(sizes[s]) for s in splits}
