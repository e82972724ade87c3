"""Readers of soil spectra in blocks of rows: CSV, Parquet, ``.npz`` archives and LimeSoDa sites.

A reader knows a source's wavelengths (nm) and yields :class:`Block` s of raw rows in the source's own units;
:mod:`dtl_dist.library.ingest` validates, converts and writes them. CSV is read with pandas ``chunksize`` and
Parquet with pyarrow ``iter_batches``, so files larger than memory stream through. ``.npz`` archives are
compressed and read whole, never with pickle. Row numbers in messages are 1-based data rows (header excluded).
"""

from __future__ import annotations

import csv
import hashlib
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from dtl_dist.errors import UserInputError
from dtl_dist.spectra.grid import validate_grid, wavelength_of_column

STANDARD_TEXT_META = ("source", "country", "group")
STANDARD_NUMERIC_META = ("lat", "lon")


@dataclass
class Block:
    """Consecutive rows of a source, in the source's units and wavelengths.

    ``first_row`` is the 0-based position of the first row in the source; ``target`` is the carbon column as
    stored in the source (NaN = not measured); ``meta`` maps store field names to per-row values; ``rows``, when
    a reader skipped rows, the 0-based source position of each row (else consecutive from ``first_row``).
    """

    first_row: int
    spectra: np.ndarray
    sample_id: np.ndarray | None
    target: np.ndarray | None
    meta: dict = field(default_factory=dict)
    rows: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.spectra)

    def row(self, i: int) -> int:
        """1-based source row number of the block's row ``i`` (for messages)."""
        return (self.first_row + i if self.rows is None else int(self.rows[i])) + 1

    def take(self, keep: np.ndarray) -> "Block":
        """The rows ``keep`` (positions in this block) as a block that remembers their source rows."""
        def pick(values):
            return None if values is None else values[keep]
        source_rows = self.first_row + keep if self.rows is None else self.rows[keep]
        return Block(int(source_rows[0]) if len(keep) else self.first_row, self.spectra[keep], pick(self.sample_id),
                     pick(self.target), {k: v[keep] for k, v in self.meta.items()}, source_rows)


