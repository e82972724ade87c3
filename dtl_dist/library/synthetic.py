"""Synthetic vis-NIR soil spectral libraries and local sites, for work at scale (issue 2, item 8).

A spectrum is apparent absorbance ``log10(1/R)`` (paper section 2.2) built from physically motivated
parts, evaluated analytically on any wavelength grid:

* a soil-matrix baseline, dark in the blue and flat in the NIR, with per-sample scatter (particle size):
  multiplicative scale, additive offset and slope;
* iron oxides (goethite/hematite) near 480, 650 and 900 nm;
* water and OH near 1415 and 1915 nm; clay Al-OH near 2205 nm (and 1412 nm); carbonate near 2340 nm;
* organic matter darkening the whole spectrum, most in the visible, and adding broad features near 1730
  and 2310 nm; darkening saturates (``log1p``) while the features grow as ``SOC**0.75``.

SOC follows a truncated lognormal like the global library of Table 1 (median 1.26 %, mean about 2.3 %,
0.04-35 %). Countries differ in latitude (cold -> more SOC, tropical -> more iron and clay), aridity
(carbonate, less water) and their spectrometers (gain, offset, slope, detector steps at 1000 and 1830 nm,
wavelength shift, noise). Lab values carry label noise. A local site (:func:`make_site`) has a narrow SOC
range like the local data of Table 1, its own mineralogy and its own instrument: a domain shift for
transfer learning to work on.

Determinism: rows are drawn in fixed blocks of :data:`BLOCK_ROWS`; block ``b`` uses its own stream
``SeedSequence(seed, spawn_key=(kind, b))``. Sample ``i`` depends only on ``(seed, i)`` (and the country
count), so a store is identical for any worker count and any ``chunk_rows``, a smaller library is a
prefix of a larger one, and the same soils are drawn whatever the wavelength grid.

References
----------
Shen, Z., Ramirez-Lopez, L., Behrens, T., et al. (2022). Deep transfer learning of global spectra for local
soil carbon monitoring. Section 2.1 and Table 1 (the SOC distributions), section 2.2 (grid, absorbance).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np
from scipy.special import ndtr, ndtri

from dtl_dist.errors import UserInputError
from dtl_dist.mapping import serial_map
from dtl_dist.library.store import DEFAULT_CHUNK_ROWS, LibraryWriter, SpectralLibrary, now_iso, write_region
from dtl_dist.spectra.grid import make_grid, parse_grid, validate_grid

BLOCK_ROWS = 1000
"""Rows per random stream. Fixed, so results do not depend on chunking."""

GLOBAL_SOC = {"median": 1.26, "sigma": 1.1, "range": (0.04, 35.04)}
"""Within-country lognormal SOC (%) of the library; with the country shifts this gives Table 1's global
distribution (median 1.26, mean about 2.3, s.d. about 3.5)."""

LOCAL_SOC = {"median": 1.6, "sigma": 0.35, "range": (0.78, 4.54)}
"""Lognormal SOC (%) of a local site, like the local data of Table 1 (medians 1.4-2.2, range 0.78-4.54)."""

TARGET = "soc"
SOURCE = "synthetic"
WAVE_CHUNKS = 16
"""Chunks handed to ``map_blocks`` per call; the progress bar advances once per wave."""

_REGIONS, _LIBRARY, _SITE = 0, 1, 2  # stream kinds


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _gauss(wl, centre, width):
    return np.exp(-0.5 * ((wl - centre) / width) ** 2)


def basis(wavelengths) -> np.ndarray:
    """Absorbance of one unit of each soil constituent at ``wavelengths`` (nm): rows are
    matrix, iron oxides, water, clay, carbonate, organic darkening, organic features.
    """
    wl = np.asarray(wavelengths, dtype=np.float64)
    return np.stack([
        0.28 + 0.50 * np.exp(-(wl - 400.0) / 220.0) + 0.04 * (wl - 400.0) / 2100.0,
        0.90 * _gauss(wl, 480, 40) + 0.35 * _gauss(wl, 650, 50) + 0.45 * _gauss(wl, 900, 120),
        0.30 * _gauss(wl, 1415, 30) + 0.55 * _gauss(wl, 1915, 45),
        0.10 * _gauss(wl, 1412, 18) + 0.35 * _gauss(wl, 2205, 28) + 0.06 * _gauss(wl, 2165, 20),
        0.45 * _gauss(wl, 2340, 32) + 0.10 * _gauss(wl, 2160, 30),
        0.15 + np.exp(-(wl - 400.0) / 450.0),
        0.50 * _gauss(wl, 1730, 70) + 0.70 * _gauss(wl, 2310, 90),
    ])


@dataclass(frozen=True)
class Instruments:
    """Spectrometer effects: absorbance ``gain * A(wl + shift) + offset + slope * x + steps + noise``."""

    name: tuple
    gain: np.ndarray
    shift: np.ndarray  # nm
    offset: np.ndarray
    slope: np.ndarray  # per 2100 nm
    steps: np.ndarray  # (I, 2) detector splice steps at 1000 and 1830 nm
    noise: np.ndarray  # s.d. of white noise

    @classmethod
    def draw(cls, rng, names, *, scale=1.0) -> "Instruments":
        k = len(names)
        return cls(tuple(names), np.exp(rng.normal(0, 0.04 * scale, k)), rng.normal(0, 1.5 * scale, k),
                   rng.normal(0, 0.03 * scale, k), rng.normal(0, 0.03 * scale, k),
                   rng.normal(0, 0.006 * scale, (k, 2)), 0.002 * np.exp(rng.normal(0, 0.4, k)))

    def response(self, wl) -> tuple[np.ndarray, np.ndarray]:
        """Per instrument: ``gain * basis(wl + shift)`` (I, 7, B) and the added baseline (I, B)."""
        bases = self.gain[:, None, None] * np.moveaxis(basis(wl[None, :] + self.shift[:, None]), 0, 1)
        x = (wl - 400.0) / 2100.0
        added = (self.offset[:, None] + self.slope[:, None] * x + self.steps[:, :1] * (wl > 1000)
                 + self.steps[:, 1:] * (wl > 1830))
        return bases, added

    def measure(self, response, coef, inst, noise) -> np.ndarray:
        """Spectra (float32) of rows with constituent coefficients ``coef`` on instruments ``inst``."""
        bases, added = response
        out = np.empty((coef.shape[0], bases.shape[2]), dtype=np.float32)
        for i in np.unique(inst):
            rows = inst == i
            out[rows] = coef[rows] @ bases[i] + added[i]
        out += noise * self.noise[inst, None].astype(np.float32)
        return out


@dataclass(frozen=True)
class Regions:
    """Countries of the synthetic library: location, SOC level, mineralogy and spectrometers."""

    name: tuple
    weight: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    spread: np.ndarray  # degrees
    soc_shift: np.ndarray  # added to log SOC
    clay_logit: np.ndarray
    iron: np.ndarray
    water: np.ndarray
    carb_prob: np.ndarray
    carb_level: np.ndarray
    om_quality: np.ndarray  # organic features per unit SOC
    inst_first: np.ndarray  # first instrument of each country
    inst_count: np.ndarray
    instruments: Instruments

    @classmethod
    def draw(cls, seed: int, n_countries: int) -> "Regions":
        rng = _rng(seed, _REGIONS)
        c = n_countries
        names = tuple(f"SYN{i + 1:02d}" for i in range(c))
        lat, lon = rng.uniform(-40, 62, c), rng.uniform(-170, 175, c)
        tropical, cold = np.exp(-(lat / 23) ** 2), np.clip((np.abs(lat) - 30) / 30, 0, 1)
        arid = rng.uniform(0, 1, c)
        weight = rng.dirichlet(np.full(c, 2.0))
        soc_shift = 0.6 * cold - 0.4 * arid + rng.normal(0, 0.25, c)
        count = rng.integers(1, 4, c)
        inst_names = [f"{names[k]}-i{j + 1}" for k in range(c) for j in range(count[k])]
        return cls(
            names, weight, lat, lon, rng.uniform(1.5, 6.0, c), soc_shift - weight @ soc_shift,
            -0.7 + 1.2 * tropical + rng.normal(0, 0.4, c), 0.04 + 0.3 * tropical * rng.uniform(0.5, 1.5, c),
            0.25 + 0.35 * (1 - arid), 0.03 + 0.6 * arid**2, rng.uniform(0.05, 0.25, c),
            np.exp(rng.normal(0, 0.3, c)),
            np.concatenate([[0], np.cumsum(count)[:-1]]), count, Instruments.draw(rng, inst_names),
        )


def _truncated_lognormal(u, median, sigma, lo, hi):
    """Inverse-CDF draw of a lognormal truncated to [lo, hi]; also returns the standard score."""
    a, b = ndtr((np.log(lo) - np.log(median)) / sigma), ndtr((np.log(hi) - np.log(median)) / sigma)
    z = ndtri(a + u * (b - a))
    return median * np.exp(sigma * z), z


def _soils(z, u, *, median, sigma, soc_range, clay_logit, iron, water, carb_prob, carb_level, om_quality, spread):
    """Latent soil of each row: SOC (%) and constituent coefficients (rows, 7), before scatter."""
    soc, zsoc = _truncated_lognormal(u[:, 0], median, sigma, *soc_range)
    clay = 0.75 / (1 + np.exp(-(clay_logit + spread * (0.3 * zsoc + 0.95 * z[:, 1]))))
    iron = iron * np.exp(0.35 * spread * z[:, 2])
    water = water * np.exp(0.3 * spread * z[:, 3]) * (0.6 + 0.8 * clay) + 0.05 * np.log1p(soc)
    carbonate = (u[:, 1] < carb_prob) * carb_level * np.exp(0.5 * spread * z[:, 4])
    # organic matter composition varies by sample (and, through om_quality, by region)
    darkening = 0.35 * np.log1p(soc / 2) * np.exp(0.2 * spread * z[:, 12])
    features = 0.03 * soc**0.75 * om_quality * np.exp(0.2 * spread * z[:, 13])
    coef = np.stack([np.ones_like(soc), iron, water, clay, carbonate, darkening, features], 1)
    return soc, coef


def _observe(wl, soc, coef, z, inst, instruments, response, noise, *, soc_range, ids, country, group, lat,
             lon) -> "SyntheticData":
    """Apply scatter, the instrument and label noise: what a lab would hand over."""
    scale = np.exp(0.08 * z[:, 5])
    spectra = instruments.measure(response, coef * scale[:, None], inst, noise)
    baseline = 0.03 * z[:, 6, None] + np.outer(0.03 * z[:, 7], (wl - 400.0) / 2100.0)
    spectra += baseline.astype(np.float32)
    measured = np.clip(np.round(soc * np.exp(0.05 * z[:, 8]) + 0.02 * z[:, 9], 2), *soc_range)
    return SyntheticData(spectra, wl, ids, measured, {
        "source": np.full(soc.size, SOURCE), "country": country, "group": group,
        "lat": np.clip(lat, -89.9, 89.9), "lon": (lon + 180.0) % 360.0 - 180.0,
    })


@dataclass
class SyntheticData:
    """Rows of a synthetic library or site (in memory)."""

    spectra: np.ndarray  # (n, B) float32 absorbance
    wavelengths: np.ndarray
    sample_id: np.ndarray
    soc: np.ndarray  # measured SOC, %
    meta: dict = field(default_factory=dict)  # source, country, group (text); lat, lon

    def __len__(self) -> int:
        return len(self.soc)

    def columns(self) -> dict:
        """Columns keyed as the store names them (``targets/soc``, ``meta/<field>``)."""
        return {f"targets/{TARGET}": self.soc} | {f"meta/{k}": v for k, v in self.meta.items()}

    @staticmethod
    def concat(parts, start: int, stop: int) -> "SyntheticData":
        """Rows ``start:stop`` of the concatenation of ``parts``."""
        s = slice(start, stop)
        return SyntheticData(
            np.concatenate([p.spectra for p in parts])[s], parts[0].wavelengths,
            np.concatenate([p.sample_id for p in parts])[s], np.concatenate([p.soc for p in parts])[s],
            {k: np.concatenate([p.meta[k] for p in parts])[s] for k in parts[0].meta},
        )


class _Generator:
    """Rows ``start:stop`` assembled from fixed-size blocks, each with its own random stream."""

    def __getstate__(self):
        """Pickle the parameters only: workers rebuild the cached regions and instrument responses."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def rows(self, start: int, stop: int) -> SyntheticData:
        first, last = start // BLOCK_ROWS, -(-stop // BLOCK_ROWS)
        parts = [self.block(b) for b in range(first, last)]
        return SyntheticData.concat(parts, start - first * BLOCK_ROWS, stop - first * BLOCK_ROWS)


