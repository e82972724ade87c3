"""Table 1 style summaries of a spectral library: K and the SOC distribution per library and per country.

Shen et al. (2022), Table 1: number of samples K, SOC mean, s.d., min, Q1, median, Q3, max (%). Only the
target and metadata columns are read, never the spectra, so this is cheap on million-sample libraries.
"""

from __future__ import annotations

import numpy as np

from dtl_dist.library.store import ROLE, SpectralLibrary, describe

STATISTICS = ("mean", "sd", "min", "q1", "median", "q3", "max")
"""SOC statistics of Table 1; s.d. uses ddof=1, quartiles numpy's default (linear, R type 7)."""


def soc_statistics(soc) -> dict:
    """``K`` (samples with SOC measured), ``missing`` (NaN) and the Table 1 statistics of ``soc`` (%)."""
    soc = np.asarray(soc, dtype=np.float64)
    measured = soc[~np.isnan(soc)]
    stats = {"K": int(measured.size), "missing": int(soc.size - measured.size)}
    if measured.size == 0:
        return stats | dict.fromkeys(STATISTICS, None)
    q1, median, q3 = np.percentile(measured, [25, 50, 75])
    sd = float(measured.std(ddof=1)) if measured.size > 1 else None
    return stats | {"mean": float(measured.mean()), "sd": sd, "min": float(measured.min()), "q1": float(q1),
                    "median": float(median), "q3": float(q3), "max": float(measured.max())}


def summarise(lib: SpectralLibrary, *, target: str = "soc") -> list[dict]:
    """One row for the whole library, one per country and, for a split site, one per role.

    Returns
    -------
    list of dict with keys ``by`` ("library", "country" or "role"), ``name`` and those of :func:`soc_statistics`.
    """
    soc = lib.target(target) if target in lib.targets else np.full(lib.n_samples, np.nan)
    rows = [{"by": "library", "name": lib.path.stem} | soc_statistics(soc)]
    for field in ("country", ROLE):
        if field not in lib.meta_fields:
            continue
        values = lib.meta(field)
        for value in np.unique(values):
            rows.append({"by": field, "name": str(value) or "(none)"} | soc_statistics(soc[values == value]))
    return rows


def library_info(path, *, verify: bool = False) -> dict:
    """:func:`~dtl_dist.library.store.describe` of the store at ``path`` plus its Table 1 ``summary``; with
    ``verify``, every chunk of every array is decoded first and ``chunks_verified`` counts them."""
    lib = SpectralLibrary.open(path)
    checked = {"chunks_verified": lib.check_chunks(decode_from=0)} if verify else {}
    return describe(lib) | checked | {"summary": summarise(lib)}


def render_info(info: dict, console=None) -> None:
    """Print :func:`library_info` with rich: the Table 1 summary, then units, grid and provenance."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=f"{info['path']}: SOC (%)", title_justify="left")
    for name in ("", "K", "Mean", "S.d.", "Min.", "Q1", "Median", "Q3", "Max."):
        table.add_column(name, justify="left" if not name else "right", no_wrap=not name)
    for row in info["summary"]:
        label = row["name"] if row["by"] == "library" else f"  {row['by']} {row['name']}"
        cells = ["-" if row[k] is None else f"{row[k]:.2f}" for k in STATISTICS]
        table.add_row(label, f"{row['K']:,}", *cells)
    console.print(table)
    missing = info["summary"][0]["missing"]
    wl = info["wavelengths_nm"]
    console.print(f"samples {info['n_samples']:,}" + (f" ({missing:,} without SOC)" if missing else "")
                  + f" | bands {info['n_bands']} ({wl[0]:g}-{wl[1]:g} nm) | units {info['units']}"
                  + f" | preprocessing {', '.join(info['preprocessing']) or 'none'}")
    console.print(f"targets {', '.join(info['targets']) or 'none'} | meta {', '.join(info['meta']) or 'none'}")
    checked = f"; {info['chunks_verified']:,} chunks decoded, checksums match" if "chunks_verified" in info else ""
    console.print(f"integrity: {info['integrity']}{checked}")
    for record in info["provenance"]:
        shown = {k: record[k] for k in ("source", "rows", "units", "target_to_soc", "time") if k in record}
        if "sha256" in record:
            shown["sha256"] = str(record["sha256"])[:12]
        text = ", ".join(f"{k}={v}" for k, v in shown.items())
        console.print(f"provenance: {text or record}", soft_wrap=True)
