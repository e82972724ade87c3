"""Ingest soil spectra into a Zarr spectral library: declared units -> absorbance on a declared grid (paper 2.2).

Every source (CSV, Parquet, ``.npz``, LimeSoDa site) is read in blocks of rows, checked (finite spectra inside
the declared unit's range, numeric cells, unique ids, SOC in 0-100 %), converted to absorbance ``log10(1/R)``,
resampled linearly onto the store's grid and streamed into a :class:`~dtl_dist.library.store.LibraryWriter`.
The carbon target is stored as ``targets/soc`` in %, after an explicit scale (SOM -> SOC x 1/1.724).

Atomic: a new store is written to a temporary directory and renamed into place; ``append=True`` first stages
the new rows in a temporary store (all checks pass before the existing store is touched), then appends them
with :meth:`SpectralLibrary.append_library`, which shrinks the arrays back on an I/O failure.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dtl_dist import __version__
from dtl_dist.errors import UserInputError
from dtl_dist.library.atomic import remove_path, temporary_sibling
from dtl_dist.library.readers import (
    STANDARD_NUMERIC_META,
    STANDARD_TEXT_META,
    NpzReader,
    Reader,
    csv_reader,
    limesoda_reader,
    parquet_reader,
)
from dtl_dist.library.store import LibraryWriter, SpectralLibrary, now_iso
from dtl_dist.spectra.grid import PAPER_GRID, make_grid, parse_grid, resample, same_grid
from dtl_dist.spectra.preprocess import UNITS, Absorbance

SOM_TO_SOC = 1 / 1.724
"""Conventional factor from soil organic matter (loss on ignition) to soil organic carbon."""
DEFAULT_GRID = "{:g}:{:g}:{:g}".format(*PAPER_GRID)
"""The paper's grid, 400-2500 nm every 10 nm (section 2.2)."""
REAL_DATA_GRID = "420:2500:10"
"""The grid of the real-data library: UL.120 and SL.125 start at 420 nm and resampling never extrapolates."""
BLOCK_ROWS = 5000
REFLECTANCE_TOP = {"reflectance_fraction": 1.0, "reflectance_percent": 100.0}
ABSORBANCE_RANGE = (-1.0, 6.0)
"""Plausible apparent absorbance log10(1/R): a reflectance between 1e-6 and 10 (R above 1 from calibration);
values outside are reflectance declared as absorbance."""

LIMESODA_SITES = {
    # id: (country ISO code, carbon property, target unit), as the limesoda package documents its sites
    "CV.98": ("CH", "SOC", "%"), "SC.93": ("BR", "SOC", "%"), "SL.125": ("SE", "SOM", "%"),
    "UL.120": ("SE", "SOM", "%"), "MG.44": ("BR", "SOC", "g dm-3"), "SSP.58": ("BR", "SOC", "g dm-3"),
    "SP.231": ("JP", "SOM", "%"), "RP.62": ("DE", "SOC", "%"), "SA.112": ("DE", "SOC", "%"),
    "SSP.460": ("BR", "SOC", "%"),
}
"""LimeSoDa sites with spectra in nm (reflectance %) that this package knows how to ingest."""
VISNIR_SITES = ("CV.98", "SC.93", "SL.125", "UL.120")
"""The LimeSoDa vis-NIR sites covering 420-2500 nm: the local sites of the real-data study."""


@dataclass(frozen=True)
class Source:
    """What a soil scientist declares about one dataset to ingest.

    Parameters
    ----------
    location : a CSV/Parquet/.npz file, a folder holding exactly one .npz, or a LimeSoDa site id.
    units : spectral units, one of ``reflectance_fraction``, ``reflectance_percent``, ``absorbance``.
    target : column (or .npz key, default ``y``) holding the carbon target.
    target_unit : unit of the target; default: what the file says, else "%". Other units need ``target_scale``.
    target_scale : factor turning the target into SOC %; ``som=True`` means SOM -> SOC x 1/1.724.
    id_column : column of sample ids; default: the .npz ``sample_id``, else ``<name>/<row>``.
    meta : pairs (store field, column) of metadata read from columns, e.g. ``(("lat", "latitude"),)``.
    name : the source dataset recorded in ``meta/source``; default the file stem (folder name for a folder).
    country, group, lat, lon : constants for every sample of the source.
    format : ``"table"`` (a file as declared) or ``"ossl"`` (OSSL v1.2 tables, :mod:`dtl_dist.library.ossl`:
        ``location`` and ``tables`` are the all-table or the vis-NIR, soil-lab and site tables).
    tables : further files of the same source (``format="ossl"``).
    where : ``FIELD=VALUE[,VALUE]`` row filters (``format="ossl"``), e.g. ``("dataset=LUCAS.SSL",)``.
    """

    location: str
    units: str | None = None
    target: str | None = None
    target_unit: str | None = None
    target_scale: float | None = None
    som: bool = False
    id_column: str | None = None
    meta: tuple = ()
    name: str | None = None
    country: str | None = None
    group: str | None = None
    lat: float | None = None
    lon: float | None = None
    format: str = "table"
    tables: tuple = ()
    where: tuple = ()