@dataclass(frozen=True)
class LibraryGenerator(_Generator):
    """The synthetic global library: ``n_countries`` countries, each with 1-3 spectrometers (``group``).

    Parameters
    ----------
    seed : base of all random streams.
    wavelengths : grid in nm (tuple); default the paper's 400-2500 nm every 10 nm.
    n_countries : number of synthetic countries (``SYN01``, ...).
    """

    seed: int = 0
    wavelengths: tuple = tuple(make_grid())
    n_countries: int = 10

    @functools.cached_property
    def regions(self) -> Regions:
        return Regions.draw(self.seed, self.n_countries)

    @functools.cached_property
    def response(self):
        return self.regions.instruments.response(np.asarray(self.wavelengths))

    def block(self, b: int) -> SyntheticData:
        reg, m, wl = self.regions, BLOCK_ROWS, np.asarray(self.wavelengths)
        rng = _rng(self.seed, _LIBRARY, b)
        country = np.minimum(np.searchsorted(np.cumsum(reg.weight), rng.random(m), side="right"), reg.weight.size - 1)
        inst = reg.inst_first[country] + (rng.random(m) * reg.inst_count[country]).astype(np.int64)
        z, u = rng.standard_normal((m, 14)), rng.random((m, 2))
        noise = rng.standard_normal((m, wl.size), dtype=np.float32)
        soc, coef = _soils(
            z, u, median=GLOBAL_SOC["median"] * np.exp(reg.soc_shift[country]), sigma=GLOBAL_SOC["sigma"],
            soc_range=GLOBAL_SOC["range"], clay_logit=reg.clay_logit[country], iron=reg.iron[country],
            water=reg.water[country], carb_prob=reg.carb_prob[country], carb_level=reg.carb_level[country],
            om_quality=reg.om_quality[country], spread=1.0,
        )
        ids = np.array([f"syn-{i:07d}" for i in range(b * m, (b + 1) * m)])
        return _observe(wl, soc, coef, z, inst, reg.instruments, self.response, noise, soc_range=GLOBAL_SOC["range"],
                        ids=ids, country=np.asarray(reg.name)[country], group=np.asarray(reg.instruments.name)[inst],
                        lat=reg.lat[country] + reg.spread[country] * z[:, 10],
                        lon=reg.lon[country] + reg.spread[country] * z[:, 11])


