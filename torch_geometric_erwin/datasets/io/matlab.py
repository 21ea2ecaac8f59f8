r"""MATLAB v5 ``.mat`` files read one slab at a time.

:func:`scipy.io.loadmat` reads a whole variable into memory, and its
intermediate buffers make the peak several times the variable's size (a
990 MB file peaked at 4.3 GB). :func:`read_mat5` lists the variables of a
level-5 file from their headers and reads each requested one into an array
the caller allocates, streaming the data through a small buffer: plain
variables are read in place, compressed ones (``miCOMPRESSED``) are
inflated as they are read. The peak is the destination array plus one slab
(the leading dimensions of the variable, at most about ``chunk_bytes``).

Layout (MathWorks, "MAT-File Format", level 5): a 128-byte header whose
last two bytes give the byte order, then one data element per variable,
each an 8-byte tag (type, byte count) and its data padded to 8 bytes; a
variable (``miMATRIX``) holds its array flags (class), dimensions, name and
real part, the data in column-major (Fortran) order.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import BinaryIO, Dict, Iterator, Optional, Tuple

import numpy as np

_MI_INT8, _MI_INT32, _MI_UINT32, _MI_MATRIX, _MI_COMPRESSED = 1, 5, 6, 14, 15
#: Storage types of numeric data (``miINT8`` ... ``miUINT64``).
_MI_DTYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8", 12: "i8", 13: "u8"}
#: Array classes of numeric variables (``mxDOUBLE_CLASS`` ... ``mxUINT64_CLASS``).
_NUMERIC_CLASSES = frozenset(range(6, 16))
_COMPLEX_FLAG = 0x800
_HEADER_BYTES = 128
_INFLATE_CHUNK = 1 << 20


class MatFormatError(ValueError):
    """A file that is not a MATLAB level-5 file or holds a variable this reader cannot read."""


@dataclass(frozen=True)
class Mat5Variable:
    """Where one variable's data lie: its shape, storage dtype and offsets."""

    name: str
    shape: Tuple[int, ...]
    dtype: np.dtype
    element_offset: int   # file offset of the variable's data element (after its tag)
    compressed: bool
    element_bytes: int    # byte count of the (compressed) element
    data_offset: int      # offset of the real part's data within the (inflated) element

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


class _Inflater:
    """``read(n)`` over the inflated bytes of a compressed element, pulling ``_INFLATE_CHUNK`` at a time."""

    def __init__(self, handle: BinaryIO, offset: int, nbytes: int):
        handle.seek(offset)
        self.handle, self.remaining = handle, nbytes
        self.inflater, self.pending = zlib.decompressobj(), b""

    def read(self, n: int) -> bytes:
        parts, size = [self.pending], len(self.pending)
        while size < n:
            if self.inflater.unconsumed_tail:
                data = self.inflater.decompress(self.inflater.unconsumed_tail, n - size)
            elif self.remaining > 0:
                raw = self.handle.read(min(_INFLATE_CHUNK, self.remaining))
                if not raw:
                    break
                self.remaining -= len(raw)
                data = self.inflater.decompress(raw, n - size)
            else:
                break
            parts.append(data)
            size += len(data)
        joined = b"".join(parts)
        self.pending = joined[n:]
        return joined[:n]


class _Plain:
    def __init__(self, handle: BinaryIO, offset: int):
        handle.seek(offset)
        self.read = handle.read


def _exact(stream, n: int) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise MatFormatError(f"the file ends inside a data element ({len(data)} of {n} bytes)")
    return data


def _tag(stream, order: str) -> Tuple[int, int, Optional[bytes], int]:
    """``(type, byte count, small-element data or None, bytes consumed including padding)``."""
    tag = _exact(stream, 8)
    kind, nbytes = (int(v) for v in np.frombuffer(tag, dtype=f"{order}u4"))
    if kind >> 16:  # small data element: byte count in the upper half, data in the tag's last four bytes
        return kind & 0xFFFF, kind >> 16, tag[4:4 + (kind >> 16)], 8
    return kind, nbytes, None, 8


def _subelement(stream, order: str) -> Tuple[int, bytes, int]:
    kind, nbytes, small, used = _tag(stream, order)
    if small is not None:
        return kind, small, used
    padded = nbytes + (-nbytes % 8)
    return kind, _exact(stream, padded)[:nbytes], used + padded