def ossl_source(paths, *, where=(), group: str | None = "OSSL", **declared) -> Source:
    """The declaration of OSSL v1.2 tables (units, target, ids and metadata come from the OSSL column names)."""
    from dtl_dist.library.ossl import ossl_units

    given = sorted(k for k, v in declared.items() if v not in (None, False, (), []))
    if given:
        raise UserInputError(f"--format ossl reads units, SOC, ids, country and coordinates from the OSSL columns; "
                             f"drop {', '.join('--' + g.replace('_', '-') for g in given)}")
    paths = [str(p) for p in paths]
    if not paths:
        raise UserInputError("--format ossl: give the OSSL all-table or the vis-NIR, soil-lab and site tables")
    return Source(paths[0], units=ossl_units(paths), name="OSSL", group=group, format="ossl",
                  tables=tuple(paths[1:]), where=tuple(where))


def limesoda_source(site: str) -> Source:
    """The declaration of a LimeSoDa site (reflectance %, SOC or SOM in %, country), group ``LimeSoDa``."""
    if site not in LIMESODA_SITES:
        raise UserInputError(f"{site}: not a LimeSoDa site with vis-NIR/NIR spectra; known: {sorted(LIMESODA_SITES)}")
    country, carbon, unit = LIMESODA_SITES[site]
    return Source(site, units="reflectance_percent", target_unit=unit, som=carbon == "SOM", name=site,
                  country=country, group="LimeSoDa")


def source_of(location: str, **declared) -> Source:
    """A :class:`Source` for a path (with the ``declared`` options) or a LimeSoDa site id (``UL.120``)."""
    location = str(location)
    if Path(location).exists():
        meta = tuple(_meta_pair(m) if isinstance(m, str) else tuple(m) for m in declared.pop("meta", ()))
        return Source(location, meta=meta, **declared)
    site = location.removeprefix("limesoda:")
    if site in LIMESODA_SITES:
        return limesoda_source(site)
    raise UserInputError(f"{location}: no such file or folder, and not a LimeSoDa site id ({', '.join(LIMESODA_SITES)})")


def _meta_pair(text: str) -> tuple[str, str]:
    """``"field=column"`` or ``"column"`` (stored under its own name) -> (field, column)."""
    field, _, column = text.partition("=")
    if not field.strip() or (_ and not column.strip()):
        raise UserInputError(f"--meta {text!r}: expected FIELD=COLUMN or COLUMN")
    return field.strip(), (column or field).strip()


def open_reader(source: Source) -> tuple[Reader, str]:
    """The reader for ``source`` and the source's name."""
    if source.format == "ossl":
        from dtl_dist.library.ossl import OsslReader

        return OsslReader([source.location, *source.tables], where=source.where), source.name or "OSSL"
    path = Path(source.location)
    if not path.exists():
        return limesoda_reader(source.location), source.name or source.location
    name = source.name or path.stem
    if path.is_dir():
        found = sorted(path.glob("*.npz"))
        if len(found) != 1:
            raise UserInputError(f"{path}: expected a folder with exactly one .npz file, found {len(found)}")
        path, name = found[0], source.name or path.name
    fields = dict(source.meta)
    for field in (*STANDARD_TEXT_META, *STANDARD_NUMERIC_META):
        if field in fields and getattr(source, field, None) is not None:
            raise UserInputError(f"{path}: {field} is given both as a constant and as column {fields[field]!r}")
    options = dict(target=source.target, id_column=source.id_column, meta=fields)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return NpzReader(path, **options), name
    if suffix in (".parquet", ".pq"):
        return parquet_reader(path, **options), name
    if suffix in (".csv", ".txt"):
        if path.stat().st_size == 0:
            raise UserInputError(f"{path}: empty file; expected a header row of column names and data rows")
        return csv_reader(path, **options), name
    raise UserInputError(f"{path}: unknown file type {suffix!r}; expected .csv, .parquet or .npz")


def grid_preprocessing(grid: np.ndarray) -> list[str]:
    """The ``preprocessing`` attribute of a store on ``grid``: absorbance, then linear resampling."""
    step = grid[1] - grid[0]
    return ["log10(1/R)", f"resample {grid[0]:g}:{grid[-1]:g}:{step:g} nm linear"]