@dataclass(frozen=True)
class SiteGenerator(_Generator):
    """A synthetic local site: a field in one library country with its own soils and spectrometer.

    Parameters
    ----------
    seed, wavelengths, n_countries : as for the library it is compared with.
    site : index of the site (several sites per seed).
    soc_median, soc_sigma, soc_range : lognormal SOC (%) truncated to ``soc_range``.
    """

    seed: int = 0
    wavelengths: tuple = tuple(make_grid())
    n_countries: int = 10
    site: int = 0
    soc_median: float = LOCAL_SOC["median"]
    soc_sigma: float = LOCAL_SOC["sigma"]
    soc_range: tuple = LOCAL_SOC["range"]

    @functools.cached_property
    def setting(self) -> dict:
        """The site's country, location, mineralogy and instrument (drawn once per site)."""
        reg = Regions.draw(self.seed, self.n_countries)
        rng = _rng(self.seed, _SITE, self.site)
        c = int(rng.integers(self.n_countries))
        instruments = Instruments.draw(rng, [f"{reg.name[c]}-site{self.site}"], scale=1.5)
        return {
            "country": reg.name[c], "lat": reg.lat[c] + reg.spread[c] * rng.normal(),
            "lon": reg.lon[c] + reg.spread[c] * rng.normal(),
            "clay_logit": reg.clay_logit[c] + rng.normal(0, 0.6), "iron": reg.iron[c] * np.exp(rng.normal(0, 0.4)),
            "water": reg.water[c] * np.exp(rng.normal(0, 0.2)), "carb_prob": reg.carb_prob[c] * rng.uniform(),
            "carb_level": reg.carb_level[c], "om_quality": reg.om_quality[c] * np.exp(rng.normal(0, 0.2)),
            "instruments": instruments, "response": instruments.response(np.asarray(self.wavelengths)),
        }

    def block(self, b: int) -> SyntheticData:
        s, m, wl = self.setting, BLOCK_ROWS, np.asarray(self.wavelengths)
        rng = _rng(self.seed, _SITE, self.site, b)
        z, u = rng.standard_normal((m, 14)), rng.random((m, 2))
        noise = rng.standard_normal((m, wl.size), dtype=np.float32)
        soc, coef = _soils(z, u, median=self.soc_median, sigma=self.soc_sigma, soc_range=self.soc_range,
                           clay_logit=s["clay_logit"], iron=s["iron"], water=s["water"], carb_prob=s["carb_prob"],
                           carb_level=s["carb_level"], om_quality=s["om_quality"], spread=0.35)
        inst = np.zeros(m, dtype=np.int64)
        ids = np.array([f"site{self.site}-{i:05d}" for i in range(b * m, (b + 1) * m)])
        return _observe(wl, soc, coef, z, inst, s["instruments"], s["response"], noise, soc_range=self.soc_range,
                        ids=ids, country=np.full(m, s["country"]), group=np.full(m, s["instruments"].name[0]),
                        lat=s["lat"] + 0.01 * z[:, 10], lon=s["lon"] + 0.01 * z[:, 11])