def _matrix_header(stream, order: str) -> Tuple[int, int, Tuple[int, ...], str, int, int]:
    """``(class, flags, shape, name, data type, bytes before the data)`` of a ``miMATRIX`` body."""
    _, flags, used = _subelement(stream, order)
    flags = int(np.frombuffer(flags[:4], dtype=f"{order}u4")[0])
    kind, dims, n = _subelement(stream, order)
    used += n
    if kind != _MI_INT32:
        raise MatFormatError("a variable's dimensions are not stored as int32")
    shape = tuple(int(d) for d in np.frombuffer(dims, dtype=f"{order}i4"))
    _, name, n = _subelement(stream, order)
    used += n
    data_kind, _, small, n = _tag(stream, order) if flags & 0xFF in _NUMERIC_CLASSES else (0, 0, None, 0)
    if small is not None:  # at most four bytes stored in the tag itself: nothing to stream, left out
        data_kind = 0
    return flags & 0xFF, flags, shape, name.decode("latin-1"), data_kind, used + n


def mat5_variables(handle: BinaryIO) -> Dict[str, Mat5Variable]:
    """The numeric, real variables of a level-5 MAT file, by name, read from their headers only
    (other variables, such as cells, strings or a value of at most four bytes, are left out)."""
    handle.seek(0)
    header = handle.read(_HEADER_BYTES)
    if len(header) < _HEADER_BYTES or header[126:128] not in (b"IM", b"MI"):
        if header.startswith(b"MATLAB 7.3"):
            raise MatFormatError("this is a MATLAB 7.3 (HDF5) file; save it with -v7 (or scipy.io.savemat)")
        raise MatFormatError("not a MATLAB level-5 file (no byte-order mark at byte 126)")
    order = "<" if header[126:128] == b"IM" else ">"
    found, offset = {}, _HEADER_BYTES
    while True:
        handle.seek(offset)
        tag = handle.read(8)
        if len(tag) < 8:
            return found
        kind, nbytes = (int(v) for v in np.frombuffer(tag, dtype=f"{order}u4"))
        start = offset + 8
        offset = start + nbytes + (-nbytes % 8 if kind != _MI_COMPRESSED else 0)
        if kind not in (_MI_MATRIX, _MI_COMPRESSED):
            continue
        stream = _Inflater(handle, start, nbytes) if kind == _MI_COMPRESSED else _Plain(handle, start)
        skip = 0
        if kind == _MI_COMPRESSED:
            inner, _, _, skip = _tag(stream, order)
            if inner != _MI_MATRIX:
                continue
        klass, flags, shape, name, data_kind, used = _matrix_header(stream, order)
        if klass not in _NUMERIC_CLASSES or flags & _COMPLEX_FLAG or data_kind not in _MI_DTYPES:
            continue
        found[name] = Mat5Variable(name, shape, np.dtype(order + _MI_DTYPES[data_kind]), start,
                                   kind == _MI_COMPRESSED, nbytes, skip + used)


def read_mat5(handle: BinaryIO, variable: Mat5Variable, out: np.ndarray, chunk_bytes: int = 1 << 22) -> np.ndarray:
    """Fill ``out`` (a C-order array of ``variable.shape``, any numeric dtype) with the variable's values,
    one slab of its leading dimensions (at most about ``chunk_bytes``, at least the first dimension) at a
    time; returns ``out``."""
    if out.shape != variable.shape:
        raise ValueError(f"out must have the variable's shape {variable.shape}, got {out.shape}")
    shape, itemsize = variable.shape, variable.dtype.itemsize
    lead = 1
    while lead < len(shape) and np.prod(shape[:lead + 1], dtype=np.int64) * itemsize <= chunk_bytes:
        lead += 1
    slab_shape = shape[:lead]
    slab = int(np.prod(slab_shape, dtype=np.int64))
    if variable.compressed:
        stream = _Inflater(handle, variable.element_offset, variable.element_bytes)
        _exact(stream, variable.data_offset)
    else:
        stream = _Plain(handle, variable.element_offset + variable.data_offset)
    for index in _fortran_indices(shape[lead:]):
        values = np.frombuffer(_exact(stream, slab * itemsize), dtype=variable.dtype)
        out[(Ellipsis, *index) if index else Ellipsis] = values.reshape(slab_shape, order="F")
    return out


def _fortran_indices(shape: Tuple[int, ...]) -> Iterator[Tuple[int, ...]]:
    """Every index of ``shape``, the first dimension varying fastest (the file's order)."""
    for reversed_index in np.ndindex(*reversed(shape)):
        yield tuple(reversed(reversed_index))
