"""The study as data: one record per model of the paper's Fig. 2 and Table 3, plus the baselines.

Each record says what the model trains on (``data``: the local n, the library, the localised k + n, or the
library with the local samples as reference), from which library (``library``: global or country), how it is
made (``make``: a 1D-CNN search, a transfer from a library CNN, PLSR, spiked PLSR, MBL, or an ensemble of the
other models' out-of-fold predictions, :mod:`dtl_dist.study.ensembles`) and, for a transfer, its ``base`` model. The stages of a study are the distinct pieces of work these records need
(:func:`dtl_dist.study.run.build_stages`); ``metrics.csv`` and ``predictions.csv`` are one loop over them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSpec:
    """What one model of a study needs (see the module docstring)."""

    name: str
    data: str
    library: str | None
    make: str
    base: str | None = None


MODELS = (
    ModelSpec("Local", "local", None, "search"),
    ModelSpec("Global", "library", "global", "search"),
    ModelSpec("Country", "library", "country", "search"),
    ModelSpec("DTL-I_g", "localised", "global", "search"),
    ModelSpec("DTL-I_c", "localised", "country", "search"),
    ModelSpec("DTL-R_g", "local", "global", "transfer", base="Global"),
    ModelSpec("DTL-R_c", "local", "country", "transfer", base="Country"),
    ModelSpec("DTL-IR_g", "localised", "global", "transfer", base="Global"),
    ModelSpec("DTL-IR_c", "localised", "country", "transfer", base="Country"),
    ModelSpec("local-PLS", "local", None, "pls"),
    ModelSpec("global-PLS", "library", "global", "pls"),
    ModelSpec("RS-LOCAL-PLS", "localised", "global", "pls"),
    ModelSpec("spiked-PLS", "reference", "global", "spiked"),
    ModelSpec("MBL", "reference", "global", "mbl"),
    ModelSpec("mean-1SE", "members", None, "ensemble"),
    ModelSpec("stack", "members", None, "ensemble"),
)
"""The nine 1D-CNNs of the paper (section 2.3.4), the five baselines and the two ensembles of all of those, in the
order of ``metrics.csv``."""

REFERENCE = "Local"
"""``delta_rmse_pct`` compares every model with the local 1D-CNN (paper eq. 1)."""


def models_for(has_country: bool) -> tuple[ModelSpec, ...]:
    """The models a study makes: without a country library, those of the country library are left out."""
    return tuple(m for m in MODELS if has_country or m.library != "country")


def candidates(specs: tuple[ModelSpec, ...], coverage_kind: str) -> list[str]:
    """The single models of ``specs`` the ensembles combine and the recommendation picks among: all of them,
    unless the coverage check puts the site outside the library (``coverage_kind`` "outside",
    :func:`dtl_dist.study.coverage.kind`); then those that use no library. Fixed before it was tried on a site it
    was not read off (issue 16): on the two sites outside the library (CV.98, SP.231) every transferred model lost
    to Local on local_test, while 30 labelled samples cannot tell a lucky transfer from a good one."""
    singles = [s for s in specs if s.make != "ensemble"]
    return [s.name for s in singles if coverage_kind != "outside" or s.library is None]
