"""Reading an .npz file without trusting it: every member's header before any member's data.

np.load inflates a member as soon as it is indexed, and allocates what the member's .npy header
declares before reading it: a deflated member can inflate to gigabytes (a zip bomb), a header can declare
a terabyte array. Here each member's header is read first (a few hundred bytes inflated), the meta
member is read under a size cap, and the caller's check sees the meta and every member's declared
shape and dtype, and may refuse, before a single array is inflated. Object arrays (pickle) are refused.
"""
from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
from numpy.lib import format as npy

META_CAP = 64 << 20  # bytes of the meta member: a 1.1M-character vocabulary is about 5 MB of it
HEADER_SLACK = 1 << 16  # bytes a member may hold beyond its array: magic, header, padding


class Header(NamedTuple):
    """A member's declared array: what np.shape() and check_arrays read, without the data."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        n = self.dtype.itemsize
        for d in self.shape:
            n *= int(d)
        return n


class Refused(Exception):
    """A member that must not be read (message: why); the caller turns it into its own error."""


class NeedsPickle(Refused):
    pass


def _header(f, name: str) -> Header:
    version = npy.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = npy.read_array_header_1_0(f)
    elif version in ((2, 0), (3, 0)):
        shape, fortran, dtype = npy.read_array_header_2_0(f)
    else:
        raise Refused(f"member {name!r} has an unknown .npy version {version}")
    if dtype.hasobject:
        raise NeedsPickle(name)
    return Header(tuple(int(d) for d in shape), dtype)


def read(source: Path | io.BytesIO, meta_key: str,
         check: Callable[[np.ndarray | None, dict[str, Header]], None]) -> dict[str, np.ndarray]:
    """The arrays of every member but the meta. check(meta array or None, headers) runs after every
    header is read and before any other array is; it raises to refuse. Raises Refused / NeedsPickle for a
    member that must not be read, and zipfile / numpy / OSError exceptions for a damaged file."""
    with zipfile.ZipFile(source) as zf:
        infos: dict[str, zipfile.ZipInfo] = {}
        headers: dict[str, Header] = {}
        for info in zf.infolist():
            if info.is_dir() or not info.filename.endswith(".npy"):
                raise Refused(f"member {info.filename!r} is not a numpy array")
            name = info.filename[:-4]
            with zf.open(info) as f:
                h = _header(f, name)
            if h.nbytes > info.file_size:
                raise Refused(f"member {name!r} declares {h.nbytes:,} bytes but holds {info.file_size:,}")
            if info.file_size > h.nbytes + HEADER_SLACK:  # more to inflate than the array needs
                raise Refused(f"member {name!r} inflates to {info.file_size:,} bytes for a {h.nbytes:,}-byte array")
            infos[name], headers[name] = info, h
        meta = None
        if meta_key in infos:
            if infos[meta_key].file_size > META_CAP:
                raise Refused(f"its meta is {infos[meta_key].file_size:,} bytes, more than a checkpoint's meta can be")
            meta = _array(zf, infos.pop(meta_key))
            del headers[meta_key]
        check(meta, headers)
        return {name: _array(zf, info) for name, info in infos.items()}


def read_meta(source: Path, meta_key: str) -> np.ndarray | None:
    """Only the meta member's array (None if there is none), under META_CAP; the other members are not
    looked at."""
    with zipfile.ZipFile(source) as zf:
        try:
            info = zf.getinfo(meta_key + ".npy")
        except KeyError:
            return None
        if info.file_size > META_CAP:
            raise Refused(f"its meta is {info.file_size:,} bytes, more than a checkpoint's meta can be")
        return _array(zf, info)


def _array(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    with zf.open(info) as f:
        return npy.read_array(f, allow_pickle=False)