def _grid(wavelengths) -> tuple:
    return tuple(make_grid() if wavelengths is None else validate_grid(wavelengths))


def _check(n: int, what: str, *, minimum: int = 1) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < minimum:
        raise UserInputError(f"{what}: expected an integer >= {minimum}, got {n!r}")
    return int(n)


def make_library(n: int, seed: int = 0, *, wavelengths=None, n_countries: int = 10) -> SyntheticData:
    """``n`` samples of the synthetic global library, in memory (for small ``n``; see :func:`write_library`).

    Examples
    --------
    >>> data = make_library(100, seed=1)
    >>> data.spectra.shape, float(data.soc.min()) > 0
    ((100, 211), True)
    """
    gen = LibraryGenerator(_check(seed, "seed", minimum=0), _grid(wavelengths), _check(n_countries, "n_countries"))
    return gen.rows(0, _check(n, "n"))


def make_site(n: int, seed: int = 0, *, wavelengths=None, n_countries: int = 10, site: int = 0,
              soc_median: float = LOCAL_SOC["median"], soc_sigma: float = LOCAL_SOC["sigma"],
              soc_range: tuple = LOCAL_SOC["range"]) -> SyntheticData:
    """``n`` samples of a synthetic local site (narrow SOC range, its own soils and spectrometer)."""
    lo, hi = map(float, soc_range)
    if not (0 < lo < soc_median < hi and soc_sigma > 0):
        raise UserInputError(f"site SOC: expected 0 < min < median < max and sigma > 0, got median {soc_median}, "
                             f"sigma {soc_sigma}, range {soc_range}")
    gen = SiteGenerator(_check(seed, "seed", minimum=0), _grid(wavelengths), _check(n_countries, "n_countries"),
                        _check(site, "site", minimum=0), float(soc_median), float(soc_sigma), (lo, hi))
    return gen.rows(0, _check(n, "n"))