def _is_percent(unit: str) -> bool:
    unit = unit.strip().lower().replace(" ", "")
    return unit in ("%", "percent", "g/100g", "g100g-1", "wt%") or "(=%)" in unit


@dataclass
class _Plan:
    """A source opened and checked, ready to stream: reader, scale, constants and the first block peeked."""

    source: Source
    reader: Reader
    name: str
    units: str
    scale: float
    scale_note: str
    blocks: object

    @classmethod
    def open(cls, source: Source, grid: np.ndarray, block_rows: int, *, target: bool = True,
             grid_owner: str = "") -> "_Plan":
        """Open and check a source; ``target=False`` reads spectra alone (e.g. new spectra to predict), and
        ``grid_owner`` names whose grid the spectra must cover (default: the ``--grid`` of ingestion)."""
        reader, name = open_reader(source)
        reader.for_grid(grid)
        label = reader.label
        if source.units not in UNITS:
            raise UserInputError(f"{label}: spectral units {source.units!r}: declare one of {', '.join(UNITS)} (--units)")
        wl = reader.wavelengths
        if grid[0] < wl[0] - 1e-9 or grid[-1] > wl[-1] + 1e-9:
            hint = (f"use a grid inside it, e.g. --grid {math.ceil(wl[0] / 10) * 10:g}:"
                    f"{math.floor(wl[-1] / 10) * 10:g}:10") if not grid_owner else "measure the spectra over it"
            raise UserInputError(
                f"{label}: spectra cover {wl[0]:g}-{wl[-1]:g} nm, which does not contain {grid_owner or 'the grid'} "
                f"{grid[0]:g}-{grid[-1]:g} nm (resampling never extrapolates); {hint}"
            )
        scale, note = _target_scale(source, reader) if target else (math.nan, "")
        blocks = reader.blocks(block_rows)
        first = next(blocks, None)
        if first is None:
            skipped = f" (read {reader.skipped})" if reader.skipped else ""
            raise UserInputError(f"{label}: no data rows{skipped}; expected at least one sample")
        return cls(source, reader, name, source.units, scale, note, itertools.chain([first], blocks))

    def constants(self) -> dict:
        s = self.source
        return {"source": self.name, "country": s.country or "", "group": s.group or "",
                "lat": np.nan if s.lat is None else float(s.lat), "lon": np.nan if s.lon is None else float(s.lon)}

    def provenance(self, rows: int) -> dict:
        s, r = self.source, self.reader
        return {
            "source": self.name, "file": str(Path(r.label).resolve()) if Path(r.label).exists() else r.label,
            "reader": r.kind, "sha256": r.sha256, "time": now_iso(), "dtl_dist_version": __version__, "rows": rows,
            "units": self.units, "wavelengths_nm": [float(r.wavelengths[0]), float(r.wavelengths[-1]),
                                                    int(r.wavelengths.size)],
            "target": r.target, "target_to_soc": self.scale_note, "id_column": r.id_column,
            "meta_columns": dict(s.meta), **({"skipped": dict(r.skipped)} if r.skipped is not None else {}),
        }


def _target_scale(source: Source, reader: Reader) -> tuple[float, str]:
    label = reader.label
    if reader.target is None:
        raise UserInputError(f"{label}: missing target column; give --target COLUMN (the SOC or SOM column)")
    if source.som and source.target_scale is not None:
        raise UserInputError(f"{label}: give either --som or --target-scale, not both")
    if source.target_scale is not None and not (math.isfinite(source.target_scale) and source.target_scale > 0):
        raise UserInputError(f"{label}: --target-scale {source.target_scale}: expected a positive number")
    unit = source.target_unit or reader.target_unit or "%"
    if not _is_percent(unit) and source.target_scale is None:
        raise UserInputError(
            f"{label}: target {reader.target!r} is in {unit!r}, not %; give --target-scale FACTOR converting it "
            "to SOC in % (e.g. g/kg -> % is 0.1)"
        )
    if (reader.target_name or "").upper() == "SOM" and not source.som and source.target_scale is None:
        raise UserInputError(
            f"{label}: target {reader.target!r} is soil organic matter (SOM); pass --som to convert it to SOC "
            "with the factor 1/1.724, or --target-scale FACTOR"
        )
    if source.som:
        return SOM_TO_SOC, f"SOM ({unit}) -> SOC % x 1/1.724"
    scale = 1.0 if source.target_scale is None else float(source.target_scale)
    return scale, f"{unit} -> SOC % x {scale:g}"


