"""The two synthetic cases of bench_study (issue 16, item 3): one site, a library that holds its soils and one
that does not.

- ``SYN-with``: the `dtl synth` library (15,000 samples, 10 countries, seed 0) plus 5,000 samples of the site's
  own soils measured on the site's spectrometer (rows 1,000-5,999 of the site's generator: a regional survey of
  the same soils, not the site's 120 samples) = 20,000 samples, 25 % like the site's;
- ``SYN-without``: the `dtl synth` library of 20,000 samples without the site's country (no soil and no
  spectrometer like the site's).

The site is `dtl synth --site-n 120` (seed 0: its own country, mineralogy and spectrometer, SOC median 1.6 %);
both on the 400-2500 nm grid every 20 nm (106 bands, to halve the CNNs' time on 2 cores).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dtl_dist.library.store import SpectralLibrary
from dtl_dist.library.synthetic import SiteGenerator, make_library, write_site
from dtl_dist.spectra.grid import make_grid

GRID = tuple(make_grid(400, 2500, 20))
CASES = ("SYN-with", "SYN-without")


def _create(path: Path, parts: list) -> Path:
    spectra = np.vstack([p.spectra for p in parts])
    meta = {k: np.concatenate([p.meta[k] for p in parts]) for k in parts[0].meta}
    SpectralLibrary.create(path, spectra, np.asarray(GRID), np.concatenate([p.sample_id for p in parts]),
                           targets={"soc": np.concatenate([p.soc for p in parts])}, meta=meta, units="absorbance",
                           target_units={"soc": "%"}, provenance=[{"source": "synthetic", "case": path.stem}])
    return path


def stores(case: str, folder: Path) -> tuple[Path, Path]:
    """(library, site) stores of ``case``, written into ``folder`` when missing."""
    folder.mkdir(parents=True, exist_ok=True)
    site = folder / "site.zarr"
    if not site.exists():
        write_site(site, 120, seed=0, wavelengths=GRID)
    library = folder / f"{case}.zarr"
    if not library.exists():
        country = SpectralLibrary.open(site).meta("country")[0]
        if case == "SYN-with":
            survey = SiteGenerator(0, GRID, 10, 0).rows(1000, 6000)
            survey.sample_id = np.array([f"survey-{i}" for i in survey.sample_id])
            _create(library, [make_library(15000, 0, wavelengths=GRID), survey])
        else:
            data = make_library(20000, 0, wavelengths=GRID)
            keep = data.meta["country"] != country
            data.spectra, data.sample_id, data.soc = data.spectra[keep], data.sample_id[keep], data.soc[keep]
            data.meta = {k: v[keep] for k, v in data.meta.items()}
            _create(library, [data])
    return library, site