def _provenance(kind: str, **params) -> dict:
    from dtl_dist import __version__

    return {"source": SOURCE, "generator": f"dtl_dist.library.synthetic ({kind})", "time": now_iso(),
            "package_version": __version__, **params}


def _write_chunk(gen: _Generator, path: str, rows: tuple[int, int]) -> int:
    data = gen.rows(*rows)
    write_region(path, rows[0], data.spectra, data.sample_id, data.columns())
    return len(data)


def write_library(path, n: int, *, seed: int = 0, wavelengths=None, n_countries: int = 10,
                  chunk_rows: int = DEFAULT_CHUNK_ROWS, map_blocks: Callable | None = None, progress: bool = False,
                  overwrite: bool = False) -> SpectralLibrary:
    """Write ``n`` synthetic library samples straight into a new Zarr store, one chunk per task.

    Each task generates its chunk and writes its own row region of the temporary store (opened by path, so
    tasks may run in other processes); the store is renamed into place only when every chunk is written.
    Memory is a few chunks, whatever ``n``.

    Parameters
    ----------
    path : the store to create.
    n : number of samples.
    seed, wavelengths, n_countries : see :class:`LibraryGenerator`.
    chunk_rows : rows per Zarr chunk and per task (does not change the data).
    map_blocks : ``map_blocks(fn, blocks) -> list``; default in-process. Generation and Zarr writes hold
        the GIL much of the time, so threads do not help: use processes (``dtl_dist.engines.dask.map_blocks``).
    progress : show a tqdm bar over samples.
    overwrite : replace an existing store.
    """
    n, chunk_rows = _check(n, "n (--n)"), _check(chunk_rows, "chunk_rows (--chunk-rows)")
    gen = LibraryGenerator(_check(seed, "seed (--seed)", minimum=0), _grid(wavelengths),
                           _check(n_countries, "n_countries (--countries)"))
    run = map_blocks or serial_map
    prov = _provenance("library", seed=gen.seed, n=n, n_countries=gen.n_countries)
    with LibraryWriter(path, gen.wavelengths, targets=[TARGET], meta_numeric=["lat", "lon"],
                       meta_text=["source", "country", "group"], n_rows=n, units="absorbance",
                       target_units={TARGET: "%"}, provenance=[prov], chunk_rows=chunk_rows,
                       overwrite=overwrite) as writer:
        from tqdm.auto import tqdm

        task = functools.partial(_write_chunk, gen, str(Path(writer.tmp).resolve()))
        chunks = [(s, min(s + chunk_rows, n)) for s in range(0, n, chunk_rows)]
        with tqdm(total=n, unit="spectra", disable=not progress, desc=f"synth {Path(path).name}") as bar:
            for first in range(0, len(chunks), WAVE_CHUNKS):
                bar.update(sum(run(task, chunks[first:first + WAVE_CHUNKS])))
        return writer.commit()