def sha256_of(path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for piece in iter(lambda: fh.read(2**20), b""):
            digest.update(piece)
    return digest.hexdigest()


class Reader:
    """Common part of all readers.

    Attributes
    ----------
    label : str, the file (or LimeSoDa id) named in messages.
    wavelengths : (B,) float64, nm, strictly increasing.
    columns : list of B names of the spectral columns, as in the source (for messages).
    n_rows : int or None (unknown for CSV until read).
    sha256 : str, checksum of the file read.
    target_name, target_unit : what the source says its target is (None when it does not say).
    meta_kinds : dict, extra metadata field -> "numeric" or "text".
    """

    kind = "table"
    target_name: str | None = None
    target_unit: str | None = None
    skipped: dict | None = None
    """Rows a reader left out, by reason (None: it leaves none out)."""

    def for_grid(self, grid: np.ndarray) -> None:
        """Narrow the spectral columns to those resampling onto ``grid`` needs (most readers read them all)."""

    def blocks(self, rows: int) -> Iterator[Block]:  # pragma: no cover - interface
        raise NotImplementedError


class TableReader(Reader):
    """Rows of a table whose spectral columns are named by wavelength (``350``, ``scan_visnir.350_ref``).

    Parameters
    ----------
    label : name of the file, for messages.
    header : column names in file order.
    frames : callable ``(rows, columns) -> iterator of DataFrames`` of at most ``rows`` rows each.
    target, id_column : declared column names (None: no target / generated ids).
    meta : dict, store field -> column name (extra metadata and standard fields read from columns).
    """

    def __init__(self, label, header, frames, *, target=None, id_column=None, meta=None, n_rows=None, sha256=""):
        self.label, self._frames = label, frames
        self.n_rows, self.sha256 = n_rows, sha256
        self.target, self.id_column, self.meta = target, id_column, dict(meta or {})
        header = [str(c) for c in header]
        seen = set()
        for name in header:
            if name in seen:
                raise UserInputError(f"{label}: column {name!r} appears twice in the header; expected unique names")
            seen.add(name)
        declared = {"target": target, "id": id_column} | {f"meta {k}": v for k, v in self.meta.items()}
        for what, name in declared.items():
            if name is not None and name not in seen:
                others = [c for c in header if wavelength_of_column(c) is None]
                raise UserInputError(
                    f"{label}: missing {what} column {name!r}; non-spectral columns are {others[:20]}"
                )
        taken = {v for v in declared.values() if v is not None}
        self.columns = [c for c in header if c not in taken and wavelength_of_column(c) is not None]
        if len(self.columns) < 2:
            raise UserInputError(
                f"{label}: found {len(self.columns)} spectral columns; expected columns named by wavelength in nm "
                "(e.g. 350, 350.0 or scan_visnir.350_ref)"
            )
        self.wavelengths = validate_grid([wavelength_of_column(c) for c in self.columns],
                                         where=f"{label}: spectral columns")
        self.meta_kinds = {}

    def _needed(self) -> list[str]:
        extra = [self.target, self.id_column, *self.meta.values()]
        return self.columns + [c for c in dict.fromkeys(extra) if c is not None]

    def blocks(self, rows: int) -> Iterator[Block]:
        first = 0
        for frame in self._frames(rows, self._needed()):
            if len(frame) == 0:
                continue
            yield self._block(frame, first)
            first += len(frame)

    def _block(self, frame: pd.DataFrame, first: int) -> Block:
        spectra = np.column_stack([_numbers(frame[c], self.label, c, first) for c in self.columns])
        target = None if self.target is None else _numbers(frame[self.target], self.label, self.target, first)
        ids = None
        if self.id_column is not None:
            ids = frame[self.id_column].astype(str).to_numpy()
            blank = np.flatnonzero(frame[self.id_column].isna().to_numpy() | (np.char.strip(ids.astype(str)) == ""))
            if blank.size:
                raise UserInputError(
                    f"{self.label}: row {first + blank[0] + 1}, column {self.id_column!r}: empty sample id"
                )
        meta = {}
        for name, column in self.meta.items():
            values = frame[column]
            kind = self.meta_kinds.setdefault(
                name, "numeric" if name in STANDARD_NUMERIC_META or pd.api.types.is_numeric_dtype(values) else "text"
            )
            if kind == "numeric":
                meta[name] = _numbers(values, self.label, column, first)
            else:
                meta[name] = np.where(values.isna().to_numpy(), "", values.astype(str).to_numpy()).astype(str)
        return Block(first, spectra, ids, target, meta)


def _numbers(series: pd.Series, label: str, column: str, first: int) -> np.ndarray:
    """A column as float64; a non-numeric cell is a UserInputError naming its row and column."""
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    coerced = pd.to_numeric(series, errors="coerce")
    text = series.astype(str).str.strip()
    bad = np.flatnonzero(coerced.isna().to_numpy() & series.notna().to_numpy() & (text != "").to_numpy())
    if bad.size:
        i = bad[0]
        raise UserInputError(
            f"{label}: row {first + i + 1}, column {column!r}: {series.iloc[i]!r} is not a number"
        )
    return coerced.to_numpy(dtype=np.float64, na_value=np.nan)


def _not_utf8(path, exc: UnicodeDecodeError) -> UserInputError:
    return UserInputError(f"{path}: not UTF-8 text (byte {exc.object[exc.start:exc.start + 1]!r} at {exc.start} of a "
                          "block); expected a CSV file saved as UTF-8")


def _csv_header(path: Path) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh), None)
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, exc) from None
    except csv.Error as exc:
        raise UserInputError(f"{path}: unreadable header row ({exc}); expected a CSV file") from None
    if not header or all(not h.strip() for h in header):
        raise UserInputError(f"{path}: empty file; expected a header row of column names and data rows")
    if len(header) == 1 and "," in header[0]:
        raise UserInputError(f"{path}: the header row is one quoted field ({header[0][:40]!r}...); expected the "
                             "column names separated by commas, each quoted or not")
    if any("\x00" in h for h in header):
        raise UserInputError(f"{path}: the header holds NUL bytes; expected a text CSV file, not binary data")
    return [h.strip() for h in header]