def _convert(block, plan: _Plan, grid: np.ndarray):
    """Check a block and return (absorbance on ``grid`` float32, SOC %)."""
    reader, label = plan.reader, plan.reader.label
    X = block.spectra
    bad = ~np.isfinite(X)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise UserInputError(
            f"{label}: row {block.row(r)}, column {reader.columns[c]!r}: spectral value {X[r, c]} "
            "(missing or infinite); expected a finite number"
        )
    top = REFLECTANCE_TOP.get(plan.units)
    if top is not None:
        bad = (X <= 0) | (X > top)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            hint = " (reflectance in percent? use --units reflectance_percent)" if top == 1 and X[r, c] <= 100 else ""
            raise UserInputError(
                f"{label}: row {block.row(r)}, column {reader.columns[c]!r}: reflectance {X[r, c]:g} is outside "
                f"(0, {top:g}] for --units {plan.units}{hint}"
            )
        X = Absorbance(units=plan.units).fit_transform(X)
    else:
        low, high = ABSORBANCE_RANGE
        bad = (X < low) | (X > high)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise UserInputError(
                f"{label}: row {block.row(r)}, column {reader.columns[c]!r}: absorbance {X[r, c]:g} is outside the "
                f"plausible {low:g} to {high:g} for --units absorbance (reflectance in percent? use --units "
                "reflectance_percent)"
            )
    spectra = resample(X, reader.wavelengths, grid).astype(np.float32)
    if block.target is None or not math.isfinite(plan.scale):
        return spectra, None
    soc = block.target * plan.scale
    bad = ~np.isnan(soc) & ~((soc >= 0) & (soc <= 100))
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise UserInputError(
            f"{label}: row {block.row(r)}, column {reader.target!r}: SOC {soc[r]:g} % "
            f"({block.target[r]:g} x {plan.scale:g}) is outside 0-100 %; expected a soil carbon content"
        )
    return spectra, soc


def read_spectra(source: Source, grid, *, block_rows: int = BLOCK_ROWS, grid_owner: str = ""):
    """Stream ``(sample ids, absorbance on grid)`` blocks of a source, checked and converted exactly as
    :func:`ingest` converts them (units -> log10(1/R), linear resampling, no extrapolation); no target is needed.

    Returns
    -------
    (number of rows or None, iterator of (ids, spectra float32) blocks)
    """
    plan = _Plan.open(source, np.asarray(grid, dtype=float), block_rows, target=False, grid_owner=grid_owner)
    seen: dict = {}

    def blocks():
        for block in plan.blocks:
            spectra, _ = _convert(block, plan, grid)
            yield _sample_ids(block, plan, seen), spectra

    return plan.reader.n_rows, blocks()


def _sample_ids(block, plan: _Plan, seen: dict) -> np.ndarray:
    """The block's ids (generated as ``<name>/<row>`` if the source has none), checked unique against ``seen``."""
    if block.sample_id is None:
        ids = np.array([f"{plan.name}/{block.row(i)}" for i in range(len(block))])
    else:
        ids = np.asarray(block.sample_id, dtype=str)
    label = plan.reader.label
    for i, sid in enumerate(ids.tolist()):
        where = (label, block.row(i))
        if sid in seen:
            first_label, first_row = seen[sid]
            raise UserInputError(
                f"{label}: row {where[1]}: duplicate sample id {sid!r} (first seen in {first_label}"
                f"{'' if first_row is None else f', row {first_row}'}); expected unique ids"
            )
        seen[sid] = where
    return ids


def _meta_kinds(plans, existing):
    """(numeric fields, text fields) of the store: standard fields, extras from the sources, or the existing store's."""
    kinds = {**{f: "numeric" for f in STANDARD_NUMERIC_META}, **{f: "text" for f in STANDARD_TEXT_META}}
    for plan in plans:
        for name, kind in plan.reader.meta_kinds.items():
            if kinds.setdefault(name, kind) != kind:
                raise UserInputError(f"{plan.reader.label}: metadata {name!r} is {kind} here but not in another source")
    if existing is not None:
        have = {f: ("numeric" if existing.meta(f, rows=slice(0, 0)).dtype.kind in "biuf" else "text")
                for f in existing.meta_fields}
        missing = sorted(set(kinds) - set(have))
        if missing:
            raise UserInputError(f"{existing.path}: the store has no metadata {missing}; cannot append these columns")
        for name, kind in kinds.items():
            if have[name] == "numeric" and kind == "text":
                raise UserInputError(f"{existing.path}: metadata {name!r} is numeric in the store, text in the source")
        kinds = have
    numeric = sorted(k for k, v in kinds.items() if v == "numeric")
    return numeric, sorted(k for k, v in kinds.items() if v == "text")


