"""The Open Soil Spectral Library (OSSL v1.2) tables as published, read as one source of vis-NIR spectra and SOC.

The OSSL is distributed as CSV tables (``.csv.gz``; the soilspectroscopy/ossl-imports README lists them):
``ossl_all_L0_v1.2.csv.gz`` (every table joined, one row per layer) or the separate level-0 tables
``ossl_visnir_L0_v1.2.csv.gz`` (spectra), ``ossl_soillab_L0_v1.2.csv.gz`` (laboratory values) and
``ossl_soilsite_L0_v1.2.csv.gz`` (site data), joined on ``id.layer_uuid_txt``. What is read:

=====================================  ============================================================
``scan_visnir.<nm>_ref``               vis-NIR reflectance as a fraction (350-2500 nm by 2 nm)
``scan_visnir.<nm>_pcnt``              the same in percent (older releases)
``oc_usda.c729_w.pct``                 soil organic carbon, weight % -> ``targets/soc``
``id.layer_uuid_txt``                  sample id (and the join key of separate tables)
``dataset.code_ascii_txt``             source library (``KSSL.SSL``, ``LUCAS.SSL`` ...) -> ``meta/source``
``location.country_iso.3166_txt``      country, ISO 3166-1 alpha-3 as given (``USA``) -> ``meta/country``
``longitude/latitude.point_wgs84_dd``  coordinates -> ``meta/lon``, ``meta/lat``
=====================================  ============================================================

The spectra table is streamed in blocks of rows (pandas ``chunksize``); only the few joined columns of the
laboratory and site tables (id, OC; id, country, coordinates, dataset) are held in memory. Only the spectral
columns that the target grid needs are read, so a library measured from 400 nm (LUCAS) is kept on a 400 nm grid
although the tables have columns from 350 nm. A row whose needed vis-NIR values are missing (a MIR-only layer of
the all-table) or whose OC is missing is skipped, and so is a row that a ``--where`` filter leaves out; the counts
are kept in :attr:`OsslReader.skipped` and in the store's provenance. The blocks go through the same checks,
conversion to absorbance and resampling as every other source (:mod:`dtl_dist.library.ingest`).

References
----------
Safanelli J.L. et al. (2023) Open Soil Spectral Library (OSSL): building reproducible soil calibration models
through open development and community engagement. Shen Z. et al. (2022), sections 2.1-2.2 (a global library).
"""

from __future__ import annotations

import csv
import gzip
import re
from pathlib import Path

import numpy as np
import pandas as pd

from dtl_dist.errors import UserInputError
from dtl_dist.library.readers import TableReader, sha256_of

ID = "id.layer_uuid_txt"
OC = "oc_usda.c729_w.pct"
DATASET = "dataset.code_ascii_txt"
COUNTRY = "location.country_iso.3166_txt"
LON, LAT = "longitude.point_wgs84_dd", "latitude.point_wgs84_dd"
SITE_COLUMNS = {"country": COUNTRY, "lon": LON, "lat": LAT}
"""Store metadata field -> OSSL site column."""
WHERE_FIELDS = {"dataset": DATASET, "source": DATASET, "country": COUNTRY}
"""Short names a ``--where`` filter may use (any other OSSL column is named in full)."""
_SPECTRAL = re.compile(r"^scan_visnir\.(\d+(?:\.\d+)?)_(ref|pcnt)$")
UNITS = {"ref": "reflectance_fraction", "pcnt": "reflectance_percent"}


def read_header(path: Path) -> list[str]:
    """Column names of a ``.csv`` or ``.csv.gz`` table (first line only)."""
    try:
        opener = gzip.open if path.suffix.lower() == ".gz" else open
        with opener(path, "rt", encoding="utf-8-sig", newline="") as fh:
            line = fh.readline()
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise UserInputError(f"{path}: not a readable CSV table ({exc})") from None
    header = next(csv.reader([line]), [])
    if all(not h.strip() for h in header):
        header = []
    if not header:
        raise UserInputError(f"{path}: empty file; expected an OSSL table with a header row")
    return [str(h).strip() for h in header]