def write_site(path, n: int, *, seed: int = 0, wavelengths=None, n_countries: int = 10, site: int = 0,
               overwrite: bool = False, **soc) -> SpectralLibrary:
    """Write a synthetic local site store (see :func:`make_site`; ``soc`` takes its SOC parameters)."""
    data = make_site(_check(n, "site n (--site-n)", minimum=2), seed, wavelengths=wavelengths,
                     n_countries=n_countries, site=site, **soc)
    prov = _provenance("site", seed=seed, n=n, n_countries=n_countries, site=site)
    return SpectralLibrary.create(path, data.spectra, data.wavelengths, data.sample_id, targets={TARGET: data.soc},
                                  meta=data.meta, units="absorbance", target_units={TARGET: "%"},
                                  provenance=[prov], overwrite=overwrite)


@dataclass(frozen=True)
class SynthConfig:
    """What ``dtl synth`` writes: a library of ``n`` samples and optionally a site of ``site_n``."""

    out: Path
    n: int
    seed: int = 0
    grid: str = "400:2500:10"
    countries: int = 10
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    site_n: int | None = None
    site_out: Path | None = None
    overwrite: bool = False

    def __post_init__(self):
        """Check everything before any work starts (or a cluster is started for it)."""
        _check(self.n, "n (--n)")
        _check(self.seed, "seed (--seed)", minimum=0)
        _check(self.countries, "n_countries (--countries)")
        _check(self.chunk_rows, "chunk_rows (--chunk-rows)")
        parse_grid(self.grid)
        if (self.site_n is None) != (self.site_out is None):
            raise UserInputError("--site-n and --site-out: give both (a site needs a size and a store) or neither")
        outputs = [Path(self.out)] + ([Path(self.site_out)] if self.site_out is not None else [])
        if len(outputs) == 2:
            _check(self.site_n, "site n (--site-n)", minimum=2)
            if outputs[0].resolve() == outputs[1].resolve():
                raise UserInputError(f"--site-out {self.site_out}: must differ from --out")
        for out in outputs:
            if out.exists() and not self.overwrite:
                raise UserInputError(f"{out}: already exists (use --overwrite to replace it)")


def synth(config: SynthConfig, *, map_blocks: Callable | None = None,
          progress: bool = True) -> tuple[SpectralLibrary, SpectralLibrary | None]:
    """Write the synthetic library (and site) of ``config``; ``map_blocks`` runs the library's chunks."""
    wl = parse_grid(config.grid)
    library = write_library(config.out, config.n, seed=config.seed, wavelengths=wl, n_countries=config.countries,
                            chunk_rows=config.chunk_rows, map_blocks=map_blocks, progress=progress,
                            overwrite=config.overwrite)
    site = None
    if config.site_out is not None:
        site = write_site(config.site_out, config.site_n, seed=config.seed, wavelengths=wl,
                          n_countries=config.countries, overwrite=config.overwrite)
    return library, site
