"""Synthetic tables in the OSSL v1.2 layout, for tests, benchmarks and a first try of ``dtl ingest --format ossl``.

The rows are the synthetic global library (:mod:`dtl_dist.library.synthetic`) written as the OSSL publishes its
data (column names of soilspectroscopy/ossl-imports ``out/ossl_level0_names_*.csv``): vis-NIR reflectance as a
fraction in ``scan_visnir.<nm>_ref`` columns, 350-2500 nm every 2 nm; SOC in ``oc_usda.c729_w.pct``; ISO 3166-1
alpha-3 countries; the dataset codes of the OSSL libraries; a few MIR, depth and total-carbon columns that a
reader must ignore. Some layers have MIR only (no vis-NIR values) and some no OC, as in the real tables.
Written in blocks, so the 100k-row benchmark file never sits in memory.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from dtl_dist.library import ossl
from dtl_dist.library.synthetic import LibraryGenerator

VISNIR_NM = np.arange(350, 2501, 2)
"""The OSSL v1.2 vis-NIR grid, nm."""
DATASETS = ("KSSL.SSL", "LUCAS.SSL", "ICRAF.ISRIC", "AFSIS1.SSL", "SERBIA.SSL")
DATASET_SHARES = (0.55, 0.31, 0.07, 0.04, 0.03)
"""Share of the layers from each library, drawn per layer (KSSL and LUCAS hold most of the OSSL vis-NIR)."""
COUNTRIES = ("USA", "DEU", "SWE", "KEN", "SRB", "FRA", "BRA", "AUS", "CHN", "ESP")
MIR_ONLY, NO_OC = 0.05, 0.05
"""Fractions of layers without vis-NIR (MIR only) and without OC."""
SPLIT_FILES = {"visnir": "ossl_visnir_L0_v1.2", "soillab": "ossl_soillab_L0_v1.2",
               "soilsite": "ossl_soilsite_L0_v1.2"}
ALL_FILE = "ossl_all_L0_v1.2"


def _tables(gen: LibraryGenerator, start: int, stop: int, seed: int) -> dict[str, pd.DataFrame]:
    data = gen.rows(start, stop)
    n = len(data)
    rng = np.random.default_rng([seed, start])
    ids = [f"{seed:04x}{start + i:028x}" for i in range(n)]
    country_no = np.array([int("0" + "".join(ch for ch in str(c) if ch.isdigit())) for c in data.meta["country"]])
    reflectance = 10.0 ** -np.clip(data.spectra.astype(np.float64), 0.001, None)
    reflectance[rng.random(n) < MIR_ONLY] = np.nan
    soc = np.where(rng.random(n) < NO_OC, np.nan, data.soc)
    dataset = rng.choice(DATASETS, size=n, p=DATASET_SHARES)
    site = pd.DataFrame({
        ossl.DATASET: dataset, ossl.ID: ids, "id.layer_local_c": [f"L{start + i}" for i in range(n)],
        ossl.LON: np.round(data.meta["lon"], 6), ossl.LAT: np.round(data.meta["lat"], 6),
        "layer.upper.depth_usda_cm": 0.0, "layer.lower.depth_usda_cm": 20.0,
        ossl.COUNTRY: np.array(COUNTRIES)[country_no % len(COUNTRIES)],
        "id.dataset.site_ascii_txt": [f"S{start + i}" for i in range(n)],
    })
    lab = pd.DataFrame({ossl.DATASET: dataset, ossl.ID: ids, "c.tot_usda.a622_w.pct": np.round(soc * 1.05, 4),
                        ossl.OC: np.round(soc, 4), "ph.h2o_usda.a268_index": np.round(rng.uniform(4, 8, n), 2)})
    visnir = pd.DataFrame(np.round(reflectance, 6), columns=[f"scan_visnir.{w}_ref" for w in VISNIR_NM])
    visnir.insert(0, "scan.visnir.model.name_utf8_txt", "ASD Labspec 2500 with Muglight accessory")
    visnir.insert(0, ossl.ID, ids)
    visnir.insert(0, ossl.DATASET, dataset)
    mir = pd.DataFrame(np.round(rng.uniform(0.2, 2.0, (n, 3)), 4),
                       columns=[f"scan_mir.{w}_abs" for w in (600, 602, 604)])
    return {"soilsite": site, "soillab": lab, "visnir": visnir, "mir": mir}


def write_ossl(directory, n: int, *, seed: int = 0, layout: str = "all", gz: bool = True,
               block_rows: int = 5000) -> list[Path]:
    """Write ``n`` synthetic layers in the OSSL v1.2 layout into ``directory``; return the files written.

    Parameters
    ----------
    layout : ``"all"`` (``ossl_all_L0_v1.2``: every table side by side, MIR columns included) or ``"tables"``
        (``ossl_visnir_L0_v1.2``, ``ossl_soillab_L0_v1.2``, ``ossl_soilsite_L0_v1.2``; the lab and site rows in
        reverse order, so a reader must join on ``id.layer_uuid_txt``).
    gz : write ``.csv.gz`` (as published; gzip level 1) instead of ``.csv``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    gen = LibraryGenerator(seed, tuple(VISNIR_NM.astype(float)), len(COUNTRIES))
    suffix = ".csv.gz" if gz else ".csv"
    names = [ALL_FILE] if layout == "all" else list(SPLIT_FILES.values())
    paths = [directory / f"{name}{suffix}" for name in names]
    side: dict[str, list[pd.DataFrame]] = {"soillab": [], "soilsite": []}
    with _CsvSink(paths[0], gz) as sink:
        for start in range(0, n, block_rows):
            tables = _tables(gen, start, min(start + block_rows, n), seed)
            if layout == "all":
                sink.write(pd.concat([tables["soilsite"], tables["soillab"].drop(columns=[ossl.DATASET, ossl.ID]),
                                      tables["visnir"].drop(columns=[ossl.DATASET, ossl.ID]), tables["mir"]], axis=1))
            else:
                sink.write(tables["visnir"])
                for key in side:
                    side[key].append(tables[key])
    for key, path in zip(side, paths[1:]):
        with _CsvSink(path, gz) as sink:
            sink.write(pd.concat(side[key]).iloc[::-1])
    return paths


class _CsvSink:
    """A CSV file written block by block with pyarrow's CSV writer (fast on 1,000+ float columns)."""

    def __init__(self, path: Path, gz: bool):
        self.file = gzip.open(path, "wb", compresslevel=1) if gz else open(path, "wb")
        self.writer = self.schema = None

    def write(self, frame: pd.DataFrame) -> None:
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self.writer is None:
            self.schema = table.schema
            self.writer = pacsv.CSVWriter(self.file, self.schema)
        self.writer.write_table(table.cast(self.schema))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.writer is not None:
            self.writer.close()
        self.file.close()
        return False
