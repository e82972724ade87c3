"""Options of a study (``dtl study``) and the budgets that size its searches (paper sections 2.3-2.4)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from dtl_dist.engines.ray import check_request
from dtl_dist.errors import UserInputError
from dtl_dist.study.intervals import check_level

BUDGETS = {
    # trials per CNN search, inner folds of every model, epochs cap
    "quick": {"trials": 4, "inner_folds": 10},
    "paper": {"trials": 200, "inner_folds": 10},
}
"""``quick``: the known-good small 1D-CNNs only (minutes on a laptop); ``paper``: hundreds of trials per
search and 10-fold inner cross-validation, as in the paper (section 2.3.1), for a cluster."""

STAGE_KINDS = ("rslocal", "search", "transfer", "baseline", "ensemble")
"""Kinds of stage a study can be told to run alone (``--only``)."""

RESULT_KEYS = ("library", "site", "country", "country_library", "n_local", "k", "budget", "trials", "cv_folds",
               "inner_folds", "seed", "target", "data_dir", "subset", "b", "retain", "ncomp", "in_memory_max",
               "max_epochs")
"""Options that change results: a study resumes only with the same values (engines may change)."""


@dataclass(frozen=True)
class StudyConfig:
    """Options of ``dtl study``.

    Attributes
    ----------
    library, site, out : the library store, the site store and the run directory.
    country : country code of the country library as a view of ``library`` (``LIB.by(country=XX)``).
    country_library : a separate country library store (instead of ``country``).
    n_local : local samples to label by Kennard-Stone (when the site has no split yet; the paper's 30).
    k : library samples RS-LOCAL transfers (the paper's 100).
    budget, trials : search budget (:data:`BUDGETS`) and trials per search (default: the budget's).
    cv_folds : outer folds over the n labelled samples (``cv_rmse``, the recommendation).
    inner_folds : folds inside every model (early stopping, choices); default: the budget's.
    seed : seed of every split, draw and initialisation.
    subset, b, retain, ncomp : RS-LOCAL settings (:func:`dtl_dist.select.rslocal`).
    in_memory_max : libraries larger than this train their CNN with the streamed trainer.
    max_epochs : cap on the epochs of every 1D-CNN (None: each config's own).
    workers, threads, jobqueue, scheduler_file, address : Dask deployment of RS-LOCAL (``workers`` 0:
        in-process; ``threads`` per worker, or of this process in-process; ``jobqueue`` a dask-jobqueue YAML).
    ray_address : Ray cluster of the searches and transfers (None: a local Ray).
    cpus : CPUs of a local Ray (None: all).
    cpus_per_trial, gpus_per_trial : resources of every CNN search trial and transfer task (0.25 GPUs: four
        tasks share a GPU); a request no Ray node can meet stops the study before any work.
    cpu_fallback : with ``gpus_per_trial`` on a Ray cluster without GPUs, run on CPU (with a warning).
    resume : continue the run in ``out``.
    only : run only these kinds of stage (rslocal, search, transfer, baseline), e.g. one kind per cluster job.
    level : coverage level of the prediction intervals (:mod:`dtl_dist.study.intervals`).
    """

    library: str
    site: str
    out: str
    country: str | None = None
    country_library: str | None = None
    n_local: int = 30
    k: int = 100
    budget: str = "quick"
    trials: int | None = None
    cv_folds: int = 5
    inner_folds: int | None = None
    seed: int = 0
    target: str = "soc"
    data_dir: str | None = None
    subset: int = 100
    b: int = 40
    retain: float = 0.95
    ncomp: int = 10
    in_memory_max: int = 200_000
    max_epochs: int | None = None
    workers: int = 2
    threads: int | None = None
    jobqueue: str | None = None
    scheduler_file: str | None = None
    address: str | None = None
    ray_address: str | None = None
    cpus: int | None = None
    cpus_per_trial: float = 1
    gpus_per_trial: float = 0
    cpu_fallback: bool = False
    resume: bool = False
    only: tuple | None = None
    level: float = 0.9

    def __post_init__(self):
        if self.budget not in BUDGETS:
            raise UserInputError(f"--budget {self.budget!r}: expected one of {', '.join(BUDGETS)}")
        if self.country and self.country_library:
            raise UserInputError("give --country (a view of the library) or --country-library (a store), not both")
        for name in ("trials", "inner_folds"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, BUDGETS[self.budget][name])
        check_level(self.level)
        check_request(self.cpus_per_trial, self.gpus_per_trial)
        if self.only is not None:
            unknown = sorted(set(self.only) - set(STAGE_KINDS))
            if unknown or not self.only:
                raise UserInputError(f"--only {','.join(self.only)}: expected kinds among {', '.join(STAGE_KINDS)}")
            object.__setattr__(self, "only", tuple(self.only))
        checks = [("trials", 1), ("cv_folds", 2), ("inner_folds", 2), ("n_local", 6), ("k", 1), ("workers", 0)]
        for name, low in checks:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise UserInputError(f"--{name.replace('_', '-')} {value!r}: expected an integer >= {low}")

    def results(self) -> dict:
        """The options that change results (see :data:`RESULT_KEYS`)."""
        return {key: getattr(self, key) for key in RESULT_KEYS}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_saved(cls, record, *, where: str) -> "StudyConfig":
        """The config a study saved (``study.json``), each value checked against its field's type, so a
        hand-edited file is a UserInputError naming the key."""
        if not isinstance(record, dict):
            raise UserInputError(f"{where}: config is a JSON {type(record).__name__}; expected an object")
        types = {f.name: f.type for f in fields(cls)}
        for key, value in record.items():
            if key not in types:
                raise UserInputError(f"{where}: config has an unknown key {key!r}")
            allowed = [SAVED_TYPES.get(name.strip(), object) for name in types[key].split("|")]
            if not any(isinstance(value, kind) and not (kind is int and isinstance(value, bool)) for kind in allowed):
                raise UserInputError(f"{where}: config {key} is {value!r}; expected {types[key]}")
        return cls(**record)


SAVED_TYPES = {"str": str, "int": int, "float": (int, float), "bool": bool, "tuple": (list, tuple),
               "None": type(None)}
"""JSON types a saved :class:`StudyConfig` field may hold, by the name of its annotated type (others: any)."""
