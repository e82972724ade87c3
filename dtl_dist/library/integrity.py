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
import os
import warnings
from pathlib import Path

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


def open_group(path: Path, mode: str = "r"):
    """The store's root group, read through :class:`VerifiedStore` when the store has an integrity record.

    Returns (group, verified). An unverified store is opened as before and warned about (:class:`UnverifiedStore`).
    """
    group = zarr.open_group(str(path), mode=mode)
    verified = group.attrs.get(ATTRIBUTE) == RECORD
    if verified and mode == "r":
        group = zarr.open_group(store=VerifiedStore(path, read_only=True), mode="r")
    elif not verified:
        warnings.warn(f"{path}: {UNVERIFIED}", UnverifiedStore, stacklevel=3)
    return group, verified


def read(array, root, selection, *, orthogonal: bool = False):
    """``array[selection]`` (``.oindex`` when ``orthogonal``); a chunk that fails to decode is a
    :class:`StoreDamaged` naming it."""
    try:
        return array.oindex[selection] if orthogonal else array[selection]
    except StoreDamaged:
        raise
    except Exception:
        damage = _first_damage(array, root)
        if damage is None:
            raise
        raise damage from None


def _chunks(array):
    return itertools.product(*(range(n) for n in array.cdata_shape))


def _first_damage(array, root, *, verified: bool = False, first_row: int = 0) -> StoreDamaged | None:
    """The first chunk of ``array`` (holding rows ``first_row:``) that is missing (``verified`` stores only) or
    fails to decode."""
    for coords in _chunks(array):
        if (coords[0] + 1) * array.chunks[0] <= first_row:
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
        damage = _first_damage(array, root, verified=verified, first_row=first_row)
        if damage is not None:
            raise damage
        count += sum((coords[0] + 1) * array.chunks[0] > first_row for coords in _chunks(array))
    return count