def csv_reader(path, *, target=None, id_column=None, meta=None) -> TableReader:
    """Stream a CSV file with pandas ``chunksize`` (ids read as text, so ``007`` stays ``007``)."""
    path = Path(path)
    header = _csv_header(path)

    def frames(rows, columns):
        # every column is parsed (not usecols), so a row with more fields than the header is an error
        dtype = {id_column: str} if id_column else None
        try:
            with pd.read_csv(path, dtype=dtype, chunksize=rows, skipinitialspace=True, encoding="utf-8-sig") as chunks:
                for frame in chunks:
                    yield frame[columns]
        except UnicodeDecodeError as exc:
            raise _not_utf8(path, exc) from None
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise UserInputError(f"{path}: {' '.join(str(exc).split())}; expected as many fields in every row "
                                 "as in the header") from None

    return TableReader(str(path), header, frames, target=target, id_column=id_column, meta=meta,
                       sha256=sha256_of(path))


def parquet_reader(path, *, target=None, id_column=None, meta=None) -> TableReader:
    """Stream a Parquet file with pyarrow ``iter_batches``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        pf = pq.ParquetFile(path, page_checksum_verification=True)
        names = pf.schema_arrow.names
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for damaged files
        raise UserInputError(f"{path}: not a readable Parquet file ({' '.join(str(exc).split())})") from None

    def frames(rows, columns):
        try:
            for batch in pf.iter_batches(batch_size=rows, columns=columns):
                frame = batch.to_pandas()
                if id_column:
                    frame[id_column] = frame[id_column].astype(str).where(frame[id_column].notna())
                yield frame
        except (OSError, pa.ArrowException) as exc:  # a damaged page or column chunk
            raise UserInputError(f"{path}: damaged Parquet data ({' '.join(str(exc).split())})") from None

    return TableReader(str(path), names, frames, target=target, id_column=id_column, meta=meta,
                       n_rows=pf.metadata.num_rows, sha256=sha256_of(path))


class NpzReader(Reader):
    """A numpy ``.npz`` archive (e.g. ``$DTL_DATA/geeves_nsw/datsoilspc.npz``): ``X`` (N x B), ``wavelengths``,
    ``sample_id``, a target (``y`` by default; ``target_name`` / ``target_unit`` scalars describe it) and
    per-sample 1-D arrays usable as metadata. Loaded with ``allow_pickle=False``.
    """

    kind = "npz"

    def __init__(self, path, *, target=None, id_column=None, meta=None):
        self.label = str(path)
        self.meta = dict(meta or {})
        if not zipfile.is_zipfile(path):
            raise UserInputError(f"{path}: not a readable .npz archive (not a zip file)")
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except ValueError as exc:
            if "pickle" in str(exc):
                raise UserInputError(f"{path}: cannot read without pickle ({exc}); store plain numeric/text arrays") from None
            raise UserInputError(f"{path}: not a readable .npz archive ({exc})") from None
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, KeyError, NotImplementedError) as exc:
            raise UserInputError(f"{path}: not a readable .npz archive ({type(exc).__name__}: {exc})") from None
        for key in ("X", "wavelengths"):
            if key not in arrays:
                raise UserInputError(f"{path}: missing array {key!r}; the archive has {sorted(arrays)}")
        X = arrays["X"]
        if X.ndim != 2 or X.shape[0] == 0:
            raise UserInputError(f"{path}: X has shape {X.shape}; expected (N samples, B bands) with N >= 1")
        if X.dtype.kind not in "biuf":
            raise UserInputError(f"{path}: X holds {X.dtype} values; expected numbers")
        self.wavelengths = validate_grid(arrays["wavelengths"], where=f"{path}: wavelengths")
        if self.wavelengths.size != X.shape[1]:
            raise UserInputError(
                f"{path}: X has {X.shape[1]} bands but wavelengths has {self.wavelengths.size}"
            )
        self.columns = [f"X[:, {j}] ({w:g} nm)" for j, w in enumerate(self.wavelengths)]
        self.n_rows = X.shape[0]
        self.sha256 = sha256_of(path)
        self._X = X

        def per_sample(key, what):
            if key not in arrays:
                raise UserInputError(f"{path}: missing {what} array {key!r}; the archive has {sorted(arrays)}")
            values = arrays[key]
            if values.shape != (self.n_rows,):
                raise UserInputError(f"{path}: {key} has shape {values.shape}; expected ({self.n_rows},)")
            return values

        target_key = target or ("y" if "y" in arrays else None)
        self.target = target_key
        self._target = None if target_key is None else per_sample(target_key, "target").astype(np.float64)
        if target_key == "y":
            self.target_name = str(arrays["target_name"]) if "target_name" in arrays else None
            self.target_unit = str(arrays["target_unit"]) if "target_unit" in arrays else None
        id_key = id_column or ("sample_id" if "sample_id" in arrays else None)
        self.id_column = id_key
        self._ids = None if id_key is None else per_sample(id_key, "id").astype(str)
        self._meta = {name: per_sample(key, f"meta {name}") for name, key in self.meta.items()}
        self.meta_kinds = {name: "numeric" if v.dtype.kind in "biuf" or name in STANDARD_NUMERIC_META else "text"
                           for name, v in self._meta.items()}

    def blocks(self, rows: int) -> Iterator[Block]:
        for start in range(0, self.n_rows, rows):
            stop = min(start + rows, self.n_rows)
            meta = {k: (v[start:stop].astype(np.float64) if self.meta_kinds[k] == "numeric" else v[start:stop].astype(str))
                    for k, v in self._meta.items()}
            yield Block(start, self._X[start:stop].astype(np.float64),
                        None if self._ids is None else self._ids[start:stop],
                        None if self._target is None else self._target[start:stop], meta)


def limesoda_reader(site: str) -> TableReader:
    """A LimeSoDa site through the ``limesoda`` package (``LimeSoDa.load_dataset``); ids become ``SITE/row``."""
    try:
        import LimeSoDa
        from LimeSoDa.loaders import DATA_DIR
    except ImportError:
        raise UserInputError(f"{site}: the LimeSoDa package is not installed (pip install limesoda)") from None
    if site not in LimeSoDa.list_datasets():
        raise UserInputError(f"{site}: not a LimeSoDa dataset; available: {LimeSoDa.list_datasets()}")
    frame = LimeSoDa.load_dataset(site)["Dataset"]
    target = next((c for c in frame.columns if c in ("SOC_target", "SOM_target")), None)
    if target is None:
        raise UserInputError(f"{site}: LimeSoDa dataset has no SOC_target or SOM_target column")
    frame = frame.assign(sample_id=[f"{site}/{i}" for i in frame.index])
    spectral = [c for c in frame.columns if str(c).startswith("wl_")]
    frame = frame[spectral + [target, "sample_id"]]

    def frames(rows, columns):
        for start in range(0, len(frame), rows):
            yield frame.iloc[start:start + rows][columns]

    reader = TableReader(site, list(frame.columns), frames, target=target, id_column="sample_id",
                         n_rows=len(frame), sha256=sha256_of(Path(DATA_DIR) / f"{site}.npz"))
    reader.kind = f"limesoda {LimeSoDa.__version__}"
    reader.target_name = target.split("_")[0]
    return reader
