"""Named dimensions, so ``xarray.open_zarr(store)`` reads a spectral library store (Zarr v3 ``dimension_names``).

Every array of a store names its dimensions: ``spectra`` (``sample``, ``wavelength``), ``sample_id`` and each
``targets/<name>`` and ``meta/<field>`` (``sample``), ``wavelengths`` (``wavelength``). The root also holds
``wavelength`` (nm), a copy of ``wavelengths`` under the dimension's own name, which xarray makes the index
coordinate (``ds.sel(wavelength=1000)``); ``spectra`` lists ``sample_id`` and ``wavelengths`` as its CF
``coordinates``. So::

    xarray.open_zarr(store)                    # spectra (sample, wavelength), coords wavelength, sample_id; attrs
    xarray.open_zarr(store, group="targets")   # soc ... on the same sample dimension
    xarray.open_zarr(store, group="meta")      # source, country, group, lat, lon ...
    open_dataset(store)                        # the three merged into one Dataset

Targets and metadata stay in their subgroups (the store's schema since version 1): a target and a metadata field
may share a name, every dtl tool and store reads them there, and Zarr v3 has no links, so a second copy at the
root would have to be kept in step on every append. A store written before dimensions were named opens in dtl as
before; :func:`name_dimensions` (``dtl info --upgrade``) adds the names in place, touching metadata only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import zarr

from dtl_dist.errors import UserInputError
from dtl_dist.library.integrity import array_options

SAMPLE, WAVELENGTH = "sample", "wavelength"
ROOT_DIMENSIONS = {"spectra": (SAMPLE, WAVELENGTH), "sample_id": (SAMPLE,), "wavelengths": (WAVELENGTH,),
                   WAVELENGTH: (WAVELENGTH,)}
"""Dimension names of the root arrays; every array of ``targets/`` and ``meta/`` is ``(sample,)``."""


def _set_dimension_names(array_dir: Path, names: tuple) -> bool:
    """Write ``dimension_names`` into an array's ``zarr.json`` (atomically); True if it changed."""
    meta_path = array_dir / "zarr.json"
    meta = json.loads(meta_path.read_text())
    if meta.get("node_type") != "array" or meta.get("dimension_names") == list(names):
        return False
    if len(meta["shape"]) != len(names):
        raise UserInputError(f"{array_dir}: array has {len(meta['shape'])} dimensions, expected {names}")
    meta["dimension_names"] = list(names)
    tmp = meta_path.with_name("zarr.json.tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, meta_path)
    return True


def name_dimensions(path) -> list[str]:
    """Give every array of the store at ``path`` its dimension names, add the ``wavelength`` coordinate and the
    ``coordinates`` attribute of ``spectra`` where missing; return what changed (empty: already named)."""
    path = Path(path)
    changed = []
    group = zarr.open_group(str(path), mode="r+")
    if WAVELENGTH not in group:
        wavelength = group.create_array(WAVELENGTH, **array_options(
            data=np.asarray(group["wavelengths"][:], dtype=np.float64), dimension_names=(WAVELENGTH,)))
        wavelength.attrs["units"] = "nm"
        changed.append(WAVELENGTH)
    if group["spectra"].attrs.get("coordinates") != "sample_id wavelengths":
        group["spectra"].attrs["coordinates"] = "sample_id wavelengths"
        changed.append("spectra.coordinates")
    arrays = dict(ROOT_DIMENSIONS)
    for sub in ("targets", "meta"):
        if sub in group:
            arrays |= {f"{sub}/{name}": (SAMPLE,) for name in group[sub].array_keys()}
    for name, dims in arrays.items():
        if _set_dimension_names(path / name, dims):
            changed.append(name)
    return changed


def open_dataset(path):
    """The store as one lazy ``xarray.Dataset``: spectra, ``wavelength`` and ``sample_id`` coordinates, every
    target and metadata field as a variable on ``sample``, the store's attributes.

    Examples
    --------
    >>> ds = open_dataset("global.zarr")                              # doctest: +SKIP
    >>> ds.spectra.where((ds.country == "USA").compute(), drop=True).sel(wavelength=slice(400, 1000))  # doctest: +SKIP
    """
    import xarray as xr

    root = xr.open_zarr(str(path), consolidated=False)
    parts = [root]
    group = zarr.open_group(str(path), mode="r")
    for sub in ("targets", "meta"):
        if sub in group and list(group[sub].array_keys()):
            parts.append(xr.open_zarr(str(path), group=sub, consolidated=False))
    merged = xr.merge(parts, compat="no_conflicts", join="exact", combine_attrs="drop")
    return merged.assign_attrs(root.attrs)
