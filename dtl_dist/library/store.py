"""Zarr v3 spectral library store: one group per library or site (paper section 2.1).

Layout of a store (a directory)::

    zarr.json                  attrs: schema, schema_version, units, preprocessing, target_units, provenance,
                               integrity (every chunk written and checksummed, see library/integrity.py)
    spectra                    (N, B) float32, chunked by rows
    wavelengths                (B,) float64, nm, strictly increasing
    sample_id                  (N,) str, unique
    targets/<property>         (N,) float64, NaN = not measured (SOC in %)
    meta/<field>               (N,) str (source, country, group, role) or float64 (lat, lon)
    wavelength                 (B,) float64, nm: the xarray index coordinate (see library/xarray_layout.py)

Arrays name their dimensions (``sample``, ``wavelength``), so ``xarray.open_zarr(store)`` reads a store.

A country library is a *view* of the global one selected by metadata (``lib.by(country="SE")``), as in
the paper; views share the store and carry a row index. Writes go to a temporary directory that is
renamed into place, so a failed write leaves no partial store and an existing store unchanged.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from dtl_dist.errors import UserInputError
from dtl_dist.library import integrity
from dtl_dist.library.atomic import remove_path, replace_path, temporary_sibling
from dtl_dist.library.xarray_layout import name_dimensions
from dtl_dist.spectra.grid import same_grid, validate_grid

SCHEMA = "dtl-dist/spectral-library"
SCHEMA_VERSION = 1
DEFAULT_CHUNK_ROWS = 10_000
ROLE = "role"
LOCAL_LABELLED = "local_labelled"
LOCAL_TEST = "local_test"


def now_iso() -> str:
    """Current UTC time in ISO 8601, for provenance records."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _is_numeric(values: np.ndarray) -> bool:
    return values.dtype.kind in "biuf"


def _text(values) -> np.ndarray:
    """Fixed-width unicode array (zarr hands back numpy StringDType, which does not mix with ``str``)."""
    return np.asarray(values, dtype=object).astype(str)


def _column(values, n: int, what: str) -> np.ndarray:
    values = np.asarray(values)
    if values.shape != (n,):
        raise UserInputError(f"{what}: expected {n} values (one per sample), got shape {values.shape}")
    return values.astype(np.float64) if _is_numeric(values) else _text(values)


class LibraryWriter:
    """Builds a new store in a temporary directory, chunk by chunk; :meth:`commit` renames it into place.

    Used for streaming ingestion (``append_rows``) and for parallel writers that fill disjoint,
    chunk-aligned row regions of a store of known size (``n_rows`` + ``write_region``).
    """

    def __init__(self, path, wavelengths, *, targets=(), meta_numeric=(), meta_text=(), n_rows: int = 0,
                 units="absorbance", preprocessing=(), target_units=None, provenance=(),
                 chunk_rows=DEFAULT_CHUNK_ROWS, overwrite=False):
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise UserInputError(f"{self.path}: already exists (use --overwrite to replace it)")
        self.wavelengths = validate_grid(wavelengths)
        self.tmp = temporary_sibling(self.path)
        self.n_rows = int(n_rows)
        self.group = zarr.open_group(str(self.tmp), mode="w", zarr_format=3)
        self.group.attrs.update({
            "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "units": units,
            "preprocessing": list(preprocessing), "target_units": dict(target_units or {}),
            "provenance": list(provenance), "created": now_iso(), integrity.ATTRIBUTE: integrity.RECORD,
        })
        b = self.wavelengths.size
        chunk_rows = max(1, int(chunk_rows))
        new = integrity.array_options
        self.group.create_array("wavelengths", **new(data=self.wavelengths))
        self.group.create_array("spectra", **new(shape=(self.n_rows, b), dtype="float32", chunks=(chunk_rows, b),
                                                 fill_value=np.nan))
        self.group.create_array("sample_id", **new(shape=(self.n_rows,), dtype=str, chunks=(chunk_rows,)))
        for name in targets:
            self.group.create_array(f"targets/{name}", **new(shape=(self.n_rows,), dtype="float64",
                                                             chunks=(chunk_rows,), fill_value=np.nan))
        for name in meta_numeric:
            self.group.create_array(f"meta/{name}", **new(shape=(self.n_rows,), dtype="float64",
                                                          chunks=(chunk_rows,), fill_value=np.nan))
        for name in meta_text:
            self.group.create_array(f"meta/{name}", **new(shape=(self.n_rows,), dtype=str, chunks=(chunk_rows,)))
        self.columns = [f"targets/{t}" for t in targets] + [f"meta/{m}" for m in (*meta_numeric, *meta_text)]

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()
        return False

    def write_region(self, start: int, spectra, sample_id, columns: dict) -> None:
        """Write rows ``start:start+len(spectra)``; ``columns`` maps 'targets/x' / 'meta/y' to arrays."""
        _write_rows(self.group, start, spectra, sample_id, columns, self.columns)

    def append_rows(self, spectra, sample_id, columns: dict) -> None:
        """Grow the store by ``len(spectra)`` rows and write them."""
        start = self.n_rows
        self.n_rows += len(spectra)
        _resize(self.group, self.n_rows)
        self.write_region(start, spectra, sample_id, columns)

    def commit(self) -> "SpectralLibrary":
        """Check ids are unique, then rename the temporary store into place and open it."""
        ids = self.group["sample_id"][:]
        _check_unique_ids(ids, where=str(self.path))
        name_dimensions(self.tmp)
        replace_path(self.tmp, self.path)
        return SpectralLibrary.open(self.path)

    def abort(self) -> None:
        remove_path(self.tmp)


