"""The data of a study: library, country library and site, checked and preprocessed (paper sections 2.1-2.2).

Spectra are stored as absorbance; every model sees their SNV (section 2.2). The site is split by
Kennard-Stone into the n labelled local samples and the N - n local_test (section 2.1) unless its store already
holds a split; the study never reads local_test's SOC before the final evaluation. The n labelled samples are
cut into ``cv_folds`` outer folds (seeded): every model's ``cv_rmse`` is computed on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dtl_dist.errors import UserInputError
from dtl_dist.library.store import ROLE, SpectralLibrary, check_compatible
from dtl_dist.nn.folds import kfold_assignment
from dtl_dist.spectra.preprocess import paper_preprocessing

SITE_COPY = "data/site.zarr"
"""Where a study keeps its own split copy of a site that came without one."""


def _snv(lib: SpectralLibrary, rows=None) -> np.ndarray:
    return paper_preprocessing(lib.units).fit_transform(lib.spectra(rows)).astype(np.float32)


@dataclass
class Source:
    """One library of a study (global or country): its store view, SOC, and SNV spectra read on demand.

    A library of at most ``in_memory_max`` samples is held in memory whole; a larger one is read by rows, and
    the designs that need the whole library (:meth:`training_rows`) use a seeded sample of ``in_memory_max``
    of its rows (its library 1D-CNN is then trained on all of it with the streamed trainer).
    """

    name: str
    view: SpectralLibrary
    y: np.ndarray
    in_memory_max: int = 200_000
    seed: int = 0
    _X: np.ndarray | None = None

    @property
    def size(self) -> int:
        return int(self.y.size)

    @property
    def in_memory(self) -> bool:
        return self.size <= self.in_memory_max

    def spectra(self, rows=None) -> np.ndarray:
        """SNV spectra of ``rows`` (all rows by default, only for a library held in memory)."""
        if self.in_memory:
            if self._X is None:
                self._X = _snv(self.view)
            return self._X if rows is None else self._X[rows]
        if rows is None:
            raise UserInputError(f"{self.view.path}: {self.size} samples, more than --in-memory-max "
                                 f"{self.in_memory_max}; read by rows")
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows)
        out = np.empty((rows.size, self.view.n_bands), dtype=np.float32)
        out[order] = _snv(self.view, rows[order])
        return out

    def training_rows(self) -> np.ndarray:
        """Rows the in-memory designs use: all, or a seeded sample of ``in_memory_max`` of a larger library."""
        if self.in_memory:
            return np.arange(self.size)
        return np.sort(np.random.default_rng(self.seed).choice(self.size, self.in_memory_max, replace=False))


@dataclass
class StudyData:
    """Everything a study's stages read.

    Attributes
    ----------
    library, country : Source (``country`` None without a country library).
    local_X, local_y, local_ids : the n labelled local samples (SNV spectra, SOC, ids).
    local_absorbance : their spectra as stored (RS-LOCAL preprocesses them itself, like the library).
    test_absorbance, test_ids : the N - n local_test spectra as stored (absorbance; saved models predict them
        as a user's would) and their ids (their SOC is read by the evaluation only).
    site : the split site store.
    outer : outer fold id of each labelled sample.
    inner_folds, seed : folds inside every model, seed.
    notes : what the study did with the inputs (skipped samples, missing country library, ...).
    """

    library: Source
    country: Source | None
    local_X: np.ndarray
    local_y: np.ndarray
    local_ids: np.ndarray
    local_absorbance: np.ndarray
    test_absorbance: np.ndarray
    test_ids: np.ndarray
    site: SpectralLibrary
    outer: np.ndarray
    inner_folds: int
    seed: int
    notes: list

    @property
    def wavelengths(self) -> np.ndarray:
        return self.site.wavelengths

    @property
    def n_outer(self) -> int:
        return int(self.outer.max()) + 1

    @property
    def n_splits(self) -> int:
        """Outer folds plus the final split (all n labelled samples)."""
        return self.n_outer + 1

    def local_split(self, s: int) -> tuple[np.ndarray, np.ndarray]:
        """Labelled samples that train split ``s`` and those it predicts (the final split: all, none)."""
        if s == self.n_outer:
            return np.arange(self.local_y.size), np.empty(0, dtype=np.int64)
        return np.flatnonzero(self.outer != s), np.flatnonzero(self.outer == s)

    def inner(self, n_rows: int, s: int) -> np.ndarray:
        """Seeded inner folds of ``n_rows`` training rows of split ``s``."""
        return kfold_assignment(n_rows, min(self.inner_folds, n_rows), self.seed + 1000 * (s + 1))

    def test_y(self, target: str = "soc") -> np.ndarray:
        """SOC of local_test: for the final evaluation only."""
        _, test = self.site.split()
        return test.subset(ids=self.test_ids).target(target).astype(np.float64)


def _measured(lib: SpectralLibrary, target: str, what: str, notes: list) -> SpectralLibrary:
    if target not in lib.targets:
        raise UserInputError(f"{lib.path}: the {what} has no target {target!r}; the store has "
                             f"{lib.targets or 'none'}")
    y = lib.target(target)
    missing = int(np.isnan(y).sum())
    if missing:
        notes.append(f"{what}: {missing} samples without {target} left out")
    return lib.subset(mask=~np.isnan(y)) if missing else lib


def _source(name: str, view: SpectralLibrary, config) -> Source:
    return Source(name, view, view.target(config.target).astype(np.float64), config.in_memory_max, config.seed)


def split_site(config, out: Path, notes: list) -> SpectralLibrary:
    """The site with its local split: as given when it has one, else a copy in ``out`` split by Kennard-Stone."""
    from dtl_dist.study.select_local import select_local

    site = SpectralLibrary.open(config.site)
    if ROLE in site.meta_fields:
        labelled, _ = site.split()
        notes.append(f"site: its own split ({labelled.n_samples} local_labelled) is used")
        return site
    copy = out / SITE_COPY
    if not copy.exists():
        measured = int(np.isfinite(site.target(config.target)).sum()) if config.target in site.targets else 0
        if config.n_local > measured:
            raise UserInputError(f"--n-local {config.n_local}: the site {config.site} has {measured} samples with "
                                 f"{config.target}; expected n-local <= {measured}")
        if measured - config.n_local < 1:
            raise UserInputError(f"--n-local {config.n_local}: leaves no local_test sample of the {measured}")
        site.save(copy)
        select_local(copy, config.n_local)
        notes.append(f"site: split by Kennard-Stone into {config.n_local} local_labelled and "
                     f"{measured - config.n_local} local_test")
    return SpectralLibrary.open(copy)


def load_study_data(config, out: Path) -> StudyData:
    """Open, check and preprocess the study's inputs (see the module docstring).

    Raises
    ------
    UserInputError
        A grid, units or preprocessing mismatch, a library without the target, a country matching no sample,
        too few labelled samples for the folds.
    """
    notes: list = []
    library = SpectralLibrary.open(config.library)
    site = SpectralLibrary.open(config.site)
    check_compatible(library, site, what=f"site {config.site}")
    for store, what in ((library, "library"), (site, "site")):
        if config.target not in store.targets:
            raise UserInputError(f"{store.path}: the {what} has no target {config.target!r}; the store has "
                                 f"{store.targets or 'none'}")
    ours = set(site.sample_id.tolist())
    in_library = np.isin(library.sample_id, list(ours))
    if in_library.any():
        notes.append(f"library: {int(in_library.sum())} samples of the site itself left out")
        library = library.subset(mask=~in_library)
    country = None
    if config.country:
        if "country" not in library.meta_fields or config.country not in set(library.meta("country")):
            have = sorted(set(library.meta("country"))) if "country" in library.meta_fields else []
            raise UserInputError(f"--country {config.country}: matches no sample of {config.library} "
                                 f"(countries there: {', '.join(have) or 'none'})")
        country = library.by(country=config.country)
    elif config.country_library:
        country = SpectralLibrary.open(config.country_library)
        check_compatible(library, country, what=f"country library {config.country_library}")
        in_country = np.isin(country.sample_id, list(ours))
        if in_country.any():
            notes.append(f"country library: {int(in_country.sum())} samples of the site itself left out")
            country = country.subset(mask=~in_country)
    else:
        notes.append("no country library (--country or --country-library): Country, DTL-I_c, DTL-R_c and "
                     "DTL-IR_c are left out")
    library = _measured(library, config.target, "library", notes)
    if country is not None:
        country = _measured(country, config.target, "country library", notes)
    site = split_site(config, out, notes)
    labelled, test = site.split()
    local_y = labelled.target(config.target).astype(np.float64)
    if not np.all(np.isfinite(local_y)):
        raise UserInputError(f"{site.path}: {int((~np.isfinite(local_y)).sum())} local_labelled samples have no "
                             f"{config.target}")
    n = local_y.size
    if n < 6:
        raise UserInputError(f"{site.path}: {n} local_labelled samples; a study needs at least 6")
    folds = config.cv_folds
    if n < 2 * folds:
        notes.append(f"{n} local_labelled samples are too few for {folds} outer folds of 2+: leave-one-out instead")
        folds = n
    test_ids = test.sample_id
    if test.n_samples and config.target in test.targets:
        test_ids = test_ids[np.isfinite(test.target(config.target))]
    return StudyData(
        library=_source("global", library, config),
        country=None if country is None else _source("country", country, config),
        local_X=_snv(labelled), local_y=local_y, local_ids=labelled.sample_id, local_absorbance=labelled.spectra(),
        test_absorbance=test.subset(ids=test_ids).spectra() if len(test_ids) else np.empty((0, site.n_bands)),
        test_ids=test_ids, site=site, outer=kfold_assignment(n, folds, config.seed),
        inner_folds=config.inner_folds, seed=config.seed, notes=notes,
    )
