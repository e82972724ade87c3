"""Stores are verified, not trusted: every chunk is written and checksummed, and read back whole or not at all.

A store written by this version says so in its ``integrity`` attribute, and two things hold for it:

- every chunk of every array is on disk, even one equal to the fill value (``write_empty_chunks``), so a
  missing chunk file is damage, never data; :class:`VerifiedStore` answers a read of one with an error
  instead of zarr's fill value;
- every chunk carries zstd's content checksum (xxhash64 of the decoded bytes, checked as it decodes), so a
  truncated or altered chunk fails to decode instead of passing as spectra.

Both cost nothing on the read path beyond the checksum. A damaged chunk is a :class:`StoreDamaged` (a user
error) naming the store, the array and the chunk. Stores written before carry no record: they open, with
:data:`UNVERIFIED` as a note, and a chunk of theirs that fails to decode is still named.
"""

from __future__ import annotations

import itertools
import math
import os
import warnings
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import ZstdCodec
from zarr.storage import LocalStore

from dtl_dist.errors import UserInputError

ATTRIBUTE = "integrity"
RECORD = {"chunks": "all written", "checksum": "zstd"}
"""The ``integrity`` attribute of a store written with :func:`array_options`."""
WRITE_ALL = {"write_empty_chunks": True}
"""Array configuration of every write: a chunk equal to the fill value is written too."""
UNVERIFIED = ("written before stores were verified: a missing chunk reads as its fill value and an altered one "
              "may pass; re-create the store (e.g. `dtl ingest`) to verify it")


class StoreDamaged(UserInputError):
    """A chunk of a store is missing, truncated or altered."""


class UnverifiedStore(UserWarning):
    """A store without an integrity record was opened (see :data:`UNVERIFIED`)."""


def array_options(**options) -> dict:
    """Keyword arguments of ``create_array`` for a verified array: zstd with checksum, every chunk written."""
    return {"compressors": ZstdCodec(level=0, checksum=True), "config": WRITE_ALL} | options


def _damaged(root, key: str, what: str) -> StoreDamaged:
    array, _, chunk = key.partition("/c/")
    return StoreDamaged(f"{root}: array {array}, chunk c/{chunk}: {what}; the store is damaged, re-create it "
                        "(e.g. dtl ingest) or restore it from a copy")


class VerifiedStore(LocalStore):
    """A local Zarr store whose missing chunk is an error (:class:`StoreDamaged`), not the fill value."""

    async def get(self, key, prototype=None, byte_range=None):
        buffer = await super().get(key, prototype, byte_range)
        if buffer is None and "/c/" in key:
            raise _damaged(self.root, key, "missing")
        return buffer


def open_group(path: Path, attrs: dict | None = None):
    """The store's root group for reading, through :class:`VerifiedStore` when the store's attributes (``attrs``,
    read here when not given) hold the integrity record.

    Returns (group, verified). An unverified store is opened as before and warned about (:class:`UnverifiedStore`).
    """
    if attrs is None:
        attrs = dict(zarr.open_group(str(path), mode="r").attrs)
    verified = attrs.get(ATTRIBUTE) == RECORD
    if not verified:
        warnings.warn(f"{path}: {UNVERIFIED}", UnverifiedStore, stacklevel=3)
        return zarr.open_group(str(path), mode="r"), False
    return zarr.open_group(store=VerifiedStore(path, read_only=True), mode="r"), True


def read(array, root, selection, *, orthogonal: bool = False):
    """``array[selection]`` (``.oindex`` when ``orthogonal``); a chunk that fails to decode is a
    :class:`StoreDamaged` naming it."""
    try:
        return array.oindex[selection] if orthogonal else array[selection]
    except StoreDamaged:
        raise
    except Exception:
        damage = _first_damage(array, root, row_chunks=_row_chunks(array, selection))
        if damage is None:
            raise
        raise damage from None


def _row_chunks(array, selection) -> set[int]:
    """The chunks along the rows (axis 0) that a selection of rows touches."""
    size = array.chunks[0]
    if isinstance(selection, slice):
        start, stop, _ = selection.indices(array.shape[0])
        return set(range(start // size, (max(stop, start + 1) - 1) // size + 1))
    return set((np.asarray(selection, dtype=np.int64) % max(array.shape[0], 1) // size).tolist())


def _chunks(array):
    return itertools.product(*(range(n) for n in array.cdata_shape))


def _first_damage(array, root, *, verified: bool = False, row_chunks=None) -> StoreDamaged | None:
    """The first chunk of ``array`` (among ``row_chunks`` along the rows; None: all) that is missing
    (``verified`` stores only) or fails to decode."""
    for coords in _chunks(array):
        if row_chunks is not None and coords[0] not in row_chunks:
            continue
        key = f"{array.path}/{array.metadata.encode_chunk_key(coords)}"
        if verified and not os.path.exists(Path(root) / key):
            return _damaged(root, key, "missing")
        try:
            array.get_block_selection(coords)
        except StoreDamaged as exc:
            return exc
        except Exception as exc:  # the codecs raise several types for bytes they cannot decode
            return _damaged(root, key, f"unreadable ({type(exc).__name__}: {exc})")
    return None


def _arrays(group):
    for _, array in sorted(group.arrays()):
        yield array
    for _, sub in sorted(group.groups()):
        yield from _arrays(sub)


def check_present(group, root, verified: bool) -> None:
    """Every chunk file of every array is on disk (a listing, no decoding); nothing to check when unverified."""
    if not verified:
        return
    for array in _arrays(group):
        for coords in _chunks(array):
            key = f"{array.path}/{array.metadata.encode_chunk_key(coords)}"
            if not os.path.exists(Path(root) / key):
                raise _damaged(root, key, "missing")


def verify(group, root, verified: bool, *, first_row: int = 0) -> int:
    """Decode every chunk of every array holding rows ``first_row:`` (checksums checked); the first damaged
    one is a :class:`StoreDamaged`. Returns the number of chunks decoded."""
    count = 0
    for array in _arrays(group):
        row_chunks = set(range(first_row // array.chunks[0], array.cdata_shape[0]))
        damage = _first_damage(array, root, verified=verified, row_chunks=row_chunks)
        if damage is not None:
            raise damage
        count += len(row_chunks) * math.prod(array.cdata_shape[1:])
    return count