def write_region(path, start: int, spectra, sample_id, columns: dict) -> None:
    """Write rows ``start:start+len(spectra)`` of the store at ``path`` (e.g. a :class:`LibraryWriter`'s
    ``tmp``) by path, so parallel writers in other processes fill their own chunk-aligned regions.
    Columns not in ``columns`` keep their fill value (NaN or empty).
    """
    group = zarr.open_group(str(path), mode="r+")
    _write_rows(group, start, spectra, sample_id, columns, list(columns))


def _resize(group, n_rows: int) -> None:
    group["spectra"].resize((n_rows, group["spectra"].shape[1]))
    for name in ["sample_id", *_column_names(group)]:
        group[name].resize((n_rows,))


def _column_names(group) -> list[str]:
    names = []
    for sub in ("targets", "meta"):
        if sub in group:
            names += [f"{sub}/{k}" for k in sorted(group[sub].array_keys())]
    return names


def _write_rows(group, start, spectra, sample_id, columns, expected) -> None:
    spectra = np.asarray(spectra, dtype=np.float32)
    n = spectra.shape[0]
    stop = start + n
    group["spectra"].with_config(integrity.WRITE_ALL)[start:stop] = spectra
    group["sample_id"].with_config(integrity.WRITE_ALL)[start:stop] = _text(sample_id)
    for name in expected:
        if name in columns:
            values = _column(columns[name], n, name)
        elif name.startswith("targets/") or group[name].dtype.kind == "f":
            values = np.full(n, np.nan)
        else:
            values = np.full(n, "", dtype=str)
        group[name].with_config(integrity.WRITE_ALL)[start:stop] = values


def _check_unique_ids(ids: np.ndarray, *, where: str) -> None:
    uniq, counts = np.unique(ids, return_counts=True)
    if np.any(counts > 1):
        dups = uniq[counts > 1]
        raise UserInputError(
            f"{where}: duplicate sample_id {', '.join(map(str, dups[:5]))}"
            f"{' ...' if dups.size > 5 else ''} ({dups.size} duplicated); expected unique ids"
        )


@dataclass(frozen=True)
class LibraryRef:
    """A small, picklable handle on a store (path + row index) that Dask/Ray workers open themselves, so
    spectra never travel through a task graph. Nothing is cached here: a reader that needs the spectra
    for longer (e.g. RS-LOCAL's workers) keeps its own prepared copy, read in row blocks (``spectra(rows)``).
    """

    path: str
    index: tuple | None = None

    def open(self) -> "SpectralLibrary":
        lib = SpectralLibrary(self.path)  # a worker's read: chunks are checked as they are read
        return lib if self.index is None else lib.subset(index=np.asarray(self.index, dtype=np.int64))

    @property
    def n_samples(self) -> int:
        return len(self.index) if self.index is not None else SpectralLibrary(self.path).n_samples

    def spectra(self, rows=None) -> np.ndarray:
        """Spectra as float32; ``rows`` (int index or slice) relative to this view, None = all."""
        return self.open().spectra(rows)