def ingest(sources, out, *, grid: str | None = None, append: bool = False, overwrite: bool = False,
           block_rows: int = BLOCK_ROWS, progress: bool = False) -> SpectralLibrary:
    """Ingest one or more sources into ONE spectral library store (a new one, or ``append`` onto ``out``).

    Parameters
    ----------
    sources : list of :class:`Source` or str (paths get no declarations, so use str only for LimeSoDa ids).
    out : path of the store directory.
    grid : ``"START:STOP:STEP"`` in nm; default the paper's 400:2500:10 for a new store, the store's own grid
        when appending. Resampling never extrapolates: sites starting at 420 nm (UL.120, SL.125) need
        ``"420:2500:10"`` (:data:`REAL_DATA_GRID`), the grid of the real-data library.
    append : add the rows to the existing store ``out`` (same grid; ids must stay unique).
    overwrite : replace an existing store ``out``.
    block_rows : rows read, checked and written at a time (memory is O(block_rows x bands)).
    progress : show a tqdm progress bar.

    Returns
    -------
    SpectralLibrary
        The store at ``out``, with ``units="absorbance"``, ``targets/soc`` in %, meta source/country/group/lat/lon
        and one provenance record per source.

    References
    ----------
    Shen et al. (2022), sections 2.1-2.2.
    """
    from tqdm.auto import tqdm

    out = Path(out)
    sources = [source_of(s) if isinstance(s, str) else s for s in sources]
    if not sources:
        raise UserInputError("ingest: give at least one source (a file or a LimeSoDa site id)")
    if append and overwrite:
        raise UserInputError(f"{out}: give either --append or --overwrite, not both")
    existing = SpectralLibrary.open(out) if append else None
    if existing is not None:
        existing.check_chunks(decode_from=existing.n_samples)  # the tail chunk the append rewrites, before staging
        if existing.units != "absorbance":
            raise UserInputError(f"{out}: store units are {existing.units!r}; ingestion appends absorbance only")
        target_grid = existing.wavelengths
        if grid is not None and not same_grid(parse_grid(grid), target_grid):
            g = parse_grid(grid)
            raise UserInputError(
                f"{out}: grid mismatch on append: the store has {target_grid.size} bands {target_grid[0]:g}-"
                f"{target_grid[-1]:g} nm, --grid {grid} has {g.size} bands; omit --grid to use the store's"
            )
    else:
        target_grid = parse_grid(grid) if grid is not None else make_grid(*PAPER_GRID)
        if out.exists() and not overwrite:
            raise UserInputError(f"{out}: already exists (use --overwrite to replace it, --append to add to it)")
    preprocessing = grid_preprocessing(target_grid)
    if existing is not None and existing.preprocessing != preprocessing:
        raise UserInputError(
            f"{out}: store preprocessing {existing.preprocessing} differs from ingestion's {preprocessing}"
        )
    plans = [_Plan.open(s, target_grid, block_rows) for s in sources]
    numeric, text = _meta_kinds(plans, existing)
    seen = {} if existing is None else {sid: (str(out), None) for sid in existing.sample_id.tolist()}
    staging = temporary_sibling(out) if existing is not None else None
    out.parent.mkdir(parents=True, exist_ok=True)
    known = [p.reader.n_rows for p in plans]
    bar = tqdm(total=sum(known) if None not in known else None, unit=" spectra", desc=f"ingest {out.name}",
               disable=not progress)
    try:
        with bar, LibraryWriter(staging or out, target_grid, targets=["soc"], meta_numeric=numeric, meta_text=text,
                                units="absorbance", preprocessing=preprocessing, target_units={"soc": "%"},
                                overwrite=overwrite) as writer:
            records = []
            for plan in plans:
                rows = 0
                constants = plan.constants()
                for block in plan.blocks:
                    spectra, soc = _convert(block, plan, target_grid)
                    ids = _sample_ids(block, plan, seen)
                    columns = {"targets/soc": soc}
                    for name in numeric + text:
                        if name in block.meta:
                            values = block.meta[name]
                            columns[f"meta/{name}"] = values.astype(str) if name in text else values
                        elif name in constants:
                            columns[f"meta/{name}"] = np.full(len(block), constants[name])
                    writer.append_rows(spectra, ids, columns)
                    rows += len(block)
                    bar.update(len(block))
                records.append(plan.provenance(rows))
            writer.group.attrs["provenance"] = records
            library = writer.commit()
        if existing is None:
            return library
        existing.append_library(library)
        return SpectralLibrary.open(out)
    finally:
        if staging is not None:
            remove_path(staging)