def spectral_columns(header: list[str]) -> tuple[list[str], np.ndarray, str] | None:
    """The vis-NIR columns of a header (``_ref`` preferred over ``_pcnt``), their wavelengths and units."""
    for suffix in ("ref", "pcnt"):
        found = [(float(m.group(1)), c) for c in header if (m := _SPECTRAL.match(c)) and m.group(2) == suffix]
        if found:
            found.sort()
            return [c for _, c in found], np.array([w for w, _ in found]), UNITS[suffix]
    return None


def parse_where(items) -> dict[str, set[str]]:
    """``["dataset=LUCAS.SSL", "country=USA,CAN"]`` -> {OSSL column: allowed values} (filters are ANDed,
    comma-separated values ORed)."""
    out: dict[str, set[str]] = {}
    for item in items:
        field, sep, values = str(item).partition("=")
        field, values = field.strip(), [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not field or not values:
            raise UserInputError(f"--where {item!r}: expected FIELD=VALUE[,VALUE...], e.g. dataset=LUCAS.SSL")
        column = WHERE_FIELDS.get(field, field)
        out.setdefault(column, set()).update(values)
    return out


class OsslReader(TableReader):
    """OSSL v1.2 tables as one source (see the module docstring).

    Parameters
    ----------
    paths : the all-table, or the vis-NIR table with the soil-lab and site tables (any order).
    where : ``FIELD=VALUE[,VALUE]`` filters; fields ``dataset`` (= ``source``), ``country`` or any OSSL column.

    Attributes
    ----------
    units : ``reflectance_fraction`` (``_ref`` columns) or ``reflectance_percent`` (``_pcnt``).
    skipped : dict, rows read and rows skipped by reason (``no_visnir``, ``no_oc``, ``where``).
    """

    kind = "ossl v1.2"
    target_name, target_unit = "SOC", "%"

    def __init__(self, paths, *, where=()):
        paths = [Path(p) for p in paths]
        headers = {}
        for path in paths:
            if not path.is_file():
                raise UserInputError(f"{path}: no such file")
            headers[path] = read_header(path)
        spectral = [p for p in paths if spectral_columns(headers[p])]
        if len(spectral) != 1:
            raise UserInputError(
                f"{', '.join(map(str, paths))}: expected exactly one table with scan_visnir.<nm>_ref columns "
                f"(ossl_all_L0_v1.2.csv.gz or ossl_visnir_L0_v1.2.csv.gz), found {len(spectral)}"
            )
        self.path = spectral[0]
        columns, wavelengths, self.units = spectral_columns(headers[self.path])
        self._all_columns, self._all_wavelengths = columns, wavelengths
        wanted = {OC: "the soil-lab table (ossl_soillab_L0_v1.2)", DATASET: "", **{c: "the site table "
                  "(ossl_soilsite_L0_v1.2)" for c in SITE_COLUMNS.values()}}
        self.where = parse_where(where)
        self._joined: list[tuple[Path, list[str]]] = []
        own = set(headers[self.path])
        if ID not in own:
            raise UserInputError(f"{self.path}: missing id column {ID!r}")
        for column in [*wanted, *self.where]:
            if column in own or any(column in cols for _, cols in self._joined):
                continue
            holder = next((p for p in paths if p != self.path and column in headers[p]), None)
            if holder is None:
                what = wanted.get(column) or "any table"
                if column in self.where:
                    raise UserInputError(f"--where: no column {column!r} in {', '.join(map(str, paths))}; fields: "
                                         f"{', '.join(WHERE_FIELDS)} or a full OSSL column name")
                raise UserInputError(f"{', '.join(map(str, paths))}: missing OSSL column {column!r} (expected in "
                                     f"{what}; give the all-table or the vis-NIR, soil-lab and site tables)")
            if ID not in headers[holder]:
                raise UserInputError(f"{holder}: missing join column {ID!r}")
            entry = next((e for e in self._joined if e[0] == holder), None)
            if entry is None:
                self._joined.append((holder, [column]))
            else:
                entry[1].append(column)
        self._tables = None
        self.skipped = {"rows": 0, "no_visnir": 0, "no_oc": 0, "where": 0}
        meta = {"source": DATASET, **SITE_COLUMNS}
        self._header = [ID, OC, *dict.fromkeys(meta.values()), *self.where, *columns]
        super().__init__(str(self.path), list(dict.fromkeys(self._header)), self._frames_joined, target=OC,
                         id_column=ID, meta=meta, sha256=sha256_of(self.path))
        self.meta_kinds = {"source": "text", "country": "text", "lon": "numeric", "lat": "numeric"}
        self.sha256 = ";".join(sha256_of(p) for p in [self.path, *(p for p, _ in self._joined)])

    def for_grid(self, grid: np.ndarray) -> None:
        """Keep only the spectral columns that linear resampling onto ``grid`` reads (one beyond each end)."""
        wl = self._all_wavelengths
        lo = max(int(np.searchsorted(wl, grid[0], side="right")) - 1, 0)
        hi = min(int(np.searchsorted(wl, grid[-1], side="left")) + 1, wl.size)
        self.columns, self.wavelengths = self._all_columns[lo:hi], wl[lo:hi]

    def _side_tables(self) -> list[pd.DataFrame]:
        """The joined columns of the soil-lab / site tables, indexed by id (read once, a few columns only)."""
        if self._tables is None:
            self._tables = []
            for path, cols in self._joined:
                frame = pd.read_csv(path, usecols=[ID, *cols], dtype={ID: str, DATASET: str, COUNTRY: str},
                                    encoding="utf-8-sig")
                dup = frame[ID].duplicated()
                if dup.any():
                    raise UserInputError(f"{path}: row {int(np.flatnonzero(dup)[0]) + 1}: duplicate {ID} "
                                         f"{frame[ID][dup].iloc[0]!r}; expected one row per layer")
                self._tables.append(frame.set_index(ID))
        return self._tables

    def _frames_joined(self, rows, columns):
        own = [c for c in columns if not any(c in cols for _, cols in self._joined)]
        text = {c: str for c in (ID, DATASET, COUNTRY, *self.where) if c in own}
        tables = self._side_tables()
        for frame in pd.read_csv(self.path, usecols=own, dtype=text, chunksize=rows, encoding="utf-8-sig"):
            ids = frame[ID].to_numpy()
            yield pd.concat([frame.reset_index(drop=True),
                             *(table.reindex(ids).reset_index(drop=True) for table in tables)], axis=1)

    def blocks(self, rows: int):
        first = 0
        for frame in self._frames(rows, self._needed()):
            n = len(frame)
            keep = np.ones(n, dtype=bool)
            for column, allowed in self.where.items():
                keep &= frame[column].astype(str).str.strip().isin(allowed).to_numpy()
            self.skipped["where"] += int((~keep).sum())
            visnir = frame[self.columns].notna().all(axis=1).to_numpy()
            self.skipped["no_visnir"] += int((keep & ~visnir).sum())
            keep &= visnir
            oc = frame[OC].notna().to_numpy()
            self.skipped["no_oc"] += int((keep & ~oc).sum())
            keep &= oc
            self.skipped["rows"] += n
            if keep.any():
                yield self._block(frame, first).take(np.flatnonzero(keep))
            first += n


def ossl_units(paths) -> str:
    """The spectral units of the OSSL tables ``paths`` (from their column names)."""
    for path in map(Path, paths):
        if path.is_file():
            found = spectral_columns(read_header(path))
            if found:
                return found[2]
    return UNITS["ref"]


__all__ = ["OsslReader", "ossl_units", "parse_where", "read_header", "spectral_columns"]