class SpectralLibrary:
    """A spectral library or site in a Zarr v3 store, or a row view of one.

    Parameters
    ----------
    path : path of the store directory.
    index : optional int array of rows (a view); None = all rows.

    Examples
    --------
    >>> lib = SpectralLibrary.open("runs/global.zarr")          # doctest: +SKIP
    >>> sweden = lib.by(country="SE")                            # doctest: +SKIP
    >>> X, soc = sweden.spectra(), sweden.target("soc")          # doctest: +SKIP
    """

    def __init__(self, path, index=None, _group=None):
        self.path = Path(path)
        self._group, self.verified = (_group, None) if _group is not None else _open_group(self.path)
        self.index = None if index is None else np.asarray(index, dtype=np.int64)

    # --- construction ------------------------------------------------------------------------------
    @classmethod
    def open(cls, path) -> "SpectralLibrary":
        """Open an existing store; a missing, foreign or truncated store, or a missing chunk of any array, is
        a clear UserInputError (a chunk that fails to decode is one when it is read)."""
        lib = cls(path)
        lib.check_chunks()
        return lib

    @classmethod
    def create(cls, path, spectra, wavelengths, sample_id, *, targets=None, meta=None, units="absorbance",
               preprocessing=(), target_units=None, provenance=(), chunk_rows=DEFAULT_CHUNK_ROWS,
               overwrite=False) -> "SpectralLibrary":
        """Write a whole library from in-memory arrays (atomically) and open it."""
        spectra = np.asarray(spectra, dtype=np.float32)
        wavelengths = validate_grid(wavelengths)
        if spectra.ndim != 2 or spectra.shape[1] != wavelengths.size:
            raise UserInputError(
                f"spectra: expected shape (N, {wavelengths.size}) to match the wavelengths, got {spectra.shape}"
            )
        targets, meta = dict(targets or {}), dict(meta or {})
        numeric = [k for k, v in meta.items() if _is_numeric(np.asarray(v))]
        text = [k for k in meta if k not in numeric]
        with LibraryWriter(path, wavelengths, targets=list(targets), meta_numeric=numeric, meta_text=text,
                           n_rows=len(spectra), units=units, preprocessing=preprocessing,
                           target_units=target_units, provenance=provenance, chunk_rows=chunk_rows,
                           overwrite=overwrite) as writer:
            columns = {f"targets/{k}": v for k, v in targets.items()} | {f"meta/{k}": v for k, v in meta.items()}
            if len(spectra):
                writer.write_region(0, spectra, sample_id, columns)
            return writer.commit()

    # --- properties --------------------------------------------------------------------------------
    @property
    def attrs(self) -> dict:
        return dict(self._group.attrs)

    @property
    def units(self) -> str:
        return self._group.attrs["units"]

    @property
    def preprocessing(self) -> list[str]:
        return list(self._group.attrs.get("preprocessing", []))

    @property
    def provenance(self) -> list[dict]:
        return list(self._group.attrs.get("provenance", []))

    @property
    def wavelengths(self) -> np.ndarray:
        return integrity.read(self._group["wavelengths"], self.path, slice(None))

    @property
    def n_bands(self) -> int:
        return int(self._group["spectra"].shape[1])

    @property
    def n_samples(self) -> int:
        return int(self._group["spectra"].shape[0]) if self.index is None else int(self.index.size)

    def __len__(self) -> int:
        return self.n_samples

    @property
    def targets(self) -> list[str]:
        return sorted(self._group["targets"].array_keys()) if "targets" in self._group else []

    @property
    def meta_fields(self) -> list[str]:
        return sorted(self._group["meta"].array_keys()) if "meta" in self._group else []

    @property
    def sample_id(self) -> np.ndarray:
        return self._read("sample_id")

    def check_chunks(self, *, decode_from: int | None = None) -> int:
        """Check that every chunk of every array is on disk (a verified store) and, with ``decode_from``, that
        the chunks holding rows ``decode_from:`` decode with their checksums (0: every chunk, ``dtl info
        --verify``). A damaged chunk is a :class:`~dtl_dist.library.integrity.StoreDamaged`. Returns the number
        of chunks decoded."""
        integrity.check_present(self._group, self.path, self.verified)
        if decode_from is None:
            return 0
        return integrity.verify(self._group, self.path, self.verified, first_row=decode_from)

    def __repr__(self) -> str:
        view = "" if self.index is None else f", view of {self.index.size} rows"
        return f"SpectralLibrary({str(self.path)!r}, N={self.n_samples}, B={self.n_bands}, units={self.units}{view})"

    # --- reading -----------------------------------------------------------------------------------
    def _rows(self, rows):
        """Absolute store rows for ``rows`` (relative to this view)."""
        if self.index is None:
            return slice(None) if rows is None else rows
        return self.index if rows is None else self.index[rows]

    def _read(self, name: str, rows=None) -> np.ndarray:
        array = self._group[name]
        sel = self._rows(rows)
        if isinstance(sel, slice):
            values = integrity.read(array, self.path, sel)
        else:
            sel = np.asarray(sel, dtype=np.int64)
            values = array[0:0] if sel.size == 0 else integrity.read(array, self.path, sel, orthogonal=True)
        return values if values.dtype.kind in "biuf" else _text(values)

    def spectra(self, rows=None) -> np.ndarray:
        """Spectra as float32 (N, B); ``rows`` is an int index or slice relative to this view."""
        return self._read("spectra", rows)

    def target(self, name: str = "soc", rows=None) -> np.ndarray:
        """A target property (NaN = not measured)."""
        if name not in self.targets:
            raise UserInputError(f"{self.path}: no target {name!r}; the store has {self.targets or 'none'}")
        return self._read(f"targets/{name}", rows)

    def meta(self, name: str, rows=None) -> np.ndarray:
        """A metadata field (text or float)."""
        if name not in self.meta_fields:
            raise UserInputError(f"{self.path}: no metadata field {name!r}; the store has {self.meta_fields or 'none'}")
        return self._read(f"meta/{name}", rows)

    def ref(self) -> LibraryRef:
        """A picklable handle for workers (see :class:`LibraryRef`)."""
        return LibraryRef(str(self.path.resolve()), None if self.index is None else tuple(self.index.tolist()))

    # --- views -------------------------------------------------------------------------------------
    def subset(self, ids=None, mask=None, index=None) -> "SpectralLibrary":
        """A view by sample ids, a boolean mask or a row index (relative to this view)."""
        if sum(x is not None for x in (ids, mask, index)) != 1:
            raise ValueError("give exactly one of ids, mask or index")
        if ids is not None:
            own = self.sample_id
            pos = {s: i for i, s in enumerate(own)}
            missing = [s for s in map(str, ids) if s not in pos]
            if missing:
                raise UserInputError(f"{self.path}: unknown sample_id {', '.join(missing[:5])}")
            index = np.array([pos[s] for s in map(str, ids)], dtype=np.int64)
        elif mask is not None:
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != (self.n_samples,):
                raise UserInputError(f"mask: expected {self.n_samples} booleans, got shape {mask.shape}")
            index = np.flatnonzero(mask)
        index = np.asarray(index, dtype=np.int64)
        absolute = index if self.index is None else self.index[index]
        view = SpectralLibrary(self.path, absolute, _group=self._group)
        view.verified = self.verified
        return view

    def by(self, **fields) -> "SpectralLibrary":
        """A view of the samples whose metadata match, e.g. ``lib.by(country="SE")`` (a country library)."""
        mask = np.ones(self.n_samples, dtype=bool)
        for name, value in fields.items():
            values = self.meta(name)
            wanted = np.atleast_1d(np.asarray(value)).astype(values.dtype)
            mask &= np.isin(values, wanted)
        if not mask.any():
            raise UserInputError(f"{self.path}: no samples with {fields}")
        return self.subset(mask=mask)

    def split(self) -> tuple["SpectralLibrary", "SpectralLibrary"]:
        """The site's Kennard-Stone split (paper 2.1): (local_labelled, local_test) views."""
        if ROLE not in self.meta_fields:
            raise UserInputError(f"{self.path}: the site has no local split yet; run `dtl select-local` first")
        role = self.meta(ROLE)
        return self.subset(mask=role == LOCAL_LABELLED), self.subset(mask=role == LOCAL_TEST)

    # --- writing -----------------------------------------------------------------------------------
    def save(self, path, *, overwrite=False, provenance=None, extra=None) -> "SpectralLibrary":
        """Write this view (plus optional ``extra`` library rows, e.g. the n local samples) as a new store."""
        parts = [self] + ([extra] if extra is not None else [])
        for part in parts[1:]:
            check_compatible(self, part, what=str(part.path))
        targets = sorted(set().union(*(p.targets for p in parts)))
        metas = sorted(set().union(*(p.meta_fields for p in parts)))

        def gather(get, names):
            return {n: np.concatenate([get(p, n) for p in parts]) for n in names}

        def target_or_nan(p, n):
            return p.target(n) if n in p.targets else np.full(p.n_samples, np.nan)

        def meta_or_blank(p, n):
            if n in p.meta_fields:
                return p.meta(n)
            numeric = any(n in q.meta_fields and _is_numeric(q.meta(n, rows=slice(0, 0))) for q in parts)
            return np.full(p.n_samples, np.nan) if numeric else np.full(p.n_samples, "", dtype=object)

        prov = self.provenance + [provenance or {"derived_from": [str(p.path) for p in parts], "time": now_iso()}]
        return SpectralLibrary.create(
            path, np.concatenate([p.spectra() for p in parts]), self.wavelengths,
            np.concatenate([p.sample_id for p in parts]), targets=gather(target_or_nan, targets),
            meta=gather(meta_or_blank, metas), units=self.units, preprocessing=self.preprocessing,
            target_units=self.attrs.get("target_units"), provenance=prov, overwrite=overwrite,
        )

    def append(self, spectra, wavelengths, sample_id, *, targets=None, meta=None, provenance=None) -> None:
        """Append rows in place. Validates everything first (grid, ids, columns); on an I/O failure the
        arrays are shrunk back, so the store is left as it was.
        """
        if self.index is not None:
            raise UserInputError("cannot append to a view; append to the whole store")
        if not same_grid(wavelengths, self.wavelengths):
            raise UserInputError(
                f"{self.path}: wavelength grid mismatch on append: store has {self.n_bands} bands "
                f"{self.wavelengths[0]:g}-{self.wavelengths[-1]:g} nm, new data {len(wavelengths)} bands "
                f"{float(wavelengths[0]):g}-{float(wavelengths[-1]):g} nm; resample explicitly first"
            )
        spectra = np.asarray(spectra, dtype=np.float32)
        new_ids = _text(sample_id)
        _check_unique_ids(np.concatenate([self.sample_id, new_ids]), where=f"{self.path} after append")
        columns = {f"targets/{k}": v for k, v in (targets or {}).items()}
        columns |= {f"meta/{k}": v for k, v in (meta or {}).items()}
        expected = _column_names(self._group)
        unknown = sorted(set(columns) - set(expected))
        if unknown:
            raise UserInputError(f"{self.path}: append brings columns the store lacks: {unknown}")
        old = self.n_samples
        self.check_chunks(decode_from=old)  # the tail chunk an append rewrites
        group = zarr.open_group(str(self.path), mode="r+")
        try:
            _resize(group, old + len(spectra))
            _write_rows(group, old, spectra, new_ids, columns, expected)
            if provenance:
                group.attrs["provenance"] = list(group.attrs.get("provenance", [])) + [provenance]
        except BaseException:
            _resize(group, old)
            raise
        self._group, self.verified = _open_group(self.path)

    def append_library(self, other: "SpectralLibrary", *, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> None:
        """Append every row of ``other`` (same grid, units and preprocessing; no columns the store lacks) in
        place, chunk by chunk, with its provenance records. On any failure the arrays are shrunk back.
        """
        if self.index is not None:
            raise UserInputError("cannot append to a view; append to the whole store")
        check_compatible(self, other, what=str(other.path))
        expected = _column_names(self._group)
        names = [f"targets/{t}" for t in other.targets] + [f"meta/{m}" for m in other.meta_fields]
        unknown = sorted(set(names) - set(expected))
        if unknown:
            raise UserInputError(f"{self.path}: append brings columns the store lacks: {unknown}")
        _check_unique_ids(np.concatenate([self.sample_id, other.sample_id]), where=f"{self.path} after append")
        old, n = self.n_samples, other.n_samples
        self.check_chunks(decode_from=old)  # the tail chunk an append rewrites
        group = zarr.open_group(str(self.path), mode="r+")
        numeric = {name for name in expected if group[name].dtype.kind == "f"}
        try:
            _resize(group, old + n)
            for start in range(0, n, chunk_rows):
                rows = slice(start, min(start + chunk_rows, n))
                columns = {name: other._read(name, rows) for name in names}
                for name, values in columns.items():
                    if name in numeric and not _is_numeric(values):
                        raise UserInputError(f"{other.path}: {name} is text but numeric in {self.path}")
                    columns[name] = values if name in numeric else _text(values)
                _write_rows(group, old + start, other.spectra(rows), other._read("sample_id", rows), columns, expected)
            group.attrs["provenance"] = list(group.attrs.get("provenance", [])) + other.provenance
        except BaseException:
            _resize(group, old)
            raise
        self._group, self.verified = _open_group(self.path)

    def set_meta(self, name: str, values) -> None:
        """Write (or replace) one metadata column of the whole store atomically."""
        if self.index is not None:
            raise UserInputError("cannot set metadata on a view")
        values = _column(values, self.n_samples, f"meta/{name}")
        tmp = temporary_sibling(self.path)
        try:
            array = zarr.create_array(str(tmp), zarr_format=3, **integrity.array_options(
                shape=values.shape, dtype=values.dtype if _is_numeric(values) else str,
                chunks=self._group["sample_id"].chunks))
            array[:] = values
            (self.path / "meta").mkdir(exist_ok=True)
            if not (self.path / "meta" / "zarr.json").exists():
                zarr.open_group(str(self.path), mode="r+").require_group("meta")
            replace_path(tmp, self.path / "meta" / name)
            name_dimensions(self.path)
        finally:
            remove_path(tmp)
        self._group, self.verified = _open_group(self.path)


def check_compatible(a: SpectralLibrary, b: SpectralLibrary, *, what: str = "site") -> None:
    """Library and site must share the grid, units and preprocessing before they can be pooled or compared."""
    if not same_grid(a.wavelengths, b.wavelengths):
        raise UserInputError(
            f"{what}: wavelength grid ({b.n_bands} bands, {b.wavelengths[0]:g}-{b.wavelengths[-1]:g} nm) differs "
            f"from {a.path} ({a.n_bands} bands, {a.wavelengths[0]:g}-{a.wavelengths[-1]:g} nm)"
        )
    if a.units != b.units or a.preprocessing != b.preprocessing:
        raise UserInputError(
            f"{what}: units/preprocessing {b.units} {b.preprocessing} differ from {a.path} "
            f"({a.units} {a.preprocessing}); ingest both the same way"
        )


def _open_group(path: Path):
    """(root group, verified) of the store at ``path``, its schema and array shapes checked."""
    path = Path(path)
    if not path.exists():
        raise UserInputError(f"{path}: no such spectral library store")
    try:
        attrs = dict(zarr.open_group(str(path), mode="r").attrs)
    except Exception as exc:  # zarr raises several types for unreadable metadata
        raise UserInputError(f"{path}: not a readable Zarr store ({type(exc).__name__}: {exc})") from None
    if attrs.get("schema") != SCHEMA:
        raise UserInputError(f"{path}: not a dtl-dist spectral library (attribute schema={attrs.get('schema')!r})")
    if attrs.get("schema_version", 0) > SCHEMA_VERSION:
        raise UserInputError(f"{path}: schema version {attrs['schema_version']} is newer than this dtl-dist")
    group, verified = integrity.open_group(path, attrs)
    try:
        n = group["spectra"].shape[0]
        bands = group["wavelengths"].shape[0]
        for name in ["sample_id", *_column_names(group)]:
            if group[name].shape != (n,):
                raise UserInputError(f"{path}: array {name} has {group[name].shape[0]} rows, spectra has {n}")
        if group["spectra"].shape[1] != bands:
            raise UserInputError(f"{path}: spectra has {group['spectra'].shape[1]} bands, wavelengths {bands}")
    except KeyError as exc:
        raise UserInputError(f"{path}: truncated store, missing array {exc}") from None
    return group, verified


def describe(lib: SpectralLibrary) -> dict:
    """Machine-readable summary used by ``dtl info``."""
    return {
        "path": str(lib.path), "n_samples": lib.n_samples, "n_bands": lib.n_bands,
        "wavelengths_nm": [float(lib.wavelengths[0]), float(lib.wavelengths[-1])],
        "units": lib.units, "preprocessing": lib.preprocessing, "targets": lib.targets,
        "meta": lib.meta_fields, "provenance": json.loads(json.dumps(lib.provenance)),
        "integrity": "every chunk present, zstd checksums" if lib.verified else f"not verified ({integrity.UNVERIFIED})",
    }
